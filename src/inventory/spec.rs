//! Reads each section of the document into plan parts, checking every field on its own.
//!
//! Cross-field rules (duplicates, overlaps, quorum, endpoint vs. load balancer) live in
//! `checks.rs`; they run on whatever parts were readable, so one bad field does not hide
//! problems elsewhere.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::Value;

use super::fields::{Object, Problems};
use super::reach::{self, SshConfigChoice, SshFields};
use crate::plan::Addons;
use crate::plan::{
    Certificates, DEFAULT_APISERVER_PORT, DEFAULT_IMAGE_REPOSITORY, Endpoint, EndpointHost, Host, KeyAlgorithm,
    LoadBalancer, Networking, Plan, Role, San, Ssh,
};
use crate::ssh_config::SshConfig;
use crate::version::{EtcdVersion, KubeVersion, default_etcd_version};

pub const DEFAULT_SERVICE_SUBNET: &str = "10.96.0.0/12";
pub const DEFAULT_DNS_DOMAIN: &str = "cluster.local";
pub const DEFAULT_HAPROXY_IMAGE: &str = "docker.io/library/haproxy:2.8";
pub const DEFAULT_KEEPALIVED_IMAGE: &str = "docker.io/osixia/keepalived:2.0.20";
pub const DEFAULT_VIRTUAL_ROUTER_ID: u64 = 51;
/// The endpoint port when a VIP is given without `controlPlaneEndpoint` (kubeadm's HA guide).
pub const DEFAULT_LB_PORT: u16 = 8443;
const DEFAULT_LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// kubeadm's `certs check-expiration` warns 30 days ahead; kubeha renews from then on.
const DEFAULT_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);
const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Plan parts as far as they could be read; `None` where a problem was already reported.
pub struct Draft {
    pub name: Option<String>,
    pub kubernetes_version: Option<KubeVersion>,
    pub etcd_version: Option<EtcdVersion>,
    pub allow_even_members: bool,
    pub endpoint: Option<Endpoint>,
    pub bind_port: Option<u16>,
    pub image_repository: Option<String>,
    pub load_balancer: Option<LoadBalancer>,
    /// The VIP when it was readable, also when another load-balancer field was not.
    pub vip: Option<IpAddr>,
    pub networking: Option<Networking>,
    pub certificates: Option<Certificates>,
    pub addons: Addons,
    pub control_plane_taint: bool,
    /// Every host entry that is a mapping, with whatever of it was readable; `None` when the
    /// list itself is missing or unreadable.
    pub hosts: Option<Vec<HostDraft>>,
    /// Whether every entry of the list is a mapping (so role counts are meaningful).
    pub all_hosts_read: bool,
}

/// One entry of `spec.hosts` as far as it could be read. Cross-field checks use every field
/// that is there, so a host with one bad field still takes part in the others' checks.
pub struct HostDraft {
    pub path: String,
    pub name: Option<String>,
    /// Canonical (an IPv4-mapped IPv6 address as IPv4), also when it was refused for that.
    pub address: Option<IpAddr>,
    pub role: Option<Role>,
    pub ssh: Option<Ssh>,
    /// The container runtime's endpoint, when the inventory sets it (else preflight finds it).
    pub cri_socket: Option<String>,
    /// Whether every field was read without a problem.
    pub complete: bool,
}

impl HostDraft {
    fn host(&self) -> Option<Host> {
        Some(Host {
            name: self.name.clone()?,
            address: self.address?,
            role: self.role?,
            ssh: self.ssh.clone()?,
            node: crate::plan::NodeSettings { cri_socket: self.cri_socket.clone(), ..Default::default() },
        })
        .filter(|_| self.complete)
    }
}

impl Draft {
    /// The plan, when every part was read.
    pub fn into_plan(self) -> Option<Plan> {
        if !self.all_hosts_read {
            return None;
        }
        Some(Plan {
            name: self.name?,
            kubernetes_version: self.kubernetes_version?,
            etcd_version: self.etcd_version?,
            control_plane_endpoint: self.endpoint?,
            api_server_bind_port: self.bind_port?,
            image_repository: self.image_repository?,
            load_balancer: self.load_balancer?,
            networking: self.networking?,
            certificates: self.certificates?,
            addons: self.addons,
            control_plane_taint: self.control_plane_taint,
            hosts: self.hosts?.iter().map(HostDraft::host).collect::<Option<_>>()?,
        })
    }
}

