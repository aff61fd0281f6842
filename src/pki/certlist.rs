//! The certificate list: every CA, leaf certificate and kubeconfig kubeha keeps, as data (in the
//! manner of kubeadm's `certlist.go` and `getKubeConfigSpecsBase`), and where each lands in the
//! state directory and on a host.
//!
//! Subjects, usages and SANs mirror kubeadm for Kubernetes 1.31/1.32; `docs/pki.md` has the
//! table in prose. Paths in the state directory are relative to its root and without the
//! `.crt`/`.key` extension; `pki/` holds what every control plane shares, `nodes/<host>/`
//! what belongs to one host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::plan::{EndpointHost, Host, Plan, Role, San, join_host_port};

/// Which CA signs a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Authority {
    Kubernetes,
    FrontProxy,
    Etcd,
}

/// A self-signed CA.
pub(crate) struct CaRow {
    pub(crate) authority: Authority,
    /// Under `<state>/pki/` and `/etc/kubernetes/pki/`.
    pub(crate) base: &'static str,
    pub(crate) common_name: &'static str,
}

pub(crate) const CAS: [CaRow; 3] = [
    CaRow { authority: Authority::Kubernetes, base: "ca", common_name: "kubernetes" },
    CaRow { authority: Authority::FrontProxy, base: "front-proxy-ca", common_name: "front-proxy-ca" },
    CaRow { authority: Authority::Etcd, base: "etcd/ca", common_name: "etcd-ca" },
];

/// The extended key usages of a leaf certificate: serverAuth, clientAuth or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Usage {
    Server,
    Client,
    /// etcd requires clientAuth on its server certificate too (etcd-io/etcd#9785).
    ServerAndClient,
}

impl Usage {
    pub(crate) fn server(self) -> bool {
        self != Usage::Client
    }
    pub(crate) fn client(self) -> bool {
        self != Usage::Server
    }
}

/// Who holds a certificate or kubeconfig.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// One copy for the cluster, shared by every control plane.
    Cluster,
    /// One per control plane.
    ControlPlane,
    /// One per host, control planes and workers.
    EveryHost,
}

enum Cn {
    Fixed(&'static str),
    /// The host's name (etcd member name).
    HostName,
    /// `system:node:<host name>`.
    NodeUser,
}

enum Sans {
    None,
    ApiServer,
    EtcdMember,
}

struct LeafRow {
    /// Under `pki/` (or `nodes/<host>/pki/`) and `/etc/kubernetes/pki/`.
    base: &'static str,
    scope: Scope,
    cn: Cn,
    orgs: &'static [&'static str],
    signer: Authority,
    usage: Usage,
    sans: Sans,
}

/// kubeadm's `ClusterAdminsGroupAndClusterRoleBinding` (1.29+): bound to cluster-admin by an
/// RBAC binding that can be removed, unlike `system:masters`.
const CLUSTER_ADMINS: &str = "kubeadm:cluster-admins";
const MASTERS: &str = "system:masters";

const LEAVES: [LeafRow; 7] = [
    LeafRow {
        base: "apiserver",
        scope: Scope::ControlPlane,
        cn: Cn::Fixed("kube-apiserver"),
        orgs: &[],
        signer: Authority::Kubernetes,
        usage: Usage::Server,
        sans: Sans::ApiServer,
    },
    LeafRow {
        base: "apiserver-kubelet-client",
        scope: Scope::Cluster,
        cn: Cn::Fixed("kube-apiserver-kubelet-client"),
        orgs: &[CLUSTER_ADMINS],
        signer: Authority::Kubernetes,
        usage: Usage::Client,
        sans: Sans::None,
    },
    LeafRow {
        base: "front-proxy-client",
        scope: Scope::Cluster,
        cn: Cn::Fixed("front-proxy-client"),
        orgs: &[],
        signer: Authority::FrontProxy,
        usage: Usage::Client,
        sans: Sans::None,
    },
    LeafRow {
        base: "etcd/server",
        scope: Scope::ControlPlane,
        cn: Cn::HostName,
        orgs: &[],
        signer: Authority::Etcd,
        usage: Usage::ServerAndClient,
        sans: Sans::EtcdMember,
    },
    LeafRow {
        base: "etcd/peer",
        scope: Scope::ControlPlane,
        cn: Cn::HostName,
        orgs: &[],
        signer: Authority::Etcd,
        usage: Usage::ServerAndClient,
        sans: Sans::EtcdMember,
    },
    LeafRow {
        base: "etcd/healthcheck-client",
        scope: Scope::Cluster,
        cn: Cn::Fixed("kube-etcd-healthcheck-client"),
        orgs: &[],
        signer: Authority::Etcd,
        usage: Usage::Client,
        sans: Sans::None,
    },
    LeafRow {
        base: "apiserver-etcd-client",
        scope: Scope::Cluster,
        cn: Cn::Fixed("kube-apiserver-etcd-client"),
        orgs: &[],
        signer: Authority::Etcd,
        usage: Usage::Client,
        sans: Sans::None,
    },
];

