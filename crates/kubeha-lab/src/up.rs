//! Building a lab: files, keys, network, supervisors, then the inventory.
//!
//! The state file is written before anything is created and after every step, and the [`Lab`]
//! exists from the first step on, so a failure (or a panic in a test) anywhere tears down exactly
//! what was made.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use super::process::{ProcRef, find_program};
use super::spec::{LabSpec, bridge_name, netns_name, veth_name};
use super::state::{HostState, State, make_dir, write_file};
use super::status::NodeStatus;
use super::{Lab, LabError, hostfs, inventory, net, sshd};

/// Programs the lab runs; `up` checks them first so a missing one is named up front.
const TOOLS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("setsid", "util-linux"),
    ("ssh-keygen", "openssh-client"),
    ("/usr/sbin/sshd", "openssh-server"),
];

/// Hosts created per `ip -batch` and prepared per thread.
const CHUNK: usize = 16;

pub(super) fn up(spec: LabSpec) -> Result<Lab, LabError> {
    spec.check()?;
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }
    for (program, package) in TOOLS {
        if find_program(program).is_none() {
            return Err(LabError::MissingTool { program: program.to_string(), package: package.to_string() });
        }
    }
    if spec.user == super::spec::LabUser::Ops && find_program("sudo").is_none() {
        return Err(LabError::MissingTool { program: "sudo".into(), package: "sudo".into() });
    }
    let exe = match &spec.exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().map_err(|source| LabError::Io { path: "/proc/self/exe".into(), source })?,
    };
    if !exe.is_file() {
        return Err(LabError::Spec { field: "exe".into(), message: format!("{} is not a file", exe.display()) });
    }
    if State::path(&spec.dir).exists() {
        return Err(LabError::AlreadyUp { dir: spec.dir.clone() });
    }
    let etcd_version = match &spec.etcd_version {
        Some(v) => v.clone(),
        None => inventory::installed_etcd_version()?,
    };
    let state = State {
        name: spec.name.clone(),
        subnet: spec.subnet,
        dir: spec.dir.clone(),
        exe,
        kubernetes_version: spec.kubernetes_version.clone(),
        etcd_version,
        user: spec.user,
        ssh: spec.ssh.clone(),
        bridge: bridge_name(&spec.name),
        bridge_created: false,
        hosts: spec
            .hosts()
            .into_iter()
            .map(|h| HostState {
                netns: netns_name(&spec.name, &h.name),
                veth: veth_name(&spec.name, &h.name),
                name: h.name,
                address: h.address,
                ssh_port: h.ssh_port,
                control_plane: h.control_plane,
                net_created: false,
                supervisor: None,
            })
            .collect(),
        created_dirs: Vec::new(),
        machine_namespaces: super::state::namespaces(),
    };
    net::check_free(&state)?;
    make_dir(&state.dir, 0o700)?;
    // Files of an earlier lab in this directory (its state file is gone, so it was taken down).
    let hosts_dir = state.dir.join("hosts");
    if hosts_dir.exists() {
        std::fs::remove_dir_all(&hosts_dir).map_err(|source| LabError::Io { path: hosts_dir.clone(), source })?;
    }
    state.save()?;
    let mut lab = Lab::new(state, true);
    build(&mut lab)?;
    Ok(lab)
}

fn build(lab: &mut Lab) -> Result<(), LabError> {
    let dir = lab.state.dir.clone();
    let id = sshd::identity_file(&dir);
    sshd::keygen(&id, &format!("kubeha-lab-{}", lab.state.name))?;
    let client_key = read(&id.with_extension("pub"))?;
    let wrapper = sshd::command_wrapper();
    std::thread::scope(|scope| {
        let workers: Vec<_> = lab
            .state
            .hosts
            .chunks(CHUNK)
            .map(|hosts| {
                let (state, client_key, wrapper) = (&lab.state, &client_key, &wrapper);
                scope.spawn(move || -> Result<(), LabError> {
                    for h in hosts {
                        hostfs::prepare(state, h, client_key, wrapper)?;
                        let hd = state.host_dir(&h.name);
                        for kind in sshd::host_key_types(state, &h.name) {
                            let comment = format!("{}@kubeha-lab-{}", h.name, state.name);
                            sshd::keygen_of(&sshd::host_key_of(&hd, kind), kind, &comment)?;
                        }
                        write_file(&sshd::config_file(&hd), sshd::config(state, h).as_bytes(), 0o600)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().expect("host preparation does not panic"))
    })?;

    lab.state.created_dirs = hostfs::create_mount_points()?;
    lab.state.bridge_created = true;
    lab.state.save()?;
    net::create_bridge(&lab.state)?;
    for start in (0..lab.state.hosts.len()).step_by(CHUNK) {
        let end = (start + CHUNK).min(lab.state.hosts.len());
        lab.state.hosts[start..end].iter_mut().for_each(|h| h.net_created = true);
        lab.state.save()?;
        net::create_hosts(&lab.state.bridge, &lab.state.hosts[start..end].iter().collect::<Vec<_>>())?;
    }

    let ip = find_program("ip").unwrap_or_else(|| PathBuf::from("ip"));
    let unshare = find_program("unshare").unwrap_or_else(|| PathBuf::from("unshare"));
    for i in 0..lab.state.hosts.len() {
        let h = &lab.state.hosts[i];
        let hd = lab.state.host_dir(&h.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(hd.join("node.log"))
            .map_err(|source| LabError::Io { path: hd.join("node.log"), source })?;
        let err = log.try_clone().map_err(|source| LabError::Io { path: hd.join("node.log"), source })?;
        let child = super::process::command("setsid")
            .arg(&ip)
            .args(["netns", "exec", &h.netns])
            .arg(&unshare)
            .args(["--mount", "--uts", "--propagation", "private"])
            .arg(&lab.state.exe)
            .args(["node", "--dir"])
            .arg(&dir)
            .args(["--host", &h.name])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|source| LabError::Spawn { program: "setsid".into(), source })?;
        // The PID stays the supervisor's: setsid, ip netns exec and unshare each exec the next.
        let proc = ProcRef::of(child.id()).unwrap_or(ProcRef { pid: child.id(), start_ticks: 0 });
        lab.children.push(child);
        lab.state.hosts[i].supervisor = Some(proc);
    }
    lab.state.save()?;

    let limit = Duration::from_secs(30 + lab.state.hosts.len() as u64 / 2);
    for h in lab.state.hosts.clone() {
        let hd = lab.state.host_dir(&h.name);
        super::wait_for(limit, &format!("lab host {} to start sshd", h.name), || {
            lab.reap_children();
            if !h.supervisor.is_some_and(|p| p.alive()) {
                return Some(Err(LabError::HostFailed { host: h.name.clone(), log: tail(&hd.join("node.log")) }));
            }
            match NodeStatus::load(&hd) {
                Ok(Some(s)) if s.sshd.is_some() => Some(Ok(())),
                _ => None,
            }
        })??;
    }

    write_file(&sshd::known_hosts_file(&dir), sshd::known_hosts(&lab.state)?.as_bytes(), 0o644)?;
    write_file(&inventory::path(&dir), inventory::render(&lab.state).as_bytes(), 0o644)?;
    Ok(())
}

fn read(path: &Path) -> Result<String, LabError> {
    std::fs::read_to_string(path).map_err(|source| LabError::Io { path: path.to_path_buf(), source })
}

/// The last lines of a log, for error messages.
pub(super) fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(5);
    format!("{} (last lines of {})", lines[start..].join("\n"), path.display())
}
