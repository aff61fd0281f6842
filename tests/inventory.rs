//! `kubeha validate` against good and bad inventories, through the built binary: every bad
//! inventory must fail with exit code 2 and a message naming the field and the reason.

use std::path::Path;
use std::process::Command;

const GOOD: &str = "\
apiVersion: kubeha/v1alpha1
kind: Cluster
metadata: {name: lab}
spec:
  kubernetesVersion: v1.31.4
  controlPlaneEndpoint: 198.18.0.10:8443
  loadBalancer: {type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}
  networking: {podSubnet: 10.244.0.0/16, serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}
  etcd: {version: 3.5.16-0}
  certificates: {keyAlgorithm: ecdsa-p256}
  ssh: {user: root, port: 22, identityFile: ~/.ssh/id_ed25519, knownHostsFile: ~/.ssh/known_hosts}
  hosts:
    - {name: cp1, address: 198.18.0.11, role: control-plane}
    - {name: cp2, address: 198.18.0.12, role: control-plane}
    - {name: cp3, address: 198.18.0.13, role: control-plane}
    - {name: w1,  address: 198.18.0.21, role: worker, ssh: {user: ops}}
";

/// A bad inventory: text replacements applied to `GOOD`, and what the errors must say.
struct Case {
    name: &'static str,
    edits: &'static [(&'static str, &'static str)],
    expect: &'static [&'static str],
}

const CP3: &str = "    - {name: cp3, address: 198.18.0.13, role: control-plane}\n";

