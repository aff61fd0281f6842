//! `init`: bare hosts to a running HA control plane, or a running one converged.
//!
//! A short sequence of the shared steps: open a session (lock, connect) → preflight with
//! [`InitRules`] → certificates → render → [`rollout::converge`] with [`Restart::Changed`] behind
//! the health gates (the VIP holder rolled last) → wait for the whole cluster → apply the
//! cluster objects (kubeadm's RBAC and ConfigMaps, kube-proxy, CoreDNS). Nothing is written to any host before preflight
//! passes; the rollout writes only files that differ, each atomically, so a re-run on a healthy
//! cluster changes nothing and a run cut short converges when repeated.

use std::path::Path;
use std::time::{Duration, Instant};

use super::checks::{Check, Expectations};
use super::error::ActionError;
use super::objects::Applied;
use super::preflight::{self, InitRules, VipProbe};
use super::progress::Progress;
use super::rollout::{self, Policy, Restart};
use super::session::{Connector, Session, SessionOptions};
use super::wait::Health;
use crate::host::files::PushReport;
use crate::pki;
use crate::plan::Plan;
use crate::transport::Remote;

/// Everything `init` can be told.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub session: SessionOptions,
    pub max_clock_skew: Duration,
    /// Leaves ending within this window are renewed, and certificates on the hosts ending
    /// within it are warned about.
    pub renew_before: Duration,
}

/// What `init` did.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Per host, in inventory order.
    pub pushed: Vec<(String, PushReport)>,
    /// Preflight warnings.
    pub warnings: Vec<Check>,
    /// Certificates on the hosts that ended or end within the renewal window (before this run).
    pub expiring: Vec<super::expiry::Row>,
    /// Certificates and kubeconfigs created or renewed in the state directory.
    pub certificates_changed: usize,
    /// Time spent on kubeha's own work, and waiting for the components to come up.
    pub work: Duration,
    pub waited: Duration,
    /// How long each phase took, in order.
    pub phases: Vec<(&'static str, Duration)>,
    /// What applying the cluster objects did (empty in a dry run).
    pub objects: Vec<Applied>,
    /// How many cluster objects a run applies (what a dry run would apply).
    pub object_count: usize,
}

impl InitReport {
    /// Whether any host file was (or, in a dry run, would be) written or removed.
    pub fn changed_hosts(&self) -> bool {
        self.pushed.iter().any(|(_, r)| !r.is_empty())
    }
}

/// Runs every phase of `init` on the hosts `connector` reaches.
pub async fn init<C: Connector>(
    plan: &Plan,
    state_dir: &Path,
    options: &InitOptions,
    connector: &C,
    progress: &Progress,
) -> Result<InitReport, ActionError> {
    let started = Instant::now();
    // The VIP probe may wait its whole timeout: it runs while kubeha connects and checks.
    let vip = preflight::start_vip_probe(plan);
    let mut session = Session::open(plan, state_dir, options.session.clone(), connector, progress).await?;
    let result = phases(&mut session, options, vip, started).await;
    session.close(connector).await;
    result
}

