//! Preflight verdicts: what the gathered facts mean for a host, as rows of a report.
//!
//! Pure functions of the plan and the facts, so every rule is tested without a host. A failed
//! row stops `init` before anything is written.

use std::time::Duration;

use crate::host::facts::{DirState, Facts, Ownership};
use crate::host::layout::{
    CONTROLLER_MANAGER_PORT, ETCD_CLIENT_PORT, ETCD_DATA_DIR, ETCD_METRICS_PORT, ETCD_PEER_PORT, HAPROXY_STATS_PORT,
    KUBELET_PORT, MANIFESTS_DIR, SCHEDULER_PORT,
};
use crate::plan::{Host, LoadBalancer, Plan, Role};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        })
    }
}

/// One row of the preflight report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub host: String,
    pub check: &'static str,
    pub status: Status,
    pub detail: String,
}

impl Check {
    pub fn new(host: &str, check: &'static str, status: Status, detail: impl Into<String>) -> Self {
        Check { host: host.to_string(), check, status, detail: detail.into() }
    }
}

/// Thresholds and what kubeha already knows about the cluster.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// Above this clock difference between a host and the operator, preflight fails.
    pub max_clock_skew: Duration,
    /// This cluster's CA hash, when the state directory already has a CA.
    pub cluster_id: Option<String>,
    /// During a rotation of the cluster CA, the hash of the other CA of the rotation: hosts a
    /// stopped stage did not reach still carry it.
    pub also_cluster_id: Option<String>,
}

impl Expectations {
    /// The cluster id a host with `marker_id` in its marker is checked against: the other CA
    /// of a rotation in progress when that is the marker's, else this cluster's.
    pub fn cluster_id_for(&self, marker_id: Option<&str>) -> Option<&str> {
        match (&self.also_cluster_id, marker_id) {
            (Some(also), Some(id)) if also == id => Some(also),
            _ => self.cluster_id.as_deref(),
        }
    }
}

/// Above this, etcd starts logging clock-drift warnings between members.
const WARN_CLOCK_SKEW: f64 = 1.0;

/// The TCP ports a host's components will listen on.
pub fn required_ports(plan: &Plan, host: &Host) -> Vec<(u16, &'static str)> {
    let mut ports = vec![(KUBELET_PORT, "kubelet")];
    if host.role == Role::ControlPlane {
        ports.extend([
            (plan.api_server_bind_port, "kube-apiserver"),
            (ETCD_CLIENT_PORT, "etcd client"),
            (ETCD_PEER_PORT, "etcd peer"),
            (ETCD_METRICS_PORT, "etcd metrics"),
            (CONTROLLER_MANAGER_PORT, "kube-controller-manager"),
            (SCHEDULER_PORT, "kube-scheduler"),
        ]);
        if matches!(plan.load_balancer, LoadBalancer::KeepalivedHaproxy { .. }) {
            ports.push((plan.control_plane_endpoint.port, "haproxy"));
            ports.push((HAPROXY_STATS_PORT, "haproxy stats"));
        }
    }
    ports.sort_unstable();
    ports
}

/// Every verdict about one host from its facts and ownership (see [`crate::host::facts::ownership`]).
pub fn evaluate(plan: &Plan, host: &Host, facts: &Facts, ownership: &Ownership, expect: &Expectations) -> Vec<Check> {
    let mut checks = vec![
        root(host, facts),
        os(host, facts),
        swap(host, facts),
        ports(plan, host, facts, ownership),
        directories(host, ownership),
        write_paths(host, facts),
        clock(host, facts, expect.max_clock_skew),
        tools(host, facts),
        node(host, facts),
        node_name(host, facts),
    ];
    checks.retain(|c| !c.detail.is_empty());
    checks
}

