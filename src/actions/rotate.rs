//! `certs rotate-ca`: replaces the cluster's CAs with new ones without taking the cluster down,
//! the procedure kubeadm leaves to a manual runbook, in three stages rolled out like
//! `certs renew` (see [`crate::pki::rotation`] for what the state directory holds at each):
//!
//! 1. `trust-both`: every host gets bundles of the old and the new CA wherever it trusts one;
//! 2. `reissue`: every leaf certificate and kubeconfig is re-issued from the new CA;
//! 3. `trust-new`: the old CA is dropped from every bundle.
//!
//! Each stage is: preflight with [`preflight::RunningCluster`] (fresh: it finds the VIP holder, who is rolled
//! last, and what each host has) → the stage applied in the state directory → re-issue what it
//! asks → [`rollout::certificates`] (one control plane at a time behind the health gates, a
//! backup of every replaced file per stage) → the next stage recorded. An etcd snapshot is
//! taken before the first change of a run. The stage being rolled out is recorded in the
//! state directory, so a run that stopped (a host that did not come back, a killed process) is
//! continued by the next at that stage; hosts that already have it are not restarted again.

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
use crate::pki::rotation::{self, Ca, Rotation, Stage};
use crate::pki::{self, PkiError, Renewal};
use crate::plan::Plan;
use crate::transport::Remote;

/// Everything `certs rotate-ca` can be told.
#[derive(Debug, Clone)]
pub struct RotateOptions {
    pub session: SessionOptions,
    pub max_clock_skew: Duration,
    /// The CAs to rotate; `None`: every CA, or those of the rotation in progress.
    pub cas: Option<Vec<Ca>>,
    /// Skip the etcd snapshot.
    pub no_snapshot: bool,
}

/// One stage as rolled out (or, in a dry run, as it would be).
#[derive(Debug)]
pub struct StageReport {
    pub stage: Stage,
    /// Files re-issued or rewritten in the state directory for it.
    pub renewed: Vec<Renewal>,
    /// Per host, in inventory order.
    pub pushed: Vec<(String, PushReport)>,
    /// Where each written host keeps the files this stage replaced.
    pub backup: PathBuf,
}

