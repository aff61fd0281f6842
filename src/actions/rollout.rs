//! Rolling rendered files out to a cluster without losing etcd quorum or the endpoint.
//!
//! [`converge`] is the one way kubeha changes hosts' files: it compares every host's files with
//! what was rendered (in parallel), then writes only what differs, each file atomically. How
//! running static pods are treated is an input, the [`Restart`] policy. Hosts where no running
//! pod restarts (a first install, workers, unchanged hosts) are written all at once; control
//! planes whose running pods restart are rolled one at a time, each behind [`Gates`]: before it,
//! the rest of the cluster must be able to spare it; after it, it must be back.
//!
//! The kubelet restarts a static pod only when its manifest changes. Every manifest kubeha
//! renders carries a hash of the files the pod mounts (`render::INPUTS_HASH_ANNOTATION`), so a
//! certificate-only change changes the manifests of exactly the pods that use it, and the
//! kubelet notices; [`Restart::Also`] restarts named pods even when nothing they use changed.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::ActionError;
use super::preflight::Outcome;
use super::session::Session;
use super::wait::Health;
use crate::files::File;
use crate::host::files::{self, HostPush, PushReport};
use crate::host::layout::{RELOADED_IN_PLACE, manifest};
use crate::host::pods;
use crate::plan::{Host, Role};
use crate::transport::{Remote, TransportError};

/// What happens to running static pods when their files change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// Pods whose manifest changed restart; since manifests carry a hash of everything the pod
    /// mounts, that includes pods whose certificates or configs changed. `init`'s policy.
    Changed,
    /// As `Changed`, and these pods (by name, e.g. `kube-apiserver`) restart on every control
    /// plane even where nothing they use changed: their manifests get a new restart stamp.
    Also { pods: Vec<String>, stamp: String },
    /// No running pod restarts: every other file is written, manifests of running pods are
    /// left as they are (for components that reload their files themselves).
    Never,
}

/// How a rollout treats running pods, and in which order it rolls control planes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub restart: Restart,
    /// Hosts rolled after every other, in inventory order otherwise: the VIP holder goes last,
    /// so a restart of its keepalived moves the VIP once, not once per host.
    pub last: Vec<String>,
    /// Where each host keeps a copy of every file the rollout replaces or removes there,
    /// made just before it is written (e.g. `/etc/kubernetes/kubeha/backup/<timestamp>`).
    pub backup: Option<PathBuf>,
    /// Hosts preflight found fresh (no marker, empty manifests directory: nothing of kubeha's
    /// and no static pod). Every file is written there without asking the host what it has
    /// first, a round trip fewer; the session cleared any temporary files of an interrupted run
    /// when it locked them (`Session::open`).
    pub fresh: Vec<String>,
}

impl Policy {
    pub fn new(restart: Restart) -> Policy {
        Policy { restart, last: Vec::new(), backup: None, fresh: Vec::new() }
    }

    /// Writes everything on these fresh hosts without comparing first (see [`Policy::fresh`]).
    pub fn fresh(mut self, hosts: impl IntoIterator<Item = String>) -> Policy {
        self.fresh.extend(hosts);
        self
    }

    /// Backs up, on each host, every file replaced or removed there into `dir` first.
    pub fn backup(mut self, dir: impl Into<PathBuf>) -> Policy {
        self.backup = Some(dir.into());
        self
    }

    pub fn last(mut self, hosts: impl IntoIterator<Item = String>) -> Policy {
        self.last.extend(hosts);
        self
    }
}