pub fn read_document(doc: &Value, base: &Path, ssh_config: &SshConfigChoice, p: &mut Problems) -> Draft {
    let mut draft = Draft {
        name: None,
        kubernetes_version: None,
        etcd_version: None,
        allow_even_members: false,
        endpoint: None,
        bind_port: Some(DEFAULT_APISERVER_PORT),
        image_repository: Some(DEFAULT_IMAGE_REPOSITORY.to_string()),
        load_balancer: None,
        vip: None,
        networking: None,
        certificates: None,
        addons: Addons::default(),
        control_plane_taint: true,
        hosts: None,
        all_hosts_read: false,
    };
    let Some(mut root) = Object::new("", doc, p) else { return draft };
    match root.required_string("apiVersion", p) {
        Some(v) if v == super::API_VERSION => {}
        Some(v) => p.push("apiVersion", format!("{v:?} is not supported; use {:?}", super::API_VERSION)),
        None => {}
    }
    match root.required_string("kind", p) {
        Some(k) if k == super::KIND => {}
        Some(k) => p.push("kind", format!("{k:?} is not supported; use {:?}", super::KIND)),
        None => {}
    }
    if let Some((path, v)) = root.required("metadata", p)
        && let Some(mut meta) = Object::new(path, v, p)
    {
        draft.name =
            meta.required_string("name", p).and_then(|n| check(&meta.child("name"), dns_label(&n), p).then_some(n));
        meta.finish(p);
    }
    if let Some((path, v)) = root.required("spec", p)
        && let Some(spec) = Object::new(path, v, p)
    {
        read_spec(spec, base, ssh_config, &mut draft, p);
    }
    root.finish(p);
    draft
}

fn read_spec(mut spec: Object, base: &Path, ssh_config: &SshConfigChoice, d: &mut Draft, p: &mut Problems) {
    // Any well-formed version here; `super::parse_with` decides whether an unsupported one is allowed.
    d.kubernetes_version = spec
        .required_string("kubernetesVersion", p)
        .and_then(|v| KubeVersion::parse_any(&v).map_err(|e| p.push(spec.child("kubernetesVersion"), e)).ok());
    if let Some(repo) = spec.string("imageRepository", p) {
        d.image_repository = check(&spec.child("imageRepository"), image_repository(&repo), p).then_some(repo);
    }
    if let Some(mut api) = spec.object("apiServer", p) {
        if let Some(port) = api.integer("bindPort", 1..=65535, p) {
            d.bind_port = Some(port as u16);
        } else if api.field("bindPort").is_some() {
            d.bind_port = None;
        }
        api.finish(p);
    }
    read_etcd(spec.object("etcd", p), d, p);
    d.networking = read_networking(spec.object("networking", p), base, p);
    if let Some(mut addons) = spec.object("addons", p) {
        d.addons.kube_proxy = addons.bool("kubeProxy", p).unwrap_or(true);
        d.addons.core_dns = addons.bool("coreDNS", p).unwrap_or(true);
        addons.finish(p);
    }
    d.control_plane_taint = spec.bool("controlPlaneTaint", p).unwrap_or(true);
    d.certificates = read_certificates(spec.object("certificates", p), p);
    d.load_balancer = match spec.object("loadBalancer", p) {
        Some(lb) => read_load_balancer(lb, &mut d.vip, p),
        None => {
            p.push(spec.child("loadBalancer"), "is required (type keepalived-haproxy, external or dns)");
            None
        }
    };
    d.endpoint = match spec.string("controlPlaneEndpoint", p) {
        Some(text) => parsed_endpoint(&spec.child("controlPlaneEndpoint"), &text, p),
        // With a VIP the endpoint is implied; external and DNS balancers have no address of ours.
        None => match &d.load_balancer {
            Some(LoadBalancer::KeepalivedHaproxy { vip, .. }) => {
                Some(Endpoint { host: EndpointHost::Ip(*vip), port: DEFAULT_LB_PORT })
            }
            Some(_) => {
                p.push(spec.child("controlPlaneEndpoint"), "is required for this loadBalancer type");
                None
            }
            None => None,
        },
    };
    let home = home_dir();
    let (defaults, config_field) = match spec.object("ssh", p) {
        Some(mut ssh) => {
            let config = ssh.string("configFile", p).map(|f| (f, ssh.child("configFile")));
            let fields = reach::read_fields(&mut ssh, base, &home, p);
            ssh.finish(p);
            (fields, config)
        }
        None => (Some(SshFields::default()), None),
    };
    let config = reach::load_config(config_field, ssh_config, base, &home, p);
    let reach = Reach { spec: defaults.unwrap_or_default(), config, home, base: base.to_path_buf() };
    read_hosts(&mut spec, &reach, d, p);
    spec.finish(p);
}

