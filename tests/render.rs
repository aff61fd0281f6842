//! Rendering: the files each host receives, checked by the programs that will read them.
//!
//! Manifests go through the Kubernetes API types here; `render/programs.rs` has haproxy,
//! keepalived, curl, etcd 3.4 and kubectl check or run the rendered files in a sandbox;
//! `render/property.rs` does so for generated inventories.

#[path = "render/programs.rs"]
mod programs;
#[path = "render/property.rs"]
mod property;
#[path = "render/sandbox.rs"]
mod sandbox;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kubeha::files::File;
use kubeha::plan::Plan;
use kubeha::render::{INPUTS_HASH_ANNOTATION, Secrets, host_configs};

const PASSWORD: &str = "s3cretpw";
const HASH_KEY: &[u8] = b"the test cluster's hash key";

// ---------------------------------------------------------------- inventories and helpers

struct Inventory {
    kubernetes: &'static str,
    etcd: &'static str,
    endpoint: &'static str,
    load_balancer: &'static str,
    networking: &'static str,
    hosts: Vec<(&'static str, &'static str, &'static str)>,
    extra: &'static str,
}

impl Inventory {
    /// Three IPv4 control planes and a worker behind keepalived-haproxy.
    fn ipv4() -> Self {
        Inventory {
            kubernetes: "v1.31.4",
            etcd: "3.5.16-0",
            endpoint: "198.18.0.10:8443",
            load_balancer: "{type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}",
            networking: "{podSubnet: 10.244.0.0/16, serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}",
            hosts: vec![
                ("cp1", "198.18.0.11", "control-plane"),
                ("cp2", "198.18.0.12", "control-plane"),
                ("cp3", "198.18.0.13", "control-plane"),
                ("w1", "198.18.0.21", "worker"),
            ],
            extra: "",
        }
    }

    fn ipv6() -> Self {
        Inventory {
            endpoint: "[fd00::10]:8443",
            load_balancer: "{type: keepalived-haproxy, vip: 'fd00::10', interface: eth0}",
            networking: "{podSubnet: 'fd00:10:244::/56', serviceSubnet: 'fd00:10:96::/112', dnsDomain: cluster.local}",
            hosts: vec![
                ("cp1", "fd00::11", "control-plane"),
                ("cp2", "fd00::12", "control-plane"),
                ("cp3", "fd00::13", "control-plane"),
                ("w1", "fd00::21", "worker"),
            ],
            ..Self::ipv4()
        }
    }

    /// An empty `etcd` leaves the etcd version to the version table.
    fn versions(self, kubernetes: &'static str, etcd: &'static str) -> Self {
        Inventory { kubernetes, etcd, ..self }
    }

    fn text(&self) -> String {
        let hosts: String = self
            .hosts
            .iter()
            .map(|(name, address, role)| format!("    - {{name: {name}, address: '{address}', role: {role}}}\n"))
            .collect();
        format!(
            "apiVersion: kubeha/v1alpha1\nkind: Cluster\nmetadata: {{name: lab}}\nspec:\n  \
             kubernetesVersion: {}\n  controlPlaneEndpoint: '{}'\n  loadBalancer: {}\n  networking: {}\n  \
             etcd: {}\n  ssh: {{user: root, identityFile: /root/.ssh/id_ed25519}}\n{}  hosts:\n{hosts}",
            self.kubernetes,
            self.endpoint,
            self.load_balancer,
            self.networking,
            if self.etcd.is_empty() { "{}".to_string() } else { format!("{{version: '{}'}}", self.etcd) },
            self.extra
        )
    }

    fn plan(&self) -> Plan {
        match kubeha::inventory::parse(&self.text(), Path::new(".")) {
            Ok(plan) => plan,
            Err(e) => panic!("test inventory rejected: {e:?}\n{}", self.text()),
        }
    }
}

fn example_plan() -> Plan {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/example.yaml");
    kubeha::inventory::load(&path).expect("the reference inventory is valid")
}

fn render(plan: &Plan) -> BTreeMap<String, Vec<File>> {
    host_configs(plan, &Secrets { vrrp_password: PASSWORD, hash_key: HASH_KEY }).expect("renders")
}

fn file<'a>(files: &'a BTreeMap<String, Vec<File>>, host: &str, path: &str) -> &'a str {
    let f = files[host].iter().find(|f| f.path == Path::new(path)).unwrap_or_else(|| panic!("{host} has no {path}"));
    std::str::from_utf8(&f.content).unwrap()
}

fn paths(files: &[File]) -> Vec<String> {
    files.iter().map(|f| f.path.display().to_string()).collect()
}

fn pod(yaml: &str) -> serde_json::Value {
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("not YAML: {e}\n{yaml}"))
}