/// Health and quorum checks around a host whose running pods restart.
pub trait Gates<R: Remote> {
    /// Before `host` is touched: the rest of the cluster can spare it (every other etcd member
    /// healthy, so quorum survives the restart).
    fn before(&self, session: &Session<'_, R>, host: &Host) -> impl Future<Output = Result<(), ActionError>>;

    /// After `host`'s files are written and the kubelet had time to act: it is healthy again
    /// and the cluster has every member.
    fn after(&self, session: &Session<'_, R>, host: &Host, remote: &R)
    -> impl Future<Output = Result<(), ActionError>>;
}

/// What a rollout did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct Rollout {
    /// Per host, in inventory order.
    pub reports: Vec<(String, PushReport)>,
}

/// Brings every connected host named in `files` in line with its files. `previous` is,
/// per host, what kubeha wrote there last time (the host marker's list): those files no longer
/// rendered are removed. In a dry run, only compares.
pub async fn converge<R: Remote, G: Gates<R>>(
    session: &Session<'_, R>,
    files: &BTreeMap<String, Vec<File>>,
    previous: &BTreeMap<String, Vec<PathBuf>>,
    policy: &Policy,
    gates: &G,
) -> Result<Rollout, ActionError> {
    let stamped = stamp(files, &policy.restart);
    let files = stamped.as_ref().unwrap_or(files);
    let pushes = prepare_all(session, files, previous, policy).await?;
    let reports: Vec<(String, PushReport)> = pushes.iter().map(|(h, _, p)| (h.name.clone(), p.report())).collect();
    let progress = session.progress;
    if session.options.dry_run {
        for (host, report) in &reports {
            progress.finish(host, report.summary(true));
        }
        return Ok(Rollout { reports });
    }

    let (mut rolling, at_once): (Vec<_>, Vec<_>) =
        pushes.into_iter().partition(|(h, _, p)| h.role == Role::ControlPlane && p.restarts_pods());
    // A stable sort: inventory order, with the hosts to roll last at the end.
    rolling.sort_by_key(|(h, _, _)| policy.last.contains(&h.name));
    let backup = policy.backup.as_deref();
    let results = session
        .each(&at_once, |(host, remote, push)| async move {
            let result = write_host(session, host, *remote, push, backup).await;
            match &result {
                Ok(()) if host.role == Role::Worker => progress.finish(&host.name, push.report().summary(false)),
                Ok(()) => progress.step(&host.name, push.report().summary(false)),
                Err(e) => progress.finish(&host.name, format!("failed: {e}")),
            }
            result
        })
        .await;
    let failures: Vec<TransportError> = results.into_iter().filter_map(|(_, r)| r.err()).collect();
    if !failures.is_empty() {
        return Err(ActionError::Hosts { step: "writing files", failures });
    }

    for (i, (host, remote, push)) in rolling.iter().enumerate() {
        roll(session, host, *remote, push, gates, backup).await.map_err(|(written, source)| ActionError::Stopped {
            host: host.name.clone(),
            written,
            rolled: rolling[..i].iter().map(|(h, _, _)| h.name.clone()).collect(),
            untouched: rolling[i + 1..].iter().map(|(h, _, _)| h.name.clone()).collect(),
            backup: policy.backup.clone(),
            source: Box::new(source),
        })?;
    }
    Ok(Rollout { reports })
}

/// Renders the PKI now in the session's state directory for the hosts preflight `found` and
/// rolls it out with [`Restart::Changed`] behind the [`Health`] gates, the VIP holders last and
/// every replaced file backed up into `backup` on its host; then waits for the whole cluster
/// (not in a dry run). The step every certificate command ends with.
pub async fn certificates<R: Remote>(
    session: &Session<'_, R>,
    found: &Outcome,
    backup: &Path,
) -> Result<Rollout, ActionError> {
    let plan = session.plan;
    let pki = crate::pki::load(plan, session.state_dir())?;
    let files = crate::render::render(&found.with_node_settings(plan), &pki)?;
    session.lap("render");
    let health = Health::new(plan, &pki, session.options.wait.interval)?;
    let policy = Policy::new(Restart::Changed).last(found.vip_holders(plan)).backup(backup);
    let rollout = converge(session, &files, &found.previous_files(), &policy, &health).await?;
    session.lap("push");
    if !session.options.dry_run {
        session.waiting(health.cluster(session)).await?;
        session.lap("wait");
    }
    Ok(rollout)
}

/// Rolls one control plane: its gate before, its files, the kubelet's sync period, its gate
/// after. On failure, whether its files were written, and why.
async fn roll<R: Remote, G: Gates<R>>(
    session: &Session<'_, R>,
    host: &Host,
    remote: &R,
    push: &HostPush<'_>,
    gates: &G,
    backup: Option<&Path>,
) -> Result<(), (bool, ActionError)> {
    let progress = session.progress;
    session.waiting(gates.before(session, host)).await.map_err(|e| (false, e))?;
    progress.note(format!("{}: restarting {} (one host at a time)", host.name, push.restarting_pods().join(", ")));
    if let Some(dir) = backup {
        // Nothing is written before the backup is complete: a failure here leaves the host as it was.
        progress.step(&host.name, format!("backing up the files it replaces to {}", dir.display()));
        push.back_up(remote, dir).await.map_err(|e| (false, ActionError::host("backing up files", e)))?;
    }
    let watched = push.watched_pods(session.plan);
    let kubelet_sync = session.options.kubelet_sync;
    // Every restarting pod must be one kubeha can watch; otherwise the whole sync period.
    let before = match kubelet_sync.is_zero() || watched.len() != push.restarting.len() {
        true => None,
        false => pods::processes(remote, &watched).await.map_err(|e| (false, ActionError::host("listing pods", e)))?,
    };
    write_host(session, host, remote, push, None).await.map_err(|e| (true, ActionError::host("writing files", e)))?;
    session
        .waiting(async {
            await_restarts(session, host, remote, &watched, before.as_deref()).await?;
            gates.after(session, host, remote).await
        })
        .await
        .map_err(|e| (true, e))?;
    progress.step(&host.name, push.report().summary(false));
    Ok(())
}

/// Waits until the kubelet has replaced the processes of the pods a host's new files restart
/// (at most `--kubelet-sync`), so the health gates judge the new pods. Where the host cannot
/// list them (`before` is `None`), or a pod kubeha does not know restarts, waits the whole
/// sync period as the kubelet may take that long.
async fn await_restarts<R: Remote>(
    session: &Session<'_, R>,
    host: &Host,
    remote: &R,
    watched: &[pods::Watched],
    before: Option<&[std::collections::BTreeSet<pods::Process>]>,
) -> Result<(), ActionError> {
    let (progress, limit) = (session.progress, session.options.kubelet_sync);
    let names: Vec<&str> = watched.iter().map(|w| w.pod.as_str()).collect();
    let Some(before) = before else {
        progress.step(&host.name, format!("waiting {}s for the kubelet to restart pods", limit.as_secs()));
        tokio::time::sleep(limit).await;
        return Ok(());
    };
    progress.step(&host.name, format!("waiting for the kubelet to restart {}", names.join(", ")));
    let interval = Duration::from_millis(250);
    let pending = pods::wait_restarted(remote, watched, before, limit, interval)
        .await
        .map_err(|e| ActionError::host("watching pods restart", e))?;
    if !pending.is_empty() {
        tracing::warn!(
            "{}: {} not seen restarting within {}s (--kubelet-sync); judging the host by its health checks",
            host.name,
            pending.join(", "),
            limit.as_secs()
        );
    }
    Ok(())
}

/// Under [`Restart::Also`], the named pods' manifests with a new restart stamp.
fn stamp(files: &BTreeMap<String, Vec<File>>, restart: &Restart) -> Option<BTreeMap<String, Vec<File>>> {
    let Restart::Also { pods, stamp } = restart else { return None };
    let stamped = files
        .iter()
        .map(|(host, files)| {
            let files = files
                .iter()
                .map(|f| match pod_name(&f.path) {
                    Some(pod) if pods.iter().any(|p| p == pod) => crate::render::stamp_restart(f, stamp),
                    _ => f.clone(),
                })
                .collect();
            (host.clone(), files)
        })
        .collect();
    Some(stamped)
}

/// The static pod a manifest path runs.
fn pod_name(path: &Path) -> Option<&str> {
    if !path.starts_with(crate::host::layout::MANIFESTS_DIR) {
        return None;
    }
    path.file_name()?.to_str()?.strip_suffix(".yaml")
}

type Prepared<'s, 'f, R> = Vec<(&'s Host, &'s R, HostPush<'f>)>;

/// Compares every connected host's files, all at once within the bound; a host that cannot be
/// compared stops the rollout before anything is written anywhere.
async fn prepare_all<'s, 'f, R: Remote>(
    session: &'s Session<'_, R>,
    files: &'f BTreeMap<String, Vec<File>>,
    previous: &BTreeMap<String, Vec<PathBuf>>,
    policy: &Policy,
) -> Result<Prepared<'s, 'f, R>, ActionError> {
    // Hosts without files of this rollout are left alone (not emptied): a command may change
    // some of the cluster's hosts only.
    let hosts: Vec<(&Host, &R)> = session.connected().filter(|(h, _)| files.contains_key(&h.name)).collect();
    let dry_run = session.options.dry_run;
    let prepared = session
        .each(&hosts, |(host, remote)| async move {
            let files = files.get(&host.name).map(Vec::as_slice).unwrap_or_default();
            let previous = previous.get(&host.name).map(Vec::as_slice).unwrap_or_default();
            // Only where this run cleared the host of an interrupted run's temporary files.
            if policy.fresh.contains(&host.name) && session.cleared(&host.name) {
                return Ok(HostPush::everything(files));
            }
            session.progress.step(&host.name, "comparing files");
            let result = files::prepare(*remote, files, previous, !dry_run).await;
            if let Err(e) = &result {
                session.progress.finish(&host.name, format!("failed: {e}"));
            }
            result
        })
        .await;
    let mut failures = Vec::new();
    let mut pushes = Vec::new();
    for ((host, remote), result) in prepared {
        match result {
            Ok(mut push) => {
                if policy.restart == Restart::Never {
                    push.keep_pods_running();
                }
                pushes.push((*host, *remote, push));
            }
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() { Ok(pushes) } else { Err(ActionError::Hosts { step: "comparing files", failures }) }
}

async fn write_host<R: Remote>(
    session: &Session<'_, R>,
    host: &Host,
    remote: &R,
    push: &HostPush<'_>,
    backup: Option<&Path>,
) -> Result<(), TransportError> {
    let progress = session.progress;
    if let Some(dir) = backup
        && !push.report().is_empty()
    {
        progress.step(&host.name, format!("backing up the files it replaces to {}", dir.display()));
        push.back_up(remote, dir).await?;
    }
    progress.step(&host.name, "writing files");
    push.apply(remote, |i, n, path| progress.detail(&host.name, format!("writing {i}/{n}: {}", path.display())))
        .await?;
    reload_in_place(session, host, remote, push).await
}

/// Tells the running load balancer to take up the configuration just written
/// ([`RELOADED_IN_PLACE`]) instead of restarting its pods, and waits until haproxy serves from
/// new workers. Only pods whose manifest the host has and keeps are told: a pod whose manifest
/// was written too is (re)started by the kubelet with the new configuration, and one whose
/// manifest is not there yet reads it when it starts.
async fn reload_in_place<R: Remote>(
    session: &Session<'_, R>,
    host: &Host,
    remote: &R,
    push: &HostPush<'_>,
) -> Result<(), TransportError> {
    let pods = reload_targets(push);
    if pods.is_empty() {
        return Ok(());
    }
    let haproxy: Vec<pods::Watched> = pods
        .iter()
        .filter_map(|pod| {
            let probe = pods::probe(session.plan, pod).filter(|p| matches!(p, pods::Probe::Port(_)))?;
            Some(pods::Watched { pod: pod.to_string(), probe, stops: false })
        })
        .collect();
    let limit = session.options.kubelet_sync;
    let before = match limit.is_zero() || haproxy.is_empty() {
        true => None,
        false => pods::processes(remote, &haproxy).await?,
    };
    session.progress.step(&host.name, format!("reloading {}", pods.join(", ")));
    let told = pods::reload(remote, &pods).await?;
    if let Some(before) = before.filter(|_| told.iter().any(|t| haproxy.iter().any(|w| &w.pod == t))) {
        let interval = Duration::from_millis(250);
        let pending = session.waiting(pods::wait_restarted(remote, &haproxy, &before, limit, interval)).await?;
        if !pending.is_empty() {
            tracing::warn!("{}: {} not seen reloading within {}s", host.name, pending.join(", "), limit.as_secs());
        }
    }
    Ok(())
}

/// The pods [`reload_in_place`] tells: a configuration of theirs was written, their manifest
/// is on the host and kept.
fn reload_targets(push: &HostPush<'_>) -> Vec<&'static str> {
    let written = |path: &Path| push.changes.iter().any(|f| f.path == path);
    let kept = |pod: &str| push.kept.iter().any(|p| *p == Path::new(&manifest(pod)));
    let mut pods: Vec<&'static str> = RELOADED_IN_PLACE
        .iter()
        .filter_map(|(path, pod)| pod.filter(|pod| written(Path::new(path)) && kept(pod)))
        .collect();
    pods.dedup();
    pods
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::actions::fake::{self, MemoryConnector};
    use crate::actions::progress::Progress;
    use crate::actions::session::SessionOptions;
    use crate::host::layout::manifest;
    use crate::plan::Plan;
    use crate::transport::MemoryRemote;

    /// Records the gates in order, with what each control plane's kube-apiserver manifest was at
    /// that moment ("old" or "new" against `new_manifests`); fails `after` on `fail_after`.
    struct Recorder<'a> {
        hosts: &'a MemoryConnector,
        new_manifests: BTreeMap<String, Vec<u8>>,
        events: Mutex<Vec<String>>,
        fail_after: Option<&'static str>,
    }

    impl Recorder<'_> {
        fn snapshot(&self) -> String {
            self.new_manifests
                .iter()
                .map(|(host, new)| {
                    let now = self.hosts.host(host).file(manifest("kube-apiserver")).map(|f| f.content);
                    format!("{host}={}", if now.as_ref() == Some(new) { "new" } else { "old" })
                })
                .collect::<Vec<_>>()
                .join(",")
        }

        fn events(&self) -> Vec<String> {
            self.events.lock().unwrap().clone()
        }
    }

    impl<R: Remote> Gates<R> for Recorder<'_> {
        async fn before(&self, _: &Session<'_, R>, host: &Host) -> Result<(), ActionError> {
            self.events.lock().unwrap().push(format!("before {} [{}]", host.name, self.snapshot()));
            Ok(())
        }

        async fn after(&self, _: &Session<'_, R>, host: &Host, _: &R) -> Result<(), ActionError> {
            self.events.lock().unwrap().push(format!("after {} [{}]", host.name, self.snapshot()));
            if self.fail_after == Some(host.name.as_str()) {
                return Err(ActionError::Unhealthy(crate::actions::wait::WaitError {
                    what: format!("{}: kube-apiserver", host.name),
                    after: Duration::ZERO,
                    last: "connection refused".into(),
                }));
            }
            Ok(())
        }
    }

    #[test]
    fn only_running_load_balancer_pods_whose_configuration_changed_are_reloaded() {
        use crate::host::layout::{HAPROXY_CFG, KEEPALIVED_CONF};
        let (cfg, conf) = (File::new(HAPROXY_CFG, 0o644, "new"), File::new(KEEPALIVED_CONF, 0o644, "new"));
        let haproxy = File::new(manifest("haproxy"), 0o600, "pod");
        fn push<'f>(changes: Vec<&'f File>, kept: &[&str]) -> HostPush<'f> {
            let kept = kept.iter().map(|p| PathBuf::from(manifest(p))).collect();
            HostPush { changes, retired: Vec::new(), unchanged: 0, restarting: Vec::new(), kept }
        }
        let (cfg, conf, haproxy) = (&cfg, &conf, &haproxy);
        // Both configurations changed, both pods run and keep their manifests.
        assert_eq!(reload_targets(&push(vec![cfg, conf], &["haproxy", "keepalived"])), ["haproxy", "keepalived"]);
        // Only haproxy's changed.
        assert_eq!(reload_targets(&push(vec![cfg], &["haproxy", "keepalived"])), ["haproxy"]);
        // Its manifest changes too: the kubelet restarts it with the new configuration.
        assert!(reload_targets(&push(vec![cfg, haproxy], &["keepalived"])).is_empty());
        // Not running yet (a joining control plane's first write): it reads it when it starts.
        assert!(reload_targets(&push(vec![cfg, conf], &[])).is_empty());
    }

