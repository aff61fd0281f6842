//! The kubelet stand-in: runs the static pods of one lab host as plain processes.
//!
//! Like the kubelet's file source it reads every regular file in the static pod directory whose
//! name does not start with a dot (about once a second), and keys pods by file. The directory is
//! `staticPodPath` from `/var/lib/kubelet/config.yaml` when that file sets one (re-read on every
//! scan, where the kubelet reads it at start), else `/etc/kubernetes/manifests`. A new file
//! starts a pod; a changed file stops the pod (TERM, KILL after the grace period) and starts it
//! from the new content; a removed file stops it; a process that exits is started again after a
//! back-off (restartPolicy Always, the default), counting restarts. hostPath volumes are checked
//! first ([`volumes`]); a pod that cannot start is retried every scan, its reason reported in
//! [`PodStatus::message`] and the logs, as a kubelet event would be.
//!
//! The supervisor reaps every child itself and hands exits to [`Kubelet::on_exit`].

mod launch;
pub mod manifest;
pub mod volumes;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};

pub use launch::{IMAGE_ENV, STAND_INS};

use super::process::ProcRef;
use super::status::PodStatus;

/// How often the manifest directory is read (the kubelet's file check frequency is 20 s, but it
/// also watches the directory; a second is close to what an operator sees).
const SCAN_EVERY: Duration = Duration::from_secs(1);
/// First restart delay; doubles per restart up to [`BACKOFF_MAX`] (the kubelet: 10 s to 5 min,
/// shortened so lab clusters converge quickly).
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A container that ran this long starts the back-off afresh (the kubelet: 10 min).
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// Grace period when the manifest sets none (the kubelet's default is 30 s).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

pub struct Kubelet {
    host: String,
    exe: PathBuf,
    /// The static pod directory when the kubelet configuration names none.
    manifests: PathBuf,
    /// The KubeletConfiguration file (`staticPodPath`).
    config: PathBuf,
    /// The directory used by the last scan, to report changes once.
    scanned: Option<PathBuf>,
    /// Pod logs (`<pod>.log`), on the machine's side.
    logs: PathBuf,
    events: std::fs::File,
    pods: BTreeMap<String, Pod>,
    next_scan: Instant,
    shutting_down: bool,
}

struct Pod {
    name: String,
    sha256: String,
    manifest: Result<manifest::Manifest, String>,
    phase: Phase,
    starts: u32,
    backoff: Duration,
    started_at: Option<SystemTime>,
    last_exit: Option<String>,
    message: Option<String>,
    /// The manifest is gone: drop the pod once its process has stopped.
    removed: bool,
}

enum Phase {
    /// Start at `at` (or retry then, after a failed volume check).
    Waiting {
        at: Instant,
    },
    Running {
        proc: ProcRef,
        since: Instant,
        grace: Duration,
    },
    Stopping {
        proc: ProcRef,
        kill_at: Option<Instant>,
    },
    /// Will not start until its manifest changes (invalid manifest, or the restart policy says so).
    Done,
}

impl Kubelet {
    pub fn new(host: &str, exe: &Path, manifests: &Path, config: &Path, logs: &Path, events: std::fs::File) -> Kubelet {
        Kubelet {
            host: host.to_string(),
            exe: exe.to_path_buf(),
            manifests: manifests.to_path_buf(),
            config: config.to_path_buf(),
            scanned: None,
            logs: logs.to_path_buf(),
            events,
            pods: BTreeMap::new(),
            next_scan: Instant::now(),
            shutting_down: false,
        }
    }

    /// Reads manifests when due and moves every pod on (starts, back-offs, kill deadlines).
    pub fn tick(&mut self, now: Instant) {
        if !self.shutting_down && now >= self.next_scan {
            self.scan(now);
            self.next_scan = now + SCAN_EVERY;
        }
        let files: Vec<String> = self.pods.keys().cloned().collect();
        for file in files {
            self.advance(&file, now);
        }
    }