fn manifest(files: &BTreeMap<String, Vec<File>>, host: &str, name: &str) -> serde_json::Value {
    pod(file(files, host, &format!("/etc/kubernetes/manifests/{name}.yaml")))
}

fn command(pod: &serde_json::Value) -> Vec<String> {
    serde_json::from_value(pod["spec"]["containers"][0]["command"].clone()).unwrap()
}

fn flag<'a>(command: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    command.iter().find_map(|a| a.strip_prefix(&prefix))
}

fn flag_names(command: &[String]) -> BTreeSet<String> {
    command[1..].iter().map(|a| a.trim_start_matches('-').split('=').next().unwrap().to_string()).collect()
}

fn probe_path(pod: &serde_json::Value, probe: &str) -> Option<String> {
    pod["spec"]["containers"][0][probe]["httpGet"]["path"].as_str().map(String::from)
}

fn probe_port(pod: &serde_json::Value, probe: &str) -> serde_json::Value {
    pod["spec"]["containers"][0][probe]["httpGet"]["port"].clone()
}

fn image(pod: &serde_json::Value) -> &str {
    pod["spec"]["containers"][0]["image"].as_str().unwrap()
}

// ---------------------------------------------------------------- manifests are Pods

/// YAML → JSON → `Pod` → JSON must give back the same value: a misspelt key is dropped by the
/// `Pod` type and a wrong type fails to parse, so both show up as a difference.
fn assert_is_pod(path: &str, yaml: &str) {
    let value = pod(yaml);
    let typed: Pod = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{path} is not a Pod: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(back, value, "{path} does not round-trip through the Pod type");
    let containers = typed.spec.expect("spec").containers;
    assert!(!containers.is_empty(), "{path}: no containers");
    let name = typed.metadata.name.expect("name");
    for c in containers {
        let command = c.command.unwrap_or_default();
        assert!(!command.is_empty() && !command[0].is_empty(), "{path}: container {} has no command", c.name);
        assert_eq!(command[0], name, "{path}: the command starts with the program");
    }
}

#[test]
fn every_manifest_is_a_valid_pod_with_a_command() {
    let mut plans = vec![
        example_plan(),
        Inventory::ipv6().plan(),
        Inventory::ipv4().versions("v1.31.0", "3.4.23").plan(),
        Inventory::ipv4().versions("v1.32.1", "3.6.0").plan(),
        Inventory::ipv6().versions("v1.36.3", "").plan(),
    ];
    plans.extend(MINORS.iter().map(|m| Inventory::ipv4().versions(m.version, "").plan()));
    for plan in &plans {
        let mut checked = 0;
        for (host, files) in render(plan) {
            for f in files.iter().filter(|f| f.path.starts_with("/etc/kubernetes/manifests")) {
                assert_is_pod(&format!("{host}:{}", f.path.display()), std::str::from_utf8(&f.content).unwrap());
                checked += 1;
            }
        }
        assert_eq!(checked, 3 * 6, "six manifests on each of three control planes");
    }
}

// ---------------------------------------------------------------- snapshots

#[test]
fn reference_inventory_snapshots() {
    let plan = example_plan();
    for (host, files) in render(&plan) {
        let mut text = String::new();
        for f in &files {
            text.push_str(&format!("===== {} (mode {:04o})\n", f.path.display(), f.mode));
            text.push_str(std::str::from_utf8(&f.content).unwrap());
        }
        insta::assert_snapshot!(format!("example-{host}"), text);
    }
}

// ---------------------------------------------------------------- layout and determinism

#[test]
fn hosts_receive_the_agreed_files_sorted_and_deterministic() {
    let plan = example_plan();
    let first = render(&plan);
    let second = render(&plan);
    assert_eq!(first.keys().collect::<Vec<_>>(), ["cp1", "cp2", "cp3", "w1"]);
    for (host, files) in &first {
        let again = &second[host];
        assert_eq!(files.len(), again.len());
        for (a, b) in files.iter().zip(again) {
            assert!(a.path == b.path && a.mode == b.mode && a.content == b.content, "{host}: {a:?} differs");
        }
        let mut sorted = paths(files);
        sorted.sort();
        assert_eq!(paths(files), sorted, "{host}: files are sorted by path");
    }
    let modes = |host: &str| -> Vec<(String, u32)> {
        first[host].iter().map(|f| (f.path.display().to_string(), f.mode)).collect()
    };
    let mut expected: Vec<(String, u32)> = vec![
        ("/etc/kubernetes/haproxy/haproxy.cfg".into(), 0o644),
        ("/etc/kubernetes/keepalived/check_apiserver.sh".into(), 0o700),
        ("/etc/kubernetes/keepalived/keepalived.conf".into(), 0o600),
        ("/var/lib/kubelet/config.yaml".into(), 0o644),
        ("/var/lib/kubelet/kubeadm-flags.env".into(), 0o644),
    ];
    for name in ["etcd", "haproxy", "keepalived", "kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
        expected.push((format!("/etc/kubernetes/manifests/{name}.yaml"), 0o600));
    }
    expected.sort();
    assert_eq!(modes("cp2"), expected);
    assert_eq!(
        modes("w1"),
        [
            ("/var/lib/kubelet/config.yaml".to_string(), 0o644),
            ("/var/lib/kubelet/kubeadm-flags.env".to_string(), 0o644)
        ]
    );
}

