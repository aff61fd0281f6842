//! The validated cluster plan: everything later steps need, derived once from the inventory.
//!
//! Nothing downstream of [`crate::inventory`] sees raw YAML. A `Plan` only exists when the
//! inventory passed validation, so certificate generation and rendering can rely on its
//! invariants (an odd number of control planes, unique names and addresses, a usable endpoint).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Serialize;

use crate::version::{EtcdVersion, KubeVersion, KubeadmRelease, UnsupportedVersion};

/// The apiserver's secure port unless the inventory sets `spec.apiServer.bindPort`.
pub const DEFAULT_APISERVER_PORT: u16 = crate::host::layout::API_SERVER_PORT;
/// Where kubeadm-compatible static pods pull from unless `spec.imageRepository` says otherwise.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "registry.k8s.io";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub name: String,
    pub kubernetes_version: KubeVersion,
    pub etcd_version: EtcdVersion,
    pub control_plane_endpoint: Endpoint,
    pub api_server_bind_port: u16,
    pub image_repository: String,
    pub load_balancer: LoadBalancer,
    pub networking: Networking,
    pub certificates: Certificates,
    pub addons: Addons,
    /// Whether control planes carry `node-role.kubernetes.io/control-plane:NoSchedule` (ordinary
    /// pods stay off them); small clusters may want them to run workloads too.
    pub control_plane_taint: bool,
    /// In inventory order: control planes keep their relative order, which decides VRRP priority.
    pub hosts: Vec<Host>,
}

impl Plan {
    pub fn control_planes(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.role == Role::ControlPlane)
    }

    pub fn workers(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.role == Role::Worker)
    }

    /// Stacked etcd: every control plane runs one member.
    pub fn etcd_members(&self) -> impl Iterator<Item = &Host> {
        self.control_planes()
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The plan with only the hosts `keep` accepts (in the same order): the cluster as it runs
    /// when the inventory lists hosts that have not joined it yet.
    pub fn with_hosts(&self, keep: impl Fn(&Host) -> bool) -> Plan {
        let mut plan = self.clone();
        plan.hosts.retain(|h| keep(h));
        plan
    }

    /// The ClusterIP of the `kubernetes` service: the first address of the service subnet.
    pub fn kubernetes_service_ip(&self) -> IpAddr {
        first_host_ip(&self.networking.service_subnet)
    }

    /// The ClusterIP of the `kube-dns` service, which every kubelet hands its pods.
    pub fn cluster_dns_ip(&self) -> IpAddr {
        cluster_dns_ip(&self.networking.service_subnet)
    }

    /// The URL every client outside the control-plane pods uses.
    pub fn endpoint_url(&self) -> String {
        self.control_plane_endpoint.url()
    }

    /// The kubeadm rules the files are rendered with: the Kubernetes minor's, or the nearest
    /// supported minor's when the inventory was read with `--allow-unsupported-version`.
    pub fn kubeadm_release(&self) -> &'static KubeadmRelease {
        KubeadmRelease::nearest(self.kubernetes_version)
    }

    /// Why the Kubernetes version is outside the table, when it is (only possible with
    /// `--allow-unsupported-version`).
    pub fn unsupported_version(&self) -> Option<UnsupportedVersion> {
        KubeadmRelease::exact(self.kubernetes_version).err()
    }

    /// The CoreDNS image kubeadm deploys for this version, from the plan's image repository.
    pub fn coredns_image(&self) -> String {
        self.kubeadm_release().coredns_image(&self.image_repository, self.kubernetes_version)
    }

    /// The pause (pod sandbox) image kubeadm pairs with this version.
    pub fn pause_image(&self) -> String {
        self.kubeadm_release().pause_image(&self.image_repository)
    }
}

/// The cluster DNS service address: the tenth address of the service subnet, as kubeadm
/// allocates it for CoreDNS.
pub fn cluster_dns_ip(service_subnet: &IpNet) -> IpAddr {
    match service_subnet {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + 10).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + 10).into()),
    }
}

