//! `join-node`: hosts the inventory lists but the running cluster does not have yet join it,
//! without costing etcd quorum or the endpoint.
//!
//! The cluster as it runs comes from the hosts (the etcd member list, the markers), not from the
//! inventory alone ([`membership::running_plan`]). The sequence: open a session → preflight with
//! [`JoinRules`] → the running members must be healthy, the etcd member list must hold no
//! stranger and no unfinished join of another host, and the final member count must be odd
//! (all refusals before anything changes, exit code 3) → certificates for the new hosts →
//! workers, all at once → control planes, one at a time:
//!
//! 1. its etcd member is added as a learner through a running member (or the learner a cut-short
//!    join left is reused), and the member list it starts with (`existing`) is recorded;
//! 2. its certificates, configs and etcd manifest are written; etcd starts and catches up;
//! 3. the learner is promoted once etcd says it is in sync (polled; bounded by `--timeout`);
//! 4. its apiserver, controller-manager, scheduler and haproxy are written and waited for;
//! 5. every other member's files are converged with [`rollout::converge`] (new haproxy backends,
//!    keepalived peers, etcd servers), rolled one control plane at a time, the VIP holder last;
//! 6. its keepalived starts last, once every peer knows it (earlier, it would hear no
//!    advertisement and claim the VIP too).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::checks::{Check, Expectations, Status};
use super::error::ActionError;
use super::membership::{self, Etcd, EtcdPromoter, Standing};
use super::preflight::{self, Outcome, Rules};
use super::progress::Progress;
use super::rollout::{self, Gates, Policy, Restart};
use super::session::{Connector, Session, SessionOptions};
use super::wait::Health;
use crate::files::File;
use crate::host::facts::Ownership;
use crate::host::files::PushReport;
use crate::host::layout::{MANIFESTS_DIR, manifest};
use crate::pki::{self, Pki};
use crate::plan::{Host, Plan, Role};
use crate::transport::Remote;

/// Everything `join-node` can be told.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    pub session: SessionOptions,
    pub max_clock_skew: Duration,
    /// Accept an even number of etcd members at the end.
    pub allow_even_members: bool,
}

/// What `join-node` did.
#[derive(Debug, Default)]
pub struct JoinReport {
    /// Per host and step, in order.
    pub pushed: Vec<(String, PushReport)>,
    pub warnings: Vec<Check>,
    /// The named hosts that joined (or, in a dry run, would join).
    pub joined: Vec<String>,
    /// The named hosts that were members already (their files were converged).
    pub already: Vec<String>,
    /// What happens to etcd, per control plane (for dry runs and the report).
    pub etcd_steps: Vec<String>,
    pub work: Duration,
    pub waited: Duration,
    pub phases: Vec<(&'static str, Duration)>,
}

/// Joins the hosts named `names` (all in `plan`) to the running cluster. Only the control planes
/// and the named hosts are worked on ([`membership::scope`]).
pub async fn join_node<C: Connector>(
    plan: &Plan,
    names: &[String],
    state_dir: &Path,
    options: &JoinOptions,
    connector: &C,
    progress: &Progress,
) -> Result<JoinReport, ActionError> {
    let started = Instant::now();
    let scope = membership::scope(plan, names);
    let mut session = Session::open(&scope, state_dir, options.session.clone(), connector, progress).await?;
    let result = phases(&mut session, names, options, started).await;
    session.close(connector).await;
    result
}

/// `join-node`'s rules: the named hosts are fresh or half-joined hosts of this cluster (any
/// role they had must be the inventory's); the other hosts kubeha set up keep their roles; a
/// cluster of this inventory runs.
pub struct JoinRules<'n> {
    pub names: &'n [String],
}

impl Rules for JoinRules<'_> {
    fn host(&self, _plan: &Plan, host: &Host, ownership: &Ownership) -> Vec<Check> {
        let role = host.role.to_string();
        let named = self.names.contains(&host.name);
        match ownership {
            Ownership::Ours(marker) if marker.role != role => vec![Check::new(
                &host.name,
                "membership",
                Status::Fail,
                format!(
                    "kubeha set this host up as a {}, the inventory says {role}: remove it with `kubeha remove-node {}` \
                     and reset it first",
                    marker.role, host.name
                ),
            )],
            _ if named => vec![Check::new(&host.name, "membership", Status::Ok, format!("joins as a {role}"))],
            Ownership::Ours(_) => {
                vec![Check::new(&host.name, "membership", Status::Ok, format!("{role} of this cluster"))]
            }
            _ => Vec::new(),
        }
    }

    fn cluster(&self, _plan: &Plan, ownerships: &[(&Host, Ownership)]) -> Vec<Check> {
        let running = ownerships
            .iter()
            .any(|(h, o)| h.role == Role::ControlPlane && o.is_ours() && !self.names.contains(&h.name));
        if running {
            Vec::new()
        } else {
            vec![Check::new(
                "cluster",
                "members",
                Status::Fail,
                "no control plane of the inventory runs this cluster: bring it up with `kubeha init` first",
            )]
        }
    }
}

