//! Rules that relate several fields: uniqueness, address plans, quorum and the endpoint layout.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use super::fields::Problems;
use super::spec::Draft;
use crate::plan::{EndpointHost, LoadBalancer, Role};

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
    check_networks(d, p);
    check_endpoint(d, p);
}

fn check_hosts(d: &Draft, hosts: &[(String, crate::plan::Host)], p: &mut Problems) {
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    let mut addresses: BTreeMap<IpAddr, &str> = BTreeMap::new();
    for (path, h) in hosts {
        if let Some(first) = names.insert(&h.name, path) {
            p.push(format!("{path}.name"), format!("{:?} is already the name of {first}", h.name));
            names.insert(&h.name, first);
        }
        if let Some(first) = addresses.insert(h.address, path) {
            p.push(format!("{path}.address"), format!("{} is already the address of {first}", h.address));
            addresses.insert(h.address, first);
        }
    }
    if !d.all_hosts_read {
        return; // counting roles over a partial list would mislead
    }
    let control_planes = hosts.iter().filter(|(_, h)| h.role == Role::ControlPlane).count();
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

fn check_networks(d: &Draft, p: &mut Problems) {
    let Some(net) = &d.networking else { return };
    let service = net.service_subnet;
    let max_bits = 20;
    if u32::from(service.max_prefix_len() - service.prefix_len()) > max_bits {
        p.push(
            "spec.networking.serviceSubnet",
            format!(
                "{service} is too large: kube-apiserver accepts at most 2^20 service addresses (/{} for IPv{})",
                service.max_prefix_len() - 20,
                if service.addr().is_ipv4() { 4 } else { 6 }
            ),
        );
    }
    let mut subnets = vec![("spec.networking.serviceSubnet", service)];
    if let Some(pod) = net.pod_subnet {
        if overlaps(&pod, &service) {
            p.push("spec.networking.podSubnet", format!("{pod} overlaps serviceSubnet {service}"));
        }
        subnets.push(("spec.networking.podSubnet", pod));
    }
    for (path, h) in d.hosts.iter().flatten() {
        for (field, net) in &subnets {
            if net.contains(&h.address) {
                p.push(format!("{path}.address"), format!("{} is inside {field} {net}", h.address));
            }
        }
    }
    if let Some(LoadBalancer::KeepalivedHaproxy { vip, .. }) = &d.load_balancer {
        for (field, net) in &subnets {
            if net.contains(vip) {
                p.push("spec.loadBalancer.vip", format!("{vip} is inside {field} {net}"));
            }
        }
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn check_endpoint(d: &Draft, p: &mut Problems) {
    const EP: &str = "spec.controlPlaneEndpoint";
    let (Some(lb), Some(ep)) = (&d.load_balancer, &d.endpoint) else { return };
    let bind_port = d.bind_port;
    if let Some(port) = bind_port
        && let Some((_, what)) = COMPONENT_PORTS.iter().find(|(p, _)| *p == port)
    {
        p.push("spec.apiServer.bindPort", format!("{port} is the {what} port"));
    }
    match lb {
        LoadBalancer::KeepalivedHaproxy { vip, .. } => {
            for (path, h) in d.hosts.iter().flatten() {
                if h.address == *vip {
                    p.push(
                        "spec.loadBalancer.vip",
                        format!("{vip} is the address of {path} ({}); the VIP must be a free address", h.name),
                    );
                }
            }
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
            let is_host = d.hosts.iter().flatten().find(|(_, h)| EndpointHost::Ip(h.address) == ep.host);
            if let Some((path, h)) = is_host
                && h.role == Role::ControlPlane
                && d.hosts.iter().flatten().filter(|(_, h)| h.role == Role::ControlPlane).count() > 1
            {
                p.push(EP, format!(
                    "{} is the address of control plane {path} ({}); an external load balancer needs an address of its own, \
                     or the cluster fails with that host",
                    ep.host, h.name));
            }
        }
    }
}
