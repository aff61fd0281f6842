//! `preflight`: every check on every host, in parallel, as one report.
//!
//! Checks never change a host. A host that cannot be reached gets a failed `ssh` row and no
//! others; every other host is still checked, so one run shows every problem.
//!
//! The checks every command needs (root, OS, swap, ports, directories, clock, tools, peers) are
//! always run; what a command allows of the cluster's current state (a fresh host, a running
//! member, a changed role) is its own [`Rules`], given as input: [`InitRules`] for `init`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use std::path::PathBuf;

use super::checks::{self, Check, Expectations, PeerReach, Status};
use super::error::ActionError;
use super::session::Session;
use crate::host::facts::{self, Facts, Ownership};
use crate::host::layout::ETCD_PEER_PORT;
use crate::plan::{Host, LoadBalancer, Plan, Role};
use crate::transport::{Remote, TransportError};

/// What a command allows of the hosts' current state, on top of the common checks.
pub trait Rules: Sync {
    /// Extra rows for one host, from what kubeha finds there.
    fn host(&self, plan: &Plan, host: &Host, ownership: &Ownership) -> Vec<Check>;

    /// Rows about the cluster as a whole, from every reachable host's ownership.
    fn cluster(&self, plan: &Plan, ownerships: &[(&Host, Ownership)]) -> Vec<Check>;
}

/// The rules of a command that changes a running cluster in place (`certs renew`,
/// `certs rotate-ca`): every host must be one kubeha set up for this cluster, with the role and
/// etcd members it has now.
pub struct RunningCluster {
    /// The command, as the refusal names it.
    pub command: &'static str,
}

impl Rules for RunningCluster {
    fn host(&self, plan: &Plan, host: &Host, ownership: &Ownership) -> Vec<Check> {
        match ownership {
            Ownership::Ours(_) => checks::membership(plan, host, ownership).into_iter().collect(),
            _ => vec![Check::new(
                &host.name,
                "membership",
                Status::Fail,
                format!(
                    "kubeha has not set this host up for this cluster: {} works on a running cluster; run kubeha init \
                     first",
                    self.command
                ),
            )],
        }
    }

    fn cluster(&self, _plan: &Plan, ownerships: &[(&Host, Ownership)]) -> Vec<Check> {
        checks::cluster_membership(ownerships).into_iter().collect()
    }
}

/// `init`'s rules: fresh hosts become the cluster; hosts kubeha set up keep their roles, and the
/// cluster keeps its etcd members (adding or removing them is `join-node`'s work).
pub struct InitRules;

impl Rules for InitRules {
    fn host(&self, plan: &Plan, host: &Host, ownership: &Ownership) -> Vec<Check> {
        checks::membership(plan, host, ownership).into_iter().collect()
    }

    fn cluster(&self, _plan: &Plan, ownerships: &[(&Host, Ownership)]) -> Vec<Check> {
        checks::cluster_membership(ownerships).into_iter().collect()
    }
}

/// systemd-resolved's list of the real upstream servers (its stub at 127.0.0.53 would loop
/// CoreDNS back to itself), as kubeadm picks it.
const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";

/// How long a peer probe may take before the target counts as unreachable.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the VIP may take to answer. Whoever holds an address on the control planes' network
/// answers a SYN (with a connection or a refusal) within a round trip, milliseconds on a LAN and
/// well under this even from an operator far away.
const VIP_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// What preflight found: the report, and each reachable host's facts and ownership (later
/// phases use the markers).
#[derive(Debug, Default)]
pub struct Outcome {
    pub checks: Vec<Check>,
    /// Per host name, for the hosts whose facts could be gathered.
    pub hosts: BTreeMap<String, (Facts, Ownership)>,
}

impl Outcome {
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// `Err` with every row when a check failed.
    pub fn passed(self) -> Result<Outcome, ActionError> {
        if self.failed() { Err(ActionError::Preflight { checks: self.checks }) } else { Ok(self) }
    }

    /// The hosts found fresh: nothing of a cluster on them.
    pub fn fresh(&self) -> Vec<String> {
        self.hosts.iter().filter(|(_, (_, o))| *o == Ownership::Fresh).map(|(name, _)| name.clone()).collect()
    }

    pub fn warnings(&self) -> Vec<Check> {
        self.checks.iter().filter(|c| c.status == Status::Warn).cloned().collect()
    }

