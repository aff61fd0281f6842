//! `remove-node`: one host leaves the running cluster without costing quorum or the endpoint.
//!
//! Refusals first, before anything changes (exit code 3): another member unhealthy, quorum lost
//! once the member is gone, an even member count without `--allow-even-members`, the last
//! member (that is `reset`). Then, for a control plane:
//!
//! 1. its etcd member is removed through another member (first: whatever happens next, no
//!    stale member is left behind; its apiserver keeps answering through the other members);
//! 2. its keepalived stops, so the VIP (if it held it) moves to another control plane, which
//!    kubeha waits for;
//! 3. its other static pods stop;
//! 4. every other member's files are converged without it (haproxy backends, keepalived peers,
//!    etcd servers) with [`rollout::converge`], one control plane at a time, the VIP holder last;
//! 5. kubeha's files, the marker and the removed member's etcd data leave the host.
//!
//! For a worker: its Node object is deleted through the apiserver, then its files leave it.
//! A host that cannot be reached (a dead machine being replaced) is taken out of the cluster
//! all the same; cleaning it is left to `reset` once it is back. The removal is recorded in the
//! state directory ([`super::removed`]) so that `init` does not recreate the host while the
//! inventory still lists it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::checks::{Check, Expectations, Status};
use super::error::ActionError;
use super::membership::{self, Etcd, Standing};
use super::preflight::{self, Rules};
use super::progress::Progress;
use super::rollout::{self, Policy, Restart};
use super::session::{Connector, Session, SessionOptions};
use super::wait::Health;
use crate::host::apiserver::ApiServerClient;
use crate::host::cleanup::Cleanup;
use crate::host::facts::Ownership;
use crate::host::files::PushReport;
use crate::host::layout::manifest;
use crate::https::Request;
use crate::pki;
use crate::plan::{Host, Plan, Role};
use crate::transport::Remote;

/// Everything `remove-node` can be told.
#[derive(Debug, Clone)]
pub struct RemoveOptions {
    pub session: SessionOptions,
    pub max_clock_skew: Duration,
    pub allow_even_members: bool,
}

/// What `remove-node` did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct RemoveReport {
    /// What happened (or would), in order.
    pub steps: Vec<String>,
    pub pushed: Vec<(String, PushReport)>,
    pub warnings: Vec<Check>,
    pub work: Duration,
    pub waited: Duration,
    pub phases: Vec<(&'static str, Duration)>,
}

pub async fn remove_node<C: Connector>(
    plan: &Plan,
    name: &str,
    state_dir: &std::path::Path,
    options: &RemoveOptions,
    connector: &C,
    progress: &Progress,
) -> Result<RemoveReport, ActionError> {
    let started = Instant::now();
    let scope = membership::scope(plan, &[name.to_string()]);
    let mut session = Session::open(&scope, state_dir, options.session.clone(), connector, progress).await?;
    let result = phases(&mut session, name, options, started).await;
    session.close(connector).await;
    result
}

/// `remove-node`'s rules: the other hosts kubeha set up keep their roles; the host leaving may
/// be anything (even gone).
pub struct RemoveRules<'n> {
    pub name: &'n str,
}

impl Rules for RemoveRules<'_> {
    fn host(&self, _plan: &Plan, host: &Host, ownership: &Ownership) -> Vec<Check> {
        match ownership {
            _ if host.name == self.name => {
                vec![Check::new(&host.name, "membership", Status::Ok, "leaves the cluster")]
            }
            Ownership::Ours(marker) if marker.role != host.role.to_string() => vec![Check::new(
                &host.name,
                "membership",
                Status::Fail,
                format!("kubeha set this host up as a {}, the inventory says {}", marker.role, host.role),
            )],
            _ => Vec::new(),
        }
    }

    fn cluster(&self, _plan: &Plan, _ownerships: &[(&Host, Ownership)]) -> Vec<Check> {
        Vec::new()
    }
}

/// The quorum rows of removing one voting member from `voting`, `healthy` of the others being
/// healthy.
pub fn quorum_rows(name: &str, voting: usize, healthy: usize, allow_even: bool) -> Vec<Check> {
    let after = voting - 1;
    let mut rows = Vec::new();
    if after == 0 {
        rows.push(Check::new(
            name,
            "quorum",
            Status::Fail,
            "is the cluster's last etcd member: remove the whole cluster with `kubeha reset --all` instead",
        ));
        return rows;
    }
    let need = membership::quorum(after);
    if healthy < need {
        rows.push(Check::new(
            name,
            "quorum",
            Status::Fail,
            format!(
                "removing it leaves {after} etcd members, of which {healthy} are healthy: etcd needs {need} to keep \
                 quorum; bring the unhealthy members back first"
            ),
        ));
    }
    if let Some(why) = membership::even_refusal(after, allow_even) {
        rows.push(Check::new(name, "quorum", Status::Fail, why));
    }
    rows
}

