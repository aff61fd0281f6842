//! End to end: the day-2 commands (`kubeha status`, `kubeha etcd snapshot save|restore`) with
//! the built binary against labs of three control planes and a worker. Needs root (skipped
//! otherwise). Labs `d*` on subnets 198.18.70-74.0/24 in `/tmp/kubeha-e2e/<name>` (kept after a
//! failure for its logs).

mod support;

use std::time::{Duration, Instant};

use kubeha_lab::{Lab, LabSpec};
use support::cluster::*;

fn lab(name: &str, subnet: u8) -> Lab {
    fresh_lab(LabSpec::new(name, subnet))
}

/// `kubeha status -o json` and its exit code.
fn status(lab: &Lab) -> (Option<i32>, serde_json::Value, String) {
    let out = kubeha(lab, &["status", "-o", "json", "--connect-timeout", "3s"]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status -o json: {e}: {}", text(&out)));
    (out.status.code(), json, text(&out))
}

#[test]
fn status_is_green_on_a_healthy_cluster_and_names_a_host_cut_off() {
    if !support::require_root() {
        return;
    }
    let lab = lab("dst", 70);
    assert_ok(&kubeha(&lab, &["init", "--timeout", "3m"]), "kubeha init");

    // haproxy marks a backend up after two good checks: give the report a few tries to be green.
    let started = Instant::now();
    let (code, json, out) = loop {
        let (code, json, out) = status(&lab);
        if code == Some(0) || started.elapsed() > Duration::from_secs(30) {
            break (code, json, out);
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    println!("healthy after {:.1}s:\n{out}", started.elapsed().as_secs_f64());
    assert_eq!(code, Some(0), "{out}");
    let hosts = json["hosts"].as_array().unwrap();
    let names: Vec<&str> = hosts.iter().map(|h| h["host"].as_str().unwrap()).collect();
    assert_eq!(names, ["cp1", "cp2", "cp3", "w1"]);
    for h in &hosts[..3] {
        assert_eq!(h["reachable"], true, "{h}");
        assert_eq!(h["etcd"]["healthy"], true, "{h}");
        assert_eq!(h["apiserver"]["ok"], true, "{h}");
        let pods = h["staticPods"].as_array().unwrap();
        assert_eq!(pods.len(), 6, "{h}");
        assert!(pods.iter().all(|p| p["running"] == true && p["detectedBy"] == "process"), "{h}");
        let servers = h["haproxy"]["servers"].as_array().unwrap();
        assert_eq!(servers.len(), 3, "{h}");
        assert!(servers.iter().all(|s| s["status"] == "UP"), "{h}");
        assert!(h["nearestCertificate"]["remainingSeconds"].as_i64().unwrap() > 300 * 86_400, "{h}");
        assert!(h["clockSkewSeconds"].as_f64().unwrap().abs() < 1.0, "{h}");
    }
    let summary = &json["summary"];
    assert_eq!((summary["etcdHealthy"].as_u64(), summary["quorumMargin"].as_i64()), (Some(3), Some(1)), "{summary}");
    assert_eq!(summary["endpointOk"], true);
    let holder = vip_holders(&lab).pop().expect("a VIP holder");
    assert_eq!(summary["vipHolders"], serde_json::json!([holder]));
    // The text report and YAML come from the same data.
    let text_out = kubeha(&lab, &["status"]);
    assert_ok(&text_out, "kubeha status");
    let table = String::from_utf8_lossy(&text_out.stdout);
    println!("{table}");
    assert!(table.starts_with("HOST") && table.contains("healthy: 4/4 hosts reachable; etcd 3/3 healthy"), "{table}");
    let yaml = kubeha(&lab, &["status", "-o", "yaml"]);
    assert_ok(&yaml, "kubeha status -o yaml");
    assert!(String::from_utf8_lossy(&yaml.stdout).contains("etcdHealthy: 3"));

    // etcd's metrics, as kubeadm configures them: plain HTTP on each host's loopback only.
    for cp in control_planes(&lab) {
        let metrics = lab.sh(&cp, "curl -s --max-time 5 http://127.0.0.1:2381/metrics").unwrap();
        assert!(metrics.contains("etcd_server_has_leader 1"), "{cp}: {}", &metrics[..metrics.len().min(300)]);
        let address = lab.host(&cp).unwrap().address;
        let outside = std::process::Command::new("curl")
            .args(["-s", "--max-time", "3", &format!("http://{address}:2381/metrics")])
            .output()
            .unwrap();
        assert!(!outside.status.success(), "{cp}: etcd's metrics answer outside the host");
    }

    // --watch: successive reports until Ctrl-C, which ends it cleanly.
    let watch = std::process::Command::new(support::kubeha_bin())
        .args(["status", "--watch", "--interval", "1s", "-o", "json", "-q", "-i"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(state(&lab))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(watch.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let stopped = Instant::now();
    let out = watch.wait_with_output().unwrap();
    let reports = String::from_utf8_lossy(&out.stdout).matches("\"summary\"").count();
    println!("--watch: {reports} reports in 5s, ended {:.2}s after SIGINT", stopped.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(reports >= 2, "{}", text(&out));
    assert!(stopped.elapsed() < Duration::from_secs(3));

    // The VIP holder cut off the network: it is shown unreachable, etcd has 2 of 3, the VIP
    // moves to another host, and the exit code says degraded.
    lab.cut(&holder).unwrap();
    let started = Instant::now();
    let (code, json, out) = loop {
        let (code, json, out) = status(&lab);
        let moved = json["summary"]["vipHolders"].as_array().is_some_and(|h| h.len() == 1);
        let etcd_two = json["summary"]["etcdHealthy"] == 2;
        // haproxy on the others has marked it down (not "UP 1/2", on its way down).
        let marked_down = json["hosts"].as_array().is_some_and(|hosts| {
            hosts
                .iter()
                .filter_map(|h| h["haproxy"]["servers"].as_array())
                .flatten()
                .all(|s| (s["server"] == holder.as_str()) == (s["status"] == "DOWN"))
        });
        if (moved && etcd_two && marked_down) || started.elapsed() > Duration::from_secs(40) {
            break (code, json, out);
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    println!("after cutting {holder} ({:.1}s):\n{out}", started.elapsed().as_secs_f64());
    assert_eq!(code, Some(5), "{out}");
    let cut = json["hosts"].as_array().unwrap().iter().find(|h| h["host"] == holder.as_str()).unwrap();
    assert_eq!(cut["reachable"], false, "{cut}");
    assert!(cut["error"].as_str().unwrap().contains(&holder), "{cut}");
    let summary = &json["summary"];
    assert_eq!((summary["etcdHealthy"].as_u64(), summary["quorumMargin"].as_i64()), (Some(2), Some(0)), "{summary}");
    let new_holder = summary["vipHolders"][0].as_str().unwrap();
    assert_ne!(new_holder, holder);
    assert_eq!(summary["endpointOk"], true, "the VIP moved: {summary}");
    let others = json["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["host"] != holder.as_str() && h["role"] == "control-plane");
    for h in others {
        let down: Vec<&str> = h["haproxy"]["servers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] != "UP")
            .map(|s| s["server"].as_str().unwrap())
            .collect();
        assert_eq!(down, [holder.as_str()], "{h}");
    }
    let text_out = kubeha(&lab, &["status", "--connect-timeout", "3s"]);
    assert_eq!(text_out.status.code(), Some(5));
    let report = String::from_utf8_lossy(&text_out.stdout);
    println!("{report}");
    assert!(report.contains("UNREACHABLE") && report.contains("DEGRADED: 3/4 hosts reachable; etcd 2/3"), "{report}");
    lab.reconnect(&holder).unwrap();
    lab.down().unwrap();
}

/// The keys under `/day2/`.
fn day2_keys(lab: &Lab) -> Vec<String> {
    let out = etcdctl(lab, &["get", "/day2/", "--prefix", "--keys-only"]);
    assert_ok(&out, "etcdctl get");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn put_keys(lab: &Lab, range: std::ops::RangeInclusive<u32>) {
    for i in range {
        assert_ok(&etcdctl(lab, &["put", &format!("/day2/k{i:02}"), &format!("v{i}")]), "etcdctl put");
    }
}

/// Each control plane's etcd member id, from `etcdctl endpoint status`.
fn member_ids(lab: &Lab) -> String {
    let out = etcdctl(lab, &["endpoint", "status", "-w", "simple"]);
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(", ").take(2).collect::<Vec<_>>().join(" "))
        .collect();
    lines.sort();
    lines.join("\n")
}

#[test]
fn snapshot_save_keeps_n_and_restore_brings_back_exactly_the_snapshot() {
    if !support::require_root() {
        return;
    }
    let lab = lab("dsn", 71);
    assert_ok(&kubeha(&lab, &["init", "--timeout", "3m"]), "kubeha init");
    put_keys(&lab, 1..=5);

    // Three saves with --keep 2: the newest two stay, each with its checksum file.
    let mut saved = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let out = kubeha(&lab, &["etcd", "snapshot", "save", "--keep", "2", "-o", "json"]);
        assert_ok(&out, "etcd snapshot save");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        println!("saved in {:.1}s: {json}", started.elapsed().as_secs_f64());
        saved.push(json);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let dir = state(&lab).join("snapshots");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 4, "{names:?}");
    let newest = std::path::PathBuf::from(saved[2]["path"].as_str().unwrap());
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("dsn-") && name.contains("-rev") && name.ends_with(".db"), "{name}");
    assert!(names.contains(&name) && names.contains(&format!("{name}.sha256")), "{names:?}");
    assert!(saved[2]["pruned"].as_array().unwrap().len() == 1, "{}", saved[2]);
    let check = std::process::Command::new("sha256sum")
        .arg("-c")
        .arg(format!("{name}.sha256"))
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_ok(&check, "sha256sum -c");
    let status = std::process::Command::new("etcdctl")
        .args(["snapshot", "status", "-w", "json"])
        .arg(&newest)
        .env("ETCDCTL_API", "3")
        .output()
        .unwrap();
    assert_ok(&status, "etcdctl snapshot status");

    // Writes after the snapshot.
    put_keys(&lab, 6..=10);
    let all: Vec<String> = (1..=10).map(|i| format!("/day2/k{i:02}")).collect();
    assert_eq!(day2_keys(&lab), all);
    let ids = member_ids(&lab);

    // Without --yes: the plan, and nothing changes.
    let out = kubeha(&lab, &["etcd", "snapshot", "restore", newest.to_str().unwrap()]);
    assert_ok(&out, "etcd snapshot restore (plan)");
    let plan = String::from_utf8_lossy(&out.stdout);
    println!("{plan}");
    assert!(plan.contains("stop etcd on cp1, cp2, cp3") && plan.contains("nothing was changed"), "{plan}");
    assert_eq!(day2_keys(&lab), all);
    assert_eq!(member_ids(&lab), ids);
    for cp in control_planes(&lab) {
        assert!(lab.host_path(&cp, "/etc/kubernetes/manifests/etcd.yaml").unwrap().exists());
        assert!(!lab.host_path(&cp, "/etc/kubernetes/kubeha/lock").unwrap().exists(), "a dry run left a lock");
    }

    // A damaged copy is refused before anything connects.
    let bad_dir = lab.dir().join("bad");
    std::fs::create_dir_all(&bad_dir).unwrap();
    let bad = bad_dir.join(&name);
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&bad, &bytes).unwrap();
    std::fs::copy(dir.join(format!("{name}.sha256")), bad_dir.join(format!("{name}.sha256"))).unwrap();
    let out = kubeha(&lab, &["etcd", "snapshot", "restore", bad.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("refusing the snapshot"), "{}", text(&out));
    assert_eq!(day2_keys(&lab), all);
    assert_eq!(member_ids(&lab), ids);

    // The restore.
    let started = Instant::now();
    let out = kubeha(&lab, &["etcd", "snapshot", "restore", newest.to_str().unwrap(), "--yes", "--timeout", "3m"]);
    println!("restore took {:.1}s:\n{}", started.elapsed().as_secs_f64(), text(&out));
    assert_ok(&out, "etcd snapshot restore --yes");
    assert_eq!(day2_keys(&lab), all[..5].to_vec(), "the cluster holds exactly the snapshot's keys");
    assert_ne!(member_ids(&lab), ids, "the members were not rebuilt");
    let health = etcdctl(&lab, &["endpoint", "health"]);
    assert_eq!(text(&health).matches("is healthy").count(), 3, "{}", text(&health));
    assert_eq!(String::from_utf8_lossy(&curl_healthz(&lab).stdout), "ok");
    for cp in control_planes(&lab) {
        let aside: Vec<_> = std::fs::read_dir(lab.host_path(&cp, "/var/lib/etcd").unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(".kubeha-before-restore-"))
            .collect();
        assert_eq!(aside.len(), 1, "{cp}: {aside:?}");
        let old = lab.host_path(&cp, format!("/var/lib/etcd/{}/member", aside[0])).unwrap();
        assert!(old.join("snap").is_dir(), "{cp}: the old data is kept at {}", old.display());
        assert!(lab.host_path(&cp, "/etc/kubernetes/manifests/kube-apiserver.yaml").unwrap().exists());
        assert!(
            std::fs::read_dir(lab.host_path(&cp, "/etc/kubernetes/kubeha/restore").unwrap()).unwrap().next().is_none()
        );
    }
    // Writes work again, and status is green.
    put_keys(&lab, 11..=11);
    let started = Instant::now();
    let out = loop {
        let out = kubeha(&lab, &["status"]);
        if out.status.success() || started.elapsed() > Duration::from_secs(30) {
            break out;
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_ok(&out, "kubeha status after the restore");

    // Restoring is repeatable (what a re-run after an interruption does): the key written since
    // is gone again, and the data in place was moved aside once more.
    let out = kubeha(&lab, &["etcd", "snapshot", "restore", newest.to_str().unwrap(), "--yes", "--timeout", "3m"]);
    assert_ok(&out, "a second etcd snapshot restore --yes");
    assert_eq!(day2_keys(&lab), all[..5].to_vec());
    for cp in control_planes(&lab) {
        let aside = std::fs::read_dir(lab.host_path(&cp, "/var/lib/etcd").unwrap())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".kubeha-before-restore-"))
            .count();
        assert_eq!(aside, 2, "{cp}");
    }
    lab.down().unwrap();
}