async fn phases<R: Remote>(
    session: &mut Session<'_, R>,
    names: &[String],
    options: &JoinOptions,
    started: Instant,
) -> Result<JoinReport, ActionError> {
    let plan = session.plan;
    let cluster_id = pki::existing_cluster_id(session.state_dir())?;
    if cluster_id.is_none() {
        let row = Check::new(
            "cluster",
            "state",
            Status::Fail,
            format!(
                "{} holds no cluster CA: bring the cluster up with `kubeha init` first",
                session.state_dir().display()
            ),
        );
        return Err(ActionError::Preflight { checks: vec![row] });
    }
    pki::rotation::refuse_if_pending(session.state_dir(), "kubeha join-node")?;
    let expect = Expectations { max_clock_skew: options.max_clock_skew, cluster_id, also_cluster_id: None };
    let found = preflight::run(session, None, &expect, &JoinRules { names }).await.passed()?;

    // What runs now, and whether it can take the change.
    // The PKI of the hosts that run now (the new hosts' certificates are made below).
    let ours = plan.with_hosts(|h| matches!(found.hosts.get(&h.name), Some((_, Ownership::Ours(_)))));
    let pki = pki::load(&ours, session.state_dir())?;
    let interval = session.options.wait.interval;
    let etcd = Etcd::new(&pki, interval)?;
    let (_, _, members) = etcd.members(session, &ours, names).await?;
    let before = membership::running_plan(plan, &members, &found, &[]);
    let health = Health::new(&before, &pki, interval)?;
    let mut rows = membership::health_rows(session, &before, &health, names).await;
    rows.extend(membership::member_checks(plan, &members, names));
    let joining_cps: Vec<&Host> = plan.control_planes().filter(|h| names.contains(&h.name)).collect();
    let voting = before.control_planes().filter(|h| !names.contains(&h.name)).count();
    let after = voting + joining_cps.len();
    if let Some(why) = membership::even_refusal(after, options.allow_even_members).filter(|_| !joining_cps.is_empty()) {
        rows.push(Check::new("cluster", "members", Status::Fail, why));
    }
    if rows.iter().any(|r| r.status == Status::Fail) {
        let mut checks = found.checks;
        checks.extend(rows);
        return Err(ActionError::Preflight { checks });
    }
    session.lap("preflight");

    session.use_scratch_state()?;
    pki::generate(plan, session.state_dir())?;
    let pki = pki::load(plan, session.state_dir())?;
    session.lap("certificates");

    let mut report = JoinReport { warnings: found.warnings(), ..JoinReport::default() };
    for h in plan.hosts.iter().filter(|h| names.contains(&h.name)) {
        let member =
            h.role == Role::ControlPlane && matches!(membership::standing(&members, h), Standing::Voting { .. });
        let worker = h.role == Role::Worker && matches!(found.hosts.get(&h.name), Some((_, Ownership::Ours(_))));
        if member || worker { report.already.push(h.name.clone()) } else { report.joined.push(h.name.clone()) }
    }
    if session.options.dry_run {
        dry_run(session, &found, &members, names, &pki, &mut report).await?;
        report.phases = session.phases();
        return Ok(report);
    }

    super::removed::forget(session.state_dir(), names).map_err(|e| ActionError::Membership {
        host: names.join(", "),
        step: "forgetting an earlier removal in the state directory".into(),
        detail: e.to_string(),
    })?;
    let workers: Vec<String> = plan.workers().filter(|h| names.contains(&h.name)).map(|h| h.name.clone()).collect();
    if !workers.is_empty() {
        let running = found.with_node_settings(&membership::running_plan(plan, &members, &found, &workers));
        let files = crate::render::render(&running, &pki)?;
        let only: BTreeMap<String, Vec<File>> = files.into_iter().filter(|(h, _)| workers.contains(h)).collect();
        let policy = Policy::new(Restart::Changed).fresh(found.fresh());
        let rollout = rollout::converge(session, &only, &found.previous_files(), &policy, &NoGates).await?;
        report.pushed.extend(rollout.reports);
        session.lap("workers");
    }
    // A learner a cut-short run left goes first: etcd takes one learner at a time.
    let mut order = joining_cps.clone();
    order.sort_by_key(|h| !matches!(membership::standing(&members, h), Standing::Learner { .. }));
    let mut initials = BTreeMap::new();
    for host in order {
        let shared = Shared { found: &found, etcd: &etcd, pki: &pki, workers: &workers };
        let joined = join_control_plane(session, &shared, host, &mut initials, &mut report).await;
        joined.map_err(|e| ActionError::Step {
            host: host.name.clone(),
            step: "joining as a control plane".into(),
            source: Box::new(e),
        })?;
        session.lap("control plane");
    }

    // The whole cluster, as it now runs, healthy.
    let (_, _, members) = etcd.members(session, plan, &[]).await?;
    let now = membership::running_plan(plan, &members, &found, &workers);
    let health = Health::new(&now, &pki, interval)?;
    session.waiting(health.cluster(session)).await?;
    session.lap("wait");
    report.waited = session.waited();
    report.work = started.elapsed().saturating_sub(report.waited);
    report.phases = session.phases();
    Ok(report)
}