    /// A fresh host the session locked (and so cleared of stale temporary files) is written
    /// without asking what it has; one the session did not lock is compared as usual.
    #[tokio::test]
    async fn fresh_hosts_are_written_without_comparing_only_where_the_session_cleared_them() {
        use crate::actions::session::HostLockOptions;
        use crate::transport::Call;
        let plan = fake::plan();
        let state = tempfile::tempdir().unwrap();
        crate::pki::generate(&plan, state.path()).unwrap();
        let files = crate::render::render(&plan, &crate::pki::load(&plan, state.path()).unwrap()).unwrap();
        let fresh: Vec<String> = plan.hosts.iter().map(|h| h.name.clone()).collect();
        let policy = Policy::new(Restart::Changed).fresh(fresh);
        let compared = |hosts: &MemoryConnector, name: &str| {
            hosts.host(name).calls().iter().any(|c| matches!(c, Call::FileStates { .. }))
        };
        for locked in [true, false] {
            let hosts = MemoryConnector::new(&plan);
            let lock = HostLockOptions { command: "kubeha test".into(), ttl: Duration::from_secs(60), force: false };
            let options = SessionOptions { host_lock: locked.then_some(lock), ..SessionOptions::default() };
            let progress = Progress::hidden();
            let session = Session::open(&plan, state.path(), options, &hosts, &progress).await.unwrap();
            let rollout =
                converge(&session, &files, &BTreeMap::new(), &policy, &crate::actions::join::NoGates).await.unwrap();
            session.close(&hosts).await;
            for (name, report) in &rollout.reports {
                assert_eq!(report.written.len(), files[name].len(), "{name}");
                assert_eq!(compared(&hosts, name), !locked, "{name}, locked: {locked}");
                for f in &files[name] {
                    assert_eq!(hosts.host(name).file(&f.path).map(|h| h.content), Some(f.content.clone()));
                }
            }
        }
    }