/// A host kubeha set up keeps its role, and the cluster keeps its etcd members: init writes
/// every member's manifest with the same initial cluster, which only works when they start
/// together. Adding, removing or replacing a control plane of a running cluster is not a re-run.
pub fn membership(plan: &Plan, host: &Host, ownership: &Ownership) -> Option<Check> {
    let Ownership::Ours(marker) = ownership else { return None };
    let role = host.role.to_string();
    if marker.role != role {
        return Some(Check::new(
            &host.name,
            "membership",
            Status::Fail,
            format!(
                "kubeha set this host up as a {}, the inventory now says {role}: init does not change a host's role; \
                 take it out of the cluster first",
                marker.role
            ),
        ));
    }
    // Only a control plane's marker speaks for the members: a worker takes no part in etcd, and
    // membership changes leave workers untouched (their markers from earlier versions may name
    // the members of that time).
    let now: Vec<&str> = plan.control_planes().map(|h| h.name.as_str()).collect();
    if host.role == Role::ControlPlane && !marker.control_planes.is_empty() && marker.control_planes != now {
        return Some(Check::new(
            &host.name,
            "membership",
            Status::Fail,
            format!(
                "the control planes (etcd members) were {} and the inventory now has {}: init does not add, \
                 remove or replace etcd members of a running cluster; use `kubeha join-node NAME` to add one and \
                 `kubeha remove-node NAME` to take one out",
                marker.control_planes.join(", "),
                now.join(", ")
            ),
        ));
    }
    Some(Check::new(&host.name, "membership", Status::Ok, format!("{role} of this cluster")))
}

/// Across hosts: a control plane with nothing of the cluster while other hosts already run it
/// would start a second etcd cluster instead of joining the first. Unless the running control
/// planes' markers already count it as a member: an `init` cut short before it reached that host
/// wrote every member's etcd with the same initial cluster, which includes it, so the re-run
/// finishes it.
pub fn cluster_membership(ownerships: &[(&Host, Ownership)]) -> Option<Check> {
    let running: Vec<&str> = ownerships.iter().filter(|(_, o)| o.is_ours()).map(|(h, _)| h.name.as_str()).collect();
    let counted = |name: &str| {
        ownerships.iter().any(|(h, o)| match o {
            Ownership::Ours(m) if h.role == Role::ControlPlane => m.control_planes.iter().any(|c| c == name),
            _ => false,
        })
    };
    let fresh: Vec<&str> = ownerships
        .iter()
        .filter(|(h, o)| h.role == Role::ControlPlane && *o == Ownership::Fresh && !counted(&h.name))
        .map(|(h, _)| h.name.as_str())
        .collect();
    if running.is_empty() || fresh.is_empty() {
        return None;
    }
    Some(Check::new(
        "cluster",
        "members",
        Status::Fail,
        format!(
            "{} ha{} nothing of this cluster, which already runs on {}: a control plane cannot join a running \
             cluster through init (its etcd member must be added first); join it with `kubeha join-node {}`",
            fresh.join(", "),
            if fresh.len() == 1 { "s" } else { "ve" },
            running.join(", "),
            fresh.join(" ")
        ),
    ))
}

/// kubeha's remote scripts rely on GNU coreutils behaviour; a host without it would fail every
/// write (safely, but with a confusing checksum error).
fn tools(host: &Host, facts: &Facts) -> Check {
    if facts.tool_problems.is_empty() {
        Check::new(&host.name, "tools", Status::Ok, "coreutils as kubeha needs them")
    } else {
        Check::new(
            &host.name,
            "tools",
            Status::Fail,
            format!("{}: kubeha needs GNU coreutils on its hosts", facts.tool_problems.join(", ")),
        )
    }
}

/// What the host needs to run what kubeha writes: kubeha renders the static pods and the
/// kubelet's configuration, the host provides the kubelet, a container runtime and forwarding.
/// Warnings only: they may be installed after kubeha runs, but until then nothing starts.
fn node(host: &Host, facts: &Facts) -> Check {
    let mut missing = Vec::new();
    if facts.kubelet.is_none() {
        missing.push("no kubelet on PATH");
    }
    if facts.runtime_sockets.is_empty() {
        missing.push("no container runtime socket (containerd, CRI-O, cri-dockerd)");
    }
    if facts.ip_forward == Some(false) {
        missing.push("net.ipv4.ip_forward is 0");
    }
    if missing.is_empty() {
        let runtime = facts.runtime_sockets.join(", ");
        Check::new(&host.name, "node", Status::Ok, format!("kubelet, {runtime}, IP forwarding"))
    } else {
        Check::new(
            &host.name,
            "node",
            Status::Warn,
            format!("{}: the static pods kubeha writes start only once these are in place", missing.join("; ")),
        )
    }
}

/// Which name the node registers under: always the inventory's (its certificate's), passed as
/// `--hostname-override`; said here when the machine's hostname differs.
fn node_name(host: &Host, facts: &Facts) -> Check {
    match facts.hostname.as_str() {
        "" => Check::new(&host.name, "node name", Status::Ok, format!("registers as {}", host.name)),
        name if name == host.name => Check::new(&host.name, "node name", Status::Ok, format!("hostname {name}")),
        name => Check::new(
            &host.name,
            "node name",
            Status::Ok,
            format!("hostname {name}; the node registers as {} (--hostname-override)", host.name),
        ),
    }
}