#[test]
fn external_and_dns_balancers_get_no_haproxy_or_keepalived() {
    for (endpoint, lb) in [("lb.example.com:6443", "{type: external}"), ("api.example.com:6443", "{type: dns}")] {
        let plan = Inventory { endpoint, load_balancer: lb, ..Inventory::ipv4() }.plan();
        let files = render(&plan);
        for host in ["cp1", "cp2", "cp3"] {
            let p = paths(&files[host]);
            assert!(!p.iter().any(|p| p.contains("haproxy") || p.contains("keepalived")), "{lb}: {p:?}");
            assert_eq!(p.iter().filter(|p| p.starts_with("/etc/kubernetes/manifests/")).count(), 4, "{lb}");
        }
        // Everything else is as with a VIP: the apiserver still advertises its own address.
        let api = command(&manifest(&files, "cp1", "kube-apiserver"));
        assert_eq!(flag(&api, "advertise-address"), Some("198.18.0.11"));
    }
}

// ---------------------------------------------------------------- flags and versions

#[test]
fn control_plane_flags_follow_the_plan() {
    let files = render(&example_plan());
    let api = command(&manifest(&files, "cp2", "kube-apiserver"));
    for (name, value) in [
        ("advertise-address", "198.18.0.12"),
        ("etcd-servers", "https://127.0.0.1:2379,https://198.18.0.11:2379,https://198.18.0.13:2379"),
        ("authorization-mode", "Node,RBAC"),
        ("secure-port", "6443"),
        ("service-cluster-ip-range", "10.96.0.0/12"),
        ("service-account-issuer", "https://kubernetes.default.svc.cluster.local"),
        ("service-account-key-file", "/etc/kubernetes/pki/sa.pub"),
        ("service-account-signing-key-file", "/etc/kubernetes/pki/sa.key"),
        ("requestheader-client-ca-file", "/etc/kubernetes/pki/front-proxy-ca.crt"),
        ("proxy-client-cert-file", "/etc/kubernetes/pki/front-proxy-client.crt"),
    ] {
        assert_eq!(flag(&api, name), Some(value), "kube-apiserver --{name}");
    }
    let kcm = command(&manifest(&files, "cp2", "kube-controller-manager"));
    for (name, value) in [
        ("leader-elect", "true"),
        ("cluster-name", "lab"),
        ("allocate-node-cidrs", "true"),
        ("cluster-cidr", "10.244.0.0/16"),
    ] {
        assert_eq!(flag(&kcm, name), Some(value), "kube-controller-manager --{name}");
    }
    assert_eq!(flag(&command(&manifest(&files, "cp2", "kube-scheduler")), "leader-elect"), Some("true"));
    let etcd = command(&manifest(&files, "cp2", "etcd"));
    assert_eq!(
        flag(&etcd, "initial-cluster"),
        Some("cp1=https://198.18.0.11:2380,cp2=https://198.18.0.12:2380,cp3=https://198.18.0.13:2380")
    );
    assert_eq!(flag(&etcd, "initial-cluster-state"), Some("new"));
    assert_eq!(flag(&etcd, "name"), Some("cp2"));
    let apiserver = manifest(&files, "cp2", "kube-apiserver");
    assert_eq!(
        apiserver["metadata"]["annotations"]["kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"],
        "198.18.0.12:6443"
    );
    assert_eq!(apiserver["spec"]["containers"][0]["image"], "registry.k8s.io/kube-apiserver:v1.31.4");
}

#[test]
fn without_a_pod_subnet_no_node_cidrs_are_allocated() {
    let plan = Inventory { networking: "{serviceSubnet: 10.96.0.0/12}", ..Inventory::ipv4() }.plan();
    let kcm = command(&manifest(&render(&plan), "cp1", "kube-controller-manager"));
    for name in ["allocate-node-cidrs", "cluster-cidr", "service-cluster-ip-range"] {
        assert_eq!(flag(&kcm, name), None, "--{name} without a pod subnet");
    }
}

