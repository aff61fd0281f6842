//! The per-host view of the plan that every renderer starts from.
//!
//! Addresses, URLs and image references are derived here once, with the rules kubeadm applies
//! (bracketed IPv6 in URLs, a loopback of the host's own address family for local clients), so
//! the component modules only choose flags.

use std::net::IpAddr;

use crate::host::layout::{ETCD_CLIENT_PORT, ETCD_METRICS_PORT, ETCD_PEER_PORT};
use crate::plan::{Host, Plan, Role, join_host_port};

/// One host of the plan, with what its files need to know about it.
#[derive(Debug, Clone, Copy)]
pub struct HostContext<'a> {
    pub plan: &'a Plan,
    pub host: &'a Host,
}

impl<'a> HostContext<'a> {
    pub fn new(plan: &'a Plan, host: &'a Host) -> Self {
        HostContext { plan, host }
    }

    pub fn is_control_plane(&self) -> bool {
        self.host.role == Role::ControlPlane
    }

    pub fn address(&self) -> IpAddr {
        self.host.address
    }

    /// Loopback in the host's address family: kubeadm points local clients (apiserver → etcd,
    /// probes) at it, so an IPv6-only host never needs IPv4.
    pub fn loopback(&self) -> IpAddr {
        self.host.loopback()
    }

    /// `address:bindPort`: where this host's apiserver is reached (kubeadm's advertise endpoint).
    pub fn apiserver_endpoint(&self) -> String {
        join_host_port(self.host.address, self.plan.api_server_bind_port)
    }

    pub fn etcd_client_url(&self) -> String {
        https(self.host.address, ETCD_CLIENT_PORT)
    }

    pub fn etcd_peer_url(&self) -> String {
        https(self.host.address, ETCD_PEER_PORT)
    }

    pub fn etcd_local_client_url(&self) -> String {
        https(self.loopback(), ETCD_CLIENT_PORT)
    }

    /// The apiserver's `--etcd-servers`: its own member on loopback first, then every other
    /// control plane's, so the apiserver keeps serving while its own member restarts.
    pub fn etcd_servers(&self) -> String {
        let others =
            self.plan.control_planes().filter(|h| h.name != self.host.name).map(|h| https(h.address, ETCD_CLIENT_PORT));
        std::iter::once(self.etcd_local_client_url()).chain(others).collect::<Vec<_>>().join(",")
    }

    /// Plain HTTP on loopback: metrics and health only, never data.
    pub fn etcd_metrics_url(&self) -> String {
        format!("http://{}", join_host_port(self.loopback(), ETCD_METRICS_PORT))
    }

    /// `<imageRepository>/<component>:<kubernetesVersion>`.
    pub fn kubernetes_image(&self, component: &str) -> String {
        format!("{}/{component}:{}", self.plan.image_repository, self.plan.kubernetes_version)
    }

    /// `<imageRepository>/etcd:<etcd tag>`.
    pub fn etcd_image(&self) -> String {
        format!("{}/etcd:{}", self.plan.image_repository, self.plan.etcd_version.tag)
    }

    /// Position among the control planes in inventory order (`None` for workers).
    pub fn control_plane_index(&self) -> Option<usize> {
        self.plan.control_planes().position(|h| h.name == self.host.name)
    }

    /// The other control planes, in inventory order.
    pub fn peers(&self) -> impl Iterator<Item = &'a Host> + 'a {
        let name = self.host.name.as_str();
        self.plan.control_planes().filter(move |h| h.name != name)
    }
}

/// `--initial-cluster`: every stacked etcd member as `name=https://addr:2380`, inventory order.
pub fn initial_cluster(plan: &Plan) -> String {
    plan.etcd_members()
        .map(|h| format!("{}={}", h.name, https(h.address, ETCD_PEER_PORT)))
        .collect::<Vec<_>>()
        .join(",")
}

fn https(ip: IpAddr, port: u16) -> String {
    format!("https://{}", join_host_port(ip, port))
}