enum Server {
    /// The control-plane endpoint (VIP or DNS name).
    Endpoint,
    /// The host's own apiserver, `https://<address>:<bindPort>`.
    OwnApiServer,
}

struct KubeconfigRow {
    file: &'static str,
    scope: Scope,
    user: Cn,
    orgs: &'static [&'static str],
    server: Server,
    /// Whether hosts receive it (`super-admin.conf` stays in the state directory: it bypasses RBAC).
    shipped: bool,
}

const KUBECONFIGS: [KubeconfigRow; 5] = [
    KubeconfigRow {
        file: "admin.conf",
        scope: Scope::Cluster,
        user: Cn::Fixed("kubernetes-admin"),
        orgs: &[CLUSTER_ADMINS],
        server: Server::Endpoint,
        shipped: true,
    },
    KubeconfigRow {
        file: "super-admin.conf",
        scope: Scope::Cluster,
        user: Cn::Fixed("kubernetes-super-admin"),
        orgs: &[MASTERS],
        server: Server::Endpoint,
        shipped: false,
    },
    KubeconfigRow {
        file: "controller-manager.conf",
        scope: Scope::ControlPlane,
        user: Cn::Fixed("system:kube-controller-manager"),
        orgs: &[],
        server: Server::OwnApiServer,
        shipped: true,
    },
    KubeconfigRow {
        file: "scheduler.conf",
        scope: Scope::ControlPlane,
        user: Cn::Fixed("system:kube-scheduler"),
        orgs: &[],
        server: Server::OwnApiServer,
        shipped: true,
    },
    KubeconfigRow {
        file: "kubelet.conf",
        scope: Scope::EveryHost,
        user: Cn::NodeUser,
        orgs: &["system:nodes"],
        server: Server::Endpoint,
        shipped: true,
    },
];

/// What a leaf certificate must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) common_name: String,
    pub(crate) organizations: Vec<String>,
    pub(crate) usage: Usage,
    /// DNS names (sorted, unique) then IP addresses (unique, in kubeadm's order).
    pub(crate) sans: Vec<San>,
    pub(crate) signer: Authority,
}

/// A leaf certificate and key pair of the plan.
#[derive(Debug)]
pub(crate) struct Leaf {
    /// `<rel>.crt` and `<rel>.key` in the state directory.
    pub(crate) rel: PathBuf,
    pub(crate) identity: Identity,
}

/// A kubeconfig of the plan.
#[derive(Debug)]
pub(crate) struct Kubeconfig {
    pub(crate) rel: PathBuf,
    pub(crate) server: String,
    /// Also the kubeconfig's user name.
    pub(crate) identity: Identity,
}

/// Every leaf certificate the plan needs: shared ones first, then per control plane.
pub(crate) fn leaves(plan: &Plan) -> Vec<Leaf> {
    let mut out = Vec::new();
    for row in LEAVES.iter().filter(|r| r.scope == Scope::Cluster) {
        out.push(Leaf { rel: Path::new("pki").join(row.base), identity: row.identity(plan, None) });
    }
    for host in plan.control_planes() {
        for row in LEAVES.iter().filter(|r| r.scope == Scope::ControlPlane) {
            out.push(Leaf { rel: node_dir(host).join("pki").join(row.base), identity: row.identity(plan, Some(host)) });
        }
    }
    out
}

/// Every kubeconfig the plan needs: shared ones first, then per host in inventory order.
pub(crate) fn kubeconfigs(plan: &Plan) -> Vec<Kubeconfig> {
    let mut out = Vec::new();
    for row in KUBECONFIGS.iter().filter(|r| r.scope == Scope::Cluster) {
        out.push(row.kubeconfig(plan, None));
    }
    for host in &plan.hosts {
        for row in KUBECONFIGS.iter().filter(|r| r.applies_to(host)) {
            out.push(row.kubeconfig(plan, Some(host)));
        }
    }
    out
}