fn root(host: &Host, facts: &Facts) -> Check {
    let how = if host.ssh.sudo { format!("{} with sudo", host.ssh.user) } else { host.ssh.user.clone() };
    match facts.uid {
        Some(0) => Check::new(&host.name, "root", Status::Ok, format!("commands run as root ({how})")),
        Some(uid) => Check::new(
            &host.name,
            "root",
            Status::Fail,
            format!("commands run as uid {uid} ({how}): log in as root or set ssh.sudo: true with passwordless sudo"),
        ),
        None => Check::new(&host.name, "root", Status::Fail, "could not tell which user commands run as"),
    }
}

fn os(host: &Host, facts: &Facts) -> Check {
    let what =
        format!("{} {} ({})", facts.kernel, facts.arch, if facts.os.is_empty() { "unknown OS" } else { &facts.os });
    let status = match (facts.kernel.as_str(), facts.arch.as_str()) {
        ("Linux", "x86_64" | "aarch64") => Status::Ok,
        ("Linux", _) => Status::Warn,
        _ => Status::Fail,
    };
    let detail = match status {
        Status::Ok => what,
        Status::Warn => format!("{what}: Kubernetes images are published for amd64 and arm64 mainly"),
        Status::Fail => format!("{what}: Kubernetes nodes must run Linux"),
    };
    Check::new(&host.name, "os", status, detail)
}

fn swap(host: &Host, facts: &Facts) -> Check {
    if facts.swaps.is_empty() {
        Check::new(&host.name, "swap", Status::Ok, "off")
    } else {
        Check::new(
            &host.name,
            "swap",
            Status::Fail,
            format!(
                "on ({}): the kubelet refuses to start with swap; run swapoff -a and remove it from /etc/fstab",
                facts.swaps.join(", ")
            ),
        )
    }
}

fn ports(plan: &Plan, host: &Host, facts: &Facts, ownership: &Ownership) -> Check {
    let wanted = required_ports(plan, host);
    let busy: Vec<String> = wanted
        .iter()
        .filter(|(port, _)| facts.listening.contains(port))
        .map(|(port, what)| format!("{port} ({what})"))
        .collect();
    let all: Vec<String> = wanted.iter().map(|(p, _)| p.to_string()).collect();
    if busy.is_empty() {
        Check::new(&host.name, "ports", Status::Ok, format!("{} free", all.join(" ")))
    } else if ownership.is_ours() {
        Check::new(&host.name, "ports", Status::Ok, format!("{} in use by this cluster", busy.join(", ")))
    } else {
        Check::new(&host.name, "ports", Status::Fail, format!("in use: {}", busy.join(", ")))
    }
}

fn directories(host: &Host, ownership: &Ownership) -> Check {
    let dirs = if host.role == Role::ControlPlane {
        format!("{MANIFESTS_DIR} and {ETCD_DATA_DIR}")
    } else {
        MANIFESTS_DIR.to_string()
    };
    match ownership {
        Ownership::Fresh => Check::new(&host.name, "directories", Status::Ok, format!("{dirs} empty")),
        Ownership::Ours(_) => {
            Check::new(&host.name, "directories", Status::Ok, "already set up by kubeha for this cluster")
        }
        Ownership::Other(why) => Check::new(&host.name, "directories", Status::Fail, why.clone()),
    }
}

/// The directories kubeha writes into must be real directories, root's, and writable by root
/// only: a link would send kubeha's files (keys included) elsewhere, and whoever can write into
/// them can swap the manifests the kubelet runs.
fn write_paths(host: &Host, facts: &Facts) -> Check {
    let mut problems = Vec::new();
    for (path, state) in &facts.dirs {
        match state {
            DirState::Dir { uid, mode } => {
                if *uid != 0 {
                    problems.push(format!("{path} is owned by uid {uid}, not root: chown root:root {path}"));
                }
                if mode & 0o022 != 0 {
                    problems
                        .push(format!("{path} is writable by group or others (mode {mode:04o}): chmod go-w {path}"));
                }
            }
            DirState::Link(target) => problems.push(format!(
                "{path} is a symbolic link (to {target}): kubeha writes only into real directories; \
                 replace it with a directory owned by root, mode 0755"
            )),
            DirState::Other => problems.push(format!("{path} is not a directory: remove it")),
            DirState::Unknown(line) => problems.push(format!("cannot read the state of {path} ({line:?})")),
        }
    }
    if problems.is_empty() {
        Check::new(&host.name, "write paths", Status::Ok, "kubeha's directories are root's and not writable by others")
    } else {
        Check::new(&host.name, "write paths", Status::Fail, problems.join("; "))
    }
}

