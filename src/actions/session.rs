//! A session: everything one command run shares while it works on a cluster's hosts.
//!
//! Every command that touches hosts (`preflight`, `init`, and the ones to come) opens one
//! [`Session`]: it takes the state directory's lock, connects to the hosts through a
//! [`Connector`] (SSH in production, in-memory hosts in tests), and carries the plan, the run's
//! options, progress and phase timings. Phases take a `&Session` and fan out over its hosts with
//! [`Session::each`], the one bounded fan-out; nothing below this layer knows about SSH.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::error::ActionError;
use super::fanout;
use super::lock::{self, StateLock};
use super::progress::Progress;
use super::scratch::Scratch;
use super::wait::WaitOptions;
use crate::host::facts::{self, Facts};
use crate::host::lock::{self as host_lock, Attempt, Holder};
use crate::plan::{Host, Plan, Role};
use crate::transport::{Credentials, Remote, SshHost, SshOptions, TransportError};

/// Opens and closes connections to hosts.
pub trait Connector: Sync {
    type Remote: Remote;

    /// One connection to `host`.
    fn connect(&self, host: &Host) -> impl Future<Output = Result<Self::Remote, TransportError>> + Send;

    /// Ends a connection politely.
    fn close(&self, remote: Self::Remote) -> impl Future<Output = ()> + Send;
}

/// Connects over SSH with the inventory's settings per host.
pub struct SshConnector<'c> {
    pub ssh: SshOptions,
    pub credentials: &'c Credentials,
}

impl Connector for SshConnector<'_> {
    type Remote = SshHost;

    async fn connect(&self, host: &Host) -> Result<SshHost, TransportError> {
        SshHost::connect(host, &self.ssh, self.credentials).await
    }

    async fn close(&self, remote: SshHost) {
        remote.close().await;
    }
}

/// How a run works on hosts.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Hosts worked on at once.
    pub parallel: usize,
    /// Connect, check and compare, but write nothing (the PKI goes to a scratch copy).
    pub dry_run: bool,
    /// How long to wait for components to become healthy, and how often to ask.
    pub wait: WaitOptions,
    /// How long a kubelet may take to notice a changed static-pod manifest (its
    /// `fileCheckFrequency`); rolling restarts give it this long before checking a host.
    pub kubelet_sync: Duration,
    /// Lock every host while the run works on it (commands that write; not in a dry run).
    pub host_lock: Option<HostLockOptions>,
}

/// How a writing command locks its hosts (see [`crate::host::lock`]).
#[derive(Debug, Clone)]
pub struct HostLockOptions {
    /// What the lock names as the holder's command, e.g. `kubeha init`.
    pub command: String,
    /// How long the lock is valid: after that another run may take it over. Longer than the
    /// run can take (its wait timeout and rolling restarts).
    pub ttl: Duration,
    /// Take the lock over even if another run holds it (`--force-lock`).
    pub force: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            parallel: 20,
            dry_run: false,
            wait: WaitOptions { timeout: Duration::from_secs(600), interval: Duration::from_secs(1) },
            kubelet_sync: Duration::from_secs(20),
            host_lock: None,
        }
    }
}

