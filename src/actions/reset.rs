//! `reset`: everything kubeha wrote leaves the named hosts (or all of them): static-pod
//! manifests first, so the kubelet stops the pods, then certificates, keys, kubeconfigs and
//! load-balancer configs, the marker last ([`Cleanup`]); the etcd data directory only when asked.
//! Without `--yes` it only lists what it would remove (a dry run: no lock, nothing changed).
//!
//! A control plane that is still an etcd member of a running cluster is refused (exit code 3):
//! wiping it would cost the cluster a member without telling etcd. It is taken out with
//! `remove-node` first, unless every control plane is reset (`--all`). A host whose marker names
//! another cluster is refused too. After the files are removed, kubeha waits until the host's
//! components no longer listen, so an `init` right after finds the ports free.

use std::time::{Duration, Instant};

use super::checks::{Check, Status};
use super::error::ActionError;
use super::membership::{self, Etcd, Standing};
use super::progress::Progress;
use super::session::{Connector, Session, SessionOptions};
use super::wait::{self, Failure};
use crate::host::cleanup::Cleanup;
use crate::host::facts::{self, Ownership};
use crate::host::layout;
use crate::pki;
use crate::plan::{Host, Plan, Role};
use crate::transport::Remote;

#[derive(Debug, Clone)]
pub struct ResetOptions {
    /// `dry_run` unless `--yes`.
    pub session: SessionOptions,
    pub delete_etcd_data: bool,
}