const CASES: &[Case] = &[
    Case {
        name: "unknown top-level field",
        edits: &[("kind: Cluster\n", "kind: Cluster\nstatus: {}\n")],
        expect: &["status: unknown field"],
    },
    Case {
        name: "misspelt host field with a suggestion",
        edits: &[("{name: cp1, address:", "{name: cp1, adress:")],
        expect: &[
            "spec.hosts[0].adress: unknown field; did you mean \"address\"?",
            "spec.hosts[0].address: is required",
        ],
    },
    Case {
        name: "wrong apiVersion",
        edits: &[("kubeha/v1alpha1", "kubeha/v2")],
        expect: &["apiVersion: \"kubeha/v2\" is not supported; use \"kubeha/v1alpha1\""],
    },
    Case { name: "wrong kind", edits: &[("kind: Cluster", "kind: Pod")], expect: &["kind: \"Pod\" is not supported"] },
    Case {
        name: "version without the leading v",
        edits: &[("v1.31.4", "1.31.4")],
        expect: &["spec.kubernetesVersion: \"1.31.4\" is not a version like v1.31.4"],
    },
    Case {
        name: "unsupported Kubernetes minor",
        edits: &[("v1.31.4", "v1.40.0")],
        expect: &["spec.kubernetesVersion: v1.40.0 is not supported: kubeha renders Kubernetes v1.31.x to v1.36.x"],
    },
    Case {
        name: "end-of-life Kubernetes minor",
        edits: &[("v1.31.4", "v1.30.9")],
        expect: &["spec.kubernetesVersion: v1.30.9 is not supported", "--allow-unsupported-version"],
    },
    Case {
        name: "bad etcd version",
        edits: &[("3.5.16-0", "latest")],
        expect: &["spec.etcd.version: \"latest\" is not an etcd version like 3.5.16-0"],
    },
    Case {
        name: "bad host address",
        edits: &[("198.18.0.12,", "198.18.0.300,")],
        expect: &["spec.hosts[1].address: \"198.18.0.300\" is not an IP address"],
    },
    Case {
        name: "loopback host address",
        edits: &[("198.18.0.12,", "127.0.0.1,")],
        expect: &["spec.hosts[1].address: 127.0.0.1 cannot be a host address"],
    },
    Case {
        name: "bad CIDR",
        edits: &[("podSubnet: 10.244.0.0/16", "podSubnet: 10.244.0.0/33")],
        expect: &["spec.networking.podSubnet: \"10.244.0.0/33\" is not a CIDR"],
    },
    Case {
        name: "CIDR with host bits",
        edits: &[("podSubnet: 10.244.0.0/16", "podSubnet: 10.244.1.0/16")],
        expect: &["spec.networking.podSubnet: 10.244.1.0/16 has host bits set; did you mean 10.244.0.0/16?"],
    },
    Case {
        name: "duplicate host names",
        edits: &[("{name: cp2,", "{name: cp1,")],
        expect: &["spec.hosts[1].name: \"cp1\" is already the name of spec.hosts[0]"],
    },
    Case {
        name: "duplicate addresses",
        edits: &[("198.18.0.21,", "198.18.0.13,")],
        expect: &["spec.hosts[3].address: 198.18.0.13 is already the address of spec.hosts[2]"],
    },
    Case {
        name: "even number of control planes",
        edits: &[(CP3, "")],
        expect: &["spec.hosts: has 2 control planes: stacked etcd needs an odd number", "allowEvenMemberCount"],
    },
    Case {
        name: "no control plane",
        edits: &[
            ("role: control-plane}", "role: worker}"),
            ("role: control-plane}", "role: worker}"),
            ("role: control-plane}", "role: worker}"),
        ],
        expect: &["spec.hosts: has no host with role control-plane"],
    },
    Case {
        name: "unknown role",
        edits: &[("role: worker,", "role: master,")],
        expect: &["spec.hosts[3].role: \"master\" is not one of control-plane, worker"],
    },
    Case {
        name: "VIP is a host address",
        edits: &[("vip: 198.18.0.10", "vip: 198.18.0.12"), ("198.18.0.10:8443", "198.18.0.12:8443")],
        expect: &["spec.loadBalancer.vip: 198.18.0.12 is the address of spec.hosts[1] (cp2)"],
    },
    Case {
        name: "VIP inside the service subnet",
        edits: &[("vip: 198.18.0.10", "vip: 10.96.0.10"), ("198.18.0.10:8443", "10.96.0.10:8443")],
        expect: &["spec.loadBalancer.vip: 10.96.0.10 is inside spec.networking.serviceSubnet 10.96.0.0/12"],
    },
    Case {
        name: "VIP inside the pod subnet",
        edits: &[("vip: 198.18.0.10", "vip: 10.244.3.3"), ("198.18.0.10:8443", "10.244.3.3:8443")],
        expect: &["spec.loadBalancer.vip: 10.244.3.3 is inside spec.networking.podSubnet 10.244.0.0/16"],
    },
    Case {
        name: "overlapping pod and service subnets",
        edits: &[("podSubnet: 10.244.0.0/16", "podSubnet: 10.96.0.0/16")],
        expect: &["spec.networking.podSubnet: 10.96.0.0/16 overlaps serviceSubnet 10.96.0.0/12"],
    },
    Case {
        name: "host inside the pod subnet",
        edits: &[("198.18.0.21,", "10.244.0.21,")],
        expect: &["spec.hosts[3].address: 10.244.0.21 is inside spec.networking.podSubnet 10.244.0.0/16"],
    },
    Case {
        name: "SSH port out of range",
        edits: &[("port: 22,", "port: 70000,")],
        expect: &["spec.ssh.port: 70000 is out of range 1-65535"],
    },
    Case {
        name: "SSH port zero on one host",
        edits: &[("ssh: {user: ops}", "ssh: {user: ops, port: 0}")],
        expect: &["spec.hosts[3].ssh.port: 0 is out of range 1-65535"],
    },
    Case {
        name: "SSH port not a number",
        edits: &[("port: 22,", "port: ssh,")],
        expect: &["spec.ssh.port: must be a whole number from 1 to 65535, found a string (\"ssh\")"],
    },
    Case {
        name: "endpoint port collides with the apiserver port",
        edits: &[("198.18.0.10:8443", "198.18.0.10:6443")],
        expect: &["spec.controlPlaneEndpoint: port 6443 is also kube-apiserver's bindPort"],
    },
    Case {
        name: "endpoint port is the etcd client port",
        edits: &[("198.18.0.10:8443", "198.18.0.10:2379")],
        expect: &["spec.controlPlaneEndpoint: port 2379 is the etcd client port"],
    },
    Case {
        name: "endpoint is not the VIP",
        edits: &[("198.18.0.10:8443", "198.18.0.9:8443")],
        expect: &["spec.controlPlaneEndpoint: host 198.18.0.9 is not the VIP 198.18.0.10"],
    },
    Case {
        name: "endpoint without a port",
        edits: &[("198.18.0.10:8443", "198.18.0.10")],
        expect: &["spec.controlPlaneEndpoint: \"198.18.0.10\" needs a port"],
    },
    Case {
        name: "unknown load balancer type",
        edits: &[("type: keepalived-haproxy", "type: metallb")],
        expect: &["spec.loadBalancer.type: \"metallb\" is not one of keepalived-haproxy, external, dns"],
    },
    Case {
        name: "dns load balancer with an address endpoint",
        edits: &[("{type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}", "{type: dns}"), (":8443", ":6443")],
        expect: &["spec.controlPlaneEndpoint: 198.18.0.10 is an address, but loadBalancer type dns needs a DNS name"],
    },
    Case {
        name: "VIP given for an external load balancer",
        edits: &[("type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0", "type: external, vip: 198.18.0.10")],
        expect: &["spec.loadBalancer.vip: does not apply to type external"],
    },
    Case {
        name: "unknown key algorithm",
        edits: &[("keyAlgorithm: ecdsa-p256", "keyAlgorithm: dsa")],
        expect: &["spec.certificates.keyAlgorithm: \"dsa\" is not one of ecdsa-p256, rsa-2048, rsa-3072, rsa-4096"],
    },
    Case {
        name: "leaf validity longer than the CA's",
        edits: &[("keyAlgorithm: ecdsa-p256", "keyAlgorithm: ecdsa-p256, validity: 20y")],
        expect: &["spec.certificates.validity: ", "is longer than caValidity 3650d"],
    },
    Case {
        name: "non-root user without sudo",
        edits: &[("ssh: {user: ops}", "ssh: {user: ops, sudo: false}")],
        expect: &["spec.hosts[3].ssh.sudo: user \"ops\" is not root, so kubeha needs passwordless sudo"],
    },
    Case {
        name: "upper-case host name",
        edits: &[("{name: cp1,", "{name: CP1,")],
        expect: &["spec.hosts[0].name: \"CP1\" is not a valid node name"],
    },
    Case {
        name: "bad extra SAN",
        edits: &[(
            "keyAlgorithm: ecdsa-p256",
            "keyAlgorithm: ecdsa-p256, extraSANs: [\"api.example.com\", \"bad name\"]",
        )],
        expect: &["spec.certificates.extraSANs[1]: \"bad name\" is not a valid DNS name"],
    },
    Case {
        name: "an interface name that would break keepalived.conf",
        edits: &[("interface: eth0}", "interface: \"eth0\\n}\\nvrrp_script x {\"}")],
        expect: &["spec.loadBalancer.interface: \"eth0\\n}\\nvrrp_script x {\" is not a network interface name"],
    },
    Case {
        name: "hosts is not a list",
        edits: &[("  hosts:\n", "  hosts: cp1\n  oldHosts:\n")],
        expect: &["spec.hosts: must be a list, found a string", "spec.oldHosts: unknown field"],
    },
];