#[test]
fn image_repository_and_bind_port_overrides() {
    let plan = Inventory {
        extra: "  imageRepository: registry.local:5000/k8s\n  apiServer: {bindPort: 6444}\n",
        ..Inventory::ipv4().versions("v1.33.2", "3.5.21-0")
    }
    .plan();
    assert_eq!(plan.coredns_image(), "registry.local:5000/k8s/coredns/coredns:v1.12.0");
    assert_eq!(plan.pause_image(), "registry.local:5000/k8s/pause:3.10");
    let files = render(&plan);
    for (name, image) in [
        ("kube-apiserver", "registry.local:5000/k8s/kube-apiserver:v1.33.2"),
        ("kube-controller-manager", "registry.local:5000/k8s/kube-controller-manager:v1.33.2"),
        ("kube-scheduler", "registry.local:5000/k8s/kube-scheduler:v1.33.2"),
        ("etcd", "registry.local:5000/k8s/etcd:3.5.21-0"),
    ] {
        assert_eq!(manifest(&files, "cp1", name)["spec"]["containers"][0]["image"], image);
    }
    let api = manifest(&files, "cp1", "kube-apiserver");
    assert_eq!(flag(&command(&api), "secure-port"), Some("6444"));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(api["spec"]["containers"][0][probe]["httpGet"]["port"], 6444, "{probe}");
    }
    // From 1.34 the probes name the port and the container declares it as the bind port.
    let named = Inventory { extra: "  apiServer: {bindPort: 6444}\n", ..Inventory::ipv4().versions("v1.34.1", "") };
    let api = manifest(&render(&named.plan()), "cp1", "kube-apiserver");
    assert_eq!(
        api["spec"]["containers"][0]["ports"],
        serde_json::json!([{"containerPort": 6444, "name": "probe-port", "protocol": "TCP"}])
    );
    assert_eq!(probe_port(&api, "startupProbe"), "probe-port");
    let haproxy = file(&files, "cp1", "/etc/kubernetes/haproxy/haproxy.cfg");
    assert!(haproxy.contains("server cp3 198.18.0.13:6444"), "{haproxy}");
    let check = file(&files, "cp1", "/etc/kubernetes/keepalived/check_apiserver.sh");
    assert!(check.contains("https://127.0.0.1:6444/healthz") && check.contains("https://127.0.0.1:8443/healthz"));
}

#[test]
fn kubernetes_131_and_132_differ_in_scheduler_probes_only() {
    let old = render(&Inventory::ipv4().versions("v1.31.4", "3.5.16-0").plan());
    let new = render(&Inventory::ipv4().versions("v1.32.1", "3.5.16-0").plan());
    let (s_old, s_new) = (manifest(&old, "cp1", "kube-scheduler"), manifest(&new, "cp1", "kube-scheduler"));
    assert_eq!(probe_path(&s_old, "livenessProbe").as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&s_old, "startupProbe").as_deref(), Some("/healthz"));
    assert_eq!(probe_path(&s_old, "readinessProbe"), None);
    assert_eq!(probe_path(&s_new, "livenessProbe").as_deref(), Some("/livez"));
    assert_eq!(probe_path(&s_new, "readinessProbe").as_deref(), Some("/readyz"));
    assert_eq!(probe_path(&s_new, "startupProbe").as_deref(), Some("/livez"));
    assert_eq!(s_new["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"], 10259);
    // Flags and the other components' probes are the same; only image tags differ.
    for name in ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"] {
        let (a, b) = (manifest(&old, "cp1", name), manifest(&new, "cp1", name));
        assert_eq!(command(&a), command(&b), "{name} flags");
        if name != "kube-scheduler" {
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                assert_eq!(a["spec"]["containers"][0][probe], b["spec"]["containers"][0][probe], "{name} {probe}");
            }
        }
    }
    assert_eq!(
        manifest(&new, "cp1", "kube-scheduler")["spec"]["containers"][0]["image"],
        "registry.k8s.io/kube-scheduler:v1.32.1"
    );
}

/// Flags etcd 3.4.23 refuses to start with (seen on the lab machine, see LAB-NOTES).
const REJECTED_BY_ETCD_34: [&str; 6] = [
    "feature-gates",
    "watch-progress-notify-interval",
    "experimental-max-learners",
    "experimental-compact-hash-check-enabled",
    "socket-reuse-port",
    "tls-min-version",
];

