//! `kubeha status`: one read-only look at the whole cluster, every host at once.
//!
//! Per host (in parallel, `--parallel` at a time): the status script (`host::status`: clock,
//! addresses, static pods, haproxy's backends), the certificates (`host::certs`, the nearest
//! end), and on control planes etcd's status and health and the apiserver's `/readyz` through
//! the host's tunnel; from this machine, the endpoint's `/healthz`. What came back is judged by
//! [`judge`], a pure function: each problem is a line of the report, and the cluster is healthy
//! when there is none. Hosts that cannot be reached are rows of their own.

use std::collections::BTreeSet;
use std::time::Duration;

use time::OffsetDateTime;

use super::session::Session;
use crate::host::apiserver::ApiServerClient;
use crate::host::etcd::{EtcdClient, Status};
use crate::host::status::{self as host_status, BackendServer, HostStatus, StaticPod};
use crate::https::TlsClient;
use crate::pki::Pki;
use crate::plan::{LoadBalancer, Plan, Role};
use crate::transport::Remote;

/// Limits beyond which a host counts as degraded.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A host's clock may differ from this machine's by this much.
    pub clock_skew: Duration,
    /// A certificate ending sooner than this is a problem.
    pub certificate: Duration,
}

/// The whole report: one entry per host of the inventory, in its order, and the summary.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub hosts: Vec<HostReport>,
    pub summary: Summary,
}

/// One host.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostReport {
    pub host: String,
    pub role: String,
    pub reachable: bool,
    /// Why the host (or its status script) could not be read.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// The host's clock minus this machine's.
    pub clock_skew_seconds: Option<f64>,
    pub static_pods: Vec<StaticPod>,
    /// `/readyz` of the host's apiserver (control planes).
    pub apiserver: Option<Check>,
    pub etcd: Option<EtcdReport>,
    /// Whether the host holds the VIP (keepalived-haproxy load balancer only).
    pub holds_vip: Option<bool>,
    pub haproxy: Option<HaproxyReport>,
    pub nearest_certificate: Option<CertificateEnd>,
    /// What is wrong on this host; empty when it is healthy.
    pub problems: Vec<String>,
}

/// A probe's outcome.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// The etcd member of a control plane.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdReport {
    pub healthy: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Hex, as `etcdctl` prints it; empty when the member did not answer.
    pub member_id: String,
    pub leader_id: String,
    pub is_leader: bool,
    pub learner: bool,
    pub raft_index: u64,
    pub revision: u64,
    pub db_size_bytes: u64,
    pub version: String,
}

/// haproxy's servers as its stats socket reports them.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct HaproxyReport {
    pub servers: Vec<BackendServer>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// The certificate on a host that ends first.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateEnd {
    pub path: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    pub remaining_seconds: i64,
}

/// The cluster as a whole.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub healthy: bool,
    pub hosts: usize,
    pub reachable: usize,
    pub etcd_members: usize,
    pub etcd_healthy: usize,
    /// Healthy members beyond quorum: how many more may fail (negative: quorum is lost).
    pub quorum_margin: i64,
    /// The host whose etcd member leads, if one answered as leader.
    pub etcd_leader: Option<String>,
    pub endpoint: String,
    pub endpoint_ok: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub endpoint_error: String,
    pub vip: Option<String>,
    pub vip_holders: Vec<String>,
    /// Problems of the cluster as a whole (each host's are in its entry).
    pub problems: Vec<String>,
}

/// What was read from one host, before judging.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub host: String,
    pub role: Option<Role>,
    /// Why the host could not be reached.
    pub unreachable: Option<String>,
    pub status: Option<Result<HostStatus, String>>,
    pub certificates: Option<Result<Option<CertificateEnd>, String>>,
    pub etcd_status: Option<Result<Status, String>>,
    pub etcd_health: Option<Result<(), String>>,
    pub apiserver: Option<Result<(), String>>,
    /// haproxy's servers (control planes with kubeha's load balancer).
    pub haproxy: Option<Result<Vec<BackendServer>, String>>,
}

