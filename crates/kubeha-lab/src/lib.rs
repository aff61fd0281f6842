//! The local lab: hosts made of network namespaces on a bridge, each with its own sshd and a
//! kubelet stand-in inside its own mount namespace (see `docs/lab.md`). A crate of its own beside
//! kubeha: it uses kubeha's library (inventory parsing, versions, the HTTPS client, text tables),
//! and kubeha knows nothing of it.
//!
//! [`Lab::up`] builds a lab from a [`LabSpec`] and writes an inventory for it; [`Lab::open`]
//! attaches to one built earlier (from `<dir>/lab.json`); [`Lab::down`] takes it apart. A `Lab`
//! made by `up` tears itself down when dropped (so a failing test leaves nothing behind) unless
//! [`Lab::keep`] was called. The rest of the API drives hosts the way end-to-end tests need:
//! commands inside a host, its files as the machine sees them, cutting it off the network,
//! stopping its sshd, reading its command log and its static pods.
//!
//! Module map: [`spec`] names and addresses, `state` the state file, `net` bridge and veths,
//! `hostfs` per-host files and mounts, `sshd` keys and config, [`ssh_setup`] logins beyond the
//! inventory's (for tests of SSH clients), `inventory` the written inventory,
//! `up`/`down` the two lifecycles, [`node`] the per-host supervisor, [`kubelet`] the static-pod
//! runner, [`podexec`] private mounts for pods, [`standin`] the component stand-ins,
//! [`https_server`] the HTTPS server they share.

pub mod cli;
mod describe;
mod down;
mod hostfs;
pub mod https_server;
mod inventory;
pub mod kubelet;
mod net;
pub mod node;
pub mod podexec;
mod process;
mod sessions;
pub mod spec;
pub mod ssh_setup;
mod sshd;
pub mod standin;
mod state;
mod status;
mod up;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

pub use hostfs::OPS_USER;
pub use process::ProcRef;
pub use spec::{DEFAULT_KUBERNETES_VERSION, LabSpec, LabUser, default_dir};
pub use ssh_setup::{ExtraUser, HostKeyType, SshSetup, Sudo};
pub use status::{NodeStatus, PodStatus};

use state::State;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    #[error("lab spec: {field}: {message}")]
    Spec { field: String, message: String },
    #[error("the lab needs root (network namespaces, bind mounts); run it with sudo or as root")]
    NotRoot,
    #[error("{program} is not installed; install the Debian package {package}")]
    MissingTool { program: String, package: String },
    #[error("{what} is in use: {hint}")]
    InUse { what: String, hint: String },
    #[error("a lab is already up in {} (or was not taken down); run `kubeha-lab down --dir {}` first", dir.display(), dir.display())]
    AlreadyUp { dir: PathBuf },
    #[error("no lab in {}: no lab.json there (was it taken down already?)", dir.display())]
    NotFound { dir: PathBuf },
    #[error("no host {host:?} in this lab (hosts: {known})")]
    NoSuchHost { host: String, known: String },
    #[error("lab host {host} is not running (its supervisor is gone); take the lab down and up again")]
    HostDown { host: String },
    #[error("lab host {host} failed to start: {log}")]
    HostFailed { host: String, log: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    State { path: PathBuf, message: String },
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command { command: String, status: String, stderr: String },
    #[error("timed out after {} waiting for {what}", humantime::format_duration(*after))]
    Timeout { what: String, after: Duration },
    #[error("the lab in {} was not fully removed; still there: {}; run `kubeha-lab down --dir {}` again", dir.display(), parts.join(", "), dir.display())]
    Leftovers { dir: PathBuf, parts: Vec<String> },
}

/// One lab host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabHost {
    pub name: String,
    pub address: Ipv4Addr,
    /// The port its sshd listens on (22 unless [`SshSetup::ports`] says otherwise).
    pub ssh_port: u16,
    pub control_plane: bool,
}

/// A running lab.
pub struct Lab {
    state: State,
    hosts: Vec<LabHost>,
    /// Supervisors this process started (reaped here so they do not linger as zombies).
    children: Vec<Child>,
    teardown_on_drop: bool,
}