/// kubeadm's names for the certificates `certs renew` re-issues (`kubeadm certs renew <name>`),
/// and what each is here: a leaf (its base, as in the table above) or a kubeconfig.
pub(crate) const KUBEADM_NAMES: [(&str, &str); 12] = [
    ("apiserver", "apiserver"),
    ("apiserver-kubelet-client", "apiserver-kubelet-client"),
    ("apiserver-etcd-client", "apiserver-etcd-client"),
    ("front-proxy-client", "front-proxy-client"),
    ("etcd-server", "etcd/server"),
    ("etcd-peer", "etcd/peer"),
    ("etcd-healthcheck-client", "etcd/healthcheck-client"),
    ("admin.conf", "admin.conf"),
    ("super-admin.conf", "super-admin.conf"),
    ("controller-manager.conf", "controller-manager.conf"),
    ("scheduler.conf", "scheduler.conf"),
    ("kubelet.conf", "kubelet.conf"),
];

/// The files of the plan (leaf certificates as `<rel>.crt`, kubeconfigs as they are) that
/// kubeadm's `name` stands for; per-host ones only for `hosts` (every host when empty). `None`
/// for a name kubeadm does not have.
pub(crate) fn named_files(plan: &Plan, name: &str, hosts: &[String]) -> Option<Vec<PathBuf>> {
    let (_, base) = KUBEADM_NAMES.iter().find(|(n, _)| *n == name)?;
    let wanted = |rel: &Path| match rel.strip_prefix("nodes") {
        Ok(rest) => hosts.is_empty() || rest.iter().next().is_some_and(|h| hosts.iter().any(|w| h == w.as_str())),
        Err(_) => true,
    };
    let leaves = leaves(plan).into_iter().map(|l| l.rel).filter(|rel| rel.ends_with(base));
    let leaves = leaves.map(|rel| rel.with_extension("crt"));
    let kubeconfigs = kubeconfigs(plan).into_iter().map(|k| k.rel).filter(|rel| rel.ends_with(base));
    Some(leaves.chain(kubeconfigs).filter(|rel| wanted(rel)).collect())
}

/// Where a file of the state directory lands on a host.
pub(crate) struct Placement {
    pub(crate) rel: PathBuf,
    pub(crate) host_path: PathBuf,
    pub(crate) mode: u32,
}

pub(crate) const CERT_MODE: u32 = 0o644;
pub(crate) const SECRET_MODE: u32 = 0o600;

/// The service-account signing key pair, shared by every apiserver and controller manager.
pub(crate) const SA_KEY: &str = "pki/sa.key";
pub(crate) const SA_PUB: &str = "pki/sa.pub";

/// Everything `host` receives (unsorted): control planes get every CA with its key, the shared
/// client certificates, their own serving and etcd certificates, and their kubeconfigs;
/// workers get the cluster CA certificate and their kubelet.conf.
pub(crate) fn placements(host: &Host) -> Vec<Placement> {
    let pki = Path::new(crate::host::layout::PKI_DIR);
    let mut out = Vec::new();
    let mut pair = |rel: PathBuf, base: &str, key: bool| {
        out.push(Placement {
            rel: rel.with_extension("crt"),
            host_path: pki.join(format!("{base}.crt")),
            mode: CERT_MODE,
        });
        if key {
            out.push(Placement {
                rel: rel.with_extension("key"),
                host_path: pki.join(format!("{base}.key")),
                mode: SECRET_MODE,
            });
        }
    };
    if host.role == Role::Worker {
        pair(Path::new("pki/ca").into(), "ca", false);
    } else {
        for ca in &CAS {
            pair(Path::new("pki").join(ca.base), ca.base, true);
        }
        for row in &LEAVES {
            let dir = if row.scope == Scope::Cluster { PathBuf::from("pki") } else { node_dir(host).join("pki") };
            pair(dir.join(row.base), row.base, true);
        }
        out.push(Placement { rel: SA_KEY.into(), host_path: pki.join("sa.key"), mode: SECRET_MODE });
        out.push(Placement { rel: SA_PUB.into(), host_path: pki.join("sa.pub"), mode: CERT_MODE });
    }
    for row in KUBECONFIGS.iter().filter(|r| r.shipped) {
        let rel = match row.scope {
            Scope::Cluster if host.role == Role::ControlPlane => PathBuf::from(row.file),
            Scope::Cluster => continue,
            _ if row.applies_to(host) => node_dir(host).join(row.file),
            _ => continue,
        };
        out.push(Placement {
            rel,
            host_path: Path::new(crate::host::layout::KUBERNETES_DIR).join(row.file),
            mode: SECRET_MODE,
        });
    }
    out
}

fn node_dir(host: &Host) -> PathBuf {
    Path::new("nodes").join(&host.name)
}

