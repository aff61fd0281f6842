//! End to end: `kubeha certs rotate-ca` (the built binary) against a lab of three control planes
//! and a worker while clients keep using the cluster: a `/healthz` loop through the VIP (a new
//! TLS connection each time, verified against the state directory's `pki/ca.crt`, which holds
//! the bundle a client updated for the rotation holds) and an etcd write/read loop with the
//! state directory's apiserver-etcd-client certificate and `etcd/ca.crt`. Then a rotation whose
//! process is killed in the middle of a stage, and the re-run that continues it there. Needs
//! root (skipped otherwise). Labs `ca*` on subnets 198.18.60-64.0/24 in `/tmp/kubeha-e2e/<name>`
//! (kept after a failure for its logs).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use kubeha::pki::expiry::{Signers, describe};
use kubeha_lab::{Lab, LabSpec, wait_for};
use support::cluster::*;

const CAS: [&str; 3] = ["pki/ca.crt", "pki/etcd/ca.crt", "pki/front-proxy-ca.crt"];

/// The DER of every certificate in PEM text.
fn ders(pem: &[u8]) -> Vec<Vec<u8>> {
    let text = String::from_utf8_lossy(pem);
    text.split("-----BEGIN CERTIFICATE-----")
        .skip(1)
        .filter_map(|block| {
            let body: String = block.split("-----END CERTIFICATE-----").next()?.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD.decode(body).ok()
        })
        .collect()
}

/// Every certificate a host trusts or presents under /etc/kubernetes (kubeha's backups
/// aside): PEM files, and kubeconfigs' CA and client data, by path.
fn host_certificates(lab: &Lab, host: &str) -> BTreeMap<String, Vec<Vec<u8>>> {
    let base = lab.host_path(host, "/etc/kubernetes").unwrap();
    let mut out = BTreeMap::new();
    let mut stack = vec![base.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = Path::new("/etc/kubernetes").join(path.strip_prefix(&base).unwrap()).display().to_string();
            if entry.file_type().unwrap().is_dir() {
                if !name.ends_with("/kubeha") {
                    stack.push(path);
                }
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let found = if name.ends_with(".conf") {
                let text = String::from_utf8_lossy(&bytes).into_owned();
                text.lines()
                    .filter_map(|l| {
                        let l = l.trim();
                        l.strip_prefix("certificate-authority-data:").or(l.strip_prefix("client-certificate-data:"))
                    })
                    .flat_map(|data| ders(&base64::engine::general_purpose::STANDARD.decode(data.trim()).unwrap()))
                    .collect()
            } else {
                ders(&bytes)
            };
            if !found.is_empty() {
                out.insert(name, found);
            }
        }
    }
    out
}

fn read_cas(lab: &Lab) -> Vec<Vec<u8>> {
    CAS.iter().map(|f| std::fs::read(state(lab).join(f)).unwrap()).collect()
}

/// The old CAs are on no host, every certificate there chains to the state directory's (new)
/// CAs, and the cluster works with them: kubectl with admin.conf through the VIP, etcd with
/// three healthy members.
fn assert_rotated(lab: &Lab, old_cas: &[Vec<u8>]) {
    let old: Vec<Vec<u8>> = old_cas.iter().flat_map(|pem| ders(pem)).collect();
    let signers = Signers::read(&state(lab));
    let mut checked = 0;
    for h in lab.hosts() {
        for (path, certs) in host_certificates(lab, &h.name) {
            for der in &certs {
                assert!(!old.contains(der), "{}:{path} still holds an old CA", h.name);
                let pem = format!(
                    "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                    base64::engine::general_purpose::STANDARD.encode(der)
                );
                let info = describe(pem.as_bytes(), &signers).unwrap();
                assert!(info.signer.is_some(), "{}:{path} ({}) does not chain to a current CA", h.name, info.subject);
                checked += 1;
            }
        }
    }
    println!("{checked} certificates on the hosts checked: none is an old CA, each chains to a new one");
    let admin = state(lab).join("admin.conf");
    let kubectl = Command::new("kubectl")
        .args(["--kubeconfig", &admin.to_string_lossy(), "get", "--raw", "/healthz"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&kubectl.stdout), "ok", "{}", text(&kubectl));
    // Nodes joining later read the cluster CA from kube-public/cluster-info (the stand-in lets
    // only system:masters read objects: super-admin.conf).
    let super_admin = state(lab).join("super-admin.conf");
    let info = Command::new("kubectl")
        .args(["--kubeconfig", &super_admin.to_string_lossy(), "get", "configmap", "cluster-info", "-n", "kube-public"])
        .args(["-o", "jsonpath={.data.kubeconfig}"])
        .output()
        .unwrap();
    let shown = text(&info);
    let info = String::from_utf8_lossy(&info.stdout).into_owned();
    let data = info.lines().find_map(|l| l.trim().strip_prefix("certificate-authority-data:")).expect(&shown);
    let published = base64::engine::general_purpose::STANDARD.decode(data.trim()).unwrap();
    assert_eq!(ders(&published), ders(&std::fs::read(state(lab).join("pki/ca.crt")).unwrap()), "cluster-info");
    let health = etcdctl(lab, &["endpoint", "health"]);
    assert_eq!(text(&health).matches("is healthy").count(), 3, "{}", text(&health));
    for cp in control_planes(lab) {
        let served = served_serial(lab, &cp);
        let on_disk = &certificates(lab, &cp)["/etc/kubernetes/pki/apiserver.crt"].0;
        assert_eq!(serial_hex(&served), serial_hex(on_disk), "{cp} serves an old certificate");
    }
}

