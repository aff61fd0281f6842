//! Generated inventories: whatever validate accepts renders, and every rendered file passes the
//! program that reads it.
//!
//! The generator varies what the rules in `inventory/` are about: address family, control-plane
//! and worker counts, load-balancer type, ports, subnet sizes, names up to their length limits,
//! interface names, VRRP router ids, image repositories and references, Kubernetes versions and
//! extra SANs. Each case generates its PKI (ecdsa-p256, fast) once in a temporary state
//! directory, renders every host, and checks: the manifests of the first and last control
//! planes round-trip through the Pod type;
//! haproxy on the first control plane and keepalived on the first and last (`haproxy -c`,
//! `keepalived -t`, in one sandbox, with the rendered interface created); every certificate of
//! the state directory `openssl verify`s against its CA. Bounded to 64 cases.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError};

use super::assert_is_pod;
use super::sandbox::{Sandbox, sh_quote};

#[derive(Debug, Clone)]
struct Spec {
    v6: bool,
    cluster: String,
    control_planes: usize,
    /// 0 keepalived-haproxy, 1 external, 2 dns.
    lb: u8,
    endpoint_port: u16,
    bind_port: u16,
    service_prefix: u8,
    /// `None`: no pod subnet.
    pod_prefix: Option<u8>,
    names: Vec<String>,
    interface: String,
    router_id: u8,
    repository: Option<&'static str>,
    haproxy_image: Option<&'static str>,
    kubernetes: &'static str,
    extra_sans: Vec<&'static str>,
}

/// A DNS label of `len` characters ending in `index` (unique across a cluster).
fn label(seed: &str, len: usize, index: usize) -> String {
    let suffix = format!("-{index}");
    let mut name: String = seed.chars().take(len.saturating_sub(suffix.len()).max(1)).collect();
    name.push_str(&suffix);
    name
}

fn spec() -> impl Strategy<Value = Spec> {
    let shape = (
        any::<bool>(),
        "[a-z][a-z0-9]{0,20}",
        prop::sample::select(vec![1usize, 3, 5]),
        0usize..4,
        0u8..3,
        prop::sample::select(vec![443u16, 6443, 7443, 8443, 9443, 16443, 30000, 65535]),
        prop::sample::select(vec![6443u16, 6444, 1024, 443, 60000]),
    );
    let details = (
        0u8..=16,
        prop::option::of(0u8..=16),
        "[a-z][a-z0-9]{62}",
        1usize..=63,
        "e[a-z0-9]{0,13}",
        1u8..=255,
        prop::option::of(prop::sample::select(vec!["registry.local:5000/k8s", "example.com/mirror/k8s", "localhost"])),
        prop::option::of(prop::sample::select(vec![
            "haproxy:2.8",
            "docker.io/library/haproxy:2.9-alpine",
            "[fd00::5]:5000/lb/haproxy:v2",
        ])),
        prop::sample::select(vec!["v1.31.4", "v1.32.1", "v1.33.5", "v1.34.2", "v1.35.1", "v1.36.3"]),
        prop::sample::subsequence(vec!["api.example.com", "*.lb.example.com", "203.0.113.7", "2001:db8::7"], 0..=2),
    );
    (shape, details).prop_map(|(shape, details)| {
        let (v6, cluster, control_planes, workers, lb, endpoint_port, bind_port) = shape;
        let (service_bits, pod_bits, seed, name_len, interface, router_id, repository, haproxy_image, kubernetes, sans) =
            details;
        // Ports: the dns type needs endpoint == bindPort; keepalived-haproxy needs them apart.
        let endpoint_port = match lb {
            2 => bind_port,
            0 if endpoint_port == bind_port => bind_port + 1,
            _ => endpoint_port,
        };
        let (service_range, pod_range) = if v6 { ((108, 124), (48, 64)) } else { ((12, 28), (8, 24)) };
        let span = |(lo, hi): (u8, u8), n: u8| lo + n % (hi - lo + 1);
        let names = (0..control_planes + workers).map(|i| label(&seed, name_len, i)).collect();
        Spec {
            v6,
            cluster,
            control_planes,
            lb,
            endpoint_port,
            bind_port,
            service_prefix: span(service_range, service_bits),
            pod_prefix: pod_bits.map(|b| span(pod_range, b)),
            names,
            interface,
            router_id,
            repository,
            haproxy_image,
            kubernetes,
            // An IPv6 cluster's SANs may still name IPv4 addresses: SANs are not endpoints.
            extra_sans: sans,
        }
    })
}