    struct Cluster {
        plan: Plan,
        hosts: MemoryConnector,
        state: tempfile::TempDir,
    }

    impl Cluster {
        /// The test cluster with its first install done.
        async fn installed() -> Cluster {
            let plan = fake::plan();
            let cluster = Cluster { hosts: MemoryConnector::new(&plan), plan, state: tempfile::tempdir().unwrap() };
            let files = cluster.render(&cluster.plan);
            let (rollout, events) =
                cluster.converge(&cluster.plan, &files, &Policy::new(Restart::Changed), None).await.unwrap();
            assert!(events.is_empty(), "a first install restarts nothing: {events:?}");
            assert!(rollout.reports.iter().all(|(_, r)| !r.written.is_empty()));
            cluster
        }

        fn render(&self, plan: &Plan) -> BTreeMap<String, Vec<File>> {
            crate::pki::generate(plan, self.state.path()).unwrap();
            crate::render::render(plan, &crate::pki::load(plan, self.state.path()).unwrap()).unwrap()
        }

        fn file(&self, host: &str, path: &str) -> Vec<u8> {
            self.hosts.host(host).file(path).unwrap().content
        }

        async fn converge(
            &self,
            plan: &Plan,
            files: &BTreeMap<String, Vec<File>>,
            policy: &Policy,
            fail_after: Option<&'static str>,
        ) -> Result<(Rollout, Vec<String>), ActionError> {
            let options = SessionOptions { kubelet_sync: Duration::ZERO, ..SessionOptions::default() };
            let progress = Progress::hidden();
            let session = Session::open(plan, self.state.path(), options, &self.hosts, &progress).await?;
            let new_manifests = files
                .iter()
                .filter_map(|(host, files)| {
                    let m = files.iter().find(|f| f.path == Path::new(&manifest("kube-apiserver")))?;
                    Some((host.clone(), m.content.clone()))
                })
                .collect();
            let recorder = Recorder { hosts: &self.hosts, new_manifests, events: Mutex::new(Vec::new()), fail_after };
            let previous =
                files.iter().map(|(h, files)| (h.clone(), files.iter().map(|f| f.path.clone()).collect())).collect();
            let result = converge(&session, files, &previous, policy, &recorder).await;
            session.close(&self.hosts).await;
            result.map(|r| (r, recorder.events()))
        }
    }

