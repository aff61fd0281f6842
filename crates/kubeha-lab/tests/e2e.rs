//! End to end: `kubeha init` (the built binary, see `support::kubeha_bin`) against the lab
//! (network-namespace hosts with real sshd, etcd, haproxy and keepalived; stand-ins for the
//! kubelet and the Kubernetes components), checked with the real `etcdctl`, `curl` and
//! `kubectl`. Needs root (skipped otherwise); runs one lab at a time. Labs are
//! named `e*` on subnets 198.18.40-49.0/24 in `/tmp/kubeha-e2e/<name>` (kept after a failure for
//! its logs; a leftover lab there is taken down first).

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kubeha_lab::{Lab, LabSpec, LabUser, wait_for};
use sha2::{Digest, Sha256};
use support::cluster::{assert_ok, curl_healthz, etcdctl_at, fresh_lab, kubeha_with, state, text, vip_holders};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn lab(name: &str, subnet: u8, user: LabUser) -> Lab {
    assert!(nix::unistd::geteuid().is_root(), "the end-to-end tests need root (network namespaces)");
    let mut spec = LabSpec::new(name, subnet);
    spec.user = user;
    fresh_lab(spec)
}

fn init(lab: &Lab) -> Output {
    kubeha_with(lab, &lab.inventory_path(), &["init", "--timeout", "3m"])
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).stdin(Stdio::null()).output().unwrap()
}

/// `kubectl get --raw PATH` through the VIP with the state directory's super-admin.conf.
fn kubectl_json(lab: &Lab, path: &str) -> serde_json::Value {
    let kubeconfig = state(lab).join("super-admin.conf");
    let out = run("kubectl", &["--kubeconfig", &kubeconfig.to_string_lossy(), "get", "--raw", path]);
    assert_ok(&out, &format!("kubectl get --raw {path}"));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{path}: {e}: {}", text(&out)))
}

fn etcd_endpoints(lab: &Lab, except: Option<&str>) -> Vec<String> {
    lab.hosts()
        .iter()
        .filter(|h| h.control_plane && Some(h.name.as_str()) != except)
        .map(|h| format!("https://{}:2379", h.address))
        .collect()
}

/// Every file kubeha manages on a host, with its SHA-256, mode and owner.
fn host_files(lab: &Lab, host: &str) -> BTreeMap<PathBuf, (String, u32, u32)> {
    let mut out = BTreeMap::new();
    for root in ["/etc/kubernetes", "/var/lib/kubelet"] {
        let base = lab.host_path(host, root).unwrap();
        walk(&base, &mut |path| {
            let meta = std::fs::metadata(path).unwrap();
            let hash = hex::encode(Sha256::digest(std::fs::read(path).unwrap()));
            let rel = Path::new(root).join(path.strip_prefix(&base).unwrap());
            out.insert(rel, (hash, meta.permissions().mode() & 0o7777, meta.uid()));
        });
    }
    out
}

/// The processes of `host` running a file write (`timeout` and `sh`, whose arguments name the
/// step `kubeha_put_...`), with their names.
fn put_scripts(lab: &Lab, host: &str) -> Vec<(i32, String)> {
    let Ok(ns) = std::fs::metadata(Path::new("/run/netns").join(lab.netns(host).unwrap())) else { return Vec::new() };
    let ns = format!("net:[{}]", ns.ino());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        if !String::from_utf8_lossy(&cmdline).contains("kubeha_put_") {
            continue;
        }
        if std::fs::read_link(entry.path().join("ns/net")).is_ok_and(|n| n.to_string_lossy() == ns) {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push((pid, comm.trim().to_string()));
        }
    }
    found
}

/// Sets `user`'s login shell on one lab host: its own `/etc/passwd` (a bind-mounted copy,
/// rewritten in place so the mount keeps it).
fn set_login_shell(lab: &Lab, host: &str, user: &str, shell: &str) {
    let path = lab.host_path(host, "/etc/passwd").unwrap();
    let passwd = std::fs::read_to_string(&path).unwrap();
    let changed: String = passwd
        .lines()
        .map(|line| match line.rsplit_once(':') {
            Some((head, _)) if line.split(':').next() == Some(user) => format!("{head}:{shell}\n"),
            _ => format!("{line}\n"),
        })
        .collect();
    assert_ne!(passwd, changed, "{host} has no user {user}");
    std::fs::write(&path, changed).unwrap();
}