/// What every control plane's join shares.
#[derive(Clone, Copy)]
struct Shared<'a> {
    found: &'a Outcome,
    etcd: &'a Etcd,
    pki: &'a Pki,
    /// The workers this run joined.
    workers: &'a [String],
}

async fn join_control_plane<R: Remote>(
    session: &Session<'_, R>,
    shared: &Shared<'_>,
    host: &Host,
    initials: &mut BTreeMap<String, crate::plan::EtcdInitial>,
    report: &mut JoinReport,
) -> Result<(), ActionError> {
    let (plan, progress) = (session.plan, session.progress);
    let Shared { found, etcd, pki, workers } = *shared;
    let remote = session.connected().find(|(h, _)| h.name == host.name).map(|(_, r)| r).ok_or_else(|| {
        ActionError::Membership { host: host.name.clone(), step: "connecting".into(), detail: "not connected".into() }
    })?;
    let step = |what: &'static str| {
        move |e: ActionError| ActionError::Step { host: host.name.clone(), step: what.into(), source: Box::new(e) }
    };
    let (via, via_remote, members) = etcd.members(session, plan, std::slice::from_ref(&host.name)).await?;
    let mut joining = workers.to_vec();
    joining.push(host.name.clone());
    let mut running = found.with_node_settings(&membership::running_plan(plan, &members, found, &joining));
    // Members this run joined: their markers were written after preflight read them.
    for h in &mut running.hosts {
        if let Some(initial) = initials.get(&h.name) {
            h.node.etcd_initial = Some(initial.clone());
        }
    }
    let standing = membership::standing(&members, host);
    let id = match standing {
        Standing::Voting { id } => {
            report.etcd_steps.push(format!("{}: already a voting etcd member", host.name));
            id
        }
        Standing::Learner { .. } | Standing::Absent => {
            progress.step(&host.name, format!("adding its etcd member as a learner (through {})", via.name));
            let (id, members) =
                etcd.add_learner((via, via_remote), host, members).await.map_err(step("adding its etcd learner"))?;
            let initial = membership::initial_cluster(&members, host).map_err(|detail| ActionError::Membership {
                host: host.name.clone(),
                step: "starting its etcd member".into(),
                detail,
            })?;
            if let Some(h) = running.hosts.iter_mut().find(|h| h.name == host.name) {
                h.node.etcd_initial = Some(initial.clone());
            }
            initials.insert(host.name.clone(), initial);
            id
        }
    };
    let files = crate::render::render(&running, pki)?;
    let own = &files[&host.name];
    let etcd_manifest = PathBuf::from(manifest("etcd"));
    let keepalived = PathBuf::from(manifest("keepalived"));
    let pick = |keep: &dyn Fn(&File) -> bool| -> BTreeMap<String, Vec<File>> {
        BTreeMap::from([(host.name.clone(), own.iter().filter(|f| keep(f)).cloned().collect())])
    };
    let none = BTreeMap::new();
    let quick = Policy::new(Restart::Changed);

    // 2. Certificates, configs and the etcd manifest: etcd starts as a learner.
    let first = pick(&|f| !f.path.starts_with(MANIFESTS_DIR) || f.path == etcd_manifest);
    let pushed = rollout::converge(session, &first, &none, &quick, &NoGates)
        .await
        .map_err(step("writing its certificates, configs and etcd manifest"))?;
    report.pushed.extend(pushed.reports);

    // 3. Promotion once caught up.
    if !matches!(standing, Standing::Voting { .. }) {
        progress.step(&host.name, "waiting for its etcd learner to catch up");
        let deadline = Instant::now() + session.options.wait.timeout;
        let promoter = EtcdPromoter { etcd, via: (via, via_remote), learner: (host, remote), id };
        session
            .waiting(membership::promote_when_caught_up(&promoter, &host.name, deadline, etcd.interval(), |m| {
                progress.detail(&host.name, m)
            }))
            .await?;
        progress.step(&host.name, "etcd member promoted to voting");
        report.etcd_steps.push(format!("{}: etcd learner added through {} and promoted", host.name, via.name));
    }

    // 4. The control-plane pods and haproxy, waited for.
    let second = pick(&|f| f.path != keepalived);
    let pushed =
        rollout::converge(session, &second, &none, &quick, &NoGates).await.map_err(step("writing its static pods"))?;
    report.pushed.extend(pushed.reports);
    let health = Health::new(&running, pki, session.options.wait.interval)?;
    let deadline = Instant::now() + session.options.wait.timeout;
    session
        .waiting(health.control_plane(host, remote, deadline, progress))
        .await
        .map_err(|e| step("waiting for its etcd and kube-apiserver")(e.into()))?;

    // 5. Every other member learns of it, one control plane at a time, the VIP holder last.
    let mut others: BTreeMap<String, Vec<File>> = files.clone();
    others.insert(host.name.clone(), second.into_values().next().unwrap_or_default());
    let previous: BTreeMap<String, Vec<PathBuf>> =
        found.previous_files().into_iter().filter(|(h, _)| *h != host.name).collect();
    let holders = membership::vip_holders(session).await;
    let policy = Policy::new(Restart::Changed).last(holders.clone());
    let gates = membership::HandOver { inner: &health, plan: &running, holders, files: &others };
    let rolled = rollout::converge(session, &others, &previous, &policy, &gates)
        .await
        .map_err(step("updating the other hosts"))?;
    report.pushed.extend(rolled.reports.into_iter().filter(|(h, _)| *h != host.name));

    // 6. Its keepalived, now that every peer knows it; files a previous marker lists and this
    // render does not are removed here.
    let full = BTreeMap::from([(host.name.clone(), own.clone())]);
    let previous: BTreeMap<String, Vec<PathBuf>> =
        found.previous_files().into_iter().filter(|(h, _)| *h == host.name).collect();
    let pushed =
        rollout::converge(session, &full, &previous, &quick, &health).await.map_err(step("starting its keepalived"))?;
    report.pushed.extend(pushed.reports);
    progress.finish(&host.name, "joined");
    Ok(())
}