impl LeafRow {
    fn identity(&self, plan: &Plan, host: Option<&Host>) -> Identity {
        let sans = match (&self.sans, host) {
            (Sans::None, _) => Vec::new(),
            (Sans::ApiServer, Some(host)) => apiserver_sans(plan, host),
            (Sans::EtcdMember, Some(host)) => etcd_sans(host),
            (_, None) => unreachable!("host-specific SANs only on per-host certificates"),
        };
        Identity {
            common_name: self.cn.resolve(host),
            organizations: self.orgs.iter().map(|o| o.to_string()).collect(),
            usage: self.usage,
            sans,
            signer: self.signer,
        }
    }
}

impl KubeconfigRow {
    fn applies_to(&self, host: &Host) -> bool {
        match self.scope {
            Scope::Cluster => false,
            Scope::ControlPlane => host.role == Role::ControlPlane,
            Scope::EveryHost => true,
        }
    }

    fn kubeconfig(&self, plan: &Plan, host: Option<&Host>) -> Kubeconfig {
        let rel = match host {
            Some(host) => node_dir(host).join(self.file),
            None => PathBuf::from(self.file),
        };
        let server = match (&self.server, host) {
            (Server::Endpoint, _) => plan.endpoint_url(),
            (Server::OwnApiServer, Some(host)) => {
                format!("https://{}", join_host_port(host.address, plan.api_server_bind_port))
            }
            (Server::OwnApiServer, None) => unreachable!("own-apiserver kubeconfigs are per host"),
        };
        let identity = Identity {
            common_name: self.user.resolve(host),
            organizations: self.orgs.iter().map(|o| o.to_string()).collect(),
            usage: Usage::Client,
            sans: Vec::new(),
            signer: Authority::Kubernetes,
        };
        Kubeconfig { rel, server, identity }
    }
}

impl Cn {
    fn resolve(&self, host: Option<&Host>) -> String {
        match (self, host) {
            (Cn::Fixed(cn), _) => cn.to_string(),
            (Cn::HostName, Some(h)) => h.name.clone(),
            (Cn::NodeUser, Some(h)) => format!("system:node:{}", h.name),
            (_, None) => unreachable!("host-specific names only on per-host certificates"),
        }
    }
}

/// kubeadm's `GetAPIServerAltNames` for `host`, plus `localhost` and the host's loopback
/// address (`127.0.0.1`, or `::1` on an IPv6 host), so that clients on the host itself (the
/// keepalived check, kubeha's health checks through SSH) can verify the apiserver, and
/// `certificates.extraSANs`.
fn apiserver_sans(plan: &Plan, host: &Host) -> Vec<San> {
    let dns_domain = &plan.networking.dns_domain;
    let mut dns = vec![
        host.name.clone(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        format!("kubernetes.default.svc.{dns_domain}"),
        "localhost".into(),
    ];
    let mut ips = vec![plan.kubernetes_service_ip(), host.address];
    match &plan.control_plane_endpoint.host {
        EndpointHost::Ip(ip) => ips.push(*ip),
        EndpointHost::Dns(name) => dns.push(name.clone()),
    }
    ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    if host.address.is_ipv6() {
        ips.push(host.loopback());
    }
    for san in &plan.certificates.extra_sans {
        match san {
            San::Ip(ip) => ips.push(*ip),
            San::Dns(name) => dns.push(name.clone()),
        }
    }
    alt_names(dns, ips)
}

/// kubeadm's `getAltNames` for the etcd server and peer certificates.
fn etcd_sans(host: &Host) -> Vec<San> {
    alt_names(
        vec![host.name.clone(), "localhost".into()],
        vec![host.address, IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)],
    )
}

/// As kubeadm's `RemoveDuplicateAltNames`: DNS names sorted and unique, IPs unique in order.
fn alt_names(mut dns: Vec<String>, ips: Vec<IpAddr>) -> Vec<San> {
    dns.sort();
    dns.dedup();
    let mut out: Vec<San> = dns.into_iter().map(San::Dns).collect();
    for ip in ips {
        if !out.contains(&San::Ip(ip)) {
            out.push(San::Ip(ip));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alt_names_are_sorted_and_unique_as_kubeadm_writes_them() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let sans = alt_names(
            vec!["kubernetes".into(), "cp1".into(), "kubernetes".into()],
            vec![ip("10.96.0.1"), ip("198.18.0.11"), ip("10.96.0.1")],
        );
        assert_eq!(
            sans,
            vec![
                San::Dns("cp1".into()),
                San::Dns("kubernetes".into()),
                San::Ip(ip("10.96.0.1")),
                San::Ip(ip("198.18.0.11"))
            ]
        );
    }
}