#[test]
fn etcd_flags_and_probes_follow_the_etcd_release() {
    let etcd = |kubernetes: &'static str, version: &'static str| {
        manifest(&render(&Inventory::ipv4().versions(kubernetes, version).plan()), "cp1", "etcd")
    };
    // kubeadm 1.34 and 1.35 name the flags by the etcd release.
    let (e34, e35, e36) = (etcd("v1.34.1", "3.4.23"), etcd("v1.34.1", "3.5.16-0"), etcd("v1.34.1", "3.6.1-0"));
    let (c34, c35, c36) = (command(&e34), command(&e35), command(&e36));

    // 3.4 and 3.5 share kubeadm's 3.5-era flags, none of which 3.4 rejects.
    assert_eq!(c34, c35);
    assert_eq!(flag(&c35, "experimental-initial-corrupt-check"), Some("true"));
    assert_eq!(flag(&c35, "experimental-watch-progress-notify-interval"), Some("5s"));
    for rejected in REJECTED_BY_ETCD_34 {
        assert!(!flag_names(&c34).contains(rejected), "etcd 3.4 gets --{rejected}");
    }
    // 3.6 uses the renamed flags and nothing else changes.
    assert_eq!(flag(&c36, "feature-gates"), Some("InitialCorruptCheck=true"));
    assert_eq!(flag(&c36, "watch-progress-notify-interval"), Some("5s"));
    let renamed: BTreeSet<String> = flag_names(&c35).symmetric_difference(&flag_names(&c36)).cloned().collect();
    assert_eq!(
        renamed,
        [
            "experimental-initial-corrupt-check",
            "experimental-watch-progress-notify-interval",
            "feature-gates",
            "watch-progress-notify-interval"
        ]
        .map(String::from)
        .into()
    );
    // Before 1.34 kubeadm writes the experimental names even for etcd 3.6 (which accepts them,
    // deprecated); kubeadm 1.36 writes only the new names, but an older etcd still gets the
    // names it accepts.
    assert_eq!(command(&etcd("v1.33.2", "3.6.1-0")), c35);
    assert_eq!(command(&etcd("v1.31.4", "3.6.1-0")), c35);
    assert_eq!(command(&etcd("v1.36.3", "3.4.23")), c34);
    assert_eq!(command(&etcd("v1.36.3", "3.6.1-0")), c36);
    // etcd before 3.4.11 has no --experimental-watch-progress-notify-interval.
    assert_eq!(flag(&command(&etcd("v1.34.1", "3.4.10")), "experimental-watch-progress-notify-interval"), None);

    // /livez and /readyz exist from 3.5.11; older etcd gets kubeadm's earlier /health probes.
    assert_eq!(probe_path(&e34, "livenessProbe").as_deref(), Some("/health?exclude=NOSPACE&serializable=true"));
    assert_eq!(probe_path(&e34, "startupProbe").as_deref(), Some("/health?serializable=false"));
    assert_eq!(probe_path(&e34, "readinessProbe"), None);
    assert_eq!(
        probe_path(&etcd("v1.31.4", "3.5.10-0"), "livenessProbe").as_deref(),
        Some("/health?exclude=NOSPACE&serializable=true")
    );
    for e in [&e35, &e36, &etcd("v1.31.4", "3.5.16-0")] {
        assert_eq!(probe_path(e, "livenessProbe").as_deref(), Some("/livez"));
        assert_eq!(probe_path(e, "readinessProbe").as_deref(), Some("/readyz"));
        assert_eq!(probe_path(e, "startupProbe").as_deref(), Some("/readyz"));
    }
    assert_eq!(probe_port(&etcd("v1.31.4", "3.5.16-0"), "livenessProbe"), 2381);
    assert_eq!(probe_port(&e36, "livenessProbe"), "probe-port");
    assert_eq!(e36["spec"]["containers"][0]["ports"][0]["containerPort"], 2381);
    assert_eq!(image(&e36), "registry.k8s.io/etcd:3.6.1-0");
}

// ---------------------------------------------------------------- one row per supported minor