fn walk(dir: &Path, f: &mut impl FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            walk(&path, f);
        } else {
            f(&path);
        }
    }
}

/// (pod, pid, restarts) of every static pod on every host.
fn pods(lab: &Lab) -> Vec<(String, String, Option<u32>, u32)> {
    let mut out = Vec::new();
    for h in lab.hosts() {
        for p in lab.pods(&h.name).unwrap() {
            out.push((h.name.clone(), p.name.clone(), p.pid, p.restarts));
        }
    }
    out
}

/// Base64 body lines of every private key in the state directory (and in its kubeconfigs).
fn key_material(lab: &Lab) -> Vec<String> {
    let mut lines = Vec::new();
    walk(&state(lab), &mut |path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut inside = false;
        for line in text.lines() {
            if line.contains("PRIVATE KEY-----") {
                inside = line.contains("BEGIN");
                continue;
            }
            if inside && line.len() >= 40 {
                lines.push(line.to_string());
            }
            if let Some(data) = line.trim().strip_prefix("client-key-data: ") {
                lines.push(data[..48.min(data.len())].to_string());
            }
        }
    });
    lines
}

#[test]
fn init_brings_up_an_ha_control_plane_that_survives_failover() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let lab = lab("ea", 40, LabUser::Root);
    // What a kubeha run killed mid-write leaves on a host before its marker: a temporary file,
    // here in the worker's manifests directory. The run that locks the host removes it first;
    // the host is still fresh, and written without comparing.
    let manifests = lab.host_path("w1", "/etc/kubernetes/manifests").unwrap();
    std::fs::create_dir_all(&manifests).unwrap();
    let stale = manifests.join(".kubeha-etcd.yaml.0011223344556677.tmp");
    std::fs::write(&stale, "partial").unwrap();

    let out = init(&lab);
    assert_ok(&out, "kubeha init");
    assert!(String::from_utf8_lossy(&out.stdout).contains("is up"), "{}", text(&out));
    assert!(!stale.exists(), "an interrupted run's temporary file is still there");

    // etcd: three started, healthy members, asked over TLS with the apiserver's client cert.
    let all = etcd_endpoints(&lab, None);
    let health = etcdctl_at(&lab, &all, &["endpoint", "health"]);
    assert_ok(&health, "etcdctl endpoint health");
    assert_eq!(text(&health).matches("is healthy").count(), 3, "{}", text(&health));
    let members = etcdctl_at(&lab, &all[..1], &["member", "list"]);
    assert_ok(&members, "etcdctl member list");
    assert_eq!(text(&members).matches(", started, ").count(), 3, "{}", text(&members));

    // The VIP: held by exactly one control plane, and the endpoint answers through it.
    assert_eq!(vip_holders(&lab).len(), 1, "VIP holders: {:?}", vip_holders(&lab));
    let curl = curl_healthz(&lab);
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "ok", "{}", text(&curl));
    let admin = state(&lab).join("admin.conf");
    let kubectl = run("kubectl", &["--kubeconfig", &admin.to_string_lossy(), "get", "--raw", "/healthz"]);
    assert_eq!(String::from_utf8_lossy(&kubectl.stdout), "ok", "{}", text(&kubectl));

    // `kubeha kubeconfig`: the admin's as kubeha keeps it, and a new user's from the cluster CA,
    // through the VIP and straight at one apiserver.
    let dir = tempfile::tempdir().unwrap();
    let cp1 = format!("https://{}:6443", lab.host("cp1").unwrap().address);
    for (name, args) in [
        ("admin", vec!["kubeconfig"]),
        ("alice", vec!["kubeconfig", "--user", "alice", "--group", "kubeadm:cluster-admins", "--validity", "1h"]),
        ("alice-cp1", vec!["kubeconfig", "--user", "alice", "--server", &cp1]),
    ] {
        let out = kubeha_with(&lab, &lab.inventory_path(), &args);
        assert_ok(&out, &format!("kubeha {}", args.join(" ")));
        let file = dir.path().join(name);
        std::fs::write(&file, &out.stdout).unwrap();
        let kubectl = run("kubectl", &["--kubeconfig", &file.to_string_lossy(), "get", "--raw", "/healthz"]);
        assert_eq!(String::from_utf8_lossy(&kubectl.stdout), "ok", "{name}: {}", text(&kubectl));
    }
    // init's result as JSON: a re-run changes nothing.
    let out = kubeha_with(&lab, &lab.inventory_path(), &["init", "--dry-run", "-o", "json"]);
    assert_ok(&out, "kubeha init --dry-run -o json");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((summary["dryRun"].as_bool(), summary["changed"].as_bool()), (Some(true), Some(false)), "{summary}");
    assert_eq!(summary["hosts"].as_array().unwrap().len(), lab.hosts().len(), "{summary}");

    // The cluster objects: in the apiserver (the stand-in stores them in etcd), applied by
    // kubeha; read with the real kubectl through the VIP as super-admin.conf.
    assert!(text(&out).contains("cluster objects: "), "{}", text(&out));
    let admins = kubectl_json(&lab, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kubeadm:cluster-admins");
    assert_eq!(admins["roleRef"]["name"], "cluster-admin", "{admins}");
    assert_eq!(admins["subjects"][0]["name"], "kubeadm:cluster-admins", "{admins}");
    assert_eq!(admins["metadata"]["managedFields"][0]["manager"], "kubeha", "{admins}");
    let dns = kubectl_json(&lab, "/api/v1/namespaces/kube-system/services/kube-dns");
    assert_eq!(dns["spec"]["clusterIP"], "10.96.0.10", "{dns}");
    let proxy = kubectl_json(&lab, "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy");
    assert_eq!(proxy["spec"]["template"]["spec"]["containers"][0]["image"], "registry.k8s.io/kube-proxy:v1.31.4");
    let info = kubectl_json(&lab, "/api/v1/namespaces/kube-public/configmaps/cluster-info");
    assert!(info["data"]["kubeconfig"].as_str().unwrap().contains("certificate-authority-data"), "{info}");
    assert!(
        kubectl_json(&lab, "/api/v1/namespaces/kube-system/configmaps/kubeadm-config")["data"]["ClusterConfiguration"]
            .as_str()
            .unwrap()
            .contains("kubernetesVersion: v1.31.4")
    );
    // Every node knows its name and address from kubeadm-flags.env.
    for h in lab.hosts() {
        let flags =
            std::fs::read_to_string(lab.host_path(&h.name, "/var/lib/kubelet/kubeadm-flags.env").unwrap()).unwrap();
        assert!(flags.contains(&format!("--hostname-override={} --node-ip={}", h.name, h.address)), "{flags}");
    }

    // Remote secrets are 0600 and root's; workers hold no CA key.
    for h in lab.hosts() {
        let files = host_files(&lab, &h.name);
        assert!(files.len() >= if h.control_plane { 30 } else { 4 }, "{}: {files:?}", h.name);
        for (path, (_, mode, uid)) in &files {
            let name = path.to_string_lossy();
            if name.ends_with(".key") || name.ends_with(".conf") {
                assert_eq!(*mode, 0o600, "{}:{name} has mode {mode:o}", h.name);
            }
            assert_eq!(*uid, 0, "{}:{name} is not root's", h.name);
        }
        if !h.control_plane {
            assert!(!files.keys().any(|p| p.to_string_lossy().ends_with("ca.key")), "a worker got a CA key");
        }
    }

    // No private key material in any command line a host received, nor in kubeha's output.
    let secrets = key_material(&lab);
    assert!(secrets.len() > 20, "found too little key material to check: {}", secrets.len());
    let output = text(&out);
    for h in lab.hosts() {
        let commands = lab.ssh_command_log(&h.name).unwrap();
        assert!(!commands.is_empty(), "{}: the command log is empty", h.name);
        for command in &commands {
            // kubeha's scripts travel base64-encoded: check the line and the script it carries.
            let script = kubeha::transport::shell::unwrap(command).unwrap_or_default();
            for text in [command, &script] {
                assert!(!text.contains("PRIVATE KEY"), "{}: key in a command line: {text}", h.name);
                for s in &secrets {
                    assert!(!text.contains(s.as_str()), "{}: key material in a command line", h.name);
                }
            }
        }
        let scripts = commands.iter().filter_map(|c| kubeha::transport::shell::unwrap(c)).collect::<Vec<_>>();
        assert!(scripts.iter().any(|s| s.starts_with("# kubeha put ")), "{}: no write decoded", h.name);
    }
    for s in &secrets {
        assert!(!output.contains(s.as_str()), "key material in kubeha's output");
    }

    // A re-run changes nothing: same bytes everywhere, no pod restarted, and it says so.
    let before: Vec<_> = lab.hosts().iter().map(|h| host_files(&lab, &h.name)).collect();
    let pods_before = pods(&lab);
    assert!(pods_before.iter().filter(|p| p.2.is_some()).count() >= 18, "{pods_before:?}");
    let again = init(&lab);
    assert_ok(&again, "second kubeha init");
    assert!(String::from_utf8_lossy(&again.stdout).contains("unchanged"), "{}", text(&again));
    assert!(text(&again).contains("cluster objects: 0 created, 0 updated, "), "{}", text(&again));
    let after: Vec<_> = lab.hosts().iter().map(|h| host_files(&lab, &h.name)).collect();
    assert_eq!(before, after, "a re-run changed files");
    assert_eq!(pods_before, pods(&lab), "a re-run restarted pods");

    // An object changed by hand (here straight in etcd, where the apiserver keeps it) is
    // reported and brought back.
    let key = "/registry/configmaps/kube-system/coredns";
    let stored = etcdctl_at(&lab, &all[..1], &["get", key, "--print-value-only"]);
    let mut coredns: serde_json::Value = serde_json::from_slice(&stored.stdout).expect("the ConfigMap is JSON in etcd");
    coredns["data"]["Corefile"] = serde_json::json!(".:53 {\n    forward . 192.0.2.1\n}\n");
    assert_ok(&etcdctl_at(&lab, &all[..1], &["put", key, &coredns.to_string()]), "editing the ConfigMap by hand");
    let third = init(&lab);
    assert_ok(&third, "init after a hand edit");
    assert!(
        text(&third).contains("ConfigMap kube-system/coredns differed from kubeha's and was converged"),
        "{}",
        text(&third)
    );
    let corefile = kubectl_json(&lab, "/api/v1/namespaces/kube-system/configmaps/coredns");
    assert!(corefile["data"]["Corefile"].as_str().unwrap().contains("kubernetes cluster.local"), "{corefile}");

    // Failover: cut the VIP holder off the bridge.
    let holder = vip_holders(&lab).pop().unwrap();
    let cut_at = Instant::now();
    lab.cut(&holder).unwrap();
    let new_holder =
        wait_for(Duration::from_secs(30), "the VIP to move", || vip_holders(&lab).into_iter().find(|h| *h != holder))
            .unwrap();
    println!("VIP moved from {holder} to {new_holder} in {:.1}s", cut_at.elapsed().as_secs_f64());
    wait_for(Duration::from_secs(30), "the endpoint to answer through the new holder", || {
        (String::from_utf8_lossy(&curl_healthz(&lab).stdout) == "ok").then_some(())
    })
    .unwrap();
    println!("endpoint answered again {:.1}s after the cut", cut_at.elapsed().as_secs_f64());
    let survivors = etcd_endpoints(&lab, Some(&holder));
    let put = etcdctl_at(&lab, &survivors, &["put", "kubeha-e2e", "quorum"]);
    assert_ok(&put, "a write with one member cut off");
    let get = etcdctl_at(&lab, &survivors, &["get", "kubeha-e2e", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "quorum");
    // Clients retry a failed request, as client-go does: a request that was on its way to the
    // cut host when haproxy marked it down is closed, and the next attempt goes elsewhere.
    for _ in 0..5 {
        let mut attempts = Vec::new();
        while attempts.len() < 3 {
            let curl = curl_healthz(&lab);
            if String::from_utf8_lossy(&curl.stdout) == "ok" {
                break;
            }
            attempts.push(text(&curl));
        }
        assert!(attempts.len() < 3, "the endpoint did not answer during the outage: {attempts:?}");
    }

    // Bring it back: it rejoins etcd, and still only one host holds the VIP.
    lab.reconnect(&holder).unwrap();
    let back = vec![format!("https://{}:2379", lab.host(&holder).unwrap().address)];
    wait_for(Duration::from_secs(60), "the member to rejoin", || {
        let h = etcdctl_at(&lab, &back, &["endpoint", "health"]);
        h.status.success().then_some(())
    })
    .unwrap();
    let get = etcdctl_at(&lab, &back, &["get", "kubeha-e2e", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "quorum", "the rejoined member caught up");
    wait_for(Duration::from_secs(30), "a single VIP holder", || (vip_holders(&lab).len() == 1).then_some(())).unwrap();
    let health = etcdctl_at(&lab, &all, &["endpoint", "health"]);
    assert_eq!(text(&health).matches("is healthy").count(), 3, "{}", text(&health));
    assert_ok(&init(&lab), "init after the failover");

    // Init does not add or remove etcd members: dropping a control plane is refused up front.
    let inventory = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let cp3_line = inventory.lines().find(|l| l.contains("name: cp3")).unwrap().to_string();
    let smaller = lab.dir().join("two-control-planes.yaml");
    std::fs::write(
        &smaller,
        inventory.replace(&format!("{cp3_line}\n"), "").replace("etcd: {", "etcd: {allowEvenMemberCount: true, "),
    )
    .unwrap();
    let out = kubeha_with(&lab, &smaller, &["init"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("init does not add, remove or replace etcd members"), "{}", text(&out));

    // An upgrade restarts the control planes one at a time, each healthy before the next.
    let upgraded = lab.dir().join("upgraded.yaml");
    std::fs::write(&upgraded, inventory.replace("kubernetesVersion: v1.31.4", "kubernetesVersion: v1.31.5")).unwrap();
    let dry = kubeha_with(&lab, &upgraded, &["init", "--dry-run"]);
    assert_ok(&dry, "dry run of the upgrade");
    let dry_out = String::from_utf8_lossy(&dry.stdout);
    assert!(dry_out.contains("cp1: would write /etc/kubernetes/manifests/kube-apiserver.yaml"), "{dry_out}");
    assert!(!dry_out.contains("etcd.yaml"), "etcd's image did not change: {dry_out}");
    assert_eq!(pods_before.len(), pods(&lab).len());
    let holder = vip_holders(&lab).pop().unwrap();
    let out = kubeha_with(&lab, &upgraded, &["init", "--timeout", "3m"]);
    assert_ok(&out, "init with a new Kubernetes version");
    let mut started = Vec::new();
    for cp in ["cp1", "cp2", "cp3"] {
        let pod = lab.pod(cp, "kube-apiserver").unwrap().unwrap();
        assert!(pod.running, "{cp}: {pod:?}");
        let log = std::fs::read_to_string(lab.pod_log(cp, "kube-apiserver").unwrap()).unwrap();
        assert!(log.contains("v1.31.5"), "{cp}'s apiserver did not restart with the new image");
        started.push((pod.started_at.unwrap(), cp));
    }
    // The next host is written only after the kubelet sync (3 s) and the health checks of the one
    // before; the lab's kubelet notices a manifest within a second of its write. The VIP holder
    // goes last, so the VIP moves at most once.
    started.sort();
    assert_eq!(started[2].1, holder, "the VIP holder was not restarted last: {started:?}");
    for pair in started.windows(2) {
        let gap = pair[1].0.duration_since(pair[0].0).unwrap_or_default();
        assert!(gap >= Duration::from_secs(2), "apiservers restarted together ({gap:?} apart): {started:?}");
    }
    let curl = curl_healthz(&lab);
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "ok", "{}", text(&curl));

    // A certificate-only change (a new name on every apiserver certificate) restarts exactly the
    // pods that mount the new certificates, one control plane at a time; etcd keeps running.
    let renamed = lab.dir().join("renamed.yaml");
    let with_san = std::fs::read_to_string(&upgraded).unwrap().replace(
        "certificates: {keyAlgorithm: ecdsa-p256}",
        "certificates: {keyAlgorithm: ecdsa-p256, extraSANs: [api.e2e.test]}",
    );
    std::fs::write(&renamed, with_san).unwrap();
    let pods_before = pods(&lab);
    let out = kubeha_with(&lab, &renamed, &["init", "--timeout", "3m"]);
    assert_ok(&out, "init with a new apiserver certificate name");
    let pods_after = pods(&lab);
    let restarted = |name: &str| -> Vec<String> {
        pods_before.iter().zip(&pods_after).filter(|(b, a)| b.1 == name && b != a).map(|(b, _)| b.0.clone()).collect()
    };
    assert_eq!(restarted("kube-apiserver"), ["cp1", "cp2", "cp3"], "{pods_before:?}\n{pods_after:?}");
    assert!(restarted("etcd").is_empty(), "etcd restarted for an apiserver certificate: {pods_after:?}");
    let mut started: Vec<_> = ["cp1", "cp2", "cp3"]
        .iter()
        .map(|cp| lab.pod(cp, "kube-apiserver").unwrap().unwrap().started_at.unwrap())
        .collect();
    started.sort();
    for pair in started.windows(2) {
        let gap = pair[1].duration_since(pair[0]).unwrap_or_default();
        assert!(gap >= Duration::from_secs(2), "apiservers restarted together ({gap:?} apart): {started:?}");
    }
    // Each apiserver serves the new certificate.
    for h in lab.hosts().iter().filter(|h| h.control_plane) {
        let target = format!("{}:6443", h.address);
        let served = lab
            .exec(&h.name, &["sh", "-c", &format!("openssl s_client -connect {target} </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName")])
            .unwrap();
        assert!(String::from_utf8_lossy(&served.stdout).contains("api.e2e.test"), "{}: {}", h.name, text(&served));
    }
    let curl = curl_healthz(&lab);
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "ok", "{}", text(&curl));
    lab.down().unwrap();
}

#[test]
fn faults_are_refused_or_survived_and_a_rerun_converges() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    // Through a non-root user with passwordless sudo, as many operators run it.
    let lab = lab("eb", 41, LabUser::Ops);
    // The operator's login shell is fish on cp1 and tcsh on cp2: kubeha's commands must not
    // depend on it (every init below, the converging one included, goes through them).
    for (host, shell) in [("cp1", "/usr/bin/fish"), ("cp2", "/usr/bin/tcsh")] {
        set_login_shell(&lab, host, lab.ssh_user(), shell);
        let out = lab.ssh_command(host).unwrap().arg("echo $SHELL").stdin(Stdio::null()).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), shell, "{host}: {}", text(&out));
    }
    let inventory = std::fs::read_to_string(lab.inventory_path()).unwrap();
    let write_inventory = |name: &str, text: &str| {
        let path = lab.dir().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let nothing_written = |why: &str| {
        for h in lab.hosts() {
            let files = host_files(&lab, &h.name);
            assert!(files.is_empty(), "{why}: {} received {:?}", h.name, files.keys().collect::<Vec<_>>());
        }
    };

    // An invalid inventory: exit 2, no host touched.
    let bad = write_inventory("bad.yaml", &inventory.replace("role: worker", "role: minion"));
    let out = kubeha_with(&lab, &bad, &["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    nothing_written("invalid inventory");

    // A changed host key is refused, before anything is written.
    let known_hosts = std::fs::read_to_string(lab.known_hosts_file()).unwrap();
    let other = lab.dir().join("other_host_key");
    let _ = std::fs::remove_file(&other);
    assert_ok(&run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", &other.to_string_lossy()]), "ssh-keygen");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let cp2 = lab.host("cp2").unwrap().address.to_string();
    let forged: String = known_hosts
        .lines()
        .map(|l| {
            if l.split_whitespace().next() == Some(cp2.as_str()) {
                format!("{cp2} {}\n", other_pub.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let forged_file = write_inventory("known_hosts.forged", &forged);
    let changed = write_inventory(
        "changed-key.yaml",
        &inventory.replace(&lab.known_hosts_file().to_string_lossy().into_owned(), &forged_file.to_string_lossy()),
    );
    let out = kubeha_with(&lab, &changed, &["init", "--accept-new-host-keys"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("cp2") && msg.to_lowercase().contains("changed"), "{msg}");
    nothing_written("changed host key");

    // An unknown host is refused with its fingerprint, and accepted only when asked.
    let empty = write_inventory("known_hosts.empty", "");
    let unknown = write_inventory(
        "unknown-key.yaml",
        &inventory.replace(&lab.known_hosts_file().to_string_lossy().into_owned(), &empty.to_string_lossy()),
    );
    let out = kubeha_with(&lab, &unknown, &["preflight"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("SHA256:") && text(&out).contains("--accept-new-host-keys"), "{}", text(&out));
    let out = kubeha_with(&lab, &unknown, &["preflight", "--accept-new-host-keys"]);
    assert_ok(&out, "preflight accepting new host keys");
    assert_eq!(std::fs::read_to_string(&empty).unwrap().lines().count(), lab.hosts().len());

    // A wrong key, or a wrong user: a clear authentication error naming user and host.
    let stranger = lab.dir().join("stranger_key");
    let _ = std::fs::remove_file(&stranger);
    assert_ok(&run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", &stranger.to_string_lossy()]), "keygen");
    let wrong_key = write_inventory(
        "wrong-key.yaml",
        &inventory.replace(&lab.identity_file().to_string_lossy().into_owned(), &stranger.to_string_lossy()),
    );
    let out = kubeha_with(&lab, &wrong_key, &["init"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let cp1 = lab.host("cp1").unwrap().address.to_string();
    assert!(text(&out).contains(&format!("ops@{cp1}")) && text(&out).contains("authenticat"), "{}", text(&out));
    let wrong_user = write_inventory("wrong-user.yaml", &inventory.replace("user: ops", "user: nobody"));
    let out = kubeha_with(&lab, &wrong_user, &["init"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains(&format!("nobody@{cp1}")), "{}", text(&out));
    nothing_written("authentication failures");

    // A control plane whose /etc/kubernetes/pki is a symbolic link: refused at preflight (exit 3,
    // naming the host, the path and the fix), nothing written there or anywhere else.
    let elsewhere = lab.dir().join("elsewhere-pki");
    let _ = std::fs::remove_dir_all(&elsewhere);
    std::fs::create_dir(&elsewhere).unwrap();
    let link = lab.host_path("cp3", "/etc/kubernetes/pki").unwrap();
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let out = init(&lab);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("cp3") && msg.contains("/etc/kubernetes/pki is a symbolic link"), "{msg}");
    assert!(msg.contains("replace it with a directory owned by root"), "{msg}");
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0, "something was written through the link");
    std::fs::remove_file(&link).unwrap();
    nothing_written("a symlinked pki directory");

    // sshd killed on cp2 in the middle of the push: a clear error, no half-written file.
    let child = Command::new(support::kubeha_bin())
        .args(["init", "--timeout", "3m", "-i"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(state(&lab))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A host's files go in one command, renamed in a few milliseconds at its end: to cut it
    // mid-write, its script is frozen as soon as it runs (before any rename), then sshd and its
    // sessions are killed (the frozen script with SIGKILL, so even its cleanup trap cannot run).
    let writing = wait_for(Duration::from_secs(60), "kubeha to start writing to cp2", || {
        let found = put_scripts(&lab, "cp2");
        found.iter().any(|(_, comm)| comm == "sh").then_some(found)
    })
    .unwrap();
    for (pid, _) in &writing {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::Signal::SIGSTOP);
    }
    lab.ssh_stop("cp2").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "init succeeded although cp2's sshd was killed:\n{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("cp2") && msg.contains("writing files"), "the error must name the host and step:\n{msg}");
    let rendered = lab.dir().join("rendered");
    let _ = std::fs::remove_dir_all(&rendered);
    assert_ok(&kubeha_with(&lab, &lab.inventory_path(), &["render", "--out", &rendered.to_string_lossy()]), "render");
    let partial = host_files(&lab, "cp2");
    let installed = partial
        .keys()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with(".kubeha-"))
        .filter(|p| *p != Path::new(kubeha::host::layout::HOST_LOCK))
        .count();
    assert!(installed < 37, "cp2 got every file before sshd died; the test proves nothing: {installed}");
    for (path, (hash, _, _)) in &partial {
        // A write whose session outlived the killed sshd by a moment may still have its dot-named
        // temporary file (ignored by the kubelet): its own trap, or the re-run below, removes it.
        // Every file at a real path must be whole.
        if path.file_name().unwrap().to_string_lossy().starts_with(".kubeha-") {
            continue;
        }
        // The run's lock on cp2, which it could not release: the re-run takes it over (its
        // holder, a process of this machine, has ended).
        if path == Path::new(kubeha::host::layout::HOST_LOCK) {
            continue;
        }
        let want = std::fs::read(rendered.join("cp2").join(path.strip_prefix("/").unwrap()))
            .unwrap_or_else(|_| panic!("cp2 has {} which kubeha does not render", path.display()));
        assert_eq!(*hash, hex::encode(Sha256::digest(want)), "cp2:{} is not the complete file", path.display());
    }

    // Once sshd is back, a re-run converges to exactly the rendered files.
    lab.ssh_start("cp2").unwrap();
    assert_ok(&init(&lab), "init after restoring sshd");
    for h in lab.hosts() {
        for (path, (hash, _, _)) in host_files(&lab, &h.name) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(!name.starts_with(".kubeha-"), "temporary file left on {}: {}", h.name, path.display());
            let want = std::fs::read(rendered.join(&h.name).join(path.strip_prefix("/").unwrap())).unwrap();
            assert_eq!(hash, hex::encode(Sha256::digest(want)), "{}:{} differs", h.name, path.display());
        }
    }
    let health = etcdctl_at(&lab, &etcd_endpoints(&lab, None), &["endpoint", "health"]);
    assert_eq!(text(&health).matches("is healthy").count(), 3, "{}", text(&health));

    // Another operator's run holds cp3 (a lock from another machine, valid for an hour): init is
    // refused naming the holder and writes nothing; --force-lock takes the lock over.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let foreign = format!(
        "who: alice@elsewhere\npid: 4242\ncommand: kubeha init\nsince: {now}\nuntil: {}\ntoken: 00ff\n",
        now + 3600
    );
    std::fs::write(lab.host_path("cp3", "/etc/kubernetes/kubeha/lock").unwrap(), &foreign).unwrap();
    let before: Vec<_> = lab.hosts().iter().map(|h| host_files(&lab, &h.name)).collect();
    let out = init(&lab);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("alice@elsewhere"), "{}", text(&out));
    let after: Vec<_> = lab.hosts().iter().map(|h| host_files(&lab, &h.name)).collect();
    assert_eq!(before, after, "a refused run wrote files");
    let out = kubeha_with(&lab, &lab.inventory_path(), &["init", "--timeout", "3m", "--force-lock"]);
    assert_ok(&out, "init --force-lock");
    assert!(!lab.host_path("cp3", "/etc/kubernetes/kubeha/lock").unwrap().exists(), "the lock was not released");

    // Add-ons turned off: kubeha creates none of them and removes none it made before; a CNI
    // manifest named in the inventory is applied after the add-ons.
    let all = etcd_endpoints(&lab, None);
    assert!(kubectl_json(&lab, "/apis/apps/v1/namespaces/kube-system/deployments/coredns")["spec"].is_object());
    let gone = etcdctl_at(&lab, &all[..1], &["del", "/registry/daemonsets/kube-system/kube-proxy"]);
    assert_ok(&gone, "deleting kube-proxy's DaemonSet");
    let cni = write_inventory(
        "cni.yaml",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: e2e-cni, namespace: kube-system}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: e2e-cni, namespace: kube-system}\ndata: {mtu: \"1450\"}\n",
    );
    let without = write_inventory(
        "no-addons.yaml",
        &inventory.replace("  etcd: {", "  addons: {kubeProxy: false, coreDNS: false}\n  etcd: {").replace(
            "dnsDomain: cluster.local}",
            &format!("dnsDomain: cluster.local, cniManifest: {}}}", cni.display()),
        ),
    );
    let out = kubeha_with(&lab, &without, &["init", "--timeout", "3m"]);
    assert_ok(&out, "init with the add-ons off and a CNI manifest");
    let kubeconfig = state(&lab).join("super-admin.conf");
    let missing = run(
        "kubectl",
        &[
            "--kubeconfig",
            &kubeconfig.to_string_lossy(),
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy",
        ],
    );
    assert!(
        !missing.status.success() && text(&missing).contains("NotFound"),
        "kube-proxy was created: {}",
        text(&missing)
    );
    assert!(
        kubectl_json(&lab, "/apis/apps/v1/namespaces/kube-system/deployments/coredns")["spec"].is_object(),
        "CoreDNS was removed"
    );
    assert_eq!(kubectl_json(&lab, "/api/v1/namespaces/kube-system/configmaps/e2e-cni")["data"]["mtu"], "1450");
    assert!(
        kubectl_json(&lab, "/api/v1/namespaces/kube-system/serviceaccounts/e2e-cni")["metadata"]["uid"].is_string()
    );
    lab.down().unwrap();
}
