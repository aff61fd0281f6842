//! The address plan: one address family per cluster, and subnets that fit what the components
//! do with them.
//!
//! kubeha builds single-stack clusters: the hosts, the VIP, the endpoint (when it is an address)
//! and the pod and service subnets are all IPv4 or all IPv6. A mix renders configs that cannot
//! work (keepalived peers of two families, an apiserver advertising an IPv4 address with an IPv6
//! service range), so it is refused; dual-stack is not supported.
//!
//! Subnet sizes follow the components: the service subnet must hold the `kubernetes` service
//! (its first address) and the cluster DNS service (its tenth, as kubeadm picks it), and
//! kube-apiserver takes at most 2^20 service addresses; kube-controller-manager cuts the pod
//! subnet into one range per node of its default node-cidr-mask-size (/24 for IPv4, /64 for
//! IPv6), and at most 2^16 of them.

use std::net::IpAddr;

use ipnet::IpNet;

use super::fields::Problems;
use super::spec::{DEFAULT_SERVICE_SUBNET, Draft};
use crate::plan::EndpointHost;

/// kube-controller-manager's default `--node-cidr-mask-size` per family.
pub const NODE_MASK_V4: u8 = 24;
pub const NODE_MASK_V6: u8 = 64;
/// kube-controller-manager refuses a cluster CIDR more than this many bits larger than the node
/// mask.
const MAX_NODE_BITS: u8 = 16;
/// kube-apiserver refuses a service range of more than 2^20 addresses.
const MAX_SERVICE_BITS: u8 = 20;
/// The cluster DNS service is the tenth address: the range needs at least 2^4 addresses.
const MIN_SERVICE_BITS: u8 = 4;

pub fn check(d: &Draft, p: &mut Problems) {
    check_family(d, p);
    check_networks(d, p);
}

fn family(v6: bool) -> &'static str {
    if v6 { "IPv6" } else { "IPv4" }
}

/// Every address-bearing field with its family, in document order of weight: the hosts decide.
fn check_family(d: &Draft, p: &mut Problems) {
    let mut items: Vec<(String, bool, String)> = Vec::new();
    for h in d.hosts.iter().flatten() {
        if let Some(ip) = h.address {
            items.push((format!("{}.address", h.path), ip.is_ipv6(), ip.to_string()));
        }
    }
    let vip = d.vip;
    if let Some(vip) = vip {
        items.push(("spec.loadBalancer.vip".into(), vip.is_ipv6(), vip.to_string()));
    }
    if let Some(ep) = &d.endpoint
        && let EndpointHost::Ip(ip) = ep.host
        && Some(ip) != vip
    {
        items.push(("spec.controlPlaneEndpoint".into(), ip.is_ipv6(), ip.to_string()));
    }
    if let Some(net) = &d.networking {
        let service = net.service_subnet;
        let mut text = service.to_string();
        if text == DEFAULT_SERVICE_SUBNET {
            text.push_str(" (the default: set spec.networking.serviceSubnet, e.g. fd00:10:96::/112)");
        }
        items.push(("spec.networking.serviceSubnet".into(), service.addr().is_ipv6(), text));
        if let Some(pod) = net.pod_subnet {
            items.push(("spec.networking.podSubnet".into(), pod.addr().is_ipv6(), pod.to_string()));
        }
    }
    let Some((first_path, first_v6, first_text)) = items.first().cloned() else { return };
    for (path, v6, text) in items.into_iter().skip(1).filter(|(_, v6, _)| *v6 != first_v6) {
        p.push(
            path,
            format!(
                "{text} is {}, but {first_path} {first_text} is {}: kubeha builds single-stack clusters (dual-stack is \
                 not supported), so the hosts, the VIP, the endpoint and the pod and service subnets must all be \
                 IPv4 or all IPv6",
                family(v6),
                family(first_v6)
            ),
        );
    }
}

fn check_networks(d: &Draft, p: &mut Problems) {
    let Some(net) = &d.networking else { return };
    let service = net.service_subnet;
    let service_bits = service.max_prefix_len() - service.prefix_len();
    let v = family(service.addr().is_ipv6());
    if service_bits > MAX_SERVICE_BITS {
        p.push(
            "spec.networking.serviceSubnet",
            format!(
                "{service} is too large: kube-apiserver accepts at most 2^20 service addresses (/{} for {v})",
                service.max_prefix_len() - MAX_SERVICE_BITS,
            ),
        );
    } else if service_bits < MIN_SERVICE_BITS {
        p.push(
            "spec.networking.serviceSubnet",
            format!(
                "{service} is too small: it must hold the kubernetes service (its first address) and the cluster DNS \
                 service (its tenth address); use /{} or larger for {v}",
                service.max_prefix_len() - MIN_SERVICE_BITS
            ),
        );
    }
    let mut subnets = vec![("spec.networking.serviceSubnet", service)];
    if let Some(pod) = net.pod_subnet {
        check_pod_subnet(&pod, p);
        if overlaps(&pod, &service) {
            p.push("spec.networking.podSubnet", format!("{pod} overlaps serviceSubnet {service}"));
        }
        subnets.push(("spec.networking.podSubnet", pod));
    }
    for h in d.hosts.iter().flatten() {
        let Some(address) = h.address else { continue };
        for (field, net) in &subnets {
            if net.contains(&address) {
                p.push(format!("{}.address", h.path), format!("{address} is inside {field} {net}"));
            }
        }
    }
    let vip = d.vip;
    if let Some(vip) = vip {
        inside(&subnets, "spec.loadBalancer.vip", vip, p);
    }
    if let Some(ep) = &d.endpoint
        && let EndpointHost::Ip(ip) = ep.host
        && Some(ip) != vip
    {
        inside(&subnets, "spec.controlPlaneEndpoint", ip, p);
    }
}

fn inside(subnets: &[(&str, IpNet)], path: &str, ip: IpAddr, p: &mut Problems) {
    for (field, net) in subnets {
        if net.contains(&ip) {
            p.push(path, format!("{ip} is inside {field} {net}"));
        }
    }
}

fn check_pod_subnet(pod: &IpNet, p: &mut Problems) {
    let (mask, v) = match pod {
        IpNet::V4(_) => (NODE_MASK_V4, "IPv4"),
        IpNet::V6(_) => (NODE_MASK_V6, "IPv6"),
    };
    if pod.prefix_len() > mask {
        p.push(
            "spec.networking.podSubnet",
            format!(
                "{pod} is smaller than one node's pod range: kube-controller-manager gives each node a /{mask} of it \
                 ({v}); use /{mask} or larger"
            ),
        );
    } else if mask - pod.prefix_len() > MAX_NODE_BITS {
        p.push(
            "spec.networking.podSubnet",
            format!(
                "{pod} is too large: kube-controller-manager cuts it into at most 2^16 node ranges of /{mask} ({v}); \
                 use /{} or smaller",
                mask - MAX_NODE_BITS
            ),
        );
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}