fn read_etcd(etcd: Option<Object>, d: &mut Draft, p: &mut Problems) {
    let version = match etcd {
        Some(mut etcd) => {
            let v = etcd.string("version", p).map(|v| (etcd.child("version"), v));
            d.allow_even_members = etcd.bool("allowEvenMemberCount", p).unwrap_or(false);
            etcd.finish(p);
            v
        }
        None => None,
    };
    d.etcd_version = match version {
        Some((path, v)) => parsed(&path, &v, p),
        None => d.kubernetes_version.map(default_etcd_version),
    };
}

fn read_networking(net: Option<Object>, base: &Path, p: &mut Problems) -> Option<Networking> {
    let (mut pod, mut service, mut domain, mut cni) = (Ok(None), Ok(None), Ok(None), Ok(None));
    if let Some(mut net) = net {
        cni = net
            .string("cniManifest", p)
            .map(|path| {
                let file = expand_path(&path, &home_dir(), base);
                super::manifest::read(&net.child("cniManifest"), &file, p).ok_or(())
            })
            .transpose();
        pod = net.string("podSubnet", p).map(|s| subnet(&net.child("podSubnet"), &s, p)).transpose();
        service = net.string("serviceSubnet", p).map(|s| subnet(&net.child("serviceSubnet"), &s, p)).transpose();
        domain = match net.string("dnsDomain", p) {
            Some(d) if check(&net.child("dnsDomain"), dns_name(&d), p) => Ok(Some(d)),
            Some(_) => Err(()),
            None => Ok(None),
        };
        net.finish(p);
    }
    Some(Networking {
        pod_subnet: pod.ok()?,
        service_subnet: match service.ok()? {
            Some(s) => s,
            None => DEFAULT_SERVICE_SUBNET.parse().expect("default service subnet parses"),
        },
        dns_domain: domain.ok()?.unwrap_or_else(|| DEFAULT_DNS_DOMAIN.to_string()),
        cni_manifest: cni.ok()?,
    })
}

/// Parses a CIDR; `Err` (already reported) when it is not one.
fn subnet(path: &str, text: &str, p: &mut Problems) -> Result<IpNet, ()> {
    match text.parse::<IpNet>() {
        Ok(net) if net.trunc() != net => {
            p.push(path, format!("{text} has host bits set; did you mean {}?", net.trunc()));
            Err(())
        }
        Ok(net) => Ok(net),
        Err(_) => {
            p.push(path, format!("{text:?} is not a CIDR such as 10.96.0.0/12"));
            Err(())
        }
    }
}