fn clock(host: &Host, facts: &Facts, max: Duration) -> Check {
    let Some((skew, precision)) = facts.clock_skew else {
        return Check::new(&host.name, "clock", Status::Warn, "could not read the host's clock");
    };
    let detail = format!("{skew:+.3}s from this machine (±{precision:.3}s)");
    let off = skew.abs() - precision;
    if off > max.as_secs_f64() {
        Check::new(
            &host.name,
            "clock",
            Status::Fail,
            format!("{detail}: more than {}s breaks certificates and etcd; sync clocks with NTP", max.as_secs_f64()),
        )
    } else if off > WARN_CLOCK_SKEW {
        Check::new(&host.name, "clock", Status::Warn, format!("{detail}: etcd warns above 1s; sync clocks with NTP"))
    } else {
        Check::new(&host.name, "clock", Status::Ok, detail)
    }
}

/// How a control plane reached a peer's etcd peer port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerReach {
    /// Something accepted the connection.
    Open,
    /// The peer answered with a refusal: the network path works, nothing listens yet.
    Refused,
    /// No answer: filtered or down.
    Unreachable(String),
    /// The check itself could not run (e.g. the SSH server forbids forwarding).
    Unknown(String),
}

/// One row for a control plane's reachability of every other control plane on 2380.
pub fn peers(host: &Host, results: &[(String, PeerReach)]) -> Check {
    let bad: Vec<String> = results
        .iter()
        .filter_map(|(peer, r)| match r {
            PeerReach::Unreachable(why) => Some(format!("{peer}: {why}")),
            _ => None,
        })
        .collect();
    let unknown: Vec<String> = results
        .iter()
        .filter_map(|(peer, r)| match r {
            PeerReach::Unknown(why) => Some(format!("{peer}: {why}")),
            _ => None,
        })
        .collect();
    let names: Vec<&str> = results.iter().map(|(p, _)| p.as_str()).collect();
    if !bad.is_empty() {
        Check::new(
            &host.name,
            "etcd peers",
            Status::Fail,
            format!(
                "cannot reach port {ETCD_PEER_PORT} of {}; open TCP {ETCD_PEER_PORT} between control planes",
                bad.join("; ")
            ),
        )
    } else if !unknown.is_empty() {
        Check::new(&host.name, "etcd peers", Status::Warn, format!("not checked: {}", unknown.join("; ")))
    } else if names.is_empty() {
        Check::new(&host.name, "etcd peers", Status::Ok, "single member")
    } else {
        Check::new(
            &host.name,
            "etcd peers",
            Status::Ok,
            format!("port {ETCD_PEER_PORT} of {} reachable", names.join(", ")),
        )
    }
}

