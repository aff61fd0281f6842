//! `certs renew`: re-issues named leaf certificates and kubeconfig client certificates from the
//! cluster's CAs and rolls them out without taking the cluster down.
//!
//! The sequence: open a session (lock, connect) → preflight with [`preflight::RunningCluster`] (every host must
//! be one kubeha set up for this cluster) → an etcd snapshot into the state directory → re-issue
//! in the state directory (keys kept unless asked) → render → [`rollout::converge`] with
//! [`rollout::Restart::Changed`], a backup of every replaced file on each host, the VIP holder last →
//! wait for the whole cluster. Manifests carry a hash of the files their pods mount, so a new
//! certificate or kubeconfig restarts exactly the pods that use it, one control plane at a time
//! behind the health gates; workers (kubelet.conf only) are written all at once.
//!
//! A renewal whose roll-out stopped is recorded in the state directory
//! ([`crate::pki::pending_renewal`]): the next run rolls out the certificates already issued
//! instead of issuing new ones, so the hosts that got them are not restarted again.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::checks::Expectations;
use super::error::ActionError;
use super::preflight;
use super::progress::Progress;
use super::rollout;
use super::session::{Connector, Session, SessionOptions};
use crate::host::files::PushReport;
use crate::host::layout::BACKUP_DIR;
use crate::pki::{self, Renewal};
use crate::plan::Plan;
use crate::transport::Remote;

/// Everything `certs renew` can be told.
#[derive(Debug, Clone)]
pub struct RenewOptions {
    pub session: SessionOptions,
    pub max_clock_skew: Duration,
    /// The state-directory files to re-issue (see [`pki::renewal_targets`]).
    pub targets: Vec<PathBuf>,
    /// Re-issue them with new keys.
    pub new_keys: bool,
    /// Skip the etcd snapshot.
    pub no_snapshot: bool,
}

/// What `certs renew` did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct RenewReport {
    /// Files re-issued in the state directory, with the reason.
    pub renewed: Vec<Renewal>,
    /// When the renewal being rolled out started, if it was left pending by an earlier run.
    pub resumed: Option<String>,
    /// Per host, in inventory order.
    pub pushed: Vec<(String, PushReport)>,
    /// The etcd snapshot taken before the first host was touched.
    pub snapshot: Option<PathBuf>,
    /// Where each written host keeps the files this run replaced.
    pub backup: PathBuf,
    pub work: Duration,
    pub waited: Duration,
    pub phases: Vec<(&'static str, Duration)>,
}

/// Runs `certs renew` on the hosts `connector` reaches.
pub async fn renew<C: Connector>(
    plan: &Plan,
    state_dir: &Path,
    options: &RenewOptions,
    connector: &C,
    progress: &Progress,
) -> Result<RenewReport, ActionError> {
    let started = Instant::now();
    let vip = preflight::start_vip_probe(plan);
    let mut session = Session::open(plan, state_dir, options.session.clone(), connector, progress).await?;
    let result = phases(&mut session, options, vip, started).await;
    session.close(connector).await;
    result
}