/// `renewBefore`: a duration (zero turns early renewal off) shorter than the leaf validity, or
/// every run would renew every certificate again. The default is 30 days, or a third of the
/// validity when that is shorter.
fn read_renew_before(c: &mut Object, out: &mut Certificates, p: &mut Problems) -> bool {
    let Some(text) = c.string("renewBefore", p) else {
        out.renew_before = DEFAULT_RENEW_BEFORE.min(out.validity / 3);
        return true;
    };
    match humantime::parse_duration(&text) {
        Ok(d) if d >= out.validity => {
            p.push(
                c.child("renewBefore"),
                format!(
                    "{text} is not shorter than validity {}; every run would renew every certificate",
                    crate::plan::format_duration(out.validity)
                ),
            );
            false
        }
        Ok(d) => {
            out.renew_before = d;
            true
        }
        Err(_) => {
            p.push(c.child("renewBefore"), format!("{text:?} is not a duration such as 720h or 30d"));
            false
        }
    }
}

fn read_certificates(certs: Option<Object>, p: &mut Problems) -> Option<Certificates> {
    let mut out = Certificates {
        key_algorithm: KeyAlgorithm::Rsa2048,
        validity: DEFAULT_LEAF_VALIDITY,
        ca_validity: DEFAULT_CA_VALIDITY,
        renew_before: DEFAULT_RENEW_BEFORE,
        extra_sans: Vec::new(),
    };
    let Some(mut c) = certs else { return Some(out) };
    let mut ok = true;
    if let Some(name) = c.string("keyAlgorithm", p) {
        match KeyAlgorithm::from_name(&name) {
            Some(k) => out.key_algorithm = k,
            None => {
                p.push(c.child("keyAlgorithm"), format!("{name:?} is not one of {}", KeyAlgorithm::NAMES.join(", ")));
                ok = false;
            }
        }
    }
    for (key, slot) in [("validity", &mut out.validity), ("caValidity", &mut out.ca_validity)] {
        if let Some(text) = c.string(key, p) {
            match humantime::parse_duration(&text) {
                Ok(d) if d >= Duration::from_secs(3600) => *slot = d,
                Ok(_) => {
                    p.push(c.child(key), format!("{text:?} is too short; certificates must live at least 1h"));
                    ok = false;
                }
                Err(_) => {
                    p.push(c.child(key), format!("{text:?} is not a duration such as 8760h or 365d"));
                    ok = false;
                }
            }
        }
    }
    ok &= read_renew_before(&mut c, &mut out, p);
    if out.validity > out.ca_validity {
        p.push(
            c.child("validity"),
            format!(
                "{} is longer than caValidity {}; a certificate cannot outlive its CA",
                crate::plan::format_duration(out.validity),
                crate::plan::format_duration(out.ca_validity)
            ),
        );
        ok = false;
    }
    for (path, v) in c.list("extraSANs", p).unwrap_or_default() {
        let Some(text) = super::fields::as_string(&path, v, p) else {
            ok = false;
            continue;
        };
        match san(&text) {
            Ok(s) => out.extra_sans.push(s),
            Err(e) => {
                p.push(path, e);
                ok = false;
            }
        }
    }
    c.finish(p);
    ok.then_some(out)
}

fn read_load_balancer(mut lb: Object, vip: &mut Option<IpAddr>, p: &mut Problems) -> Option<LoadBalancer> {
    let kind = lb.required_string("type", p);
    let result = load_balancer_fields(&mut lb, kind.as_deref(), vip, p);
    // Unknown keys are reported whatever else was wrong: a misspelt `interfce` says so.
    lb.finish(p);
    result
}