    /// `plan` with each host's node settings taken from its facts: the CRI socket found (the
    /// first of containerd, CRI-O, cri-dockerd), systemd-resolved's resolv.conf where it runs.
    pub fn with_node_settings(&self, plan: &Plan) -> Plan {
        let mut plan = plan.clone();
        for host in &mut plan.hosts {
            let Some((facts, ownership)) = self.hosts.get(&host.name) else { continue };
            if host.node.cri_socket.is_none() {
                host.node.cri_socket = facts.runtime_sockets.first().map(|s| format!("unix://{s}"));
            }
            if host.node.resolv_conf.is_none() && facts.resolved {
                host.node.resolv_conf = Some(SYSTEMD_RESOLV_CONF.to_string());
            }
            host.node.ca_dirs = Some(facts.ca_dirs.clone());
            if let (Ownership::Ours(marker), None) = (ownership, &host.node.etcd_initial)
                && host.role == Role::ControlPlane
                && let (Some(cluster), Some(state)) = (&marker.etcd_initial_cluster, &marker.etcd_initial_cluster_state)
            {
                host.node.etcd_initial =
                    Some(crate::plan::EtcdInitial { cluster: cluster.clone(), state: state.clone() });
            }
        }
        plan
    }

    /// The hosts that hold the keepalived VIP now (normally one; none before the first `init`).
    pub fn vip_holders(&self, plan: &Plan) -> Vec<String> {
        let LoadBalancer::KeepalivedHaproxy { vip, .. } = &plan.load_balancer else { return Vec::new() };
        self.hosts.iter().filter(|(_, (facts, _))| facts.addresses.contains(vip)).map(|(h, _)| h.clone()).collect()
    }

    /// Per host, the files kubeha wrote there last time (its marker's list).
    pub fn previous_files(&self) -> BTreeMap<String, Vec<PathBuf>> {
        self.hosts
            .iter()
            .filter_map(|(name, (_, ownership))| match ownership {
                Ownership::Ours(marker) => Some((name.clone(), marker.files.clone())),
                _ => None,
            })
            .collect()
    }
}

/// Runs every check; the rows come in inventory order, cluster-wide rows last. `vip` is the
/// probe [`start_vip_probe`] started before connecting (it may wait for its whole timeout).
pub async fn run<R: Remote>(
    session: &Session<'_, R>,
    vip: VipProbe,
    expect: &Expectations,
    rules: &impl Rules,
) -> Outcome {
    let (plan, progress) = (session.plan, session.progress);
    let per_host = session
        .each(&session.hosts, |(host, conn)| async move {
            let (rows, found) = match conn {
                Ok(remote) => {
                    let looked = session.looked(&host.name);
                    host_checks(plan, host, remote, looked, expect, rules, progress).await
                }
                Err(e) => (vec![Check::new(&host.name, "ssh", Status::Fail, e.to_string())], None),
            };
            let worst = rows.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
            progress.finish(&host.name, format!("preflight: {worst}"));
            (rows, found)
        })
        .await;
    let mut outcome = Outcome::default();
    for ((host, _), (rows, found)) in per_host {
        outcome.checks.extend(rows);
        if let Some(found) = found {
            outcome.hosts.insert(host.name.clone(), found);
        }
    }
    let ownerships: Vec<(&Host, Ownership)> =
        plan.hosts.iter().filter_map(|h| outcome.hosts.get(&h.name).map(|(_, o)| (h, o.clone()))).collect();
    outcome.checks.extend(rules.cluster(plan, &ownerships));
    let answer = match vip {
        Some(probe) => probe.await.unwrap_or(None),
        None => None,
    };
    let ours = ownerships.iter().any(|(_, o)| o.is_ours());
    outcome.checks.push(endpoint_check(plan, answer, ours));
    outcome
}