/// What a dry run shows: the files every host of the cluster would have once the named hosts
/// joined, and the etcd steps.
async fn dry_run<R: Remote>(
    session: &Session<'_, R>,
    found: &Outcome,
    members: &[crate::host::etcd::Member],
    names: &[String],
    pki: &Pki,
    report: &mut JoinReport,
) -> Result<(), ActionError> {
    let plan = session.plan;
    let mut running = found.with_node_settings(&membership::running_plan(plan, members, found, names));
    let mut list = members.to_vec();
    for host in plan.control_planes().filter(|h| names.contains(&h.name)) {
        if matches!(membership::standing(&list, host), Standing::Voting { .. }) {
            continue;
        }
        report.etcd_steps.push(format!(
            "{}: would add an etcd learner at {}, start it, promote it once caught up, then roll every other \
             control plane one at a time",
            host.name,
            membership::peer_url(host)
        ));
        let initial = membership::initial_cluster(&list, host).map_err(|detail| ActionError::Membership {
            host: host.name.clone(),
            step: "starting its etcd member".into(),
            detail,
        })?;
        if let Some(h) = running.hosts.iter_mut().find(|h| h.name == host.name) {
            h.node.etcd_initial = Some(initial);
        }
        list.push(crate::host::etcd::Member {
            id: 0,
            name: host.name.clone(),
            peer_urls: vec![membership::peer_url(host)],
            client_urls: vec![],
            is_learner: false,
        });
    }
    let files = crate::render::render(&running, pki)?;
    let rollout =
        rollout::converge(session, &files, &found.previous_files(), &Policy::new(Restart::Changed), &NoGates).await?;
    report.pushed = rollout.reports;
    Ok(())
}

/// No gates: for hosts that serve nothing yet (a joining control plane before it is promoted),
/// whose health is waited for explicitly.
pub struct NoGates;

impl<R: Remote> Gates<R> for NoGates {
    async fn before(&self, _: &Session<'_, R>, _: &Host) -> Result<(), ActionError> {
        Ok(())
    }