fn load_balancer_fields(
    lb: &mut Object,
    kind: Option<&str>,
    vip_out: &mut Option<IpAddr>,
    p: &mut Problems,
) -> Option<LoadBalancer> {
    let vip = lb.field("vip");
    match kind {
        Some("keepalived-haproxy") => {
            let vip = match vip {
                Some((path, v)) => {
                    super::fields::as_string(&path, v, p).and_then(|s| usable_address(&path, &s, "the VIP", p))
                }
                None => {
                    p.push(lb.child("vip"), "is required for type keepalived-haproxy");
                    None
                }
            };
            *vip_out = vip;
            let interface =
                lb.required_string("interface", p).filter(|i| check(&lb.child("interface"), interface_name(i), p));
            let router_id = lb.integer("virtualRouterId", 1..=255, p);
            let router_ok = router_id.is_some() || lb.field("virtualRouterId").is_none();
            let haproxy_image = image(lb, "haproxyImage", DEFAULT_HAPROXY_IMAGE, p);
            let keepalived_image = image(lb, "keepalivedImage", DEFAULT_KEEPALIVED_IMAGE, p);
            router_ok.then_some(())?;
            Some(LoadBalancer::KeepalivedHaproxy {
                vip: vip?,
                interface: interface?,
                virtual_router_id: router_id.unwrap_or(DEFAULT_VIRTUAL_ROUTER_ID) as u8,
                haproxy_image: haproxy_image?,
                keepalived_image: keepalived_image?,
            })
        }
        Some(other @ ("external" | "dns")) => {
            for key in ["vip", "interface", "virtualRouterId", "haproxyImage", "keepalivedImage"] {
                if lb.field(key).is_some() {
                    p.push(lb.child(key), format!("does not apply to type {other}"));
                }
            }
            Some(if other == "dns" { LoadBalancer::Dns } else { LoadBalancer::External })
        }
        Some(other) => {
            p.push(lb.child("type"), format!("{other:?} is not one of keepalived-haproxy, external, dns"));
            for key in ["interface", "virtualRouterId", "haproxyImage", "keepalivedImage"] {
                lb.field(key);
            }
            None
        }
        None => {
            for key in ["interface", "virtualRouterId", "haproxyImage", "keepalivedImage"] {
                lb.field(key);
            }
            None
        }
    }
}

fn image(lb: &mut Object, key: &'static str, default: &str, p: &mut Problems) -> Option<String> {
    match lb.string(key, p) {
        Some(img) if check(&lb.child(key), image_reference(&img), p) => Some(img),
        Some(_) => None,
        None if lb.field(key).is_some() => None,
        None => Some(default.to_string()),
    }
}

pub(super) fn home_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"))
}

/// `~/x` is under $HOME; a relative path is relative to the inventory's directory.
pub(super) fn expand_path(text: &str, home: &Path, base: &Path) -> PathBuf {
    if let Some(rest) = text.strip_prefix("~/") { home.join(rest) } else { base.join(text) }
}

/// What every host's `ssh` settings are resolved with.
struct Reach {
    /// `spec.ssh`'s fields (none when it was unreadable: the hosts are still read, so their own
    /// problems are reported too; the bad `spec.ssh` already keeps the plan from forming).
    spec: SshFields,
    config: Option<SshConfig>,
    home: PathBuf,
    /// The inventory's directory: relative paths start there.
    base: PathBuf,
}

fn read_hosts(spec: &mut Object, reach: &Reach, d: &mut Draft, p: &mut Problems) {
    let Some(items) = spec.list("hosts", p) else {
        if spec.field("hosts").is_none() {
            p.push(spec.child("hosts"), "is required: list the control planes and workers");
        }
        return;
    };
    let mut all = true;
    let mut hosts = Vec::new();
    for (path, v) in items {
        match read_host(&path, v, reach, p) {
            Some(h) => hosts.push(h),
            None => all = false,
        }
    }
    d.hosts = Some(hosts);
    d.all_hosts_read = all;
}

/// A CRI endpoint as the kubelet takes it: `unix://` and an absolute socket path.
fn cri_socket(text: &str) -> Result<(), String> {
    match text.strip_prefix("unix://") {
        Some(path)
            if path.starts_with('/') && path.chars().all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)) =>
        {
            Ok(())
        }
        _ => Err(format!("{text:?} is not a CRI endpoint such as unix:///run/containerd/containerd.sock")),
    }
}