impl Lab {
    fn new(state: State, teardown_on_drop: bool) -> Lab {
        let hosts = state
            .hosts
            .iter()
            .map(|h| LabHost {
                name: h.name.clone(),
                address: h.address,
                ssh_port: h.ssh_port,
                control_plane: h.control_plane,
            })
            .collect();
        Lab { state, hosts, children: Vec::new(), teardown_on_drop }
    }

    /// Builds the lab: hosts, sshds, kubelet stand-ins, known_hosts and inventory. Needs root.
    pub fn up(spec: LabSpec) -> Result<Lab, LabError> {
        up::up(spec)
    }

    /// Attaches to a lab created earlier (from its state file in `dir`). Dropping it leaves the
    /// lab running.
    pub fn open(dir: &Path) -> Result<Lab, LabError> {
        Ok(Lab::new(State::load(dir)?, false))
    }

    /// Stops every process the lab started (by PID) and removes its namespaces and links. The
    /// lab directory stays (logs, inventory) without its state file.
    pub fn down(mut self) -> Result<(), LabError> {
        self.teardown_on_drop = false;
        down::down(&mut self.state, &mut self.children)
    }

    /// Leaves the lab running when this value is dropped (the CLI's `up`).
    pub fn keep(&mut self) {
        self.teardown_on_drop = false;
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn dir(&self) -> &Path {
        &self.state.dir
    }

    pub fn inventory_path(&self) -> PathBuf {
        inventory::path(&self.state.dir)
    }

    /// Writes `<dir>/<file>`: the lab's inventory listing only `hosts` (in lab order). A cluster
    /// brought up with it runs on some of the lab's hosts; the full inventory
    /// ([`Lab::inventory_path`]) then lists the others, for `kubeha join-node`.
    pub fn write_inventory_of(&self, file: &str, hosts: &[&str]) -> Result<PathBuf, LabError> {
        let mut state = self.state.clone();
        state.hosts.retain(|h| hosts.contains(&h.name.as_str()));
        let path = self.state.dir.join(file);
        std::fs::write(&path, inventory::render(&state))
            .map_err(|source| LabError::Io { path: path.clone(), source })?;
        Ok(path)
    }

    /// The private key the inventory logs in with.
    pub fn identity_file(&self) -> PathBuf {
        sshd::identity_file(&self.state.dir)
    }

    /// The known_hosts file the inventory names (every host's key under its address).
    pub fn known_hosts_file(&self) -> PathBuf {
        sshd::known_hosts_file(&self.state.dir)
    }

    /// The SSH user the inventory names (`root` or `ops`).
    pub fn ssh_user(&self) -> &'static str {
        self.state.user.name()
    }

    pub fn hosts(&self) -> &[LabHost] {
        &self.hosts
    }

    pub fn host(&self, name: &str) -> Result<&LabHost, LabError> {
        self.state.host(name)?;
        Ok(self.hosts.iter().find(|h| h.name == name).expect("state and hosts agree"))
    }

    pub fn vip(&self) -> Ipv4Addr {
        spec::host_address(self.state.subnet, 10)
    }

    /// The bridge's address in the machine's namespace (198.18.<subnet>.1).
    pub fn gateway(&self) -> Ipv4Addr {
        spec::host_address(self.state.subnet, 1)
    }

    /// The bridge all hosts hang off.
    pub fn bridge(&self) -> &str {
        &self.state.bridge
    }

    /// The named network namespace of a host (for `ip netns exec`).
    pub fn netns(&self, host: &str) -> Result<&str, LabError> {
        Ok(&self.state.host(host)?.netns)
    }

    /// The host's supervisor, if it runs.
    pub fn supervisor(&self, host: &str) -> Result<Option<ProcRef>, LabError> {
        Ok(self.state.host(host)?.supervisor.filter(ProcRef::alive))
    }