/// What kubeadm writes for one supported minor, with the inventory leaving etcd to the table.
struct Minor {
    version: &'static str,
    etcd: &'static str,
    coredns: &'static str,
    pause: &'static str,
    /// kube-scheduler's liveness, readiness and startup paths.
    scheduler: [Option<&'static str>; 3],
    named_probe_port: bool,
    /// The etcd flags that carry the corruption check and the watch progress interval.
    etcd_flags: [&'static str; 2],
}

const EXPERIMENTAL: [&str; 2] = ["experimental-initial-corrupt-check", "experimental-watch-progress-notify-interval"];
const GRADUATED: [&str; 2] = ["feature-gates", "watch-progress-notify-interval"];
const HEALTHZ: [Option<&str>; 3] = [Some("/healthz"), None, Some("/healthz")];
const LIVEZ: [Option<&str>; 3] = [Some("/livez"), Some("/readyz"), Some("/livez")];

const MINORS: [Minor; 6] = [
    Minor {
        version: "v1.31.4",
        etcd: "3.5.15-0",
        coredns: "v1.11.3",
        pause: "3.10",
        scheduler: HEALTHZ,
        named_probe_port: false,
        etcd_flags: EXPERIMENTAL,
    },
    Minor {
        version: "v1.32.10",
        etcd: "3.5.24-0",
        coredns: "v1.11.3",
        pause: "3.10",
        scheduler: LIVEZ,
        named_probe_port: false,
        etcd_flags: EXPERIMENTAL,
    },
    Minor {
        version: "v1.33.2",
        etcd: "3.5.21-0",
        coredns: "v1.12.0",
        pause: "3.10",
        scheduler: LIVEZ,
        named_probe_port: false,
        etcd_flags: EXPERIMENTAL,
    },
    Minor {
        version: "v1.34.1",
        etcd: "3.6.4-0",
        coredns: "v1.12.1",
        pause: "3.10.1",
        scheduler: LIVEZ,
        named_probe_port: true,
        etcd_flags: GRADUATED,
    },
    Minor {
        version: "v1.35.0",
        etcd: "3.6.6-0",
        coredns: "v1.13.1",
        pause: "3.10.1",
        scheduler: LIVEZ,
        named_probe_port: true,
        etcd_flags: GRADUATED,
    },
    Minor {
        version: "v1.36.3",
        etcd: "3.6.8-0",
        coredns: "v1.14.2",
        pause: "3.10.2",
        scheduler: LIVEZ,
        named_probe_port: true,
        etcd_flags: GRADUATED,
    },
];

/// The port each kubeadm pod probes.
const PROBED: [(&str, u16); 4] =
    [("kube-apiserver", 6443), ("kube-controller-manager", 10257), ("kube-scheduler", 10259), ("etcd", 2381)];

#[test]
fn every_supported_minor_renders_its_kubeadm_release() {
    let minors: Vec<u32> = MINORS.iter().map(|m| m.version.split('.').nth(1).unwrap().parse().unwrap()).collect();
    assert_eq!(minors, kubeha::version::SUPPORTED_KUBERNETES_MINORS.collect::<Vec<_>>(), "one row per minor");
    let baseline = render(&Inventory::ipv4().versions("v1.31.4", "").plan());
    for m in &MINORS {
        let plan = Inventory::ipv4().versions(m.version, "").plan();
        let files = render(&plan);
        let v = m.version;
        assert_eq!(plan.etcd_version.tag, m.etcd, "{v}");
        assert_eq!(plan.coredns_image(), format!("registry.k8s.io/coredns/coredns:{}", m.coredns), "{v}");
        assert_eq!(plan.pause_image(), format!("registry.k8s.io/pause:{}", m.pause), "{v}");
        for (name, port) in PROBED {
            let pod = manifest(&files, "cp1", name);
            let tag = if name == "etcd" { m.etcd } else { v };
            assert_eq!(image(&pod), format!("registry.k8s.io/{name}:{tag}"), "{v} {name}");
            let ports = &pod["spec"]["containers"][0]["ports"];
            let expected_port = if m.named_probe_port {
                assert_eq!(
                    *ports,
                    serde_json::json!([{"containerPort": port, "name": "probe-port", "protocol": "TCP"}])
                );
                serde_json::json!("probe-port")
            } else {
                assert!(ports.is_null(), "{v} {name}: {ports}");
                serde_json::json!(port)
            };
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if probe_path(&pod, probe).is_some() {
                    assert_eq!(probe_port(&pod, probe), expected_port, "{v} {name} {probe}");
                }
            }
        }
        let scheduler = manifest(&files, "cp1", "kube-scheduler");
        let paths = ["livenessProbe", "readinessProbe", "startupProbe"].map(|p| probe_path(&scheduler, p));
        assert_eq!(paths, m.scheduler.map(|p| p.map(String::from)), "{v} kube-scheduler");
        let kcm = manifest(&files, "cp1", "kube-controller-manager");
        assert_eq!(probe_path(&kcm, "livenessProbe").as_deref(), Some("/healthz"), "{v}");
        assert_eq!(probe_path(&kcm, "readinessProbe"), None, "{v}");
        let etcd = flag_names(&command(&manifest(&files, "cp1", "etcd")));
        for (present, absent) in
            m.etcd_flags.iter().zip(if m.etcd_flags == EXPERIMENTAL { GRADUATED } else { EXPERIMENTAL })
        {
            assert!(etcd.contains(*present) && !etcd.contains(absent), "{v}: etcd flags {etcd:?}");
        }
        // kube-apiserver, kube-controller-manager and kube-scheduler flags do not change.
        for name in ["kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
            assert_eq!(
                command(&manifest(&files, "cp1", name)),
                command(&manifest(&baseline, "cp1", name)),
                "{v} {name}"
            );
        }
        // haproxy and keepalived are kubeha's own pods: no named port.
        for name in ["haproxy", "keepalived"] {
            assert!(manifest(&files, "cp1", name)["spec"]["containers"][0]["ports"].is_null(), "{v} {name}");
        }
    }
}

#[test]
fn an_unsupported_version_renders_only_when_allowed_with_the_nearest_rules() {
    let newer = Inventory::ipv4().versions("v1.37.0", "");
    let err = kubeha::inventory::parse(&newer.text(), Path::new(".")).unwrap_err();
    assert!(format!("{err:?}").contains("v1.37.0 is not supported"), "{err:?}");
    let allow = kubeha::inventory::ParseOptions { allow_unsupported_version: true };
    let plan = kubeha::inventory::parse_with(&newer.text(), Path::new("."), allow).unwrap();
    assert_eq!(plan.kubeadm_release().minor, 36);
    assert!(plan.unsupported_version().unwrap().warning().contains("v1.36's rules"));
    let (files, known) = (render(&plan), render(&Inventory::ipv4().versions("v1.36.3", "").plan()));
    for (name, _) in PROBED {
        let (a, b) = (manifest(&files, "cp1", name), manifest(&known, "cp1", name));
        assert_eq!(command(&a), command(&b), "{name}");
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            assert_eq!(a["spec"]["containers"][0][probe], b["spec"]["containers"][0][probe], "{name} {probe}");
        }
    }
    assert_eq!(image(&manifest(&files, "cp1", "kube-apiserver")), "registry.k8s.io/kube-apiserver:v1.37.0");
    assert_eq!(image(&manifest(&files, "cp1", "etcd")), "registry.k8s.io/etcd:3.6.8-0");
    // An end-of-life minor gets the oldest rules.
    let older = Inventory::ipv4().versions("v1.30.2", "");
    let plan = kubeha::inventory::parse_with(&older.text(), Path::new("."), allow).unwrap();
    assert_eq!((plan.kubeadm_release().minor, plan.etcd_version.tag.as_str()), (31, "3.5.15-0"));
}