async fn phases<R: Remote>(
    session: &mut Session<'_, R>,
    name: &str,
    options: &RemoveOptions,
    started: Instant,
) -> Result<RemoveReport, ActionError> {
    let plan = session.plan;
    let target = plan.host(name).expect("the command line checked the name");
    pki::rotation::refuse_if_pending(session.state_dir(), "kubeha remove-node")?;
    let expect = Expectations {
        max_clock_skew: options.max_clock_skew,
        cluster_id: pki::existing_cluster_id(session.state_dir())?,
        also_cluster_id: None,
    };
    let mut found = preflight::run(session, None, &expect, &RemoveRules { name }).await;
    // The host leaving may be broken or gone: what is wrong with it is a warning.
    for row in found.checks.iter_mut().filter(|c| c.host == name && c.status == Status::Fail) {
        row.status = Status::Warn;
        row.detail = format!("{} (it is being removed)", row.detail);
    }
    // Other problems are shown together with the cluster's health and quorum below.
    let ours = plan.with_hosts(|h| h.name != name && matches!(found.hosts.get(&h.name), Some((_, Ownership::Ours(_)))));
    let pki = pki::load(&ours, session.state_dir())?;
    let interval = session.options.wait.interval;
    let etcd = Etcd::new(&pki, interval)?;
    let members = match etcd.members(session, &ours, &[name.to_string()]).await {
        Ok((_, _, members)) => members,
        Err(_) if found.failed() => return Err(ActionError::Preflight { checks: found.checks }),
        Err(e) => return Err(e),
    };
    let before = membership::running_plan(plan, &members, &found, &[]);
    let standing = membership::standing(&members, target);
    let health = Health::new(&before, &pki, interval)?;
    let mut rows = membership::health_rows(session, &before, &health, &[name.to_string()]).await;
    if let Standing::Voting { .. } = standing {
        let voting = members.iter().filter(|m| !m.is_learner).count();
        let healthy = rows.iter().filter(|r| r.status == Status::Ok).count();
        rows.extend(quorum_rows(name, voting, healthy, options.allow_even_members));
    }
    let joined = target.role == Role::Worker || standing != Standing::Absent;
    let marked = matches!(found.hosts.get(name), Some((_, Ownership::Ours(_))));
    if !joined && !marked {
        rows.push(Check::new(name, "membership", Status::Fail, "is not part of this cluster: nothing to remove"));
    }
    if found.failed() || rows.iter().any(|r| r.status == Status::Fail) {
        let mut checks = found.checks;
        checks.extend(rows);
        return Err(ActionError::Preflight { checks });
    }
    session.lap("preflight");

    let mut report = RemoveReport { warnings: found.warnings(), ..RemoveReport::default() };
    let after = before.with_hosts(|h| h.name != name);
    let remote = session.connected().find(|(h, _)| h.name == name).map(|(_, r)| r);
    let listed = match found.hosts.get(name) {
        Some((_, Ownership::Ours(marker))) => marker.files.clone(),
        _ => Vec::new(),
    };
    let step = |what: &'static str| {
        move |e: ActionError| ActionError::Step { host: name.to_string(), step: what.into(), source: Box::new(e) }
    };

    // 1. The etcd member.
    if let Standing::Voting { id } | Standing::Learner { id, .. } = standing {
        let (via, via_remote, _) = etcd.members(session, &after, &[name.to_string()]).await?;
        report.steps.push(format!("{name}: remove etcd member {id:x} through {}", via.name));
        if !session.options.dry_run {
            session.progress.step(name, format!("removing its etcd member (through {})", via.name));
            etcd.remove((via, via_remote), id).await.map_err(step("removing its etcd member"))?;
        }
    }
    // 2 and 3. Its pods stop: keepalived first, the VIP moves.
    if let (Some(remote), Role::ControlPlane) = (remote, target.role) {
        let keepalived = PathBuf::from(manifest("keepalived"));
        let holds = membership::vip_holders(session).await.iter().any(|h| h == name);
        report.steps.push(format!(
            "{name}: stop its static pods (keepalived first{})",
            if holds { ", the VIP moves" } else { "" }
        ));
        if !session.options.dry_run {
            let first = Cleanup { manifests: vec![keepalived.clone()], ..Cleanup::default() };
            first
                .run(remote)
                .await
                .map_err(|e| step("stopping its keepalived")(ActionError::host("removing files", e)))?;
            if holds {
                session
                    .waiting(membership::wait_vip_elsewhere(session, &after, name))
                    .await
                    .map_err(|e| step("moving the VIP away")(e.into()))?;
            }
            Cleanup::pods(&listed)
                .run(remote)
                .await
                .map_err(|e| step("stopping its static pods")(ActionError::host("removing files", e)))?;
        }
    }
    // 4. Every other host without it.
    if target.role == Role::ControlPlane {
        let files = crate::render::render(&found.with_node_settings(&after), &pki::load(&after, session.state_dir())?)?;
        let previous = found.previous_files().into_iter().filter(|(h, _)| h != name).collect();
        let holders: Vec<String> = membership::vip_holders(session).await.into_iter().filter(|h| h != name).collect();
        let health = Health::new(&after, &pki, interval)?;
        let policy = Policy::new(Restart::Changed).last(holders.clone());
        let gates = membership::HandOver { inner: &health, plan: &after, holders, files: &files };
        let rolled = rollout::converge(session, &files, &previous, &policy, &gates)
            .await
            .map_err(step("updating the other hosts"))?;
        report.pushed = rolled.reports;
    } else {
        report.steps.push(format!("{name}: delete its Node object"));
        if !session.options.dry_run {
            delete_node(session, &after, &pki, name).await?;
        }
    }
    // 5. The host itself.
    match remote {
        Some(remote) => {
            let cleanup = Cleanup::everything(&listed, target.role == Role::ControlPlane);
            report.steps.push(format!("{name}: remove {}", cleanup.paths().join(", ")));
            if !session.options.dry_run {
                cleanup.run(remote).await.map_err(|e| step("removing kubeha's files")(ActionError::host("removing files", e)))?;
            }
        }
        None => report.steps.push(format!(
            "{name}: not reachable, its files stay: run `kubeha reset -i INVENTORY {name} --yes --delete-etcd-data` once it is back"
        )),
    }
    if !session.options.dry_run {
        super::removed::record(session.state_dir(), name).map_err(|e| ActionError::Membership {
            host: name.to_string(),
            step: "recording the removal in the state directory".into(),
            detail: e.to_string(),
        })?;
        session.waiting(health.endpoint(Instant::now() + session.options.wait.timeout, session.progress)).await?;
    }
    session.lap("remove");
    report.waited = session.waited();
    report.work = started.elapsed().saturating_sub(report.waited);
    report.phases = session.phases();
    Ok(report)
}