/// A rendered report: one row per check, columns aligned.
pub fn table(checks: &[Check]) -> String {
    let rows: Vec<[String; 4]> =
        checks.iter().map(|c| [c.host.clone(), c.check.to_string(), c.status.to_string(), c.detail.clone()]).collect();
    crate::text::table(["HOST", "CHECK", "STATUS", "DETAIL"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::facts::parse;

    fn plan() -> Plan {
        crate::inventory::parse(include_str!("../../inventories/example.yaml"), std::path::Path::new("/")).unwrap()
    }

    fn expect(id: Option<&str>) -> Expectations {
        Expectations {
            max_clock_skew: Duration::from_secs(5),
            cluster_id: id.map(str::to_string),
            also_cluster_id: None,
        }
    }

    fn healthy() -> Facts {
        let mut f = parse(
            "@@uid\n0\n@@uname\nLinux\nx86_64\n@@os\nDebian 12\n@@swaps\nFilename Type\n@@tools\n@@kubelet\n\
             /usr/bin/kubelet\n@@runtime\n/run/containerd/containerd.sock\n@@forward\n1\n@@end\n",
        );
        f.clock_skew = Some((0.01, 0.002));
        f
    }

    /// `evaluate` and init's membership rule, with the ownership the facts imply.
    fn eval(plan: &Plan, host: &Host, facts: &Facts, expect: &Expectations) -> Vec<Check> {
        let ownership = crate::host::facts::ownership(facts, expect.cluster_id.as_deref());
        let mut rows = evaluate(plan, host, facts, &ownership, expect);
        rows.extend(membership(plan, host, &ownership));
        rows
    }

    fn marker(role: &str, control_planes: &str) -> String {
        format!("cluster: lab\nclusterID: sha256:1234\nhost: cp1\nrole: {role}\ncontrolPlanes: [{control_planes}]\n")
    }

    fn statuses(checks: &[Check]) -> Vec<(&str, Status)> {
        checks.iter().map(|c| (c.check, c.status)).collect()
    }

    #[test]
    fn a_clean_host_passes() {
        let plan = plan();
        let checks = eval(&plan, &plan.hosts[0], &healthy(), &expect(None));
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{}", table(&checks));
        assert_eq!(checks.len(), 10);
        assert!(checks[3].detail.contains("2379 2380 2381 6443 8404 8443 10250 10257 10259 free"), "{:?}", checks[3]);
    }

    #[test]
    fn linked_foreign_or_loose_directories_fail() {
        let plan = plan();
        let mut f = healthy();
        let row = |f: &Facts| {
            let checks = eval(&plan, &plan.hosts[0], f, &expect(None));
            checks.into_iter().find(|c| c.check == "write paths").unwrap()
        };
        f.dirs = vec![("/etc/kubernetes".into(), DirState::Dir { uid: 0, mode: 0o755 })];
        assert_eq!(row(&f).status, Status::Ok);
        f.dirs.push(("/etc/kubernetes/pki".into(), DirState::Link("/srv/pki".into())));
        f.dirs.push(("/etc/kubernetes/manifests".into(), DirState::Dir { uid: 1000, mode: 0o775 }));
        f.dirs.push(("/var/lib/kubelet".into(), DirState::Dir { uid: 0, mode: 0o1777 }));
        f.dirs.push(("/etc/kubernetes/haproxy".into(), DirState::Other));
        let r = row(&f);
        assert_eq!(r.status, Status::Fail);
        for part in [
            "/etc/kubernetes/pki is a symbolic link (to /srv/pki): kubeha writes only into real directories",
            "/etc/kubernetes/manifests is owned by uid 1000, not root: chown root:root /etc/kubernetes/manifests",
            "/etc/kubernetes/manifests is writable by group or others (mode 0775): chmod go-w",
            "/var/lib/kubelet is writable by group or others (mode 1777)",
            "/etc/kubernetes/haproxy is not a directory",
        ] {
            assert!(r.detail.contains(part), "{part}: {}", r.detail);
        }
    }

    #[test]
    fn busy_ports_swap_and_foreign_directories_fail() {
        let plan = plan();
        let mut f = healthy();
        f.listening.insert(2379);
        f.swaps.push("/swapfile".into());
        f.manifests.push("kube-apiserver.yaml".into());
        f.uid = Some(1000);
        f.tool_problems.push("mv has no -T".into());
        f.kubelet = None;
        let checks = eval(&plan, &plan.hosts[0], &f, &expect(None));
        let failed: Vec<&str> = checks.iter().filter(|c| c.status == Status::Fail).map(|c| c.check).collect();
        assert_eq!(failed, ["root", "swap", "ports", "directories", "tools"]);
        let node = checks.iter().find(|c| c.check == "node").unwrap();
        assert_eq!((node.status, node.detail.starts_with("no kubelet on PATH")), (Status::Warn, true), "{node:?}");
        assert!(checks.iter().any(|c| c.detail == "in use: 2379 (etcd client)"));
    }

    #[test]
    fn our_own_cluster_may_hold_its_ports() {
        let plan = plan();
        let mut f = healthy();
        f.listening.extend([2379, 6443, 8443]);
        f.manifests.push("etcd.yaml".into());
        f.marker = Some(marker("control-plane", "cp1, cp2, cp3"));
        let checks = eval(&plan, &plan.hosts[0], &f, &expect(Some("sha256:1234")));
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{}", table(&checks));
        let checks = eval(&plan, &plan.hosts[0], &f, &expect(Some("sha256:9999")));
        assert_eq!(statuses(&checks).iter().filter(|(_, s)| *s == Status::Fail).count(), 2);
    }

    #[test]
    fn a_host_keeps_its_role_and_the_cluster_its_members() {
        let plan = plan();
        let mut f = healthy();
        let failed = |f: &Facts, host: usize| -> Vec<String> {
            eval(&plan, &plan.hosts[host], f, &expect(Some("sha256:1234")))
                .into_iter()
                .filter(|c| c.status == Status::Fail)
                .map(|c| format!("{}: {}", c.check, c.detail))
                .collect()
        };
        f.marker = Some(marker("worker", "cp1, cp2, cp3"));
        let bad = failed(&f, 0);
        assert!(bad.len() == 1 && bad[0].contains("set this host up as a worker"), "{bad:?}");
        f.marker = Some(marker("control-plane", "cp1, cp2, cp3, cp4, cp5"));
        let bad = failed(&f, 0);
        assert!(
            bad.len() == 1 && bad[0].contains("were cp1, cp2, cp3, cp4, cp5 and the inventory now has cp1, cp2, cp3"),
            "{bad:?}"
        );
        f.marker = Some(marker("worker", "cp1, cp2, cp3"));
        assert!(failed(&f, 3).is_empty(), "a worker of the same cluster passes");
        // A worker takes no part in etcd: the members its marker names (earlier versions wrote
        // them) do not matter, so joining or removing a control plane can leave workers alone.
        f.marker = Some(marker("worker", "cp1, cp2, cp3, cp4, cp5"));
        assert!(failed(&f, 3).is_empty(), "a worker's marker naming other members passes");
        f.marker = Some(marker("worker", ""));
        assert!(failed(&f, 3).is_empty(), "a worker's marker naming no members passes");

        let hosts: Vec<(&Host, Ownership)> = vec![
            (&plan.hosts[0], crate::host::facts::ownership(&f, Some("sha256:1234"))),
            (&plan.hosts[1], Ownership::Fresh),
        ];
        let c = cluster_membership(&hosts).unwrap();
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.starts_with("cp2 has nothing of this cluster, which already runs on cp1"), "{}", c.detail);
        assert!(cluster_membership(&[(&plan.hosts[1], Ownership::Fresh)]).is_none(), "a fresh cluster");
        // cp1's marker counts cp2 as a member: an init cut short before it reached cp2.
        f.marker = Some(marker("control-plane", "cp1, cp2, cp3"));
        let hosts: Vec<(&Host, Ownership)> = vec![
            (&plan.hosts[0], crate::host::facts::ownership(&f, Some("sha256:1234"))),
            (&plan.hosts[1], Ownership::Fresh),
        ];
        assert!(cluster_membership(&hosts).is_none(), "an interrupted init's host is refused");
    }

    #[test]
    fn workers_need_only_the_kubelet_port() {
        let plan = plan();
        let mut f = healthy();
        f.listening.insert(2379);
        let checks = eval(&plan, &plan.hosts[3], &f, &expect(None));
        assert!(checks.iter().all(|c| c.status == Status::Ok), "{}", table(&checks));
    }

    #[test]
    fn clock_skew_warns_then_fails() {
        let plan = plan();
        let mut f = healthy();
        f.clock_skew = Some((2.5, 0.01));
        let c = clock(&plan.hosts[0], &f, Duration::from_secs(5));
        assert_eq!(c.status, Status::Warn);
        f.clock_skew = Some((-7.0, 0.01));
        let c = clock(&plan.hosts[0], &f, Duration::from_secs(5));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.starts_with("-7.000s"), "{}", c.detail);
        // A slow round trip widens the margin instead of failing a host whose clock is right.
        f.clock_skew = Some((5.5, 1.0));
        assert_eq!(clock(&plan.hosts[0], &f, Duration::from_secs(5)).status, Status::Warn);
    }

    #[test]
    fn peers_distinguish_refused_from_unreachable() {
        let plan = plan();
        let ok = peers(&plan.hosts[0], &[("cp2".into(), PeerReach::Refused), ("cp3".into(), PeerReach::Open)]);
        assert_eq!(ok.status, Status::Ok);
        let bad = peers(&plan.hosts[0], &[("cp2".into(), PeerReach::Unreachable("timed out".into()))]);
        assert_eq!(bad.status, Status::Fail);
        assert!(bad.detail.contains("cp2: timed out"));
        let unknown = peers(&plan.hosts[0], &[("cp2".into(), PeerReach::Unknown("forwarding disabled".into()))]);
        assert_eq!(unknown.status, Status::Warn);
    }
}