#[test]
fn ipv6_hosts_get_bracketed_urls() {
    let files = render(&Inventory::ipv6().plan());
    let etcd = manifest(&files, "cp1", "etcd");
    let c = command(&etcd);
    assert_eq!(flag(&c, "advertise-client-urls"), Some("https://[fd00::11]:2379"));
    assert_eq!(flag(&c, "listen-client-urls"), Some("https://[::1]:2379,https://[fd00::11]:2379"));
    assert_eq!(flag(&c, "listen-peer-urls"), Some("https://[fd00::11]:2380"));
    assert_eq!(flag(&c, "listen-metrics-urls"), Some("http://[::1]:2381"));
    assert_eq!(
        flag(&c, "initial-cluster"),
        Some("cp1=https://[fd00::11]:2380,cp2=https://[fd00::12]:2380,cp3=https://[fd00::13]:2380")
    );
    assert_eq!(etcd["spec"]["containers"][0]["livenessProbe"]["httpGet"]["host"], "::1");
    assert_eq!(
        etcd["metadata"]["annotations"]["kubeadm.kubernetes.io/etcd.advertise-client-urls"],
        "https://[fd00::11]:2379"
    );
    let api = manifest(&files, "cp1", "kube-apiserver");
    assert_eq!(
        flag(&command(&api), "etcd-servers"),
        Some("https://[::1]:2379,https://[fd00::12]:2379,https://[fd00::13]:2379")
    );
    assert_eq!(flag(&command(&api), "advertise-address"), Some("fd00::11"));
    assert_eq!(api["spec"]["containers"][0]["livenessProbe"]["httpGet"]["host"], "fd00::11");
    assert_eq!(
        api["metadata"]["annotations"]["kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint"],
        "[fd00::11]:6443"
    );
    let haproxy = file(&files, "cp1", "/etc/kubernetes/haproxy/haproxy.cfg");
    assert!(haproxy.contains("bind :::8443 v4v6") && haproxy.contains("server cp2 [fd00::12]:6443"), "{haproxy}");
    let kubelet = file(&files, "w1", "/var/lib/kubelet/config.yaml");
    assert!(kubelet.contains("clusterDNS:\n- fd00:10:96::a\n"), "{kubelet}");
    // VRRPv3 (IPv6) has no authentication; keepalived refuses the block.
    let keepalived = file(&files, "cp1", "/etc/kubernetes/keepalived/keepalived.conf");
    assert!(!keepalived.contains("auth_pass") && keepalived.contains("unicast_src_ip fd00::11"), "{keepalived}");
}

