//! Taking a lab down: supervisors first (each stops its pods and sshd), then anything still
//! inside the lab's namespaces, then namespaces, veths and bridge, then the mount points the lab
//! created. Every process is signalled by its recorded PID and start time, or found inside a
//! network namespace the lab created; nothing is stopped by name.

use std::process::Child;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::process::{ProcRef, terminate};
use super::state::State;
use super::status::NodeStatus;
use super::{LabError, hostfs, net};

/// How long supervisors get to stop their pods (their own limit is 60 s) before being killed.
const SUPERVISOR_LIMIT: Duration = Duration::from_secs(75);

pub(super) fn down(state: &mut State, children: &mut Vec<Child>) -> Result<(), LabError> {
    let mut reap = || children.iter_mut().for_each(|c| drop(c.try_wait()));
    let supervisors: Vec<ProcRef> = state.hosts.iter().filter_map(|h| h.supervisor).collect();
    for s in &supervisors {
        s.signal(Signal::SIGTERM);
    }
    let deadline = Instant::now() + SUPERVISOR_LIMIT;
    while Instant::now() < deadline && supervisors.iter().any(ProcRef::alive) {
        reap();
        std::thread::sleep(Duration::from_millis(50));
    }
    for s in &supervisors {
        if s.signal(Signal::SIGKILL) {
            eprintln!("kubeha-lab: supervisor {} did not stop in time; killed", s.pid);
        }
    }
    reap();

    // What a killed supervisor left behind: its recorded pods and sshd, then anything else in the
    // host's network namespace.
    for h in &state.hosts {
        if let Ok(Some(status)) = NodeStatus::load(&state.host_dir(&h.name)) {
            let pods = status.pods.iter().filter_map(|p| p.pid.and_then(ProcRef::of));
            for p in pods.chain(status.sshd) {
                p.signal_group(Signal::SIGKILL);
                p.signal(Signal::SIGKILL);
            }
        }
    }
    let inside: Vec<ProcRef> = state
        .hosts
        .iter()
        .filter(|h| h.net_created)
        .flat_map(|h| net::pids_in(&h.netns))
        .filter_map(ProcRef::of)
        .collect();
    if !inside.is_empty() {
        eprintln!("kubeha-lab: stopping {} process(es) left in the lab's namespaces", inside.len());
        terminate(&inside, Duration::from_secs(3), &mut reap);
    }
    reap();
    children.clear();

    let mut left = net::delete(state);
    for h in &mut state.hosts {
        h.net_created =
            left.iter().any(|l| *l == format!("network namespace {}", h.netns) || *l == format!("link {}", h.veth));
        h.supervisor = None;
    }
    state.bridge_created = left.iter().any(|l| *l == format!("link {}", state.bridge));
    left.extend(supervisors.iter().filter(|s| s.alive()).map(|s| format!("process {}", s.pid)));

    // Mount points the lab created, unless something still uses them: then the lab using them
    // (another lab's hosts) takes them over and removes them when it goes down.
    // Another lab may have handed its mount points over to this one since it was loaded.
    if let Ok(disk) = State::load(&state.dir) {
        for d in disk.created_dirs {
            if !state.created_dirs.contains(&d) {
                state.created_dirs.push(d);
            }
        }
    }
    let mut kept = Vec::new();
    for dir in std::mem::take(&mut state.created_dirs) {
        if !std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_none()) {
            if dir.exists() {
                eprintln!("kubeha-lab: keeping {}: it is not empty", dir.display());
            }
            continue;
        }
        let users = hostfs::mounted_by(&dir);
        if users.is_empty() {
            if std::fs::remove_dir(&dir).is_err() && dir.exists() {
                left.push(format!("directory {}", dir.display()));
                kept.push(dir);
            }
        } else if !hand_over(&dir, &users, &state.dir) {
            eprintln!("kubeha-lab: keeping {}: processes {users:?} still mount it", dir.display());
        }
    }
    state.created_dirs = kept;

    if left.is_empty() {
        let path = State::path(&state.dir);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(LabError::Io { path, source }),
        }
    } else {
        let _ = state.save();
        Err(LabError::Leftovers { dir: state.dir.clone(), parts: left })
    }
}

/// Records `dir` as created by the lab one of `users` (supervisor PIDs) belongs to.
fn hand_over(dir: &std::path::Path, users: &[u32], own: &std::path::Path) -> bool {
    for lab_dir in users.iter().filter_map(|p| hostfs::supervisor_lab_dir(*p)) {
        if lab_dir == own {
            continue;
        }
        if let Ok(mut other) = State::load(&lab_dir) {
            if !other.created_dirs.iter().any(|d| d == dir) {
                other.created_dirs.push(dir.to_path_buf());
            }
            if other.save().is_ok() {
                return true;
            }
        }
    }
    false
}