    async fn after(&self, _: &Session<'_, R>, _: &Host, _: &R) -> Result<(), ActionError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::fake::{self, MemoryConnector};
    use crate::actions::session::HostLockOptions;
    use crate::actions::wait::WaitOptions;
    use crate::transport::{Call, MemoryRemote};

    fn options() -> JoinOptions {
        JoinOptions {
            session: SessionOptions {
                parallel: 4,
                dry_run: false,
                wait: WaitOptions { timeout: Duration::from_millis(200), interval: Duration::from_millis(50) },
                kubelet_sync: Duration::ZERO,
                host_lock: Some(HostLockOptions {
                    command: "kubeha join-node".into(),
                    ttl: Duration::from_secs(60),
                    force: false,
                }),
            },
            max_clock_skew: Duration::from_secs(5),
            allow_even_members: false,
        }
    }

    fn puts(host: &MemoryRemote) -> Vec<Call> {
        host.calls().into_iter().filter(|c| matches!(c, Call::Put { .. })).collect()
    }

    /// The fake inventory with a second worker, and hosts where `init` ran on all but w2.
    fn running() -> (Plan, MemoryConnector, tempfile::TempDir) {
        let text = fake::INVENTORY.replace(
            "    - {name: w1, address: 198.18.0.21, role: worker}\n",
            "    - {name: w1, address: 198.18.0.21, role: worker}\n    - {name: w2, address: 198.18.0.22, role: worker}\n",
        );
        let plan = crate::inventory::parse(&text, std::path::Path::new("/")).unwrap();
        let hosts = MemoryConnector::new(&plan);
        let state = tempfile::tempdir().unwrap();
        let subset = plan.with_hosts(|h| h.name != "w2");
        pki::generate(&subset, state.path()).unwrap();
        let files = crate::render::render(&subset, &pki::load(&subset, state.path()).unwrap()).unwrap();
        for (host, files) in files {
            for f in files {
                hosts.host(&host).insert_file(&f.path, f.mode, 0, 0, f.content.clone());
            }
        }
        (plan, hosts, state)
    }

    #[tokio::test]
    async fn without_a_cluster_in_the_state_directory_nothing_is_written() {
        let (plan, hosts, _) = running();
        let empty = tempfile::tempdir().unwrap();
        let err =
            join_node(&plan, &["w2".into()], empty.path(), &options(), &hosts, &Progress::hidden()).await.unwrap_err();
        let ActionError::Preflight { checks } = &err else { panic!("{err}") };
        assert!(checks[0].detail.contains("kubeha init"), "{checks:?}");
        for (name, host) in &hosts.hosts {
            assert!(puts(host).is_empty(), "{name} was written to");
        }
    }

    #[tokio::test]
    async fn a_cluster_whose_etcd_cannot_be_read_gets_nothing_written() {
        // The in-memory hosts serve no etcd: the member list, read before anything is
        // written, cannot be had, and the join stops there.
        let (plan, hosts, state) = running();
        let err =
            join_node(&plan, &["w2".into()], state.path(), &options(), &hosts, &Progress::hidden()).await.unwrap_err();
        assert!(matches!(err, ActionError::Etcd(_)), "{err}");
        for (name, host) in &hosts.hosts {
            assert!(puts(host).is_empty(), "{name} was written to");
        }
        assert!(!state.path().join("nodes/w2").exists(), "w2's kubelet identity was issued before the checks");
    }

    #[test]
    fn join_rules_refuse_a_changed_role_and_need_a_running_cluster() {
        let (plan, _, _) = running();
        let rules = JoinRules { names: &["w2".to_string()] };
        let marker = crate::marker::HostMarker {
            cluster: "mem".into(),
            cluster_id: "sha256:00".into(),
            host: "w2".into(),
            role: "control-plane".into(),
            control_planes: vec![],
            files: vec![],
            etcd_initial_cluster: None,
            etcd_initial_cluster_state: None,
        };
        let w2 = plan.host("w2").unwrap();
        let rows = rules.host(&plan, w2, &Ownership::Ours(Box::new(marker)));
        assert_eq!(rows[0].status, Status::Fail, "{rows:?}");
        assert_eq!(rules.host(&plan, w2, &Ownership::Fresh)[0].detail, "joins as a worker");
        let none: Vec<(&Host, Ownership)> = plan.hosts.iter().map(|h| (h, Ownership::Fresh)).collect();
        assert!(rules.cluster(&plan, &none)[0].detail.contains("kubeha init"));
    }
}
