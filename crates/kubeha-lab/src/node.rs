//! A host's supervisor (`kubeha-lab node`): the host's init, sshd keeper and kubelet.
//!
//! `up` starts it as `setsid ip netns exec <ns> unshare --mount --uts --propagation private
//! kubeha-lab node --dir <dir> --host <host>`, so it runs inside the host's network namespace with
//! a mount and UTS namespace of its own. It configures `eth0`, bind-mounts the host's private
//! directories and files, sets the hostname, starts `sshd -D` and then runs the kubelet stand-in
//! loop. It is the child subreaper of everything in the host, so daemons started over SSH (e.g.
//! with `setsid ... &`) are reparented to it and stopped with the host.
//!
//! Signals: TERM/INT/HUP stop the host (pods TERM then KILL after their grace period, then sshd
//! and its sessions, then anything else left below the supervisor); USR1 stops sshd (listener and
//! sessions); USR2 starts a fresh sshd. Status goes to `status.json` in the host directory.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{MsFlags, mount};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use super::kubelet::Kubelet;
use super::process::{ProcRef, descendants, terminate};
use super::state::{HostState, State};
use super::status::NodeStatus;
use super::{hostfs, sshd};

/// Longest a host waits for its pods to stop before killing what is left.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(60);

/// Runs the supervisor of `host` until it is told to stop.
pub fn run(dir: &Path, host: &str) -> ExitCode {
    match Supervisor::set_up(dir, host) {
        Ok(mut s) => {
            s.main_loop();
            ExitCode::SUCCESS
        }
        Err(e) => {
            log(&format!("cannot start lab host {host}: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn log(text: &str) {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    let _ = writeln!(std::io::stderr(), "{now} {text}");
}

struct Supervisor {
    host: HostState,
    host_dir: PathBuf,
    signals: SignalFd,
    kubelet: Kubelet,
    sshd: Option<ProcRef>,
    stopping: bool,
    last_status: String,
}

impl Supervisor {
    fn set_up(dir: &Path, name: &str) -> Result<Supervisor, String> {
        let state = State::load(dir).map_err(|e| e.to_string())?;
        let host = state.host(name).map_err(|e| e.to_string())?.clone();
        let host_dir = state.host_dir(name);
        // Never touch the machine's own mounts or hostname: refuse to run outside the namespaces
        // `up` made for this host.
        let own = super::state::namespaces();
        if own.len() != 3 || own.iter().any(|ns| state.machine_namespaces.contains(ns)) {
            return Err(format!(
                "not in namespaces of its own ({own:?}, machine {:?}); start hosts with `kubeha-lab up`",
                state.machine_namespaces
            ));
        }
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("cannot become a subreaper: {e}"))?;
        let mut mask = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGCHLD] {
            mask.add(s);
        }
        mask.thread_block().map_err(|e| format!("cannot block signals: {e}"))?;
        let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(|e| format!("cannot open a signalfd: {e}"))?;

        configure_network(&host)?;
        for m in hostfs::mounts(&host_dir) {
            mount(Some(&m.source), &m.target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .map_err(|e| format!("cannot bind {} on {}: {e}", m.source.display(), m.target.display()))?;
        }
        std::fs::write("/proc/sys/kernel/hostname", &host.name).map_err(|e| format!("cannot set the hostname: {e}"))?;

        let events = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(host_dir.join("kubelet.log"))
            .map_err(|e| format!("cannot open kubelet.log: {e}"))?;
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the kubeha-lab binary: {e}"))?;
        let kubelet = Kubelet::new(
            &host.name,
            &exe,
            Path::new("/etc/kubernetes/manifests"),
            Path::new("/var/lib/kubelet/config.yaml"),
            &host_dir.join("pods"),
            events,
        );
        let mut s =
            Supervisor { host, host_dir, signals, kubelet, sshd: None, stopping: false, last_status: String::new() };
        s.start_sshd()?;
        log(&format!("lab host {} is up at {}", s.host.name, s.host.address));
        Ok(s)
    }

    fn main_loop(&mut self) {
        loop {
            while let Ok(Some(info)) = self.signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP) => self.stopping = true,
                    Ok(Signal::SIGUSR1) => self.stop_sshd(),
                    Ok(Signal::SIGUSR2) if self.sshd.is_none() => {
                        if let Err(e) = self.start_sshd() {
                            log(&e);
                        }
                    }
                    _ => {}
                }
            }
            if self.stopping {
                return self.shut_down();
            }
            self.reap();
            self.kubelet.tick(Instant::now());
            self.write_status();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn shut_down(&mut self) {
        log(&format!("lab host {} is stopping", self.host.name));
        self.write_status();
        self.kubelet.shut_down(Instant::now());
        let deadline = Instant::now() + SHUTDOWN_LIMIT;
        while !self.kubelet.idle() && Instant::now() < deadline {
            self.reap();
            self.kubelet.tick(Instant::now());
            self.write_status();
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kubelet.kill_all();
        self.reap();
        self.stop_sshd();
        // Whatever else runs in the host (daemons started over SSH) goes with it.
        let rest = descendants(std::process::id());
        if !rest.is_empty() {
            log(&format!(
                "stopping {} leftover process(es): {:?}",
                rest.len(),
                rest.iter().map(|p| p.pid).collect::<Vec<_>>()
            ));
        }
        terminate(&rest, Duration::from_secs(3), || self.reap());
        self.reap();
        self.write_status();
        log(&format!("lab host {} stopped", self.host.name));
    }

    /// Collects every exited child and tells whoever owned it.
    fn reap(&mut self) {
        loop {
            let (pid, how) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exit status {code}")),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, format!("signal {}", sig.as_str())),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let pid = pid.as_raw() as u32;
            if self.sshd.is_some_and(|s| s.pid == pid) {
                log(&format!("sshd {pid} exited ({how})"));
                self.sshd = None;
            } else {
                self.kubelet.on_exit(pid, &how, Instant::now());
            }
        }
    }

    fn start_sshd(&mut self) -> Result<(), String> {
        let config = sshd::config_file(&self.host_dir);
        let exe = std::env::current_exe().map_err(|e| format!("cannot find the kubeha-lab binary: {e}"))?;
        let child = Command::new(exe)
            .args(["pod-exec", "--", "/usr/sbin/sshd", "-D"])
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(sshd::log_file(&self.host_dir))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start /usr/sbin/sshd: {e}"))?;
        let pid = child.id();
        let proc = ProcRef::of(pid).unwrap_or(ProcRef { pid, start_ticks: 0 });
        self.sshd = Some(proc);
        let addr = SocketAddr::from((self.host.address, self.host.ssh_port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            self.reap();
            if self.sshd.is_none() {
                return Err(format!("sshd exited at once; see {}", sshd::log_file(&self.host_dir).display()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                log(&format!("sshd {pid} listens on {addr}"));
                self.write_status();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("sshd {pid} does not listen on {addr} after 10 s"))
    }

    /// Stops the sshd listener and every session below it.
    fn stop_sshd(&mut self) {
        let Some(sshd) = self.sshd else { return };
        let mut procs = vec![sshd];
        procs.extend(descendants(sshd.pid));
        log(&format!("stopping sshd {} and {} session process(es)", sshd.pid, procs.len() - 1));
        terminate(&procs, Duration::from_secs(3), || self.reap());
        self.reap();
        self.sshd = None;
        self.write_status();
    }

    fn write_status(&mut self) {
        let status = NodeStatus {
            host: self.host.name.clone(),
            supervisor: ProcRef::of(std::process::id()),
            sshd: self.sshd,
            stopping: self.stopping,
            pods: self.kubelet.statuses(),
        };
        let text = serde_json::to_string(&status).unwrap_or_default();
        if text != self.last_status {
            match status.save(&self.host_dir) {
                Ok(()) => self.last_status = text,
                Err(e) => log(&format!("cannot write status: {e}")),
            }
        }
    }
}

/// `lo` up, the host's address on `eth0` (IPv6 off there), no default route, and IP forwarding
/// on as on a prepared Kubernetes node (only within this host's namespace).
fn configure_network(host: &HostState) -> Result<(), String> {
    for knob in ["default", "eth0"] {
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{knob}/disable_ipv6"), "1");
    }
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
    let batch = format!("link set lo up\naddr add {}/24 dev eth0\nlink set eth0 up\n", host.address);
    super::process::run_with_stdin("ip", &["-batch", "-"], &batch).map(drop).map_err(|e| e.to_string())
}