/// What `reset` removed (or would remove), per host in inventory order.
#[derive(Debug, Default)]
pub struct ResetReport {
    pub hosts: Vec<(String, Vec<String>)>,
    /// Hosts with nothing of kubeha's.
    pub untouched: Vec<String>,
    pub phases: Vec<(&'static str, Duration)>,
}

pub async fn reset<C: Connector>(
    plan: &Plan,
    names: &[String],
    state_dir: &std::path::Path,
    options: &ResetOptions,
    connector: &C,
    progress: &Progress,
) -> Result<ResetReport, ActionError> {
    let session = Session::open(plan, state_dir, options.session.clone(), connector, progress).await?;
    let result = phases(&session, names, options).await;
    if result.is_ok() && !session.options.dry_run && names.len() == plan.hosts.len() {
        let _ = super::removed::forget(session.state_dir(), names);
    }
    session.lap("reset");
    let result = result.map(|mut r| {
        r.phases = session.phases();
        r
    });
    session.close(connector).await;
    result
}

/// Why a control plane must not be reset while the cluster runs, if so.
pub fn member_refusal(host: &Host, standing: Standing) -> Option<Check> {
    (host.role == Role::ControlPlane && standing != Standing::Absent).then(|| {
        Check::new(
            &host.name,
            "membership",
            Status::Fail,
            format!(
                "is an etcd member of the running cluster: take it out with `kubeha remove-node {}` first (or reset \
                 every host with --all)",
                host.name
            ),
        )
    })
}

async fn phases<R: Remote>(
    session: &Session<'_, R>,
    names: &[String],
    options: &ResetOptions,
) -> Result<ResetReport, ActionError> {
    let plan = session.plan;
    let cluster_id = pki::existing_cluster_id(session.state_dir())?;
    let gathered = session
        .each(&session.hosts, |(host, conn)| async move {
            match conn {
                Ok(remote) => facts::gather(remote).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
            .map(|f| (host.name.clone(), f))
        })
        .await;
    let mut rows = Vec::new();
    let mut cleanups = Vec::new();
    let mut ours_running = Vec::new();
    for ((host, _), result) in gathered {
        let named = names.contains(&host.name);
        let facts = match result {
            Ok((_, facts)) => facts,
            Err(e) if named => {
                rows.push(Check::new(&host.name, "ssh", Status::Fail, e));
                continue;
            }
            Err(_) => continue,
        };
        let ownership = facts::ownership(&facts, cluster_id.as_deref());
        match (&ownership, named) {
            (Ownership::Ours(marker), true) => {
                cleanups.push((*host, Cleanup::everything(&marker.files, options.delete_etcd_data)));
            }
            (Ownership::Fresh, true) if options.delete_etcd_data && !facts.etcd_data.is_empty() => {
                cleanups.push((*host, Cleanup { etcd_data: true, ..Cleanup::default() }));
            }
            (Ownership::Fresh, true) => {}
            (Ownership::Other(why), true) => rows.push(Check::new(&host.name, "ownership", Status::Fail, why.clone())),
            (Ownership::Ours(_), false) if host.role == Role::ControlPlane => ours_running.push(host.name.clone()),
            _ => {}
        }
    }
    // Control planes of a cluster that keeps running on other hosts must leave etcd first.
    let resetting: Vec<&Host> = cleanups.iter().map(|(h, _)| *h).filter(|h| h.role == Role::ControlPlane).collect();
    if !resetting.is_empty() && !ours_running.is_empty() {
        let others = plan.with_hosts(|h| ours_running.contains(&h.name));
        let pki = pki::load(&others, session.state_dir())?;
        let etcd = Etcd::new(&pki, session.options.wait.interval)?;
        match etcd.members(session, &others, names).await {
            Ok((_, _, members)) => {
                rows.extend(resetting.iter().filter_map(|h| member_refusal(h, membership::standing(&members, h))));
            }
            Err(e) => rows.push(Check::new(
                "cluster",
                "membership",
                Status::Fail,
                format!(
                    "cannot tell whether {} are still etcd members ({e}): remove them with remove-node, or reset \
                     every host with --all",
                    resetting.iter().map(|h| h.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
    if rows.iter().any(|r| r.status == Status::Fail) {
        return Err(ActionError::Preflight { checks: rows });
    }
    let mut report = ResetReport::default();
    for h in plan.hosts.iter().filter(|h| names.contains(&h.name)) {
        match cleanups.iter().find(|(c, _)| c.name == h.name) {
            Some((_, cleanup)) => report.hosts.push((h.name.clone(), cleanup.paths())),
            None => report.untouched.push(h.name.clone()),
        }
    }
    if session.options.dry_run {
        return Ok(report);
    }
    let progress = session.progress;
    let ports = kubeha_ports(plan);
    let deadline = Instant::now() + session.options.wait.timeout;
    let results = session
        .each(&cleanups, |(host, cleanup)| {
            let ports = &ports;
            async move {
                let Some((_, remote)) = session.connected().find(|(h, _)| h.name == host.name) else {
                    return Ok(());
                };
                progress.step(&host.name, "removing kubeha's files");
                cleanup.run(remote).await.map_err(|e| ActionError::host("removing kubeha's files", e))?;
                wait_stopped(remote, host, ports, deadline, session.options.wait.interval, progress).await?;
                progress.finish(&host.name, "reset");
                Ok::<(), ActionError>(())
            }
        })
        .await;
    for (_, result) in results {
        result?;
    }
    Ok(report)
}

/// The ports kubeha's components listen on.
fn kubeha_ports(plan: &Plan) -> Vec<u16> {
    let mut ports = vec![
        layout::ETCD_CLIENT_PORT,
        layout::ETCD_PEER_PORT,
        layout::ETCD_METRICS_PORT,
        plan.api_server_bind_port,
        layout::CONTROLLER_MANAGER_PORT,
        layout::SCHEDULER_PORT,
    ];
    if matches!(plan.load_balancer, crate::plan::LoadBalancer::KeepalivedHaproxy { .. }) {
        ports.push(plan.control_plane_endpoint.port);
    }
    ports
}

/// Until none of `ports` listens on the host any more (the kubelet stopped the pods).
async fn wait_stopped<R: Remote>(
    remote: &R,
    host: &Host,
    ports: &[u16],
    deadline: Instant,
    interval: Duration,
    progress: &Progress,
) -> Result<(), ActionError> {
    wait::until(
        &format!("{}: kubeha's pods to stop", host.name),
        deadline,
        interval,
        || async {
            let facts = facts::gather(remote).await.map_err(|e| Failure::Fatal(e.to_string()))?;
            let busy: Vec<String> = ports.iter().filter(|p| facts.listening.contains(p)).map(u16::to_string).collect();
            if busy.is_empty() {
                Ok(())
            } else {
                Err(Failure::Retry(format!("ports {} still listen", busy.join(", "))))
            }
        },
        |last| progress.detail(&host.name, last),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_member_is_refused_with_what_to_do() {
        let plan = crate::actions::fake::plan();
        let cp2 = plan.host("cp2").unwrap();
        let row = member_refusal(cp2, Standing::Voting { id: 2 }).unwrap();
        assert!(row.detail.contains("kubeha remove-node cp2") && row.detail.contains("--all"), "{}", row.detail);
        assert!(member_refusal(cp2, Standing::Learner { id: 2, started: false }).is_some());
        assert!(member_refusal(cp2, Standing::Absent).is_none());
        assert!(member_refusal(plan.host("w1").unwrap(), Standing::Absent).is_none());
    }
}