/// `looked`: the host's facts if the session read them when it locked the host.
async fn host_checks<R: Remote>(
    plan: &Plan,
    host: &Host,
    remote: &R,
    looked: Option<Facts>,
    expect: &Expectations,
    rules: &impl Rules,
    progress: &super::progress::Progress,
) -> (Vec<Check>, Option<(Facts, Ownership)>) {
    progress.step(&host.name, "preflight");
    let login = match remote.login() {
        "" => String::new(),
        how => format!(" ({how})"),
    };
    let mut rows =
        vec![Check::new(&host.name, "ssh", Status::Ok, format!("{}{login}", host.ssh.describe(host.address)))];
    // The three probes are independent: one round trip each, all at once.
    let control_plane = host.role == Role::ControlPlane;
    let peers: Vec<&Host> = plan.control_planes().filter(|p| p.name != host.name).collect();
    let (facts, forwarding, peers) = tokio::join!(
        async {
            match looked {
                Some(facts) => Ok(facts),
                None => facts::gather(remote).await,
            }
        },
        async { if control_plane { Some(forwarding(host, remote).await) } else { None } },
        async { if control_plane { Some(peer_reach(remote, &peers).await) } else { None } },
    );
    let found = match facts {
        Ok(facts) => {
            let marker_id = facts.marker.as_deref().and_then(crate::marker::HostMarker::parse).map(|m| m.cluster_id);
            let ownership = facts::ownership(&facts, expect.cluster_id_for(marker_id.as_deref()));
            rows.extend(checks::evaluate(plan, host, &facts, &ownership, expect));
            rows.extend(rules.host(plan, host, &ownership));
            Some((facts, ownership))
        }
        Err(e) => {
            rows.push(Check::new(&host.name, "facts", Status::Fail, e.to_string()));
            None
        }
    };
    rows.extend(forwarding);
    rows.extend(peers.map(|result| match result {
        Ok(results) => checks::peers(host, &results),
        Err(e) => Check::new(&host.name, "etcd peers", Status::Fail, e.to_string()),
    }));
    (rows, found)
}

/// kubeha asks etcd and the apiserver on 127.0.0.1 of each control plane through SSH port
/// forwarding; the host's own sshd port is the one port certainly open to try it on.
async fn forwarding<R: Remote>(host: &Host, remote: &R) -> Check {
    match remote.open_tcp(&host.address.to_string(), host.ssh.port).await {
        Ok(_) => Check::new(&host.name, "forwarding", Status::Ok, "SSH TCP forwarding allowed"),
        Err(e @ TransportError::ForwardingRefused { .. }) => {
            Check::new(&host.name, "forwarding", Status::Fail, e.to_string())
        }
        Err(e) => Check::new(&host.name, "forwarding", Status::Warn, format!("could not check: {e}")),
    }
}

/// Tries every peer's etcd peer port from `ssh`'s host with bash's /dev/tcp, which reports the
/// operating system's reason (refused means the path works and nothing listens yet).
async fn peer_reach<R: Remote>(remote: &R, peers: &[&Host]) -> Result<Vec<(String, PeerReach)>, TransportError> {
    if peers.is_empty() {
        return Ok(Vec::new());
    }
    let targets: Vec<String> = peers.iter().map(|p| p.address.to_string()).collect();
    let script = format!(
        "# checking etcd peer ports\n\
         command -v bash >/dev/null 2>&1 || {{ echo @@nobash; exit 0; }}\n\
         for t in {}; do\n\
         \x20 out=$(timeout {} bash --norc --noprofile -c \"exec 3<>/dev/tcp/$t/{ETCD_PEER_PORT}\" 2>&1); rc=$?\n\
         \x20 echo \"@@peer $t\"; echo \"rc=$rc\"; echo \"$out\"\n\
         done\n",
        targets.join(" "),
        PROBE_TIMEOUT.as_secs()
    );
    let out = remote.run(&script, b"").await?;
    Ok(parse_peer_output(&out.stdout_text(), peers))
}

