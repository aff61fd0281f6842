//! Rules that relate several fields: uniqueness, quorum, VRRP ranks and the endpoint layout.
//! Address families and subnet sizes are in `addressing.rs`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::fields::Problems;
use super::spec::{Draft, HostDraft};
use crate::plan::{EndpointHost, LoadBalancer, Role};

/// keepalived priorities start here on the first control plane and go down by one (as
/// rendered): more control planes than this cannot be ranked.
pub const MAX_KEEPALIVED_CONTROL_PLANES: usize = 150;

/// Ports the control-plane components bind on every control plane (etcd client, peer and
/// metrics, kubelet, controller-manager, scheduler). The apiserver and haproxy must avoid them.
const COMPONENT_PORTS: [(u16, &str); 6] = [
    (2379, "etcd client"),
    (2380, "etcd peer"),
    (2381, "etcd metrics"),
    (10250, "kubelet"),
    (10257, "kube-controller-manager"),
    (10259, "kube-scheduler"),
];

pub fn cross_check(d: &Draft, p: &mut Problems) {
    if let Some(hosts) = &d.hosts {
        check_hosts(d, hosts, p);
    }
    super::addressing::check(d, p);
    check_endpoint(d, p);
}

fn check_hosts(d: &Draft, hosts: &[HostDraft], p: &mut Problems) {
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    let mut addresses: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for h in hosts {
        let path = h.path.as_str();
        if let Some(name) = &h.name
            && let Some(first) = names.insert(name, path)
        {
            p.push(format!("{path}.name"), format!("{name:?} is already the name of {first}"));
            names.insert(name, first);
        }
        if let Some(address) = h.address
            && let Some(first) = addresses.insert(address, path)
        {
            p.push(format!("{path}.address"), format!("{address} is already the address of {first}"));
            addresses.insert(address, first);
        }
    }
    if !d.all_hosts_read || hosts.iter().any(|h| h.role.is_none()) {
        return; // counting roles over a partial list would mislead
    }
    let control_planes = hosts.iter().filter(|h| h.role == Some(Role::ControlPlane)).count();
    if control_planes > MAX_KEEPALIVED_CONTROL_PLANES
        && matches!(d.load_balancer, Some(LoadBalancer::KeepalivedHaproxy { .. }))
    {
        p.push(
            "spec.hosts",
            format!(
                "has {control_planes} control planes, more than keepalived can rank with distinct VRRP priorities \
                 ({MAX_KEEPALIVED_CONTROL_PLANES}); use an external load balancer (loadBalancer.type: external)"
            ),
        );
    }
    if control_planes == 0 {
        p.push("spec.hosts", "has no host with role control-plane; at least one is required");
    } else if control_planes % 2 == 0 && !d.allow_even_members {
        p.push(
            "spec.hosts",
            format!(
                "has {control_planes} control planes: stacked etcd needs an odd number of members for quorum \
             ({control_planes} tolerate no more failures than {}); add or remove one, or set \
             spec.etcd.allowEvenMemberCount: true",
                control_planes - 1
            ),
        );
    }
}

fn check_endpoint(d: &Draft, p: &mut Problems) {
    const EP: &str = "spec.controlPlaneEndpoint";
    let bind_port = d.bind_port;
    if let Some(port) = bind_port
        && let Some((_, what)) = COMPONENT_PORTS.iter().find(|(p, _)| *p == port)
    {
        p.push("spec.apiServer.bindPort", format!("{port} is the {what} port"));
    }
    // The VIP is checked whenever it was readable, even if another load-balancer field was not.
    if let Some(vip) = d.vip {
        for h in d.hosts.iter().flatten().filter(|h| h.address == Some(vip)) {
            let name = h.name.as_deref().unwrap_or("?");
            p.push(
                "spec.loadBalancer.vip",
                format!("{vip} is the address of {} ({name}); the VIP must be a free address", h.path),
            );
        }
    }
    let (Some(lb), Some(ep)) = (&d.load_balancer, &d.endpoint) else { return };
    match lb {
        LoadBalancer::KeepalivedHaproxy { vip, .. } => {
            if let EndpointHost::Ip(ip) = ep.host
                && ip != *vip
            {
                p.push(
                    EP,
                    format!("host {ip} is not the VIP {vip}; clients must reach the apiservers through the VIP"),
                );
            }
            // haproxy listens on the endpoint port on every control plane, beside the apiserver.
            if Some(ep.port) == bind_port {
                p.push(
                    EP,
                    format!(
                        "port {} is also kube-apiserver's bindPort on the control planes, where haproxy listens; \
                     use another port (e.g. 8443) or move the apiserver with spec.apiServer.bindPort (e.g. 6444)",
                        ep.port
                    ),
                );
            }
            if let Some((_, what)) = COMPONENT_PORTS.iter().find(|(p, _)| *p == ep.port) {
                p.push(EP, format!("port {} is the {what} port on the control planes, where haproxy listens", ep.port));
            }
            // haproxy's read-only statistics listener (127.0.0.1) on every control plane.
            let stats = crate::host::layout::HAPROXY_STATS_PORT;
            if ep.port == stats {
                p.push(EP, format!("port {stats} is haproxy's statistics port on the control planes"));
            }
            if bind_port == Some(stats) {
                p.push(
                    "spec.apiServer.bindPort",
                    format!("{stats} is haproxy's statistics port on the control planes"),
                );
            }
        }
        LoadBalancer::Dns => {
            if let EndpointHost::Ip(ip) = ep.host {
                p.push(EP, format!("{ip} is an address, but loadBalancer type dns needs a DNS name that resolves to every apiserver"));
            }
            if let Some(port) = bind_port
                && ep.port != port
            {
                p.push(EP, format!(
                    "port {} differs from the apiserver bindPort {port}; with type dns clients connect to the apiservers directly",
                    ep.port));
            }
        }
        LoadBalancer::External => {
            let is_host = d.hosts.iter().flatten().find(|h| h.address.map(EndpointHost::Ip).as_ref() == Some(&ep.host));
            if let Some(h) = is_host
                && h.role == Some(Role::ControlPlane)
                && d.hosts.iter().flatten().filter(|h| h.role == Some(Role::ControlPlane)).count() > 1
            {
                p.push(EP, format!(
                    "{} is the address of control plane {} ({}); an external load balancer needs an address of its own, \
                     or the cluster fails with that host",
                    ep.host, h.path, h.name.as_deref().unwrap_or("?")));
            }
        }
    }
}