impl Spec {
    fn address(&self, i: usize) -> String {
        if self.v6 { format!("fd00::{:x}", 0x100 + i) } else { format!("198.18.{}.{}", 1 + i / 200, 1 + i % 200) }
    }

    fn vip(&self) -> &'static str {
        if self.v6 { "fd00::10" } else { "198.18.0.10" }
    }

    fn text(&self) -> String {
        let host_port = |host: &str| {
            if self.v6 && host.contains(':') {
                format!("[{host}]:{}", self.endpoint_port)
            } else {
                format!("{host}:{}", self.endpoint_port)
            }
        };
        let (endpoint, lb) = match self.lb {
            0 => {
                let image = self.haproxy_image.map(|i| format!(", haproxyImage: '{i}'")).unwrap_or_default();
                (
                    host_port(self.vip()),
                    format!(
                        "{{type: keepalived-haproxy, vip: '{}', interface: '{}', virtualRouterId: {}{image}}}",
                        self.vip(),
                        self.interface,
                        self.router_id
                    ),
                )
            }
            1 => (host_port(if self.v6 { "fd00::20" } else { "198.18.0.20" }), "{type: external}".to_string()),
            _ => (host_port(&format!("api.{}.example.com", self.cluster)), "{type: dns}".to_string()),
        };
        let service = if self.v6 { "fd00:10:96::" } else { "10.96.0.0" };
        let pod = if self.v6 { "fd00:10:244::" } else { "100.64.0.0" };
        let truncate = |addr: &str, prefix: u8| {
            format!("{addr}/{prefix}").parse::<ipnet::IpNet>().expect("generated subnet").trunc().to_string()
        };
        let mut networking = format!("serviceSubnet: '{}'", truncate(service, self.service_prefix));
        if let Some(p) = self.pod_prefix {
            networking.push_str(&format!(", podSubnet: '{}'", truncate(pod, p)));
        }
        let repository = self.repository.map(|r| format!("  imageRepository: '{r}'\n")).unwrap_or_default();
        let sans: Vec<String> = self.extra_sans.iter().map(|s| format!("'{s}'")).collect();
        let mut text = format!(
            "apiVersion: kubeha/v1alpha1\nkind: Cluster\nmetadata: {{name: '{cluster}'}}\nspec:\n  \
             kubernetesVersion: {kubernetes}\n  controlPlaneEndpoint: '{endpoint}'\n  apiServer: {{bindPort: {bind}}}\n\
             {repository}  loadBalancer: {lb}\n  networking: {{{networking}}}\n  \
             certificates: {{keyAlgorithm: ecdsa-p256, extraSANs: [{sans}]}}\n  \
             ssh: {{user: root, identityFile: /nonexistent/id}}\n  hosts:\n",
            cluster = self.cluster,
            kubernetes = self.kubernetes,
            bind = self.bind_port,
            sans = sans.join(", "),
        );
        for (i, name) in self.names.iter().enumerate() {
            let role = if i < self.control_planes { "control-plane" } else { "worker" };
            // Quoted: YAML reads a bare `n` or `no` as a boolean.
            text.push_str(&format!("    - {{name: '{name}', address: '{}', role: {role}}}\n", self.address(i)));
        }
        text
    }
}

fn fail(what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(what.to_string())
}

fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The CA under `state` that signs the certificate at `rel`.
fn signer(rel: &Path) -> &'static str {
    let text = rel.to_string_lossy();
    if text.contains("/etcd/") || text.ends_with("apiserver-etcd-client.crt") {
        "pki/etcd/ca.crt"
    } else if text.ends_with("front-proxy-client.crt") {
        "pki/front-proxy-ca.crt"
    } else {
        "pki/ca.crt"
    }
}

fn certificates(state: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![state.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "crt") {
                out.push(path.strip_prefix(state).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

fn check(spec: &Spec) -> Result<(), TestCaseError> {
    let text = spec.text();
    let plan = kubeha::inventory::parse(&text, Path::new("/"))
        .map_err(|e| fail(format!("a generated inventory was refused: {e:?}\n{text}")))?;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    kubeha::pki::generate(&plan, &state).map_err(|e| fail(format!("generate: {e}\n{text}")))?;
    let pki = kubeha::pki::load(&plan, &state).map_err(|e| fail(format!("load: {e}\n{text}")))?;
    let files =
        kubeha::render::render(&plan, &pki).map_err(|e| fail(format!("validate ok, render failed: {e}\n{text}")))?;

    // Control planes differ only in addresses, names and ranks: the first and the last stand for all.
    for host in [&spec.names[0], &spec.names[spec.control_planes - 1]] {
        for f in files[host.as_str()].iter().filter(|f| f.path.starts_with("/etc/kubernetes/manifests")) {
            assert_is_pod(&format!("{host}:{}", f.path.display()), std::str::from_utf8(&f.content).unwrap());
        }
    }

    // Every certificate against its own CA, one openssl run per CA.
    let certs = certificates(&state);
    for ca in ["pki/ca.crt", "pki/front-proxy-ca.crt", "pki/etcd/ca.crt"] {
        let signed: Vec<String> = certs
            .iter()
            .filter(|c| signer(c) == ca && !c.ends_with("ca.crt") && !c.ends_with("front-proxy-ca.crt"))
            .map(|c| state.join(c).display().to_string())
            .collect();
        let out = std::process::Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(state.join(ca))
            .args(&signed)
            .output()
            .unwrap();
        let oks = String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.ends_with(": OK")).count();
        if !out.status.success() || oks != signed.len() {
            return Err(fail(format!("openssl verify against {ca}:\n{}\n{text}", output_text(&out))));
        }
    }

    if spec.lb == 0 {
        // One sandbox: the first control plane's files, and the last one's keepalived.conf beside
        // its own (they differ in priority, source and peers).
        let first = &spec.names[0];
        let last = &spec.names[spec.control_planes - 1];
        let sb = Sandbox::new();
        for f in &files[first.as_str()] {
            sb.put(f);
        }
        let conf = Path::new("/etc/kubernetes/keepalived/keepalived.conf");
        let last_conf = files[last.as_str()].iter().find(|f| f.path == conf).expect("keepalived.conf");
        sb.write("/etc/kubernetes/keepalived/last.conf", 0o600, &last_conf.content);
        let peer = if spec.interface == "peer0" { "peer1" } else { "peer0" };
        let script = format!(
            "ip link add {} type veth peer name {peer} && keepalived -t -f {} && keepalived -t -f \
             /etc/kubernetes/keepalived/last.conf && haproxy -c -f /etc/kubernetes/haproxy/haproxy.cfg",
            sh_quote(&spec.interface),
            conf.display()
        );
        let out = sb.run(&script);
        if !out.status.success() || output_text(&out).contains("Disabling track script") {
            return Err(fail(format!("{first}, {last}: {script}:\n{}\n{text}", output_text(&out))));
        }
    }
    Ok(())
}

#[test]
fn every_valid_inventory_renders_files_their_programs_accept() {
    let started = std::time::Instant::now();
    let config = Config { cases: 64, max_shrink_iters: 64, failure_persistence: None, ..Config::default() };
    proptest!(config, |(spec in spec())| { check(&spec)?; });
    eprintln!("64 generated inventories checked in {:.1}s", started.elapsed().as_secs_f64());
}