    /// Stops every pod (TERM now, KILL after its grace period); see [`Kubelet::idle`].
    pub fn shut_down(&mut self, now: Instant) {
        self.shutting_down = true;
        let files: Vec<String> = self.pods.keys().cloned().collect();
        for file in files {
            if let Some(p) = self.pods.get_mut(&file) {
                p.removed = true;
            }
            self.stop(&file, now, "Killing", "the lab host is stopping");
        }
    }

    /// No pod process is left.
    pub fn idle(&self) -> bool {
        self.pods.values().all(|p| !matches!(p.phase, Phase::Running { .. } | Phase::Stopping { .. }))
    }

    /// KILLs every pod process group at once.
    pub fn kill_all(&mut self) {
        for p in self.pods.values() {
            if let Phase::Running { proc, .. } | Phase::Stopping { proc, .. } = &p.phase {
                proc.signal_group(Signal::SIGKILL);
            }
        }
    }

    pub fn statuses(&self) -> Vec<PodStatus> {
        self.pods
            .values()
            .map(|p| {
                let pid = match &p.phase {
                    Phase::Running { proc, .. } | Phase::Stopping { proc, .. } => Some(proc.pid),
                    _ => None,
                };
                PodStatus {
                    name: p.name.clone(),
                    running: matches!(p.phase, Phase::Running { .. }),
                    pid,
                    restarts: p.starts.saturating_sub(1),
                    manifest_sha256: p.sha256.clone(),
                    started_at: p.started_at,
                    last_exit: p.last_exit.clone(),
                    message: p.message.clone(),
                }
            })
            .collect()
    }

    /// A child exited: returns whether it was one of the pods.
    pub fn on_exit(&mut self, pid: u32, how: &str, now: Instant) -> bool {
        let Some(file) = self.pods.iter().find_map(|(f, p)| match &p.phase {
            Phase::Running { proc, .. } | Phase::Stopping { proc, .. } if proc.pid == pid => Some(f.clone()),
            _ => None,
        }) else {
            return false;
        };
        let pod = self.pods.get_mut(&file).expect("found above");
        // A container's processes go with it, as its cgroup would.
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
        pod.last_exit = Some(how.to_string());
        match std::mem::replace(&mut pod.phase, Phase::Done) {
            Phase::Stopping { .. } if pod.removed => {
                let name = pod.name.clone();
                self.pods.remove(&file);
                self.event(&name, &format!("Stopped: pod {name} is gone ({how})"));
            }
            Phase::Stopping { .. } => {
                pod.backoff = BACKOFF_INITIAL;
                pod.phase = Phase::Waiting { at: now };
                let name = pod.name.clone();
                self.event(&name, &format!("Stopped for the changed manifest ({how})"));
            }
            Phase::Running { since, .. } => {
                let policy = pod.manifest.as_ref().ok().and_then(|m| m.spec.restart_policy.clone());
                let restart = match policy.as_deref() {
                    Some("Never") => false,
                    Some("OnFailure") => how != "exit status 0",
                    _ => true,
                };
                if now.duration_since(since) >= BACKOFF_RESET {
                    pod.backoff = BACKOFF_INITIAL;
                }
                let name = pod.name.clone();
                if restart {
                    let delay = pod.backoff;
                    pod.phase = Phase::Waiting { at: now + delay };
                    pod.backoff = (delay * 2).min(BACKOFF_MAX);
                    pod.message = Some(format!("Back-off restarting failed container ({how})"));
                    self.event(&name, &format!("Container exited ({how}); BackOff: restarting in {delay:?}"));
                } else {
                    pod.message = Some(format!("Completed ({how}); restartPolicy {}", policy.unwrap_or_default()));
                    self.event(&name, &format!("Container exited ({how}); not restarted (restartPolicy)"));
                }
            }
            other => pod.phase = other,
        }
        true
    }