#[test]
fn rotate_all_cas_under_load_then_a_killed_rotation_resumes_at_its_stage() {
    if !support::require_root() {
        return;
    }
    let lab = fresh_lab(LabSpec::new("caa", 60));
    assert_ok(&kubeha(&lab, &["init", "--timeout", "3m"]), "kubeha init");
    let old_cas = read_cas(&lab);
    let cp1_before = certificates(&lab, "cp1");

    // The dry run lists the three stages and writes nothing.
    let dry = kubeha(&lab, &["certs", "rotate-ca", "--dry-run"]);
    assert_ok(&dry, "certs rotate-ca --dry-run");
    let out = String::from_utf8_lossy(&dry.stdout);
    for stage in ["stage trust-both:", "stage reissue:", "stage trust-new:"] {
        assert!(out.contains(stage), "{stage} missing from the dry run:\n{out}");
    }
    assert!(out.contains("cp2: would write /etc/kubernetes/pki/etcd/ca.crt"), "{out}");
    assert_eq!(read_cas(&lab), old_cas, "a dry run changed a CA");
    assert!(!state(&lab).join("pki/rotation").exists());
    assert_eq!(certificates(&lab, "cp1"), cp1_before, "a dry run changed cp1");

    let load = Load::start(&lab, &control_planes(&lab), "kubeha-rotate-load");
    std::thread::sleep(Duration::from_secs(3));
    let rotating = Instant::now();
    let out = kubeha(&lab, &["certs", "rotate-ca", "--ca", "all", "--timeout", "3m"]);
    let took = rotating.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let load = load.stop();
    println!("{}", text(&out));
    load.print("certs rotate-ca --ca all", took);
    assert_ok(&out, "kubeha certs rotate-ca --ca all");
    load.assert_no_failures("the CA rotation", 20, 10);

    let new_cas = read_cas(&lab);
    for (old, new) in old_cas.iter().zip(&new_cas) {
        assert_eq!(ders(new).len(), 1, "the state directory's CA is a single certificate again");
        assert_ne!(ders(old), ders(new), "a CA was not replaced");
    }
    assert!(!state(&lab).join("pki/rotation").exists(), "the rotation record is left");
    let archived: Vec<_> = std::fs::read_dir(state(&lab).join("rotated")).unwrap().flatten().collect();
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert_eq!(std::fs::read(archived[0].path().join("old/ca.crt")).unwrap(), old_cas[0]);
    assert_rotated(&lab, &old_cas);

    // A rotation of the etcd CA whose process is killed while the re-issue stage rolls: the
    // re-run (taking over the dead run's host locks) continues at that stage and finishes.
    let old_cas = read_cas(&lab);
    let earlier = backups(&lab);
    let load = Load::start(&lab, &control_planes(&lab), "kubeha-rotate-resume");
    std::thread::sleep(Duration::from_secs(3));
    let rotating = Instant::now();
    let mut child = Command::new(support::kubeha_bin())
        .args(["certs", "rotate-ca", "--ca", "etcd", "--timeout", "3m", "-i"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(state(&lab))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reissuing = wait_for(Duration::from_secs(300), "the re-issue stage to reach a control plane", || {
        backups(&lab).into_iter().find(|b| b.ends_with("-reissue") && !earlier.contains(b))
    })
    .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    println!("killed the rotation while the re-issue stage rolled ({reissuing} was being restarted)");
    let record = std::fs::read_to_string(state(&lab).join("pki/rotation/stage")).unwrap();
    assert!(record.contains("stage: reissue") && record.contains("cas: [etcd]"), "{record}");

    let out = kubeha(&lab, &["certs", "rotate-ca", "--force-lock", "--timeout", "3m"]);
    let took = rotating.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let load = load.stop();
    println!("{}", text(&out));
    load.print("certs rotate-ca --ca etcd, killed and re-run", took);
    assert_ok(&out, "the re-run of certs rotate-ca");
    assert!(text(&out).contains("continuing the rotation of etcd started at"), "{}", text(&out));
    assert!(text(&out).contains("at stage reissue"), "{}", text(&out));
    assert!(!text(&out).contains("stage trust-both:"), "the re-run rolled the first stage again: {}", text(&out));
    load.assert_no_failures("the killed and resumed rotation", 10, 5);
    let new_cas = read_cas(&lab);
    assert_eq!(new_cas[0], old_cas[0], "the cluster CA was not asked for");
    assert_ne!(ders(&new_cas[1]), ders(&old_cas[1]), "the etcd CA was not replaced");
    assert_rotated(&lab, &old_cas[1..2]);
    lab.down().unwrap();
}

/// Every backup directory on the control planes, as `<host>:<name>`.
fn backups(lab: &Lab) -> Vec<String> {
    control_planes(lab)
        .iter()
        .flat_map(|cp| {
            let dir = lab.host_path(cp, "/etc/kubernetes/kubeha/backup").unwrap();
            let names: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| format!("{cp}:{}", e.file_name().to_string_lossy()))
                .collect();
            names
        })
        .collect()
}