fn kubeha() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kubeha"))
}

fn validate(dir: &Path, text: &str) -> std::process::Output {
    let path = dir.join("inventory.yaml");
    std::fs::write(&path, text).unwrap();
    kubeha().args(["validate", "-i"]).arg(&path).output().unwrap()
}

fn apply(edits: &[(&str, &str)]) -> String {
    let mut text = GOOD.to_string();
    for (from, to) in edits {
        assert!(text.contains(from), "edit {from:?} does not apply");
        text = text.replacen(from, to, 1);
    }
    text
}

#[test]
fn the_good_inventory_validates() {
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path(), GOOD);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("endpoint: https://198.18.0.10:8443"), "{stdout}");
    assert!(stdout.contains("etcd members (3): cp1=https://198.18.0.11:2380"), "{stdout}");
    assert!(stdout.contains("w1    198.18.0.21  worker         ops@198.18.0.21:22 (sudo)"), "{stdout}");
}

#[test]
fn every_bad_inventory_names_its_field_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in CASES {
        let out = validate(dir.path(), &apply(case.edits));
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) {
            failures.push(format!("{}: exit {:?}, stderr:\n{stderr}", case.name, out.status.code()));
        }
        for want in case.expect {
            if !stderr.contains(want) {
                failures.push(format!("{}: missing {want:?} in:\n{stderr}", case.name));
            }
        }
        if !stderr.contains(&dir.path().join("inventory.yaml").display().to_string()) {
            failures.push(format!("{}: the message does not name the file:\n{stderr}", case.name));
        }
    }
    assert!(CASES.len() >= 20);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn all_problems_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = apply(&[
        ("v1.31.4", "v1.31"),
        ("port: 22,", "port: 0,"),
        ("{name: cp2,", "{name: cp1,"),
        ("podSubnet: 10.244.0.0/16", "podSubnet: 10.96.0.0/16"),
    ]);
    let out = validate(dir.path(), &text);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("has 4 problems:"), "{stderr}");
    for want in ["spec.kubernetesVersion", "spec.ssh.port", "spec.hosts[1].name", "spec.networking.podSubnet"] {
        assert!(stderr.contains(want), "missing {want}: {stderr}");
    }
}