/// Reads every host and the endpoint; the report, judged.
pub async fn check<R: Remote>(
    session: &Session<'_, R>,
    pki: &Pki,
    limits: Limits,
) -> Result<Report, crate::https::HttpsError> {
    let timeout = Duration::from_secs(5);
    let identity =
        pki.etcd_healthcheck_client().identity("etcd/healthcheck-client.crt", "etcd/healthcheck-client.key")?;
    let etcd_tls = TlsClient::new(pki.etcd_ca_cert_pem(), Some(&identity))?.with_timeout(timeout);
    let api_tls = TlsClient::new(pki.ca_cert_pem(), None)?.with_timeout(timeout);
    let plan = session.plan;
    let hosts = session.each(&session.hosts, |(host, conn)| {
        let (etcd_tls, api_tls) = (etcd_tls.clone(), api_tls.clone());
        async move {
            let mut seen = Observed { host: host.name.clone(), role: Some(host.role), ..Observed::default() };
            let remote = match conn {
                Ok(remote) => remote,
                Err(e) => {
                    seen.unreachable = Some(e.to_string());
                    return seen;
                }
            };
            session.progress.step(&host.name, "reading status");
            let script = async { host_status::gather(remote).await.map_err(|e| e.to_string()) };
            let certs = async { nearest_certificate(remote).await };
            let control_plane = host.role == Role::ControlPlane;
            let etcd = EtcdClient::with_tls(remote, host, etcd_tls);
            let api = ApiServerClient::with_tls(remote, plan, host, api_tls);
            let etcd_status = async { control_plane.then_some(etcd.status().await.map_err(|e| e.to_string())) };
            let etcd_health = async { control_plane.then_some(etcd.health().await.map_err(|e| e.to_string())) };
            let apiserver = async { control_plane.then_some(api.readyz().await.map_err(|e| e.to_string())) };
            let haproxy_here = control_plane && matches!(plan.load_balancer, LoadBalancer::KeepalivedHaproxy { .. });
            let loopback = host.loopback().to_string();
            let haproxy =
                async { if haproxy_here { Some(host_status::haproxy_servers(remote, &loopback).await) } else { None } };
            let (status, certs, etcd_status, etcd_health, apiserver, haproxy) =
                tokio::join!(script, certs, etcd_status, etcd_health, apiserver, haproxy);
            session.progress.finish(&host.name, "status read");
            Observed {
                status: Some(status),
                certificates: Some(certs),
                etcd_status,
                etcd_health,
                apiserver,
                haproxy,
                ..seen
            }
        }
    });
    let endpoint = crate::actions::wait::endpoint_health(plan, &api_tls);
    let (hosts, endpoint) = tokio::join!(hosts, endpoint);
    let observed: Vec<Observed> = hosts.into_iter().map(|(_, o)| o).collect();
    let endpoint = endpoint.map_err(|f| match f {
        crate::actions::wait::Failure::Retry(t) | crate::actions::wait::Failure::Fatal(t) => t,
    });
    Ok(judge(plan, &observed, endpoint, limits))
}

/// The certificate on the host that ends first.
async fn nearest_certificate<R: Remote>(remote: &R) -> Result<Option<CertificateEnd>, String> {
    let found = crate::host::certs::gather(remote).await.map_err(|e| e.to_string())?;
    let signers = crate::pki::expiry::Signers::default();
    let now = OffsetDateTime::now_utc();
    Ok(found
        .iter()
        .filter_map(|f| Some((f, crate::pki::expiry::describe(&f.pem, &signers)?)))
        .min_by_key(|(_, info)| info.not_after)
        .map(|(f, info)| CertificateEnd {
            path: f.path.display().to_string(),
            not_after: info
                .not_after
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| info.not_after.to_string()),
            remaining_seconds: (info.not_after - now).whole_seconds(),
        }))
}

/// The static pods a host must run: the control plane's and, with kubeha's load balancer,
/// haproxy and keepalived.
pub fn expected_pods(plan: &Plan, role: Role) -> Vec<&'static str> {
    let mut pods = Vec::new();
    if role == Role::ControlPlane {
        pods.extend(["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"]);
        if matches!(plan.load_balancer, LoadBalancer::KeepalivedHaproxy { .. }) {
            pods.extend(["haproxy", "keepalived"]);
        }
    }
    pods
}