fn parse_peer_output(text: &str, peers: &[&Host]) -> Vec<(String, PeerReach)> {
    if text.contains("@@nobash") {
        return peers.iter().map(|p| (p.name.clone(), PeerReach::Unknown("bash is not installed".into()))).collect();
    }
    peers
        .iter()
        .map(|peer| {
            let lines = facts::section(text, &format!("peer {}", peer.address));
            let rc = lines.first().and_then(|l| l.trim().strip_prefix("rc=")).and_then(|rc| rc.parse::<i32>().ok());
            let detail = lines.iter().skip(1).copied().collect::<Vec<_>>().join(" ");
            let reach = match rc {
                Some(0) => PeerReach::Open,
                Some(124) => PeerReach::Unreachable(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
                Some(_) if detail.contains("Connection refused") => PeerReach::Refused,
                Some(_) => PeerReach::Unreachable(os_reason(&detail)),
                None => PeerReach::Unknown("no result".into()),
            };
            (peer.name.clone(), reach)
        })
        .collect()
}

/// The last `: reason` of a bash connect error ("bash: connect: No route to host").
fn os_reason(detail: &str) -> String {
    detail.rsplit(": ").next().unwrap_or(detail).trim().to_string()
}

/// A running probe of the VIP (none when kubeha manages no VIP).
pub type VipProbe = Option<tokio::task::JoinHandle<Option<&'static str>>>;

/// Starts asking the VIP, in the background, so its timeout overlaps the other work.
pub fn start_vip_probe(plan: &Plan) -> VipProbe {
    match &plan.load_balancer {
        LoadBalancer::KeepalivedHaproxy { vip, .. } => {
            Some(tokio::spawn(probe(SocketAddr::new(*vip, plan.control_plane_endpoint.port))))
        }
        _ => None,
    }
}

/// The VIP must not answer before kubeha has set up keepalived: any answer (a connection or a
/// refusal) means some machine already has the address.
fn endpoint_check(plan: &Plan, answer: Option<&'static str>, ours: bool) -> Check {
    let LoadBalancer::KeepalivedHaproxy { vip, .. } = &plan.load_balancer else {
        return Check::new("cluster", "endpoint", Status::Ok, "provided by the operator's load balancer or DNS");
    };
    match answer {
        None => Check::new("cluster", "vip", Status::Ok, format!("{vip} does not answer yet")),
        Some(what) if ours => Check::new("cluster", "vip", Status::Ok, format!("{vip} {what} (this cluster's)")),
        Some(what) => Check::new(
            "cluster",
            "vip",
            Status::Fail,
            format!("{vip} already answers ({what}): another machine has this address; pick a free VIP"),
        ),
    }
}

/// `None` when nothing answers at `target` within the probe timeout.
async fn probe(target: SocketAddr) -> Option<&'static str> {
    match tokio::time::timeout(VIP_PROBE_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
        Ok(Ok(_)) => Some("accepts connections"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some("refuses connections"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_settings_come_from_the_facts_unless_the_inventory_sets_them() {
        let text = include_str!("../../inventories/example.yaml").replace(
            "role: worker, ssh: {user: ops}}",
            "role: worker, ssh: {user: ops}, criSocket: unix:///run/my.sock}",
        );
        let plan = crate::inventory::parse(&text, std::path::Path::new("/")).unwrap();
        let facts =
            Facts { runtime_sockets: vec!["/var/run/crio/crio.sock".into()], resolved: true, ..Facts::default() };
        let mut outcome = Outcome::default();
        for host in ["cp1", "w1"] {
            outcome.hosts.insert(host.into(), (facts.clone(), Ownership::Fresh));
        }
        let adjusted = outcome.with_node_settings(&plan);
        let node = |name: &str| adjusted.host(name).unwrap().node.clone();
        assert_eq!(node("cp1").cri_socket.as_deref(), Some("unix:///var/run/crio/crio.sock"));
        assert_eq!(node("cp1").resolv_conf.as_deref(), Some(SYSTEMD_RESOLV_CONF));
        assert_eq!(node("w1").cri_socket.as_deref(), Some("unix:///run/my.sock"), "the inventory wins");
        assert!(node("cp2").is_empty(), "no facts, no settings");
        assert_eq!(node("cp1").ca_dirs, Some(vec![]), "the facts found no optional CA directory");
    }

    #[test]
    fn peer_probe_output_is_classified() {
        let plan =
            crate::inventory::parse(include_str!("../../inventories/example.yaml"), std::path::Path::new("/")).unwrap();
        let peers: Vec<&Host> = plan.control_planes().collect();
        let out = "@@peer 198.18.0.11\nrc=0\n\n@@peer 198.18.0.12\nrc=1\nbash: connect: Connection refused\n\
                   bash: line 1: /dev/tcp/198.18.0.12/2380: Connection refused\n@@peer 198.18.0.13\nrc=1\n\
                   bash: connect: No route to host\n";
        let r = parse_peer_output(out, &peers);
        assert_eq!(r[0], ("cp1".to_string(), PeerReach::Open));
        assert_eq!(r[1], ("cp2".to_string(), PeerReach::Refused));
        assert_eq!(r[2], ("cp3".to_string(), PeerReach::Unreachable("No route to host".into())));
        let none = parse_peer_output("@@nobash\n", &peers);
        assert!(matches!(&none[0].1, PeerReach::Unknown(m) if m.contains("bash")));
    }
}