    /// The plan with one more name on every apiserver certificate: a certificate-only change.
    fn with_extra_san(plan: &Plan) -> Plan {
        let text = fake::INVENTORY.replace(
            "certificates: {keyAlgorithm: ecdsa-p256}",
            "certificates: {keyAlgorithm: ecdsa-p256, extraSANs: [api.example.test]}",
        );
        let changed = crate::inventory::parse(&text, Path::new("/")).unwrap();
        assert_eq!(changed.name, plan.name);
        changed
    }

    fn paths(host: &MemoryRemote, f: impl Fn(&Path) -> bool) -> Vec<PathBuf> {
        host.calls()
            .into_iter()
            .filter_map(|c| match c {
                crate::transport::Call::Put { path, .. } if f(&path) => Some(path),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_certificate_only_change_restarts_the_pods_that_mount_it_one_control_plane_at_a_time() {
        let cluster = Cluster::installed().await;
        let etcd_before = cluster.file("cp1", &manifest("etcd"));
        for remote in cluster.hosts.hosts.values() {
            remote.take_calls();
        }
        let plan = with_extra_san(&cluster.plan);
        let files = cluster.render(&plan);
        let (rollout, events) = cluster.converge(&plan, &files, &Policy::new(Restart::Changed), None).await.unwrap();
        assert_eq!(
            events,
            [
                "before cp1 [cp1=old,cp2=old,cp3=old]",
                "after cp1 [cp1=new,cp2=old,cp3=old]",
                "before cp2 [cp1=new,cp2=old,cp3=old]",
                "after cp2 [cp1=new,cp2=new,cp3=old]",
                "before cp3 [cp1=new,cp2=new,cp3=old]",
                "after cp3 [cp1=new,cp2=new,cp3=new]",
            ]
        );
        // The apiserver certificate is mounted by kube-apiserver (and the whole pki directory
        // by the controller-manager); etcd mounts only pki/etcd and keeps running.
        let manifests = paths(cluster.hosts.host("cp2"), |p| p.starts_with(crate::host::layout::MANIFESTS_DIR));
        assert_eq!(
            manifests,
            [PathBuf::from(manifest("kube-apiserver")), PathBuf::from(manifest("kube-controller-manager"))]
        );
        assert_eq!(cluster.file("cp1", &manifest("etcd")), etcd_before);
        let cp1 = &rollout.reports.iter().find(|(h, _)| h == "cp1").unwrap().1;
        assert!(cp1.written.iter().any(|p| p.ends_with("pki/apiserver.crt")), "{cp1:?}");
        assert!(paths(cluster.hosts.host("w1"), |_| true).is_empty(), "the worker's files did not change");

        let (again, events) = cluster.converge(&plan, &files, &Policy::new(Restart::Changed), None).await.unwrap();
        assert!(events.is_empty() && again.reports.iter().all(|(_, r)| r.is_empty()), "a re-run changed something");
    }

    #[tokio::test]
    async fn the_vip_holder_is_rolled_last() {
        let cluster = Cluster::installed().await;
        let plan = with_extra_san(&cluster.plan);
        let files = cluster.render(&plan);
        let policy = Policy::new(Restart::Changed).last(["cp1".to_string()]);
        let (_, events) = cluster.converge(&plan, &files, &policy, None).await.unwrap();
        let order: Vec<&str> = events.iter().filter_map(|e| e.strip_prefix("after ")?.get(..3)).collect();
        assert_eq!(order, ["cp2", "cp3", "cp1"]);
    }

    #[tokio::test]
    async fn a_host_that_does_not_come_back_stops_the_rollout_and_later_hosts_stay_untouched() {
        let cluster = Cluster::installed().await;
        let cp3_before = cluster.file("cp3", &manifest("kube-apiserver"));
        let cp3_cert_before = cluster.file("cp3", "/etc/kubernetes/pki/apiserver.crt");
        let plan = with_extra_san(&cluster.plan);
        let files = cluster.render(&plan);
        let err = cluster.converge(&plan, &files, &Policy::new(Restart::Changed), Some("cp2")).await.unwrap_err();
        let ActionError::Stopped { host, written, rolled, untouched, source, .. } = &err else { panic!("{err}") };
        assert_eq!(
            (host.as_str(), *written, rolled.as_slice(), untouched.as_slice()),
            ("cp2", true, &["cp1".to_string()][..], &["cp3".to_string()][..])
        );
        assert!(matches!(&**source, ActionError::Unhealthy(w) if w.what == "cp2: kube-apiserver"), "{err}");
        assert_eq!(cluster.file("cp3", &manifest("kube-apiserver")), cp3_before);
        assert_eq!(cluster.file("cp3", "/etc/kubernetes/pki/apiserver.crt"), cp3_cert_before, "cp3 was written");
    }

    /// The indexes, in `host`'s calls, of the backup command and of every put.
    fn backup_and_puts(host: &MemoryRemote) -> (Vec<usize>, Vec<usize>) {
        let calls = host.calls();
        let backups = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, crate::transport::Call::Exec { command, .. } if command.starts_with("# backing up")))
            .map(|(i, _)| i)
            .collect();
        let puts = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c, crate::transport::Call::Put { .. }))
            .map(|(i, _)| i)
            .collect();
        (backups, puts)
    }

    #[tokio::test]
    async fn every_replaced_file_is_backed_up_on_its_host_before_the_host_is_written() {
        let cluster = Cluster::installed().await;
        for remote in cluster.hosts.hosts.values() {
            remote.take_calls();
        }
        let old: BTreeMap<&str, Vec<u8>> = ["cp1", "cp2", "cp3"]
            .into_iter()
            .map(|h| (h, cluster.file(h, "/etc/kubernetes/pki/apiserver.crt")))
            .collect();
        let old_manifest = cluster.file("cp2", &manifest("kube-apiserver"));
        let plan = with_extra_san(&cluster.plan);
        let files = cluster.render(&plan);
        let dir = "/etc/kubernetes/kubeha/backup/20261130T120000Z";
        let policy = Policy::new(Restart::Changed).backup(dir);
        cluster.converge(&plan, &files, &policy, None).await.unwrap();
        for (host, old) in &old {
            let (backups, puts) = backup_and_puts(cluster.hosts.host(host));
            assert_eq!(backups.len(), 1, "{host}: one backup command");
            assert!(!puts.is_empty() && backups[0] < puts[0], "{host}: backed up before the first write");
            let copy = cluster.file(host, &format!("{dir}/etc/kubernetes/pki/apiserver.crt"));
            assert_eq!(&copy, old, "{host}: the backup holds the replaced certificate");
            assert_ne!(cluster.file(host, "/etc/kubernetes/pki/apiserver.crt"), *old, "{host} has the new one");
        }
        assert_eq!(cluster.file("cp2", &format!("{dir}{}", manifest("kube-apiserver"))), old_manifest);
        let (backups, puts) = backup_and_puts(cluster.hosts.host("w1"));
        assert!(backups.is_empty() && puts.is_empty(), "nothing changed on the worker, nothing to back up");
    }

    #[tokio::test]
    async fn a_stopped_rollout_says_which_hosts_have_what_and_where_the_backup_is() {
        let cluster = Cluster::installed().await;
        for remote in cluster.hosts.hosts.values() {
            remote.take_calls();
        }
        let plan = with_extra_san(&cluster.plan);
        let files = cluster.render(&plan);
        let dir = "/etc/kubernetes/kubeha/backup/20261130T120000Z";
        let policy = Policy::new(Restart::Changed).last(["cp1".to_string()]).backup(dir);
        let err = cluster.converge(&plan, &files, &policy, Some("cp3")).await.unwrap_err();
        let ActionError::Stopped { host, written, rolled, untouched, backup, .. } = &err else { panic!("{err}") };
        assert_eq!(host, "cp3");
        assert!(*written);
        assert_eq!((rolled.as_slice(), untouched.as_slice()), (&["cp2".to_string()][..], &["cp1".to_string()][..]));
        assert_eq!(backup.as_deref(), Some(Path::new(dir)));
        let (backups, puts) = backup_and_puts(cluster.hosts.host("cp1"));
        assert!(backups.is_empty() && puts.is_empty(), "cp1 (after the stop) was touched");
        assert!(cluster.hosts.host("cp3").file(format!("{dir}/etc/kubernetes/pki/apiserver.crt")).is_some());
        assert_eq!(err.to_string(), "the rollout stopped at cp3");
        assert!(
            crate::text::error_chain(&err).contains("cp3: kube-apiserver not ready"),
            "{}",
            crate::text::error_chain(&err)
        );
    }

    #[tokio::test]
    async fn never_writes_certificates_but_leaves_running_pods_alone() {
        let cluster = Cluster::installed().await;
        let before = cluster.file("cp1", &manifest("kube-apiserver"));
        let cert_before = cluster.file("cp1", "/etc/kubernetes/pki/apiserver.crt");
        let plan = with_extra_san(&cluster.plan);
        let files = cluster.render(&plan);
        let (_, events) = cluster.converge(&plan, &files, &Policy::new(Restart::Never), None).await.unwrap();
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(cluster.file("cp1", &manifest("kube-apiserver")), before);
        assert_ne!(cluster.file("cp1", "/etc/kubernetes/pki/apiserver.crt"), cert_before);
    }

    #[tokio::test]
    async fn named_pods_restart_everywhere_even_when_nothing_they_use_changed() {
        let cluster = Cluster::installed().await;
        let files = cluster.render(&cluster.plan);
        let restart = Restart::Also { pods: vec!["kube-scheduler".into()], stamp: "2026-11-30T12:00:00Z".into() };
        let (rollout, events) = cluster.converge(&cluster.plan, &files, &Policy::new(restart), None).await.unwrap();
        let gated: Vec<&str> = events.iter().filter_map(|e| e.strip_prefix("after ")?.get(..3)).collect();
        assert_eq!(gated, ["cp1", "cp2", "cp3"]);
        for (host, report) in &rollout.reports {
            if host.starts_with("cp") {
                assert_eq!(report.written, [PathBuf::from(manifest("kube-scheduler"))], "{host}");
            }
        }
        let text = String::from_utf8(cluster.file("cp3", &manifest("kube-scheduler"))).unwrap();
        assert!(text.contains("kubeha.io/restart: \"2026-11-30T12:00:00Z\""), "{text}");
    }
}