/// Deletes the Node object `name` through the first control plane of `plan`; one already gone
/// is fine.
async fn delete_node<R: Remote>(
    session: &Session<'_, R>,
    plan: &Plan,
    pki: &pki::Pki,
    name: &str,
) -> Result<(), ActionError> {
    let Some((host, remote)) = session.control_planes().find(|(h, _)| plan.host(&h.name).is_some()) else {
        return Ok(());
    };
    let identity = pki.super_admin().identity("super-admin.conf", "super-admin.conf")?;
    let api = ApiServerClient::new(remote, plan, host, pki.ca_cert_pem(), Some(&identity))?;
    let response =
        api.request(&Request::delete(&format!("/api/v1/nodes/{name}"))).await.map_err(|e| ActionError::Membership {
            host: name.to_string(),
            step: "deleting its Node object".into(),
            detail: e.to_string(),
        })?;
    if response.is_success() || response.status == 404 {
        Ok(())
    } else {
        Err(ActionError::Membership {
            host: name.to_string(),
            step: "deleting its Node object".into(),
            detail: format!("the apiserver answered {}: {}", response.status, response.text().trim()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_that_cost_quorum_or_leave_an_even_count_are_refused() {
        let fails = |rows: Vec<Check>| rows.into_iter().map(|r| r.detail).collect::<Vec<_>>();
        assert!(quorum_rows("cp5", 5, 4, true).is_empty(), "5 → 4 with the override and all healthy");
        let even = fails(quorum_rows("cp5", 5, 4, false));
        assert!(even.len() == 1 && even[0].contains("would end with 4 etcd members"), "{even:?}");
        assert!(quorum_rows("cp3", 3, 2, false).len() == 1, "3 → 2 is even");
        assert!(quorum_rows("cp5", 4, 3, false).is_empty(), "4 → 3 is fine");
        // 5 members, one cut off, removing another: 4 remain, 3 healthy, quorum 3: fine for
        // quorum; with two cut off it is not.
        let lost = fails(quorum_rows("cp5", 5, 2, true));
        assert!(lost[0].contains("leaves 4 etcd members, of which 2 are healthy: etcd needs 3"), "{lost:?}");
        let last = fails(quorum_rows("cp1", 1, 0, true));
        assert!(last[0].contains("last etcd member"), "{last:?}");
    }
}