/// What `certs rotate-ca` did.
#[derive(Debug, Default)]
pub struct RotateReport {
    pub cas: Vec<Ca>,
    /// When the rotation started.
    pub started: String,
    /// The stage this run continued at, when an earlier run had started the rotation.
    pub resumed: Option<Stage>,
    pub stages: Vec<StageReport>,
    /// Where the state directory keeps the old CAs now that the rotation is over.
    pub archived: Option<PathBuf>,
    /// The etcd snapshot taken before this run changed anything.
    pub snapshot: Option<PathBuf>,
    pub work: Duration,
    pub waited: Duration,
    pub phases: Vec<(&'static str, Duration)>,
}

/// Runs `certs rotate-ca` on the hosts `connector` reaches.
pub async fn rotate<C: Connector>(
    plan: &Plan,
    state_dir: &Path,
    options: &RotateOptions,
    connector: &C,
    progress: &Progress,
) -> Result<RotateReport, ActionError> {
    let started = Instant::now();
    let vip = preflight::start_vip_probe(plan);
    let mut session = Session::open(plan, state_dir, options.session.clone(), connector, progress).await?;
    let result = phases(&mut session, options, vip, started).await;
    session.close(connector).await;
    result
}

/// Preflight with the cluster ids hosts may carry in the middle of a rotation.
async fn check<R: Remote>(
    session: &Session<'_, R>,
    vip: preflight::VipProbe,
    options: &RotateOptions,
) -> Result<preflight::Outcome, ActionError> {
    let expect = Expectations {
        max_clock_skew: options.max_clock_skew,
        cluster_id: pki::existing_cluster_id(session.state_dir())?,
        also_cluster_id: rotation::other_cluster_id(session.state_dir())?,
    };
    let found = preflight::run(session, vip, &expect, &preflight::RunningCluster { command: "certs rotate-ca" })
        .await
        .passed()?;
    session.lap("preflight");
    Ok(found)
}

async fn phases<R: Remote>(
    session: &mut Session<'_, R>,
    options: &RotateOptions,
    vip: preflight::VipProbe,
    started: Instant,
) -> Result<RotateReport, ActionError> {
    let plan = session.plan;
    let pending = rotation::pending(session.state_dir())?;
    if let (Some(found), Some(asked)) = (&pending, &options.cas)
        && &found.cas != asked
    {
        return Err(PkiError::Rotation {
            path: session.state_dir().join(rotation::ROTATION_DIR),
            detail: format!(
                "a rotation of {} started at {} is in progress; run certs rotate-ca without --ca (or with --ca \
                 for exactly those) to finish it first",
                rotation::names(&found.cas),
                found.started
            ),
        }
        .into());
    }
    let mut found = check(session, vip, options).await?;
    // Everything below writes the state directory: a dry run works on a copy.
    session.use_scratch_state()?;
    let at = super::snapshot::stamp(OffsetDateTime::now_utc());
    let mut report = RotateReport { resumed: pending.as_ref().map(|r| r.stage), ..RotateReport::default() };
    if let Some(rotation) = &pending {
        // A run stopped between a stage's key and certificate leaves them apart: put them back.
        rotation::apply(session.state_dir(), rotation)?;
    }
    if !session.options.dry_run && !options.no_snapshot {
        let current = pki::load(plan, session.state_dir())?;
        report.snapshot = Some(super::snapshot::take(session, &current, &at).await?);
        session.lap("snapshot");
    }
    let mut rotation = match pending {
        Some(rotation) => rotation,
        None => {
            let cas = options.cas.clone().unwrap_or_else(|| Ca::ALL.to_vec());
            rotation::begin(plan, session.state_dir(), &cas, &at)?
        }
    };
    report.cas = rotation.cas.clone();
    report.started = rotation.started.clone();
    loop {
        let stage = rotation.stage;
        session.progress.note(format!("stage {stage}: {}", stage.describe()));
        rotation::apply(session.state_dir(), &rotation)?;
        let renewed = pki::generate(plan, session.state_dir())?.renewed;
        session.lap(stage.name());
        let backup = Path::new(BACKUP_DIR).join(format!("{at}-{stage}"));
        let rollout = rollout::certificates(session, &found, &backup).await?;
        report.stages.push(StageReport { stage, renewed, pushed: rollout.reports, backup });
        if stage.next().is_none() && rotation.cas.contains(&Ca::Kubernetes) && !session.options.dry_run {
            publish_ca(session).await?;
        }
        if rotation::advance(session.state_dir(), &mut rotation)?.is_none() {
            break;
        }
        if !session.options.dry_run {
            // The VIP may have moved and the markers changed: look again before the next stage.
            found = check(session, preflight::start_vip_probe(plan), options).await?;
        }
    }
    if !session.options.dry_run {
        report.archived = Some(state_archive(session.state_dir(), &rotation));
    }
    report.waited = session.waited();
    report.work = started.elapsed().saturating_sub(report.waited);
    report.phases = session.phases();
    Ok(report)
}

/// Applies kubeha's cluster objects again: `kube-public/cluster-info`, which nodes joining the
/// cluster read its CA from, names the new cluster CA.
async fn publish_ca<R: Remote>(session: &Session<'_, R>) -> Result<(), ActionError> {
    let pki = pki::load(session.plan, session.state_dir())?;
    let own = crate::objects::kubeha_objects(session.plan, &pki);
    if let Some((host, remote)) = session.control_planes().next() {
        super::objects::apply(session, host, remote, &pki, &own, &[]).await?;
    }
    session.lap("objects");
    Ok(())
}

fn state_archive(state_dir: &Path, rotation: &Rotation) -> PathBuf {
    state_dir.join(rotation::ROTATED_DIR).join(&rotation.started)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::fake::{self, MemoryConnector};
    use crate::actions::wait::WaitOptions;
    use crate::transport::Call;

    fn options(dry_run: bool, cas: Option<Vec<Ca>>) -> RotateOptions {
        RotateOptions {
            session: SessionOptions {
                parallel: 4,
                dry_run,
                wait: WaitOptions { timeout: Duration::from_millis(300), interval: Duration::from_millis(50) },
                kubelet_sync: Duration::ZERO,
                host_lock: None,
            },
            max_clock_skew: Duration::from_secs(5),
            cas,
            no_snapshot: true,
        }
    }

    fn writes(hosts: &MemoryConnector) -> Vec<(String, Call)> {
        hosts
            .hosts
            .iter()
            .flat_map(|(name, h)| h.calls().into_iter().map(move |c| (name.clone(), c)))
            .filter(|(_, c)| matches!(c, Call::Put { .. }))
            .collect()
    }

    fn written(stage: &StageReport, host: &str) -> Vec<String> {
        let (_, pushed) = stage.pushed.iter().find(|(h, _)| h == host).unwrap();
        pushed.written.iter().map(|p| p.display().to_string()).collect()
    }

    #[tokio::test]
    async fn a_dry_run_lists_the_three_stages_and_what_each_host_would_get_and_changes_nothing() {
        let (plan, hosts, state) = fake::installed();
        let before = std::fs::read(state.path().join("pki/ca.crt")).unwrap();
        let report = rotate(&plan, state.path(), &options(true, None), &hosts, &Progress::hidden()).await.unwrap();
        let stages: Vec<Stage> = report.stages.iter().map(|s| s.stage).collect();
        assert_eq!(stages, Stage::ALL);
        assert_eq!(report.cas, Ca::ALL);
        let trust = &report.stages[0];
        for path in ["/etc/kubernetes/pki/ca.crt", "/etc/kubernetes/pki/etcd/ca.crt", "/etc/kubernetes/admin.conf"] {
            assert!(written(trust, "cp2").iter().any(|p| p == path), "trust-both: cp2 would not get {path}");
        }
        assert!(
            !written(trust, "cp2").iter().any(|p| p == "/etc/kubernetes/pki/apiserver.crt"),
            "trust-both re-issues nothing"
        );
        assert!(written(&report.stages[1], "cp2").iter().any(|p| p == "/etc/kubernetes/pki/apiserver.crt"));
        assert!(written(&report.stages[1], "w1").iter().any(|p| p == "/etc/kubernetes/kubelet.conf"));
        assert!(writes(&hosts).is_empty(), "a dry run wrote to a host: {:?}", writes(&hosts));
        assert_eq!(std::fs::read(state.path().join("pki/ca.crt")).unwrap(), before);
        assert_eq!(rotation::pending(state.path()).unwrap(), None);
        assert!(!state.path().join(rotation::ROTATION_DIR).exists());
    }

    #[tokio::test]
    async fn a_stage_that_stops_is_recorded_and_the_rerun_continues_there_with_hosts_of_either_ca() {
        let (plan, hosts, state) = fake::installed();
        let old_ca = std::fs::read(state.path().join("pki/ca.crt")).unwrap();
        // Nothing answers health checks on the in-memory hosts: the worker is written (all at
        // once), and the gate before the first control plane stops the stage.
        let err = rotate(&plan, state.path(), &options(false, Some(vec![Ca::Kubernetes])), &hosts, &Progress::hidden())
            .await
            .unwrap_err();
        assert!(matches!(&err, ActionError::Stopped { written: false, host, .. } if host == "cp1"), "{err}");
        let pending = rotation::pending(state.path()).unwrap().unwrap();
        assert_eq!((pending.stage, pending.cas.as_slice()), (Stage::TrustBoth, &[Ca::Kubernetes][..]));
        let w1_ca = hosts.host("w1").file("/etc/kubernetes/pki/ca.crt").unwrap().content;
        assert!(w1_ca.starts_with(&old_ca) && w1_ca.len() > old_ca.len(), "the worker got the bundle");

        // certs renew waits for the rotation, and writes nothing.
        let renew = crate::actions::renew::RenewOptions {
            session: options(false, None).session,
            max_clock_skew: Duration::from_secs(5),
            targets: vec!["admin.conf".into()],
            new_keys: false,
            no_snapshot: true,
        };
        for h in hosts.hosts.values() {
            h.take_calls();
        }
        let err =
            crate::actions::renew::renew(&plan, state.path(), &renew, &hosts, &Progress::hidden()).await.unwrap_err();
        assert!(err.to_string().contains("finish it with kubeha certs rotate-ca before kubeha certs renew"), "{err}");
        assert!(writes(&hosts).is_empty());

        // Another CA than the one being rotated is refused, and nothing is written.
        for h in hosts.hosts.values() {
            h.take_calls();
        }
        let err = rotate(&plan, state.path(), &options(false, Some(vec![Ca::Etcd])), &hosts, &Progress::hidden())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("a rotation of kubernetes started at"), "{err}");
        assert!(writes(&hosts).is_empty());

        // Hosts carrying either CA's id are this cluster's: the re-run gets past preflight to
        // the same stage (and stops at the same gate).
        rotation::advance(state.path(), &mut pending.clone()).unwrap();
        let err = rotate(&plan, state.path(), &options(false, None), &hosts, &Progress::hidden()).await.unwrap_err();
        assert!(matches!(&err, ActionError::Stopped { .. }), "{err}");
        assert_eq!(rotation::pending(state.path()).unwrap().unwrap().stage, Stage::Reissue);
        let markers: Vec<String> = ["w1", "cp1"]
            .iter()
            .map(|h| {
                let text = hosts.host(h).file(crate::marker::PATH).unwrap().content;
                crate::marker::HostMarker::parse(&String::from_utf8(text).unwrap()).unwrap().cluster_id
            })
            .collect();
        assert_ne!(markers[0], markers[1], "w1 has the new CA's id, cp1 (not reached) the old one");
        let new_id = crate::pki::existing_cluster_id(state.path()).unwrap().unwrap();
        assert_eq!(markers[0], new_id);
        let err = rotate(&plan, state.path(), &options(false, None), &hosts, &Progress::hidden()).await.unwrap_err();
        assert!(matches!(&err, ActionError::Stopped { .. }), "preflight accepts both ids: {err}");
    }
}