    /// `staticPodPath` from the kubelet configuration, else the default directory.
    fn manifest_dir(&self) -> PathBuf {
        std::fs::read_to_string(&self.config)
            .ok()
            .and_then(|text| serde_saphyr::from_str::<serde_json::Value>(&text).ok())
            .and_then(|v| v.get("staticPodPath")?.as_str().map(PathBuf::from))
            .filter(|p| p.is_absolute())
            .unwrap_or_else(|| self.manifests.clone())
    }

    fn scan(&mut self, now: Instant) {
        let dir = self.manifest_dir();
        if self.scanned.as_ref() != Some(&dir) {
            let line = format!(
                "{} {} kubelet: static pods from {}\n",
                humantime::format_rfc3339_millis(SystemTime::now()),
                self.host,
                dir.display()
            );
            let _ = self.events.write_all(line.as_bytes());
            self.scanned = Some(dir.clone());
        }
        let mut seen = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                // Dot files are the kubelet's only exclusion (editors' and kubeha's temp files).
                if file.starts_with('.') || !e.path().is_file() {
                    continue;
                }
                if let Ok(bytes) = std::fs::read(e.path()) {
                    seen.insert(file, bytes);
                }
            }
        }
        let gone: Vec<String> = self.pods.keys().filter(|f| !seen.contains_key(*f)).cloned().collect();
        for file in gone {
            if let Some(p) = self.pods.get_mut(&file)
                && !p.removed
            {
                p.removed = true;
                self.stop(&file, now, "Killing", "its manifest was removed");
            }
        }
        for (file, bytes) in seen {
            let sha256 = hex::encode(Sha256::digest(&bytes));
            let manifest = std::str::from_utf8(&bytes)
                .map_err(|_| "invalid manifest: not UTF-8 text".to_string())
                .and_then(manifest::parse);
            match self.pods.get_mut(&file) {
                None => {
                    let name = pod_name(&file);
                    self.event(&name, &format!("Manifest {file} added (sha256 {})", &sha256[..12]));
                    self.pods.insert(file, Pod::new(name, sha256, manifest, now));
                }
                Some(p) if p.sha256 != sha256 || p.removed => {
                    let line = format!("Manifest {file} changed (sha256 {})", &sha256[..12]);
                    let name = p.name.clone();
                    p.sha256 = sha256;
                    p.manifest = manifest;
                    p.removed = false;
                    p.message = None;
                    match p.phase {
                        Phase::Running { .. } => {
                            self.event(&name, &line);
                            self.stop(&file, now, "Killing", "its manifest changed");
                        }
                        // Starts from the new manifest once the old process is gone.
                        Phase::Stopping { .. } => self.event(&name, &line),
                        _ => {
                            p.backoff = BACKOFF_INITIAL;
                            p.phase = Phase::Waiting { at: now };
                            self.event(&name, &line);
                        }
                    }
                }
                Some(_) => {}
            }
        }
    }

    fn advance(&mut self, file: &str, now: Instant) {
        let Some(pod) = self.pods.get_mut(file) else { return };
        match &mut pod.phase {
            Phase::Waiting { .. } | Phase::Done if pod.removed => {
                self.pods.remove(file);
            }
            Phase::Waiting { at } if now >= *at && !self.shutting_down => self.start(file, now),
            Phase::Stopping { proc, kill_at } if kill_at.is_some_and(|at| now >= at) => {
                proc.signal_group(Signal::SIGKILL);
                *kill_at = None;
                let name = pod.name.clone();
                self.event(&name, "Grace period over: killed");
            }
            _ => {}
        }
    }

    fn start(&mut self, file: &str, now: Instant) {
        let pod = self.pods.get_mut(file).expect("caller checked");
        let name = pod.name.clone();
        let manifest = match &pod.manifest {
            Ok(m) => m.clone(),
            Err(e) => {
                let e = e.clone();
                pod.phase = Phase::Done;
                self.report(file, e);
                return;
            }
        };
        let container = &manifest.spec.containers[0];
        let vols = match volumes::set_up(&manifest.spec, container) {
            Ok(v) => v,
            Err(e) => {
                pod.phase = Phase::Waiting { at: now + SCAN_EVERY };
                self.report(file, format!("FailedMount: {e}"));
                return;
            }
        };
        for note in &vols.notes {
            self.event(&name, note);
        }
        let log =
            match std::fs::OpenOptions::new().create(true).append(true).open(self.logs.join(format!("{name}.log"))) {
                Ok(f) => f,
                Err(e) => return self.report(file, format!("cannot open the pod log: {e}")),
            };
        let host = launch::Host { name: &self.host, exe: &self.exe };
        let grace = manifest.spec.termination_grace_period_seconds.map_or(DEFAULT_GRACE, Duration::from_secs);
        let pod = self.pods.get_mut(file).expect("caller checked");
        match launch::spawn(&host, container, &vols.binds, &log) {
            Ok(pid) => {
                let proc = ProcRef::of(pid).unwrap_or(ProcRef { pid, start_ticks: 0 });
                pod.starts += 1;
                pod.started_at = Some(SystemTime::now());
                pod.message = None;
                pod.phase = Phase::Running { proc, since: now, grace };
                let restarts = pod.starts - 1;
                self.event(&name, &format!("Started container {} pid {pid} (restarts {restarts})", container.name));
            }
            Err(e) => {
                let delay = pod.backoff;
                pod.backoff = (delay * 2).min(BACKOFF_MAX);
                pod.phase = Phase::Waiting { at: now + delay };
                self.report(file, e);
            }
        }
    }

    /// Stops the pod's process if it runs; a pod not running is dropped (if removed) at once.
    fn stop(&mut self, file: &str, now: Instant, reason: &str, why: &str) {
        let Some(pod) = self.pods.get_mut(file) else { return };
        match &pod.phase {
            Phase::Running { proc, grace, .. } => {
                let (proc, grace) = (*proc, *grace);
                proc.signal_group(Signal::SIGTERM);
                pod.phase = Phase::Stopping { proc, kill_at: Some(now + grace) };
                let name = pod.name.clone();
                self.event(&name, &format!("{reason}: stopping pid {} because {why} (grace {grace:?})", proc.pid));
            }
            Phase::Stopping { .. } => {}
            _ if pod.removed => {
                let name = pod.name.clone();
                self.pods.remove(file);
                self.event(&name, &format!("Removed: {why}"));
            }
            _ => pod.phase = Phase::Waiting { at: now },
        }
    }

    /// Records why a pod cannot start; logs it when the reason is new.
    fn report(&mut self, file: &str, message: String) {
        let Some(pod) = self.pods.get_mut(file) else { return };
        if pod.message.as_deref() != Some(message.as_str()) {
            pod.message = Some(message.clone());
            let name = pod.name.clone();
            self.event(&name, &format!("Warning {message}"));
        }
    }

    /// An event line in the host's kubelet log and in the pod's own log.
    fn event(&mut self, pod: &str, text: &str) {
        let line = format!("{} {} pod {pod}: {text}\n", humantime::format_rfc3339_millis(SystemTime::now()), self.host);
        let _ = self.events.write_all(line.as_bytes());
        if let Ok(mut f) =
            std::fs::OpenOptions::new().create(true).append(true).open(self.logs.join(format!("{pod}.log")))
        {
            let _ = f.write_all(format!("--- kubeha-lab kubelet: {line}").as_bytes());
        }
    }
}

impl Pod {
    fn new(name: String, sha256: String, manifest: Result<manifest::Manifest, String>, now: Instant) -> Pod {
        Pod {
            name,
            sha256,
            manifest,
            phase: Phase::Waiting { at: now },
            starts: 0,
            backoff: BACKOFF_INITIAL,
            started_at: None,
            last_exit: None,
            message: None,
            removed: false,
        }
    }
}

/// The status name of a manifest file: the file name without `.yaml` (or `.yml`, `.json`).
pub fn pod_name(file: &str) -> String {
    [".yaml", ".yml", ".json"].iter().find_map(|ext| file.strip_suffix(ext)).unwrap_or(file).to_string()
}