fn read_host(path: &str, v: &Value, reach: &Reach, p: &mut Problems) -> Option<HostDraft> {
    let base = reach.base.as_path();
    let mut h = Object::new(path, v, p)?;
    let before = p.0.len();
    let name = h.required_string("name", p).filter(|n| check(&h.child("name"), node_name(n), p));
    let address = h.required_string("address", p).and_then(|a| {
        if a.parse::<IpAddr>().is_err() && dns_name(&a).is_ok() {
            // A name here would have to become the node IP in certificates and manifests.
            p.push(
                h.child("address"),
                format!(
                    "{a:?} is not an IP address: address is the node IP that certificates and manifests carry; to dial a DNS name, set ssh.host: {a} and the node's IP here"
                ),
            );
            return None;
        }
        usable_address(&h.child("address"), &a, "a host address", p)
    });
    let role = match h.required_string("role", p).as_deref() {
        Some("control-plane") => Some(Role::ControlPlane),
        Some("worker") => Some(Role::Worker),
        Some(other) => {
            p.push(h.child("role"), format!("{other:?} is not one of control-plane, worker"));
            None
        }
        None => None,
    };
    let at = h.child("ssh");
    let (fields, host_block) = match h.object("ssh", p) {
        Some(mut ssh) => {
            let fields = reach::read_fields(&mut ssh, base, &reach.home, p);
            ssh.finish(p);
            (fields, true)
        }
        None => (Some(SshFields::default()), false),
    };
    let ssh = fields.zip(address).and_then(|(fields, address)| {
        let merged = fields.over(&reach.spec, host_block);
        reach::resolve(&merged, &reach.spec, &address.to_string(), reach.config.as_ref(), &at, &reach.home, p)
    });
    let cri_socket = h.string("criSocket", p).filter(|s| check(&h.child("criSocket"), cri_socket(s), p));
    h.finish(p);
    let complete = p.0.len() == before;
    Some(HostDraft { path: path.to_string(), name, address, role, ssh, cri_socket, complete })
}

/// Parses an address for a host, the VIP or the endpoint (`what`), refusing those that cannot
/// be one. An IPv4-mapped IPv6 address is refused too, but returned as IPv4 so that the
/// duplicate and VIP checks still see it for what it is.
pub fn usable_address(path: &str, text: &str, what: &str, p: &mut Problems) -> Option<IpAddr> {
    let ip = ip(path, text, p)?;
    checked_address(path, ip, what, p)
}

/// [`usable_address`] for an address already parsed.
pub fn checked_address(path: &str, ip: IpAddr, what: &str, p: &mut Problems) -> Option<IpAddr> {
    let canonical = ip.to_canonical();
    if canonical != ip {
        p.push(path, format!("{ip} is an IPv4-mapped IPv6 address; write it as {canonical}"));
    }
    match unusable(canonical) {
        Some(why) => {
            p.push(path, format!("{canonical} cannot be {what}: it is {why}"));
            None
        }
        None => Some(canonical),
    }
}

/// Why `ip` cannot be reached as a host, the VIP or the endpoint, if it cannot.
fn unusable(ip: IpAddr) -> Option<&'static str> {
    Some(match ip {
        _ if ip.is_loopback() => "a loopback address",
        _ if ip.is_unspecified() => "the unspecified address",
        IpAddr::V4(v4) if v4.octets() == [224, 0, 0, 18] => "VRRP's multicast address",
        _ if ip.is_multicast() => "a multicast address",
        IpAddr::V4(v4) if v4.is_broadcast() => "the broadcast address",
        IpAddr::V4(v4) if v4.octets()[0] == 0 => "in 0.0.0.0/8 (this network)",
        IpAddr::V4(v4) if v4.octets()[0] >= 240 => "in 240.0.0.0/4 (reserved)",
        _ => return None,
    })
}

fn ip(path: &str, text: &str, p: &mut Problems) -> Option<IpAddr> {
    match text.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            p.push(path, format!("{text:?} is not an IP address"));
            None
        }
    }
}

fn parsed<T: FromStr<Err = String>>(path: &str, text: &str, p: &mut Problems) -> Option<T> {
    text.parse().map_err(|e| p.push(path, e)).ok()
}