/// One run's hosts, state and bookkeeping.
pub struct Session<'p, R: Remote> {
    pub plan: &'p Plan,
    pub options: SessionOptions,
    pub progress: &'p Progress,
    /// Every host of the plan, in inventory order, with its connection or why there is none.
    pub hosts: Vec<(&'p Host, Result<R, TransportError>)>,
    state_dir: PathBuf,
    scratch: Option<Scratch>,
    phases: Mutex<Vec<(&'static str, Duration)>>,
    lap_started: Mutex<Instant>,
    /// When the run waited on hosts (see [`Session::waiting`]).
    waits: Mutex<Vec<(Instant, Instant)>>,
    /// Facts read in the same command that locked each host, until preflight takes them.
    looked: Mutex<BTreeMap<String, Facts>>,
    /// Hosts locked, and cleared of an interrupted run's temporary files, by this run.
    cleared: Mutex<BTreeSet<String>>,
    _lock: Option<StateLock>,
    /// This run's holder on the hosts it locked.
    host_lock: Option<Holder>,
}

impl<'p, R: Remote> Session<'p, R> {
    /// Takes the state directory's lock (not in a dry run, which writes nothing there), then
    /// connects to every host of `plan`, `parallel` at a time; a host that cannot be reached
    /// does not stop the others (preflight reports it). Connecting is the first phase.
    pub async fn open<C: Connector<Remote = R>>(
        plan: &'p Plan,
        state_dir: &Path,
        options: SessionOptions,
        connector: &C,
        progress: &'p Progress,
    ) -> Result<Session<'p, R>, ActionError> {
        let started = Instant::now();
        let lock = if options.dry_run { None } else { Some(lock::lock(state_dir)?) };
        let hosts = fanout::each(&plan.hosts, options.parallel, |host| async move {
            progress.step(&host.name, format!("connecting to {}", host.ssh.describe(host.address)));
            let result = connector.connect(host).await;
            if let Err(e) = &result {
                progress.finish(&host.name, format!("cannot connect: {e}"));
            }
            result
        })
        .await;
        let mut session = Session {
            plan,
            options,
            progress,
            hosts,
            state_dir: state_dir.to_path_buf(),
            scratch: None,
            phases: Mutex::new(Vec::new()),
            lap_started: Mutex::new(started),
            waits: Mutex::new(Vec::new()),
            looked: Mutex::new(BTreeMap::new()),
            cleared: Mutex::new(BTreeSet::new()),
            _lock: lock,
            host_lock: None,
        };
        if let Some(lock) = session.options.host_lock.clone().filter(|_| !session.options.dry_run)
            && let Err(e) = session.lock_hosts(&lock).await
        {
            session.close(connector).await;
            return Err(e);
        }
        session.lap("connect");
        Ok(session)
    }

    /// Takes every connected host's lock. A host where locking fails is treated as one that
    /// could not be reached (preflight reports it); a host another run holds stops the run,
    /// after the locks taken so far are released. A free lock is taken and the host's facts
    /// read in one remote command: preflight, which every writing command runs next, takes them
    /// from here ([`Session::looked`]) instead of asking again.
    async fn lock_hosts(&mut self, options: &HostLockOptions) -> Result<(), ActionError> {
        let machine = machine_name();
        let holder = Holder::new(format!("{}@{machine}", user_name()), options.command.clone(), options.ttl);
        let connected: Vec<usize> = (0..self.hosts.len()).filter(|&i| self.hosts[i].1.is_ok()).collect();
        let results = {
            let look = first_look();
            let (hosts, holder, machine, look) = (&self.hosts, &holder, machine.as_str(), look.as_str());
            fanout::each(&connected, self.options.parallel, |&i| async move {
                let Ok(remote) = &hosts[i].1 else { unreachable!("only connected hosts") };
                lock_host(remote, holder, look, options.force, machine).await
            })
            .await
            .into_iter()
            .map(|(&i, r)| (i, r))
            .collect::<Vec<_>>()
        };
        self.host_lock = Some(holder);
        let mut held = Vec::new();
        for (i, result) in results {
            let host = &self.hosts[i].0.name;
            match result {
                Ok(Locked { took_over, facts }) => {
                    if let Some(previous) = took_over {
                        tracing::warn!("{host}: took over the host lock of {previous}");
                        self.progress.step(host, format!("took over the host lock of {previous}"));
                    }
                    self.looked.lock().unwrap_or_else(|e| e.into_inner()).insert(host.clone(), *facts);
                    self.cleared.lock().unwrap_or_else(|e| e.into_inner()).insert(host.clone());
                }
                Err(LockFailure::Held(by)) => held.push((host.clone(), by)),
                Err(LockFailure::Transport(e)) => self.hosts[i].1 = Err(e),
            }
        }
        if held.is_empty() { Ok(()) } else { Err(ActionError::HostsLocked { held }) }
    }

    /// Releases the hosts' locks, then closes every connection.
    pub async fn close<C: Connector<Remote = R>>(self, connector: &C) {
        if let Some(holder) = &self.host_lock {
            let released = fanout::each(&self.hosts, self.options.parallel, |(host, conn)| async move {
                match conn {
                    Ok(remote) => host_lock::release(remote, holder).await.map_err(|e| (host.name.clone(), e)),
                    Err(_) => Ok(()),
                }
            })
            .await;
            for (_, result) in released {
                if let Err((host, e)) = result {
                    tracing::warn!("{host}: could not release the host lock: {e}");
                }
            }
        }
        // All at once: each close is a message and, at most, a wait for the server's answer.
        let closing = self.hosts.into_iter().filter_map(|(_, conn)| conn.ok()).map(|remote| connector.close(remote));
        futures::future::join_all(closing).await;
    }

    /// The state directory this run reads and writes: in a dry run, a scratch copy (see
    /// [`Session::use_scratch_state`]).
    pub fn state_dir(&self) -> &Path {
        self.scratch.as_ref().map_or(&self.state_dir, Scratch::path)
    }

    /// In a dry run, works on a throw-away copy of the state directory from here on, so
    /// certificates can be made and rendered without changing the real one.
    pub fn use_scratch_state(&mut self) -> Result<(), ActionError> {
        if self.options.dry_run && self.scratch.is_none() {
            self.scratch = Some(Scratch::of(&self.state_dir).map_err(ActionError::Scratch)?);
        }
        Ok(())
    }

    /// Connected hosts, in inventory order.
    pub fn connected(&self) -> impl Iterator<Item = (&'p Host, &R)> {
        self.hosts.iter().filter_map(|(h, r)| r.as_ref().ok().map(|remote| (*h, remote)))
    }

    /// Connected control planes, in inventory order.
    pub fn control_planes(&self) -> impl Iterator<Item = (&'p Host, &R)> {
        self.connected().filter(|(h, _)| h.role == Role::ControlPlane)
    }

    /// Runs `f` for every item, at most `parallel` at a time, results in the items' order.
    pub async fn each<'a, I, T, F, Fut>(&self, items: &'a [I], f: F) -> Vec<(&'a I, T)>
    where
        F: Fn(&'a I) -> Fut,
        Fut: Future<Output = T>,
    {
        fanout::each(items, self.options.parallel, f).await
    }

    /// Ends the current phase: records how long it took since the previous one ended.
    pub fn lap(&self, phase: &'static str) {
        let mut started = self.lap_started.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        self.phases.lock().unwrap_or_else(|e| e.into_inner()).push((phase, now - *started));
        *started = now;
    }

    /// The phases so far, in order, with their durations.
    pub fn phases(&self) -> Vec<(&'static str, Duration)> {
        self.phases.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `wait`, a wait on hosts rather than work of kubeha's own (the kubelet restarting a
    /// pod, a load balancer reloading, etcd catching up, health checks passing), and records
    /// when it ran, so reports can tell the two apart ([`Session::waited`]).
    pub async fn waiting<T>(&self, wait: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = wait.await;
        self.waits.lock().unwrap_or_else(|e| e.into_inner()).push((started, Instant::now()));
        out
    }

    /// Whether this run locked `host` and cleared it of the temporary files an interrupted run
    /// left ([`first_look`]).
    pub fn cleared(&self, host: &str) -> bool {
        self.cleared.lock().unwrap_or_else(|e| e.into_inner()).contains(host)
    }

    /// The facts read when `host` was locked, once: a later look asks the host again.
    pub fn looked(&self, host: &str) -> Option<Facts> {
        self.looked.lock().unwrap_or_else(|e| e.into_inner()).remove(host)
    }

    /// How long the run has waited on hosts: the time covered by the waits so far, counted once
    /// where waits on several hosts overlap.
    pub fn waited(&self) -> Duration {
        covered(&self.waits.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The time the intervals cover together.
fn covered(intervals: &[(Instant, Instant)]) -> Duration {
    let mut sorted = intervals.to_vec();
    sorted.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, Instant)> = None;
    for (start, end) in sorted {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(Duration::ZERO, |(s, e)| e - s)
}

enum LockFailure {
    /// Another run holds the lock: who, as the lock says.
    Held(String),
    Transport(TransportError),
}

/// A host this run locked, and what it saw there first ([`first_look`]).
struct Locked {
    /// Whose stale lock (or any, with `force`) was taken over, if one was.
    took_over: Option<String>,
    facts: Box<Facts>,
}

/// Locks one host and takes its first `look` ([`first_look`]): in one remote command when the
/// lock is free.
async fn lock_host<R: Remote>(
    remote: &R,
    holder: &Holder,
    look: &str,
    force: bool,
    machine: &str,
) -> Result<Locked, LockFailure> {
    let before = std::time::SystemTime::now();
    let (mut attempt, out) =
        host_lock::try_take_then(remote, holder, Some(look)).await.map_err(LockFailure::Transport)?;
    if let (Attempt::Taken, Some(out)) = (&attempt, out) {
        let facts = facts::from_output(&out.stdout, before, std::time::SystemTime::now());
        return Ok(Locked { took_over: None, facts: Box::new(facts) });
    }
    let taken = |took_over: Option<String>| async {
        let before = std::time::SystemTime::now();
        let out = remote.run(look, b"").await.map_err(LockFailure::Transport)?;
        let facts = facts::from_output(&out.stdout, before, std::time::SystemTime::now());
        Ok(Locked { took_over, facts: Box::new(facts) })
    };
    // Twice at most: a takeover that loses to another run's takeover reports that run.
    for _ in 0..2 {
        let found = match attempt {
            Attempt::Taken => return taken(None).await,
            Attempt::Held(found) => found,
        };
        let (described, old, stale) = match &found {
            Ok(h) => (h.describe(), h.to_text(), h.is_stale(host_lock::now(), machine, process_alive)),
            Err(text) => (format!("an unreadable lock ({:?})", text.trim()), text.clone(), false),
        };
        if !(force || stale) {
            return Err(LockFailure::Held(described));
        }
        attempt = host_lock::take_over(remote, holder, &old).await.map_err(LockFailure::Transport)?;
        if attempt == Attempt::Taken {
            return taken(Some(described)).await;
        }
    }
    match attempt {
        Attempt::Held(Ok(h)) => Err(LockFailure::Held(h.describe())),
        Attempt::Held(Err(text)) => Err(LockFailure::Held(format!("an unreadable lock ({:?})", text.trim()))),
        Attempt::Taken => taken(None).await,
    }
}

/// What a writing run does first on a host it has just locked: removes the temporary files an
/// interrupted run left in kubeha's directories (nothing else writes there while the lock is
/// held, so a fresh host can then be written without comparing, see `rollout::Policy::fresh`),
/// then reads the host's facts.
fn first_look() -> String {
    let dirs: Vec<std::path::PathBuf> = crate::host::layout::WRITTEN_DIRS.iter().map(Into::into).collect();
    let clean = crate::transport::shell::clean_temp_script(&dirs).expect("the layout's directories are absolute");
    format!(
        "# gathering host facts, after removing stale temporary files\n{{\n{clean}}} >/dev/null\n{}",
        facts::script()
    )
}

/// Whether a process of this machine still runs.
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    !matches!(nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH))
}

/// The operator's user name, for the lock.
fn user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| format!("uid {}", nix::unistd::getuid()))
}

/// This machine's name, for the lock.
fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_waits_count_once() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        assert_eq!(covered(&[]), Duration::ZERO);
        // Two hosts waited at once (100-300 and 200-400), then one alone (500-600).
        let waits = [(at(500), at(600)), (at(100), at(300)), (at(200), at(400))];
        assert_eq!(covered(&waits), Duration::from_millis(400));
        // One wait inside another, and two that touch.
        assert_eq!(covered(&[(at(0), at(100)), (at(10), at(20)), (at(100), at(150))]), Duration::from_millis(150));
    }
}