/// Judges what was read: every host's problems and the summary. Pure.
pub fn judge(plan: &Plan, observed: &[Observed], endpoint: Result<(), String>, limits: Limits) -> Report {
    let vip = match &plan.load_balancer {
        LoadBalancer::KeepalivedHaproxy { vip, .. } => Some(*vip),
        _ => None,
    };
    let hosts: Vec<HostReport> = observed.iter().map(|o| judge_host(plan, o, vip, limits)).collect();
    let members = plan.etcd_members().count();
    let etcd_healthy = hosts.iter().filter(|h| h.etcd.as_ref().is_some_and(|e| e.healthy && !e.learner)).count();
    let quorum = members / 2 + 1;
    let mut summary = Summary {
        hosts: hosts.len(),
        reachable: hosts.iter().filter(|h| h.reachable).count(),
        etcd_members: members,
        etcd_healthy,
        quorum_margin: etcd_healthy as i64 - quorum as i64,
        etcd_leader: hosts.iter().find(|h| h.etcd.as_ref().is_some_and(|e| e.is_leader)).map(|h| h.host.clone()),
        endpoint: plan.endpoint_url(),
        endpoint_ok: endpoint.is_ok(),
        endpoint_error: endpoint.err().unwrap_or_default(),
        vip: vip.map(|v| v.to_string()),
        vip_holders: hosts.iter().filter(|h| h.holds_vip == Some(true)).map(|h| h.host.clone()).collect(),
        ..Summary::default()
    };
    let problems = &mut summary.problems;
    if summary.reachable < summary.hosts {
        problems.push(format!("{} of {} hosts unreachable", summary.hosts - summary.reachable, summary.hosts));
    }
    if etcd_healthy < members {
        let quorum_text = if etcd_healthy >= quorum { "quorum holds".to_string() } else { "QUORUM LOST".to_string() };
        problems.push(format!("etcd: {etcd_healthy} of {members} members healthy ({quorum_text})"));
    }
    let leaders: BTreeSet<&str> = hosts
        .iter()
        .filter_map(|h| h.etcd.as_ref().filter(|e| !e.leader_id.is_empty() && e.leader_id != "0"))
        .map(|e| e.leader_id.as_str())
        .collect();
    if leaders.len() > 1 {
        problems.push(format!(
            "etcd members name different leaders: {}",
            leaders.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if !summary.endpoint_ok {
        problems.push(format!("endpoint {}: {}", summary.endpoint, summary.endpoint_error));
    }
    if let Some(vip) = &summary.vip {
        match summary.vip_holders.len() {
            1 => {}
            0 => problems.push(format!("no reachable host holds the VIP {vip}")),
            _ => problems.push(format!("several hosts hold the VIP {vip}: {}", summary.vip_holders.join(", "))),
        }
    }
    summary.healthy = summary.problems.is_empty() && hosts.iter().all(|h| h.problems.is_empty());
    Report { hosts, summary }
}

fn judge_host(plan: &Plan, o: &Observed, vip: Option<std::net::IpAddr>, limits: Limits) -> HostReport {
    let role = o.role.unwrap_or(Role::Worker);
    let mut report = HostReport {
        host: o.host.clone(),
        role: match role {
            Role::ControlPlane => "control-plane".into(),
            Role::Worker => "worker".into(),
        },
        reachable: o.unreachable.is_none(),
        ..HostReport::default()
    };
    let problems = &mut report.problems;
    if let Some(e) = &o.unreachable {
        report.error = e.clone();
        problems.push(format!("unreachable: {e}"));
        return report;
    }
    match &o.status {
        Some(Ok(status)) => {
            report.clock_skew_seconds = status.clock_skew;
            report.static_pods = status.static_pods.clone();
            report.holds_vip = vip.map(|v| status.addresses.contains(&v));
            for pod in expected_pods(plan, role) {
                if !status.static_pods.iter().any(|p| p.name == pod) {
                    problems.push(format!("static pod {pod}: no manifest"));
                }
            }
            for pod in status.static_pods.iter().filter(|p| !p.running) {
                problems.push(format!("static pod {}: not running", pod.name));
            }
            if let Some(skew) = status.clock_skew.filter(|s| s.abs() > limits.clock_skew.as_secs_f64()) {
                problems.push(format!("clock differs from this machine's by {skew:+.1}s"));
            }
        }
        Some(Err(e)) => {
            report.error = e.clone();
            problems.push(format!("status: {e}"));
        }
        None => {}
    }
    report.haproxy = o.haproxy.as_ref().map(|h| match h {
        Ok(servers) => HaproxyReport { servers: servers.clone(), error: String::new() },
        Err(e) => HaproxyReport { servers: Vec::new(), error: e.clone() },
    });
    if let Some(h) = &report.haproxy {
        if !h.error.is_empty() {
            problems.push(format!("haproxy: {}", h.error));
        }
        for s in h.servers.iter().filter(|s| !s.is_up()) {
            problems.push(format!("haproxy: {} server {} is {}", s.backend, s.server, s.status));
        }
    }
    match &o.certificates {
        Some(Ok(Some(end))) => {
            if end.remaining_seconds < limits.certificate.as_secs() as i64 {
                problems.push(format!(
                    "certificate {} ends {} ({})",
                    end.path,
                    end.not_after,
                    super::expiry::residual(end.remaining_seconds)
                ));
            }
            report.nearest_certificate = Some(end.clone());
        }
        Some(Err(e)) => problems.push(format!("certificates: {e}")),
        _ => {}
    }
    if let Some(api) = &o.apiserver {
        report.apiserver = Some(Check { ok: api.is_ok(), error: api.clone().err().unwrap_or_default() });
        if let Err(e) = api {
            problems.push(format!("apiserver: {e}"));
        }
    }
    if o.etcd_status.is_some() || o.etcd_health.is_some() {
        let mut etcd = EtcdReport::default();
        match &o.etcd_status {
            Some(Ok(s)) => {
                etcd.member_id = format!("{:x}", s.member_id);
                etcd.leader_id = format!("{:x}", s.leader_id);
                etcd.is_leader = s.is_leader();
                etcd.learner = s.is_learner;
                etcd.raft_index = s.raft_index;
                etcd.revision = s.revision;
                etcd.db_size_bytes = s.db_size;
                etcd.version = s.version.clone();
                for e in &s.errors {
                    problems.push(format!("etcd reports: {e}"));
                }
            }
            Some(Err(e)) => etcd.error = e.clone(),
            None => {}
        }
        match &o.etcd_health {
            Some(Ok(())) => etcd.healthy = o.etcd_status.as_ref().is_some_and(Result::is_ok),
            Some(Err(e)) => etcd.error = e.clone(),
            None => {}
        }
        if !etcd.healthy {
            problems.push(format!("etcd: {}", if etcd.error.is_empty() { "unhealthy" } else { &etcd.error }));
        } else if etcd.learner {
            problems.push("etcd: the member is still a learner".into());
        }
        report.etcd = Some(etcd);
    }
    report
}

/// The report as a table, each host's problems, and the summary line.
pub fn text(report: &Report) -> String {
    let rows: Vec<[String; 11]> = report.hosts.iter().map(row).collect();
    let mut out = crate::text::table(
        ["HOST", "ROLE", "PODS", "APISERVER", "ETCD", "RAFT INDEX", "DB", "VIP", "HAPROXY", "CLOCK", "CERTS"],
        &rows,
    );
    for h in &report.hosts {
        for p in &h.problems {
            out.push_str(&format!("{}: {p}\n", h.host));
        }
    }
    for p in &report.summary.problems {
        out.push_str(&format!("cluster: {p}\n"));
    }
    out.push_str(&summary_line(&report.summary));
    out.push('\n');
    out
}

fn row(h: &HostReport) -> [String; 11] {
    let dash = || "-".to_string();
    if !h.reachable {
        let mut r: [String; 11] = std::array::from_fn(|_| dash());
        r[0] = h.host.clone();
        r[1] = h.role.clone();
        r[2] = "UNREACHABLE".into();
        return r;
    }
    let running = h.static_pods.iter().filter(|p| p.running).count();
    let pods = if h.static_pods.is_empty() { dash() } else { format!("{running}/{}", h.static_pods.len()) };
    let apiserver = h.apiserver.as_ref().map_or_else(dash, |c| if c.ok { "ready" } else { "NOT READY" }.into());
    let (etcd, raft, db) = match &h.etcd {
        None => (dash(), dash(), dash()),
        Some(e) => {
            let state = match (e.healthy, e.is_leader, e.learner) {
                (false, _, _) => "UNHEALTHY".to_string(),
                (true, _, true) => format!("{} learner", e.member_id),
                (true, true, _) => format!("{} leader", e.member_id),
                (true, false, _) => format!("{} follower", e.member_id),
            };
            let known = !e.member_id.is_empty();
            (
                state,
                if known { e.raft_index.to_string() } else { dash() },
                if known { format!("{:.1} MiB", e.db_size_bytes as f64 / 1048576.0) } else { dash() },
            )
        }
    };
    let vip = match h.holds_vip {
        Some(true) => "held".into(),
        Some(false) => "".into(),
        None => dash(),
    };
    let haproxy = match &h.haproxy {
        None => dash(),
        Some(r) if !r.error.is_empty() => "UNREADABLE".into(),
        Some(r) => format!("{}/{} up", r.servers.iter().filter(|s| s.is_up()).count(), r.servers.len()),
    };
    let clock = h.clock_skew_seconds.map_or_else(dash, |s| format!("{s:+.2}s"));
    let certs = h.nearest_certificate.as_ref().map_or_else(dash, |c| super::expiry::residual(c.remaining_seconds));
    [h.host.clone(), h.role.clone(), pods, apiserver, etcd, raft, db, vip, haproxy, clock, certs]
}

/// `healthy: etcd 3/3 healthy (quorum margin 1), leader cp1; endpoint https://…: ok; VIP … on cp2`.
pub fn summary_line(s: &Summary) -> String {
    let verdict = if s.healthy { "healthy" } else { "DEGRADED" };
    let leader = s.etcd_leader.as_deref().map(|l| format!(", leader {l}")).unwrap_or_default();
    let endpoint = if s.endpoint_ok { "ok" } else { "FAILING" };
    let vip = match &s.vip {
        Some(vip) if s.vip_holders.is_empty() => format!("; VIP {vip} held by no reachable host"),
        Some(vip) => format!("; VIP {vip} on {}", s.vip_holders.join(", ")),
        None => String::new(),
    };
    format!(
        "{verdict}: {}/{} hosts reachable; etcd {}/{} healthy (quorum margin {}){leader}; endpoint {}: {endpoint}{vip}",
        s.reachable, s.hosts, s.etcd_healthy, s.etcd_members, s.quorum_margin, s.endpoint
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::fake::{self, MemoryConnector};
    use crate::actions::progress::Progress;
    use crate::host::status::Detection;

    const LIMITS: Limits = Limits { clock_skew: Duration::from_secs(5), certificate: Duration::from_secs(7 * 86_400) };

    fn plan() -> Plan {
        let text = fake::INVENTORY
            .replace(
                "loadBalancer: {type: external}",
                "loadBalancer: {type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}",
            )
            .replace("198.18.0.10:6443", "198.18.0.10:8443");
        crate::inventory::parse(&text, std::path::Path::new("/")).unwrap()
    }

    fn pod(name: &str, running: bool) -> StaticPod {
        StaticPod { name: name.into(), program: name.into(), running, detected_by: Detection::Process }
    }

    fn server(name: &str, status: &str) -> BackendServer {
        BackendServer { backend: "apiserver".into(), server: name.into(), status: status.into(), check: "L7OK".into() }
    }

    /// A control plane as a healthy cluster's; `leader` says whether its member leads (member
    /// ids are 1, 2, 3; 1 leads).
    fn healthy(plan: &Plan, name: &str, id: u64, vip: bool) -> Observed {
        let host = plan.host(name).unwrap();
        let mut addresses: BTreeSet<std::net::IpAddr> = [host.address].into();
        if vip {
            addresses.insert("198.18.0.10".parse().unwrap());
        }
        let control_plane = host.role == Role::ControlPlane;
        let pods = expected_pods(plan, host.role).into_iter().map(|p| pod(p, true)).collect();
        let status = HostStatus { clock_skew: Some(0.01), addresses, static_pods: pods };
        let etcd = Status {
            cluster_id: 9,
            member_id: id,
            leader_id: 1,
            raft_term: 2,
            raft_index: 100,
            raft_applied_index: 100,
            revision: 50,
            db_size: 2 << 20,
            db_size_in_use: 1 << 20,
            version: "3.5.16".into(),
            is_learner: false,
            errors: Vec::new(),
        };
        Observed {
            host: name.into(),
            role: Some(host.role),
            unreachable: None,
            status: Some(Ok(status)),
            certificates: Some(Ok(Some(CertificateEnd {
                path: "/etc/kubernetes/pki/apiserver.crt".into(),
                not_after: "2027-11-30T00:00:00Z".into(),
                remaining_seconds: 365 * 86_400,
            }))),
            etcd_status: control_plane.then_some(Ok(etcd)),
            etcd_health: control_plane.then_some(Ok(())),
            apiserver: control_plane.then_some(Ok(())),
            haproxy: control_plane.then(|| Ok(["cp1", "cp2", "cp3"].map(|s| server(s, "UP")).to_vec())),
        }
    }

    fn cluster(plan: &Plan) -> Vec<Observed> {
        vec![
            healthy(plan, "cp1", 1, true),
            healthy(plan, "cp2", 2, false),
            healthy(plan, "cp3", 3, false),
            healthy(plan, "w1", 0, false),
        ]
    }

    #[test]
    fn a_healthy_cluster_has_no_problem() {
        let plan = plan();
        let report = judge(&plan, &cluster(&plan), Ok(()), LIMITS);
        let s = &report.summary;
        assert!(s.healthy, "{report:#?}");
        assert_eq!((s.etcd_healthy, s.etcd_members, s.quorum_margin), (3, 3, 1));
        assert_eq!((s.etcd_leader.as_deref(), s.vip_holders.as_slice()), (Some("cp1"), ["cp1".to_string()].as_slice()));
        assert_eq!(report.hosts.len(), 4);
        assert!(report.hosts.iter().all(|h| h.problems.is_empty()));
        let text = text(&report);
        assert!(
            text.contains("healthy: 4/4 hosts reachable; etcd 3/3 healthy (quorum margin 1), leader cp1"),
            "{text}"
        );
        assert!(text.contains("1 leader") && text.contains("6/6") && text.contains("3/3 up"), "{text}");
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["hosts"][0]["etcd"]["memberId"], "1");
        assert_eq!(json["hosts"][3]["etcd"], serde_json::Value::Null);
    }

    #[test]
    fn a_host_cut_off_degrades_the_cluster_and_says_why() {
        let plan = plan();
        let mut seen = cluster(&plan);
        seen[0] = Observed {
            host: "cp1".into(),
            role: Some(Role::ControlPlane),
            unreachable: Some("cp1: timed out connecting".into()),
            ..Observed::default()
        };
        // cp2 took the VIP; haproxy on the others marks cp1 down.
        if let Some(Ok(s)) = &mut seen[1].status {
            s.addresses.insert("198.18.0.10".parse().unwrap());
        }
        for o in &mut seen[1..3] {
            o.haproxy = Some(Ok(vec![server("cp1", "DOWN"), server("cp2", "UP"), server("cp3", "UP")]));
        }
        let report = judge(&plan, &seen, Ok(()), LIMITS);
        let s = &report.summary;
        assert!(!s.healthy);
        assert_eq!((s.reachable, s.etcd_healthy, s.quorum_margin), (3, 2, 0));
        assert_eq!(s.vip_holders, ["cp2"]);
        assert!(s.problems.contains(&"etcd: 2 of 3 members healthy (quorum holds)".to_string()), "{:?}", s.problems);
        assert!(!report.hosts[0].reachable);
        assert_eq!(report.hosts[0].problems, ["unreachable: cp1: timed out connecting"]);
        assert!(report.hosts[1].problems.contains(&"haproxy: apiserver server cp1 is DOWN".to_string()));
        let text = text(&report);
        assert!(text.contains("UNREACHABLE") && text.starts_with("HOST"), "{text}");
        assert!(text.contains("DEGRADED: 3/4 hosts reachable; etcd 2/3 healthy (quorum margin 0)"), "{text}");
    }

    #[test]
    fn each_kind_of_problem_is_named() {
        let plan = plan();
        let mut seen = cluster(&plan);
        seen[1].etcd_health = Some(Err("cp2: etcd /health: no leader".into()));
        seen[1].apiserver = Some(Err("cp2: /readyz answered 500".into()));
        seen[2].haproxy = Some(Err("cp3: cannot open a tunnel to 127.0.0.1:8404".into()));
        seen[2].certificates = Some(Ok(Some(CertificateEnd {
            path: "/etc/kubernetes/pki/apiserver.crt".into(),
            not_after: "2026-12-01T00:00:00Z".into(),
            remaining_seconds: 86_400,
        })));
        if let Some(Ok(s)) = &mut seen[2].status {
            s.clock_skew = Some(-9.0);
            s.static_pods.retain(|p| p.name != "kube-scheduler");
            s.static_pods[0].running = false;
            s.addresses.insert("198.18.0.10".parse().unwrap());
        }
        let report = judge(&plan, &seen, Err("connection refused".into()), LIMITS);
        let cp2 = &report.hosts[1].problems;
        assert_eq!(cp2, &["apiserver: cp2: /readyz answered 500", "etcd: cp2: etcd /health: no leader"]);
        let cp3 = report.hosts[2].problems.join("\n");
        for expected in [
            "static pod kube-scheduler: no manifest",
            "static pod etcd: not running",
            "clock differs from this machine's by -9.0s",
            "haproxy: cp3: cannot open a tunnel to 127.0.0.1:8404",
            "certificate /etc/kubernetes/pki/apiserver.crt ends 2026-12-01T00:00:00Z (1d)",
        ] {
            assert!(cp3.contains(expected), "{expected} not in {cp3}");
        }
        let cluster = report.summary.problems.join("\n");
        assert!(cluster.contains("endpoint https://198.18.0.10:8443: connection refused"), "{cluster}");
        assert!(cluster.contains("several hosts hold the VIP 198.18.0.10: cp1, cp3"), "{cluster}");
        // Quorum lost is said so.
        seen[2].etcd_health = Some(Err("down".into()));
        let report = judge(&plan, &seen, Ok(()), LIMITS);
        assert_eq!(report.summary.quorum_margin, -1);
        assert!(report.summary.problems.iter().any(|p| p.contains("QUORUM LOST")), "{:?}", report.summary.problems);
    }

    #[tokio::test]
    async fn every_host_is_read_at_once_and_unreachable_ones_are_rows() {
        let plan = plan();
        let mut hosts = MemoryConnector::new(&plan);
        hosts.unreachable.push("cp3".into());
        let state = tempfile::tempdir().unwrap();
        crate::pki::generate(&plan, state.path()).unwrap();
        let pki = crate::pki::load(&plan, state.path()).unwrap();
        let options = crate::actions::session::SessionOptions { dry_run: true, ..Default::default() };
        let progress = Progress::hidden();
        let session = Session::open(&plan, state.path(), options, &hosts, &progress).await.unwrap();
        let report = check(&session, &pki, LIMITS).await.unwrap();
        session.close(&hosts).await;
        let names: Vec<&str> = report.hosts.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(names, ["cp1", "cp2", "cp3", "w1"]);
        assert!(!report.hosts[2].reachable);
        // The in-memory hosts answer the status script but run no etcd or apiserver.
        let cp1 = &report.hosts[0];
        assert!(cp1.reachable && cp1.error.is_empty(), "{cp1:#?}");
        assert!(cp1.etcd.as_ref().is_some_and(|e| !e.healthy), "{cp1:#?}");
        assert!(cp1.problems.iter().any(|p| p.starts_with("static pod etcd: no manifest")), "{:?}", cp1.problems);
        assert!(report.hosts[3].etcd.is_none() && report.hosts[3].problems.is_empty(), "{:#?}", report.hosts[3]);
        assert!(!report.summary.healthy);
        assert_eq!(report.summary.etcd_healthy, 0);
        for name in ["cp1", "cp2", "w1"] {
            let calls = hosts.host(name).calls();
            assert!(
                calls.iter().any(|c| matches!(c, crate::transport::Call::Exec { command, .. } if command.starts_with("# reading status"))),
                "{name}: {calls:?}"
            );
        }
    }
}