/// `host:port`, `[v6]:port`; the port is required because it decides the LB layout.
fn parsed_endpoint(path: &str, text: &str, p: &mut Problems) -> Option<Endpoint> {
    let bad = |p: &mut Problems, why: String| {
        p.push(path, why);
        None
    };
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return bad(p, format!("{text:?} opens '[' without closing it; write an IPv6 endpoint as [address]:port"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return bad(p, format!("{text:?} needs a port, e.g. [{v6}]:8443"));
        };
        match v6.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => (EndpointHost::Ip(IpAddr::V6(ip)), port),
            Err(_) => return bad(p, format!("{v6:?} is not an IPv6 address")),
        }
    } else {
        if text.parse::<std::net::Ipv6Addr>().is_ok() {
            return bad(p, format!("write an IPv6 endpoint as [address]:port, e.g. [{text}]:8443"));
        }
        let Some((host, port)) = text.rsplit_once(':') else {
            return bad(p, format!("{text:?} needs a port, e.g. {text}:8443"));
        };
        let host = if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
            EndpointHost::Ip(IpAddr::V4(ip))
        } else if host.contains(':') || host.contains('[') || host.contains(']') {
            return bad(p, format!("write an IPv6 endpoint as [address]:port, not {text:?}"));
        } else if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return bad(p, format!("{host:?} is not an IPv4 address"));
        } else {
            match dns_name(host) {
                Ok(()) => EndpointHost::Dns(host.to_string()),
                Err(e) => return bad(p, e),
            }
        };
        (host, port)
    };
    let port = match port.parse::<u16>() {
        Ok(n) if n > 0 && !port.starts_with('+') => n,
        _ => return bad(p, format!("port {port:?} in {text:?} is not a number from 1 to 65535")),
    };
    let host = match host {
        EndpointHost::Ip(ip) => EndpointHost::Ip(checked_address(path, ip, "the endpoint address", p)?),
        dns => dns,
    };
    Some(Endpoint { host, port })
}

fn san(text: &str) -> Result<San, String> {
    if let Ok(ip) = text.parse() {
        return Ok(San::Ip(ip));
    }
    let name = text.strip_prefix("*.").unwrap_or(text);
    dns_name(name).map(|()| San::Dns(text.to_string()))
}

/// Pushes the problem of a failed check; returns whether it passed.
pub(super) fn check(path: &str, result: Result<(), String>, p: &mut Problems) -> bool {
    result.map_err(|e| p.push(path, e)).is_ok()
}

/// RFC 1123 label: what Kubernetes accepts as a name segment.
fn dns_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    ok.then_some(()).ok_or_else(|| {
        format!("{s:?} must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit")
    })
}

/// RFC 1123 subdomain (dot-separated labels, at most 253 characters).
fn dns_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty() && s.len() <= 253 && s.split('.').all(|l| dns_label(l).is_ok());
    ok.then_some(()).ok_or_else(|| format!("{s:?} is not a valid DNS name (lowercase RFC 1123)"))
}

/// The longest host name: the `kubernetes.io/hostname` label carries it (label values are at
/// most 63 characters), and it names directories and temporary files kubeha writes.
pub const MAX_HOST_NAME: usize = 63;

/// Node names become certificate subjects (`system:node:<name>`), etcd member names and the
/// node's hostname label.
fn node_name(s: &str) -> Result<(), String> {
    if s.len() > MAX_HOST_NAME {
        return Err(format!(
            "{s:?} is {} characters long; a node name can have at most {MAX_HOST_NAME} (it is the node's \
             kubernetes.io/hostname label)",
            s.len()
        ));
    }
    dns_name(s).map_err(|_| format!("{s:?} is not a valid node name (lowercase RFC 1123 DNS name)"))
}

/// Interface names go into keepalived.conf, which runs scripts as root: only the characters
/// interface names are made of (the kernel allows more, but nobody names a NIC `}` or `"`).
fn interface_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s != "."
        && s != "..";
    ok.then_some(())
        .ok_or_else(|| format!("{s:?} is not a network interface name (1-15 letters, digits, '-', '_' or '.')"))
}

pub(super) fn user_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !s.starts_with('-');
    ok.then_some(()).ok_or_else(|| format!("{s:?} is not a valid user name"))
}

fn image_repository(s: &str) -> Result<(), String> {
    super::image::repository(s)
}

fn image_reference(s: &str) -> Result<(), String> {
    super::image::reference(s)
}