    /// Every process the lab recorded: supervisors, sshds and pods.
    pub fn recorded_processes(&self) -> Vec<ProcRef> {
        let mut out = Vec::new();
        for h in &self.state.hosts {
            out.extend(h.supervisor);
            if let Ok(Some(s)) = NodeStatus::load(&self.state.host_dir(&h.name)) {
                out.extend(s.sshd);
                out.extend(
                    s.pods
                        .iter()
                        .filter_map(|p| p.pid.map(|pid| ProcRef::of(pid).unwrap_or(ProcRef { pid, start_ticks: 0 }))),
                );
            }
        }
        out
    }

    /// `ssh` to a host as the inventory's user, checking its key against the lab's known_hosts;
    /// append the remote command with `.arg(...)`.
    pub fn ssh_command(&self, host: &str) -> Result<Command, LabError> {
        self.ssh_command_as(host, self.ssh_user())
    }

    /// `ssh` to a host as `user` (`root` and `ops` can log in everywhere).
    pub fn ssh_command_as(&self, host: &str, user: &str) -> Result<Command, LabError> {
        let h = self.host(host)?;
        let mut cmd = Command::new("/usr/bin/ssh");
        cmd.arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(self.identity_file())
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts_file().display()))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
            .args(["-o", "LogLevel=ERROR", "-l", user, "-p", &h.ssh_port.to_string()])
            .arg(h.address.to_string());
        Ok(cmd)
    }

    /// `nsenter` into a host's network, mount and UTS namespaces (as root, not over SSH); append
    /// the program and its arguments.
    pub fn exec_command(&self, host: &str) -> Result<Command, LabError> {
        let pid = self.supervisor(host)?.ok_or_else(|| LabError::HostDown { host: host.to_string() })?.pid;
        let mut cmd = process::command("nsenter");
        cmd.args(["-t", &pid.to_string(), "-n", "-m", "-u", "--"]);
        Ok(cmd)
    }

    /// Runs a program inside a host (see [`Lab::exec_command`]) and captures its output.
    pub fn exec<S: AsRef<std::ffi::OsStr>>(&self, host: &str, argv: &[S]) -> Result<Output, LabError> {
        let mut cmd = self.exec_command(host)?;
        cmd.args(argv);
        cmd.output().map_err(|source| LabError::Spawn { program: "nsenter".into(), source })
    }

    /// Runs `sh -c script` inside a host; fails unless it exits 0; returns its stdout.
    pub fn sh(&self, host: &str, script: &str) -> Result<String, LabError> {
        let out = self.exec(host, &["sh", "-c", script])?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(LabError::Command {
                command: format!("{host}: sh -c {script:?}"),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Where the machine keeps the file a host sees at `path` (`<dir>/hosts/<h>/etc-kubernetes/...`
    /// for `/etc/kubernetes/...`); `path` itself where the host shares the machine's file.
    pub fn host_path(&self, host: &str, path: impl AsRef<Path>) -> Result<PathBuf, LabError> {
        self.state.host(host)?;
        Ok(hostfs::machine_path(&self.state.host_dir(host), path.as_ref()))
    }

    /// `<dir>/hosts/<host>`: the host's logs, status and private directories.
    pub fn host_dir(&self, host: &str) -> Result<PathBuf, LabError> {
        self.state.host(host)?;
        Ok(self.state.host_dir(host))
    }

    /// Detaches a host from the bridge: it keeps running but reaches nobody, nobody reaches it.
    pub fn cut(&self, host: &str) -> Result<(), LabError> {
        net::cut(self.state.host(host)?)
    }

    /// Attaches a cut host to the bridge again.
    pub fn reconnect(&self, host: &str) -> Result<(), LabError> {
        net::reconnect(&self.state.bridge, self.state.host(host)?)
    }

    /// Stops a host's sshd: the listener and every session below it. Returns once it is gone.
    pub fn ssh_stop(&self, host: &str) -> Result<(), LabError> {
        self.signal_supervisor(host, Signal::SIGUSR1)?;
        self.wait_node(host, "sshd to stop", |s| s.sshd.is_none())
    }

    /// Starts a fresh sshd on a host. Returns once it accepts connections.
    pub fn ssh_start(&self, host: &str) -> Result<(), LabError> {
        self.signal_supervisor(host, Signal::SIGUSR2)?;
        self.wait_node(host, "sshd to start", |s| s.sshd.is_some_and(|p| p.alive()))
    }

    /// Every command line the host's sshd was asked to run, in order.
    pub fn ssh_command_log(&self, host: &str) -> Result<Vec<String>, LabError> {
        let path = sshd::command_log(&self.host_dir(host)?);
        let bytes = std::fs::read(&path).map_err(|source| LabError::Io { path, source })?;
        Ok(sshd::parse_command_log(&bytes))
    }

    /// The host's ed25519 public host key file (`ssh_host_ed25519_key.pub`).
    pub fn ssh_host_key(&self, host: &str) -> Result<PathBuf, LabError> {
        Ok(sshd::host_key(&self.host_dir(host)?).with_extension("pub"))
    }

    /// The host's sshd log (sshd's `-E` file, at the lab's `LogLevel`).
    pub fn sshd_log(&self, host: &str) -> Result<PathBuf, LabError> {
        Ok(sshd::log_file(&self.host_dir(host)?))
    }

    /// The uid of `user` on a host (from the host's own `/etc/passwd`), if the host has the user.
    pub fn uid(&self, host: &str, user: &str) -> Result<Option<u32>, LabError> {
        let path = self.host_path(host, "/etc/passwd")?;
        let text = std::fs::read_to_string(&path).map_err(|source| LabError::Io { path, source })?;
        Ok(text
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f[0] == user)
            .and_then(|f| f.get(2)?.parse().ok()))
    }

    /// The host's supervisor status (sshd and pods), as last written.
    pub fn node_status(&self, host: &str) -> Result<Option<NodeStatus>, LabError> {
        NodeStatus::load(&self.host_dir(host)?)
    }

    /// The host's static pods.
    pub fn pods(&self, host: &str) -> Result<Vec<PodStatus>, LabError> {
        Ok(self.node_status(host)?.map(|s| s.pods).unwrap_or_default())
    }

    pub fn pod(&self, host: &str, pod: &str) -> Result<Option<PodStatus>, LabError> {
        Ok(self.pods(host)?.into_iter().find(|p| p.name == pod))
    }

    /// Waits until the pod exists and `ready` holds for it; returns its status then.
    pub fn wait_pod(
        &self,
        host: &str,
        pod: &str,
        timeout: Duration,
        mut ready: impl FnMut(&PodStatus) -> bool,
    ) -> Result<PodStatus, LabError> {
        wait_for(timeout, &format!("pod {pod} on {host}"), || self.pod(host, pod).ok().flatten().filter(|p| ready(p)))
    }

    /// A pod's stdout and stderr (and the kubelet's events about it).
    pub fn pod_log(&self, host: &str, pod: &str) -> Result<PathBuf, LabError> {
        Ok(self.host_dir(host)?.join("pods").join(format!("{pod}.log")))
    }

    /// The host's kubelet event log.
    pub fn kubelet_log(&self, host: &str) -> Result<PathBuf, LabError> {
        Ok(self.host_dir(host)?.join("kubelet.log"))
    }

    fn signal_supervisor(&self, host: &str, signal: Signal) -> Result<(), LabError> {
        let sup = self.supervisor(host)?.ok_or_else(|| LabError::HostDown { host: host.to_string() })?;
        if sup.signal(signal) { Ok(()) } else { Err(LabError::HostDown { host: host.to_string() }) }
    }

    fn wait_node(&self, host: &str, what: &str, done: impl Fn(&NodeStatus) -> bool) -> Result<(), LabError> {
        wait_for(Duration::from_secs(20), &format!("{what} on {host}"), || {
            self.node_status(host).ok().flatten().filter(|s| done(s)).map(drop)
        })
    }

    fn reap_children(&mut self) {
        for c in &mut self.children {
            let _ = c.try_wait();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.teardown_on_drop {
            self.teardown_on_drop = false;
            if let Err(e) = down::down(&mut self.state, &mut self.children) {
                eprintln!("kubeha-lab: tearing down lab {}: {e}", self.state.name);
            }
        }
    }
}

/// Polls `f` (every 100 ms) until it returns `Some`, or fails after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(LabError::Timeout { what: what.to_string(), after: timeout });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