#[test]
fn an_even_member_count_is_allowed_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let text = apply(&[(CP3, ""), ("version: 3.5.16-0}", "version: 3.5.16-0, allowEvenMemberCount: true}")]);
    let out = validate(dir.path(), &text);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn yaml_syntax_errors_give_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let out = validate(dir.path(), &GOOD.replace("  hosts:\n", "  hosts: [\n"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("is not valid YAML: line "), "{stderr}");

    let dup = GOOD.replace("  etcd:", "  kubernetesVersion: v1.30.0\n  etcd:");
    let out = validate(dir.path(), &dup);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("duplicate mapping key: kubernetesVersion"), "{stderr}");
}

#[test]
fn a_missing_inventory_is_bad_input() {
    let out = kubeha().args(["validate", "-i", "/nonexistent/inventory.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read inventory /nonexistent/inventory.yaml"));
}

#[test]
fn json_output_is_the_resolved_plan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, GOOD).unwrap();
    let out = kubeha().args(["validate", "-o", "json", "-i"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["hosts"][3]["ssh"]["user"], "ops");
    assert_eq!(plan["hosts"][3]["ssh"]["sudo"], true);
    assert_eq!(plan["hosts"][0]["ssh"]["sudo"], false);
    assert_eq!(plan["loadBalancer"]["type"], "keepalived-haproxy");
    assert_eq!(plan["certificates"]["validity"], "365d");
    let home = std::env::var("HOME").unwrap();
    assert_eq!(plan["hosts"][0]["ssh"]["identityFile"], format!("{home}/.ssh/id_ed25519"));
}

#[test]
fn a_closed_stdout_ends_the_output_quietly_with_the_commands_own_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, GOOD).unwrap();
    for format in ["json", "text"] {
        // The reading end is gone before kubeha writes: every write meets a closed pipe.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = kubeha()
            .args(["validate", "-o", format, "-i"])
            .arg(&path)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {stderr}");
        assert!(stderr.is_empty(), "{format}: {stderr}");
    }
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, GOOD.replace("v1.31.4", "v1.31")).unwrap();
    let out = kubeha().args(["validate", "-i"]).arg(&bad).stdout(writer).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn quiet_and_verbose_are_global_and_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, GOOD).unwrap();
    let out = kubeha().args(["-q", "validate", "-i"]).arg(&path).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kubeha().args(["validate", "-vv", "-i"]).arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = kubeha().args(["-q", "-v", "validate", "-i"]).arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn an_unsupported_version_is_rendered_only_when_allowed_and_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, GOOD.replace("v1.31.4", "v1.37.0").replace("  etcd: {version: 3.5.16-0}\n", "")).unwrap();
    let out = kubeha().args(["validate", "-i"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("v1.37.0 is not supported: kubeha renders Kubernetes v1.31.x to v1.36.x"), "{stderr}");
    let out = kubeha().args(["validate", "--allow-unsupported-version", "-i"]).arg(&path).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("WARN") && stderr.contains("rendering it with kubeadm v1.36's rules"), "{stderr}");
    // The newest row's etcd, since the inventory names none.
    assert!(stdout.contains("Kubernetes v1.37.0, etcd 3.6.8-0"), "{stdout}");
    assert!(stdout.contains("rendered with kubeadm v1.36's rules"), "{stdout}");
    let out = kubeha().args(["-q", "validate", "--allow-unsupported-version", "-i"]).arg(&path).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}