async fn phases<R: Remote>(
    session: &mut Session<'_, R>,
    options: &InitOptions,
    vip: VipProbe,
    started: Instant,
) -> Result<InitReport, ActionError> {
    let plan = session.plan;
    let expect = Expectations {
        max_clock_skew: options.max_clock_skew,
        cluster_id: pki::existing_cluster_id(session.state_dir())?,
        also_cluster_id: None,
    };
    let mut found = preflight::run(session, vip, &expect, &InitRules).await;
    found.checks.extend(super::removed::checks(plan, session.state_dir()));
    let found = found.passed()?;
    let now = time::OffsetDateTime::now_utc();
    let expiring = super::expiry::within(session, options.renew_before, now).await;
    session.lap("preflight");

    session.use_scratch_state()?;
    let renew = pki::Renew { window: options.renew_before, ..pki::Renew::default() };
    let generated = pki::generate_with(plan, session.state_dir(), &renew)?;
    let pki = pki::load(plan, session.state_dir())?;
    session.lap("certificates");
    let files = crate::render::render(&found.with_node_settings(plan), &pki)?;
    session.lap("render");

    let health = Health::new(plan, &pki, session.options.wait.interval)?;
    let policy = Policy::new(Restart::Changed).last(found.vip_holders(plan)).fresh(found.fresh());
    let rollout = rollout::converge(session, &files, &found.previous_files(), &policy, &health).await?;
    session.lap("push");
    let mut report = InitReport {
        pushed: rollout.reports,
        warnings: found.warnings(),
        expiring,
        certificates_changed: generated.created.len() + generated.renewed.len(),
        work: Duration::ZERO,
        waited: Duration::ZERO,
        phases: Vec::new(),
        objects: Vec::new(),
        object_count: 0,
    };
    let (own, cni) = (crate::objects::kubeha_objects(plan, &pki), crate::objects::cni_objects(plan));
    report.object_count = own.len() + cni.len();
    if !session.options.dry_run {
        session.waiting(health.cluster(session)).await?;
        session.lap("wait");
        if let Some((host, remote)) = session.control_planes().next() {
            report.objects = super::objects::apply(session, host, remote, &pki, &own, &cni).await?;
        }
        session.lap("objects");
    }
    report.waited = session.waited();
    report.work = started.elapsed().saturating_sub(report.waited);
    report.phases = session.phases();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::actions::checks::Status;
    use crate::actions::fake::{self, MemoryConnector};
    use crate::actions::session::{HostLockOptions, Session};
    use crate::actions::wait::WaitOptions;
    use crate::host::layout::HOST_LOCK;
    use crate::host::lock::Holder;
    use crate::transport::{Call, MemoryRemote};

    fn options(dry_run: bool) -> InitOptions {
        InitOptions {
            session: SessionOptions {
                parallel: 4,
                dry_run,
                wait: WaitOptions { timeout: Duration::from_millis(300), interval: Duration::from_millis(50) },
                kubelet_sync: Duration::ZERO,
                host_lock: Some(HostLockOptions {
                    command: "kubeha init".into(),
                    ttl: Duration::from_secs(60),
                    force: false,
                }),
            },
            max_clock_skew: Duration::from_secs(5),
            renew_before: Duration::from_secs(30 * 86_400),
        }
    }

    fn puts(host: &MemoryRemote) -> usize {
        host.calls().iter().filter(|c| matches!(c, Call::Put { .. })).count()
    }

    /// Every command a host received other than the read-only facts and peer scripts and the
    /// host lock (taken and released around every writing run; see [`no_lock_left`]).
    fn writes(host: &MemoryRemote) -> Vec<Call> {
        host.calls()
            .into_iter()
            .filter(|c| match c {
                Call::Exec { command, .. } => {
                    !command.starts_with("# gathering host facts")
                        && !command.starts_with("# checking etcd peer ports")
                        && !command.contains(" the host lock\n")
                        && !command.starts_with("# reading certificates")
                }
                Call::Put { .. } | Call::RemoveStaleTempFiles { .. } => true,
                Call::FileStates { .. } | Call::OpenTcp { .. } => false,
            })
            .collect()
    }

    fn no_lock_left(hosts: &MemoryConnector) {
        for (name, host) in &hosts.hosts {
            assert!(host.file(HOST_LOCK).is_none(), "{name} still has a host lock");
        }
    }

    #[tokio::test]
    async fn a_host_locked_by_another_run_stops_init_before_anything_is_written() {
        let plan = fake::plan();
        let hosts = MemoryConnector::new(&plan);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let other = Holder::new("alice@elsewhere", "kubeha init", Duration::from_secs(600));
        hosts.host("cp2").insert_file(HOST_LOCK, 0o644, 0, 0, other.to_text());
        let err = init(&plan, &state, &options(false), &hosts, &Progress::hidden()).await.unwrap_err();
        let ActionError::HostsLocked { held } = &err else { panic!("{err}") };
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].0, "cp2");
        assert!(held[0].1.starts_with(&format!("alice@elsewhere (pid {}, `kubeha init`) since ", other.pid)));
        assert!(err.to_string().contains("re-run with --force-lock"), "{err}");
        for (name, host) in &hosts.hosts {
            assert!(writes(host).is_empty(), "{name} was written to");
            assert!(
                host.calls()
                    .iter()
                    .all(|c| !matches!(c, Call::Exec { command, .. } if command.starts_with("# gathering")))
            );
        }
        // The locks this run took on the other hosts are released; alice's stays.
        assert_eq!(hosts.host("cp2").file(HOST_LOCK).unwrap().content, other.to_text().into_bytes());
        hosts.host("cp2").remove_file(HOST_LOCK);
        no_lock_left(&hosts);
        assert!(!state.join("pki").exists(), "certificates were made");

        // Past its time, the lock is stale: taken over, and released at the end of the run.
        let stale = Holder { until: 1, ..other.clone() };
        hosts.host("cp2").insert_file(HOST_LOCK, 0o644, 0, 0, stale.to_text());
        let err = init(&plan, &state, &options(false), &hosts, &Progress::hidden()).await.unwrap_err();
        assert!(matches!(err, ActionError::Unhealthy(_)), "{err}");
        no_lock_left(&hosts);

        // A lock that is not stale goes only with --force-lock.
        hosts.host("cp2").insert_file(HOST_LOCK, 0o644, 0, 0, other.to_text());
        let mut forced = options(false);
        forced.session.host_lock.as_mut().unwrap().force = true;
        let err = init(&plan, &state, &forced, &hosts, &Progress::hidden()).await.unwrap_err();
        assert!(matches!(err, ActionError::Unhealthy(_)), "{err}");
        no_lock_left(&hosts);
    }

    /// Two runs at once: the second is refused, naming the first (this machine, this process,
    /// which still runs); once the first ends, the hosts are free again.
    #[tokio::test]
    async fn a_second_run_against_the_same_hosts_is_refused() {
        let plan = fake::plan();
        let hosts = MemoryConnector::new(&plan);
        let dir = tempfile::tempdir().unwrap();
        let progress = Progress::hidden();
        let first_state = dir.path().join("first");
        let first = Session::open(&plan, &first_state, options(false).session, &hosts, &progress).await.unwrap();
        let err = init(&plan, &dir.path().join("second"), &options(false), &hosts, &progress).await.unwrap_err();
        let ActionError::HostsLocked { held } = &err else { panic!("{err}") };
        assert_eq!(held.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(), ["cp1", "cp2", "cp3", "w1"]);
        assert!(held[0].1.contains(&format!("(pid {}, `kubeha init`)", std::process::id())), "{err}");
        assert!(!dir.path().join("second").join("pki").exists());
        first.close(&hosts).await;
        no_lock_left(&hosts);
        let err = init(&plan, &dir.path().join("second"), &options(false), &hosts, &progress).await.unwrap_err();
        assert!(matches!(err, ActionError::Unhealthy(_)), "{err}");
        no_lock_left(&hosts);
    }

    #[tokio::test]
    async fn a_dry_run_goes_through_every_phase_in_order_and_changes_nothing() {
        let plan = fake::plan();
        let hosts = MemoryConnector::new(&plan);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let report = init(&plan, &state, &options(true), &hosts, &Progress::hidden()).await.unwrap();
        let phases: Vec<&str> = report.phases.iter().map(|(p, _)| *p).collect();
        assert_eq!(phases, ["connect", "preflight", "certificates", "render", "push"]);
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert!(report.changed_hosts());
        for (name, pushed) in &report.pushed {
            assert!(pushed.written.iter().any(|p| p.ends_with("kubelet/config.yaml")), "{name}: {pushed:?}");
            assert!(writes(hosts.host(name)).is_empty(), "{name} was changed by a dry run");
        }
        assert!(!state.exists(), "a dry run created the state directory");
    }

    #[tokio::test]
    async fn a_failed_preflight_stops_before_any_host_or_certificate_is_written() {
        let plan = fake::plan();
        let mut hosts = MemoryConnector::new(&plan);
        hosts.host("cp2").insert_file("/etc/kubernetes/manifests/etcd.yaml", 0o600, 0, 0, "someone else's");
        hosts.unreachable.push("w1".into());
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let err = init(&plan, &state, &options(false), &hosts, &Progress::hidden()).await.unwrap_err();
        let ActionError::Preflight { checks } = &err else { panic!("{err}") };
        let failed: Vec<(&str, &str)> =
            checks.iter().filter(|c| c.status == Status::Fail).map(|c| (c.host.as_str(), c.check)).collect();
        assert_eq!(failed, [("cp2", "directories"), ("w1", "ssh")], "{checks:?}");
        for name in ["cp1", "cp2", "cp3"] {
            assert!(writes(hosts.host(name)).is_empty(), "{name} was written to");
        }
        assert!(!state.join("pki").exists() && !state.join("secrets").exists(), "certificates were made");
    }

    #[tokio::test]
    async fn init_writes_every_host_then_waits_and_a_changed_membership_is_refused_on_the_re_run() {
        let plan = fake::plan();
        let hosts = MemoryConnector::new(&plan);
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        // Nothing serves etcd on the in-memory hosts: the files go out, then waiting times out.
        let err = init(&plan, &state, &options(false), &hosts, &Progress::hidden()).await.unwrap_err();
        let ActionError::Unhealthy(wait) = &err else { panic!("{err}") };
        assert!(wait.what.ends_with(": etcd"), "{err}");
        for (name, remote) in &hosts.hosts {
            assert!(remote.file(crate::host::layout::CLUSTER_MARKER).is_some(), "{name} has no marker");
            assert!(remote.file(crate::host::layout::KUBELET_CONFIG).is_some(), "{name} has no kubelet config");
        }
        assert!(hosts.host("cp1").file("/etc/kubernetes/manifests/etcd.yaml").is_some());
        assert!(hosts.host("w1").file("/etc/kubernetes/pki/ca.key").is_none(), "a worker got the CA key");
        // Each host was locked and looked at in one command; preflight did not ask again.
        for (name, remote) in &hosts.hosts {
            let execs: Vec<String> = remote
                .calls()
                .into_iter()
                .filter_map(|c| match c {
                    crate::transport::Call::Exec { command, .. } => Some(command),
                    _ => None,
                })
                .collect();
            let looks = |c: &&String| c.contains("# gathering host facts");
            assert_eq!(execs.iter().filter(looks).count(), 1, "{name}: {execs:#?}");
            assert!(execs.iter().filter(looks).all(|c| c.starts_with("# kubeha taking the host lock")), "{name}");
        }

        let before: Vec<usize> = hosts.hosts.values().map(|h| puts(h)).collect();
        let shrunk = crate::inventory::parse(
            &fake::INVENTORY
                .replace("    - {name: cp3, address: 198.18.0.13, role: control-plane}\n", "")
                .replace("etcd: {version: 3.5.16-0}", "etcd: {version: 3.5.16-0, allowEvenMemberCount: true}"),
            std::path::Path::new("/"),
        )
        .unwrap();
        let mut two = MemoryConnector::new(&shrunk);
        for name in ["cp1", "cp2", "w1"] {
            two.hosts.insert(name.into(), hosts.hosts[name].clone());
        }
        let err = init(&shrunk, &state, &options(false), &two, &Progress::hidden()).await.unwrap_err();
        let ActionError::Preflight { checks } = &err else { panic!("{err}") };
        assert!(
            checks
                .iter()
                .any(|c| c.check == "membership" && c.status == Status::Fail && c.detail.contains("etcd members")),
            "{checks:?}"
        );
        let after: Vec<usize> = hosts.hosts.values().map(|h| puts(h)).collect();
        assert_eq!(before, after, "a refused run wrote files");
    }
}