/// The first usable address of a subnet (network address + 1), as Kubernetes allocates it.
pub fn first_host_ip(net: &IpNet) -> IpAddr {
    match net {
        IpNet::V4(n) => IpAddr::V4((u32::from(n.network()) + 1).into()),
        IpNet::V6(n) => IpAddr::V6((u128::from(n.network()) + 1).into()),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub host: EndpointHost,
    pub port: u16,
}

impl Endpoint {
    pub fn url(&self) -> String {
        format!("https://{self}")
    }
}

/// `host:port`, IPv6 addresses in brackets (as `controlPlaneEndpoint` is written).
impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host {
            EndpointHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            ref host => write!(f, "{host}:{}", self.port),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum EndpointHost {
    Ip(IpAddr),
    Dns(String),
}

impl std::fmt::Display for EndpointHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointHost::Ip(ip) => ip.fmt(f),
            EndpointHost::Dns(name) => f.write_str(name),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum LoadBalancer {
    /// keepalived holds `vip` on one control plane; haproxy on every control plane balances
    /// over all apiservers.
    #[serde(rename_all = "camelCase")]
    KeepalivedHaproxy {
        vip: IpAddr,
        interface: String,
        virtual_router_id: u8,
        haproxy_image: String,
        keepalived_image: String,
    },
    /// The operator's own load balancer answers at the endpoint.
    External,
    /// A DNS name resolves to every apiserver; clients connect to the apiservers directly.
    Dns,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Networking {
    pub pod_subnet: Option<IpNet>,
    pub service_subnet: IpNet,
    pub dns_domain: String,
    /// A CNI plugin's manifest, applied after the add-ons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cni_manifest: Option<Manifest>,
}

/// A file of Kubernetes objects (multi-document YAML), read and checked with the inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    pub path: PathBuf,
    /// Every document, each an object with `apiVersion`, `kind` and `metadata.name`.
    #[serde(skip)]
    pub objects: Vec<serde_json::Value>,
}

/// The add-ons kubeha installs (both on unless the inventory says otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Addons {
    pub kube_proxy: bool,
    #[serde(rename = "coreDNS")]
    pub core_dns: bool,
}

impl Default for Addons {
    fn default() -> Self {
        Addons { kube_proxy: true, core_dns: true }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyAlgorithm {
    EcdsaP256,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyAlgorithm {
    pub const NAMES: [&'static str; 4] = ["ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096"];

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "ecdsa-p256" => Self::EcdsaP256,
            "rsa-2048" => Self::Rsa2048,
            "rsa-3072" => Self::Rsa3072,
            "rsa-4096" => Self::Rsa4096,
            _ => return None,
        })
    }

    pub fn is_rsa(self) -> bool {
        self != Self::EcdsaP256
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Certificates {
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime of leaf certificates (kubeadm: one year).
    #[serde(serialize_with = "serialize_duration")]
    pub validity: Duration,
    /// Lifetime of the CAs (kubeadm: ten years).
    #[serde(serialize_with = "serialize_duration")]
    pub ca_validity: Duration,
    /// Leaf certificates (and kubeconfig client certificates) that end within this window are
    /// renewed by `certs generate` and `init` (default 30 days; zero turns early renewal off).
    #[serde(serialize_with = "serialize_duration")]
    pub renew_before: Duration,
    /// Added to every apiserver serving certificate.
    #[serde(rename = "extraSANs")]
    pub extra_sans: Vec<San>,
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_duration(*d))
}

/// Durations as operators write them: whole days as `365d`, whole hours as `36h`.
/// (humantime would print 365 days as "11months 30days 3h 50m 24s".)
pub fn format_duration(d: Duration) -> String {
    const DAY: u64 = 24 * 3600;
    match d.as_secs() {
        s if s > 0 && s % DAY == 0 && d.subsec_nanos() == 0 => format!("{}d", s / DAY),
        s if s > 0 && s % 3600 == 0 && d.subsec_nanos() == 0 => format!("{}h", s / 3600),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// A subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum San {
    Ip(IpAddr),
    Dns(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Worker,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::ControlPlane => "control-plane",
            Role::Worker => "worker",
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Host {
    pub name: String,
    pub address: IpAddr,
    pub role: Role,
    pub ssh: Ssh,
    /// What the kubelet needs to know of the machine; filled in from preflight's facts.
    #[serde(skip_serializing_if = "NodeSettings::is_empty")]
    pub node: NodeSettings,
}

/// What kubeha learns of a node from the machine itself, for the kubelet's configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSettings {
    /// The container runtime's CRI endpoint (`unix:///run/containerd/containerd.sock`);
    /// containerd's when unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cri_socket: Option<String>,
    /// The resolv.conf the kubelet gives pods: systemd-resolved's upstream file where that
    /// service runs (its stub resolver on 127.0.0.53 would make CoreDNS forward to itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<String>,
    /// Which of kubeadm's optional system CA directories the machine has, for the control-plane
    /// components to mount; unknown (Debian's set is assumed) until preflight looked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_dirs: Option<Vec<String>>,
    /// How this control plane's etcd member was first started, as its marker records it
    /// (`--initial-cluster`, `--initial-cluster-state`): etcd reads these flags only on the
    /// member's first start, so they are kept as they were and a later change of the member
    /// list does not restart every member. Unset: the plan's members, state `new`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_initial: Option<EtcdInitial>,
}

/// The member list and cluster state an etcd member starts with the first time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcdInitial {
    /// `name=https://address:2380,...`.
    pub cluster: String,
    /// `new` (created with the cluster) or `existing` (joined a running cluster).
    pub state: String,
}

impl NodeSettings {
    pub fn is_empty(&self) -> bool {
        self.cri_socket.is_none() && self.resolv_conf.is_none() && self.ca_dirs.is_none() && self.etcd_initial.is_none()
    }
}

impl Host {
    /// Loopback in the host's address family (127.0.0.1 or ::1): where its components are
    /// reached locally (the apiserver's etcd, probes, kubeha's health checks through SSH).
    pub fn loopback(&self) -> IpAddr {
        match self.address {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        }
    }
}

/// How kubeha reaches a host; per-host settings already merged over `spec.ssh`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    pub identity_file: PathBuf,
    pub known_hosts_file: PathBuf,
    /// Run remote commands through `sudo -n` (for a non-root `user`).
    pub sudo: bool,
    /// The name or address to dial (`ssh.host`, or `HostName` from the SSH configuration);
    /// `None`: the host's `address`. Host keys are looked up under this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Jump hosts, in the order they are dialled: the first from this machine, each next one
    /// (and finally the host) through a TCP forwarding channel of the previous one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jumps: Vec<Jump>,
}

impl Ssh {
    /// What kubeha dials for a host at `address`: [`Ssh::host`] or the address itself.
    pub fn target(&self, address: IpAddr) -> String {
        self.host.clone().unwrap_or_else(|| address.to_string())
    }

    /// `user@target:port`, and the jump hosts, for messages.
    pub fn describe(&self, address: IpAddr) -> String {
        let mut text = format!("{}@{}", self.user, join_name_port(&self.target(address), self.port));
        if !self.jumps.is_empty() {
            let hops: Vec<&str> = self.jumps.iter().map(|j| j.name.as_str()).collect();
            text.push_str(&format!(" via {}", hops.join(", ")));
        }
        text
    }
}

/// A jump host (bastion) on the way to a host, with the settings of its own login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Jump {
    /// How the inventory or the SSH configuration names it (an alias, `user@host:port`), for
    /// messages.
    pub name: String,
    /// The name or address dialled (resolved by the previous hop, or here for the first).
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity_file: PathBuf,
}

/// `name:port`, with brackets around an IPv6 address.
pub fn join_name_port(name: &str, port: u16) -> String {
    if name.contains(':') { format!("[{name}]:{port}") } else { format!("{name}:{port}") }
}

/// `host:port`, with brackets around IPv6 addresses.
pub fn join_host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dns_ip_is_the_tenth_service_address() {
        assert_eq!(super::cluster_dns_ip(&"10.96.0.0/12".parse().unwrap()).to_string(), "10.96.0.10");
        assert_eq!(super::cluster_dns_ip(&"fd00:10:96::/108".parse().unwrap()).to_string(), "fd00:10:96::a");
    }
}