#[test]
fn vrrp_priorities_are_distinct_in_inventory_order_and_peers_are_the_others() {
    let files = render(&example_plan());
    let conf = |host| file(&files, host, "/etc/kubernetes/keepalived/keepalived.conf").to_string();
    let value = |text: &str, key: &str| -> String {
        text.lines().find_map(|l| l.trim().strip_prefix(key).map(|v| v.trim().to_string())).unwrap()
    };
    let priorities: Vec<u32> = ["cp1", "cp2", "cp3"].map(|h| value(&conf(h), "priority ").parse().unwrap()).to_vec();
    assert!(priorities.windows(2).all(|w| w[0] > w[1]), "{priorities:?}");
    let cp2 = conf("cp2");
    assert_eq!(value(&cp2, "unicast_src_ip "), "198.18.0.12");
    assert!(cp2.contains("unicast_peer {\n        198.18.0.11\n        198.18.0.13\n    }"), "{cp2}");
    assert!(cp2.contains("auth_pass s3cretpw") && cp2.contains("virtual_router_id 51") && cp2.contains("nopreempt"));
    assert_eq!(cp2.matches("state BACKUP").count(), 1);
}

const KEEPALIVED: &str = "/etc/kubernetes/keepalived/keepalived.conf";
const HAPROXY: &str = "/etc/kubernetes/haproxy/haproxy.cfg";

#[test]
fn load_balancer_configs_are_reloaded_in_place_and_do_not_restart_their_pods() {
    let plan = example_plan();
    let hash = |files: &BTreeMap<String, Vec<File>>, host: &str, pod: &str| {
        manifest(files, host, pod)["metadata"]["annotations"][INPUTS_HASH_ANNOTATION].as_str().unwrap().to_string()
    };
    let base = render(&plan);
    let other_password = host_configs(&plan, &Secrets { vrrp_password: "0ther-pw", hash_key: HASH_KEY }).unwrap();
    let moved = render(&Inventory { extra: "  apiServer: {bindPort: 6444}\n", ..Inventory::ipv4() }.plan());
    let conf = |files: &BTreeMap<String, Vec<File>>, path: &str| file(files, "cp1", path).to_string();
    // The configurations differ...
    assert_ne!(conf(&base, KEEPALIVED), conf(&other_password, KEEPALIVED));
    assert_ne!(conf(&base, HAPROXY), conf(&moved, HAPROXY));
    // ...but the manifests do not: kubeha signals the running programs to reload instead.
    for pod in ["haproxy", "keepalived"] {
        assert_eq!(hash(&base, "cp1", pod), hash(&other_password, "cp1", pod), "{pod}");
        assert_eq!(hash(&base, "cp1", pod), hash(&moved, "cp1", pod), "{pod}");
        assert!(hash(&base, "cp1", pod).len() == 64 && hash(&base, "cp1", pod).bytes().all(|b| b.is_ascii_hexdigit()));
    }
}

#[test]
fn unusable_vrrp_passwords_are_refused() {
    let plan = example_plan();
    for bad in ["", "has space", "quote\"d", "x}"] {
        let err = host_configs(&plan, &Secrets { vrrp_password: bad, hash_key: HASH_KEY }).unwrap_err().to_string();
        assert!(err.contains("VRRP password"), "{err}");
        assert!(bad.is_empty() || !err.contains(bad), "the error shows the password: {err}");
    }
}

// ---------------------------------------------------------------- with the PKI

#[test]
fn cli_render_writes_every_file_with_its_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = dir.path().join("out");
    let inventory = Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/example.yaml");
    let kubeha = |args: &[&str]| {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_kubeha")).args(args).status().unwrap();
        assert!(status.success(), "kubeha {args:?}");
    };
    let (inv, st, o) = (inventory.to_str().unwrap(), state.to_str().unwrap(), out.to_str().unwrap());
    kubeha(&["certs", "generate", "-i", inv, "--state-dir", st]);
    kubeha(&["render", "-i", inv, "--state-dir", st, "--out", o]);
    let plan = example_plan();
    let pki = kubeha::pki::load(&plan, &state).unwrap();
    let rendered = kubeha::render::render(&plan, &pki).unwrap();
    for (host, files) in &rendered {
        assert!(files.iter().any(|f| f.path == Path::new(kubeha::render::CLUSTER_MARKER)));
        for f in files {
            let path = out.join(host).join(f.path.strip_prefix("/").unwrap());
            assert_eq!(std::fs::read(&path).unwrap(), f.content, "{}", path.display());
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777, f.mode, "{}", path.display());
        }
    }
    let before: Vec<u8> = std::fs::read(out.join("cp1/etc/kubernetes/manifests/etcd.yaml")).unwrap();
    kubeha(&["render", "-i", inv, "--state-dir", st, "--out", o]);
    assert_eq!(std::fs::read(out.join("cp1/etc/kubernetes/manifests/etcd.yaml")).unwrap(), before);
}