async fn phases<R: Remote>(
    session: &mut Session<'_, R>,
    options: &RenewOptions,
    vip: preflight::VipProbe,
    started: Instant,
) -> Result<RenewReport, ActionError> {
    let plan = session.plan;
    pki::rotation::refuse_if_pending(session.state_dir(), "kubeha certs renew")?;
    let expect = Expectations {
        max_clock_skew: options.max_clock_skew,
        cluster_id: pki::existing_cluster_id(session.state_dir())?,
        also_cluster_id: None,
    };
    let found =
        preflight::run(session, vip, &expect, &preflight::RunningCluster { command: "certs renew" }).await.passed()?;
    session.lap("preflight");

    let at = super::snapshot::stamp(OffsetDateTime::now_utc());
    let mut report = RenewReport { backup: Path::new(BACKUP_DIR).join(&at), ..RenewReport::default() };
    if !session.options.dry_run && !options.no_snapshot {
        // The PKI as the hosts have it now: its etcd client reaches the running members.
        let current = pki::load(plan, session.state_dir())?;
        report.snapshot = Some(super::snapshot::take(session, &current, &at).await?);
        session.lap("snapshot");
    }

    session.use_scratch_state()?;
    report.resumed = pki::pending_renewal(session.state_dir())?;
    let renew = match report.resumed {
        // Issued by the run that stopped: roll those out, do not issue again.
        Some(_) => pki::Renew { window: plan.certificates.renew_before, ..pki::Renew::default() },
        None => pki::Renew {
            window: plan.certificates.renew_before,
            force: options.targets.clone(),
            new_keys: options.new_keys,
        },
    };
    if report.resumed.is_none() {
        pki::begin_renewal(session.state_dir(), &at)?;
    }
    report.renewed = pki::generate_with(plan, session.state_dir(), &renew)?.renewed;
    session.lap("certificates");
    let rollout = rollout::certificates(session, &found, &report.backup).await?;
    report.pushed = rollout.reports;
    if !session.options.dry_run {
        pki::end_renewal(session.state_dir())?;
    }
    report.waited = session.waited();
    report.work = started.elapsed().saturating_sub(report.waited);
    report.phases = session.phases();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::fake::{self, MemoryConnector};
    use crate::actions::wait::WaitOptions;
    use crate::transport::Call;

    fn options(targets: &[&str], dry_run: bool) -> RenewOptions {
        RenewOptions {
            session: SessionOptions {
                parallel: 4,
                dry_run,
                wait: WaitOptions { timeout: Duration::from_millis(300), interval: Duration::from_millis(50) },
                kubelet_sync: Duration::ZERO,
                host_lock: None,
            },
            max_clock_skew: Duration::from_secs(5),
            targets: targets.iter().map(PathBuf::from).collect(),
            new_keys: false,
            no_snapshot: false,
        }
    }

    fn written(report: &RenewReport, host: &str) -> Vec<String> {
        let (_, pushed) = report.pushed.iter().find(|(h, _)| h == host).unwrap();
        pushed.written.iter().map(|p| p.display().to_string()).collect()
    }

    fn changes(hosts: &MemoryConnector) -> Vec<(String, Call)> {
        hosts
            .hosts
            .iter()
            .flat_map(|(name, h)| h.calls().into_iter().map(move |c| (name.clone(), c)))
            .filter(|(_, c)| match c {
                Call::Put { .. } | Call::RemoveStaleTempFiles { .. } => true,
                Call::Exec { command, .. } => command.starts_with("# backing up") || command.starts_with("# removing"),
                _ => false,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_dry_run_lists_every_renewal_and_the_files_each_host_would_get_and_changes_nothing() {
        let (plan, hosts, state) = fake::installed();
        let targets = crate::pki::renewal_targets(&plan, &["all".into()], &[]).unwrap();
        let targets: Vec<String> = targets.iter().map(|p| p.display().to_string()).collect();
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        let before = std::fs::read(state.path().join("pki/apiserver-etcd-client.crt")).unwrap();
        let report = renew(&plan, state.path(), &options(&targets, true), &hosts, &Progress::hidden()).await.unwrap();
        assert_eq!(report.renewed.len(), targets.len(), "{:?}", report.renewed);
        assert!(report.renewed.iter().all(|r| r.reason.ends_with("renewal requested")), "{:?}", report.renewed);
        let cp2 = written(&report, "cp2");
        for path in
            ["/etc/kubernetes/pki/apiserver.crt", "/etc/kubernetes/pki/etcd/peer.crt", "/etc/kubernetes/admin.conf"]
        {
            assert!(cp2.iter().any(|p| p == path), "cp2 would not get {path}: {cp2:?}");
        }
        for pod in ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
            assert!(cp2.contains(&crate::host::layout::manifest(pod)), "{pod} would not restart: {cp2:?}");
        }
        assert_eq!(written(&report, "w1"), ["/etc/kubernetes/kubelet.conf"]);
        assert!(changes(&hosts).is_empty(), "a dry run changed a host: {:?}", changes(&hosts));
        assert_eq!(std::fs::read(state.path().join("pki/apiserver-etcd-client.crt")).unwrap(), before);
        assert_eq!(crate::pki::pending_renewal(state.path()).unwrap(), None);
    }

    #[tokio::test]
    async fn a_kubeconfig_only_renewal_restarts_exactly_the_pods_that_mount_it() {
        let (plan, hosts, state) = fake::installed();
        let targets = crate::pki::renewal_targets(&plan, &["scheduler.conf".into()], &["cp3".into()]).unwrap();
        let targets: Vec<String> = targets.iter().map(|p| p.display().to_string()).collect();
        let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
        assert_eq!(targets, ["nodes/cp3/scheduler.conf"]);
        let report = renew(&plan, state.path(), &options(&targets, true), &hosts, &Progress::hidden()).await.unwrap();
        assert_eq!(
            written(&report, "cp3"),
            [crate::host::layout::SCHEDULER_CONF.to_string(), crate::host::layout::manifest("kube-scheduler")]
        );
        assert!(written(&report, "cp1").is_empty() && written(&report, "w1").is_empty());
    }

    #[tokio::test]
    async fn the_snapshot_comes_before_anything_is_issued_or_written() {
        let (plan, hosts, state) = fake::installed();
        let before = std::fs::read(state.path().join("admin.conf")).unwrap();
        // Nothing serves etcd on the in-memory hosts: no snapshot, so nothing happens.
        let err = renew(&plan, state.path(), &options(&["admin.conf"], false), &hosts, &Progress::hidden())
            .await
            .unwrap_err();
        assert!(matches!(&err, ActionError::Snapshot(why) if why.starts_with("cp3: ")), "{err}");
        assert!(changes(&hosts).is_empty(), "{:?}", changes(&hosts));
        assert_eq!(std::fs::read(state.path().join("admin.conf")).unwrap(), before, "admin.conf was re-issued");
        assert_eq!(crate::pki::pending_renewal(state.path()).unwrap(), None);
    }

    #[tokio::test]
    async fn hosts_kubeha_did_not_set_up_are_refused() {
        let plan = fake::plan();
        let hosts = MemoryConnector::new(&plan);
        let state = tempfile::tempdir().unwrap();
        crate::pki::generate(&plan, state.path()).unwrap();
        let err = renew(&plan, state.path(), &options(&["admin.conf"], false), &hosts, &Progress::hidden())
            .await
            .unwrap_err();
        let ActionError::Preflight { checks } = &err else { panic!("{err}") };
        assert!(checks.iter().any(|c| c.status == crate::actions::checks::Status::Fail && c.detail.contains("run kubeha init first")));
        assert!(changes(&hosts).is_empty());
    }
}
