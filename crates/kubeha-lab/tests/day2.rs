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
    assert!(table.starts_with("HOST") && table.contains("healthy: 4/4 hosts reachable; etcd 3/3 healthy"), "{table}");
    let yaml = kubeha(&lab, &["status", "-o", "yaml"]);
    assert_ok(&yaml, "kubeha status -o yaml");
    assert!(String::from_utf8_lossy(&yaml.stdout).contains("etcdHealthy: 3"));

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
            hosts.iter().filter_map(|h| h["haproxy"]["servers"].as_array()).flatten().all(|s| {
                (s["server"] == holder.as_str()) == (s["status"] == "DOWN")
            })
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
    let others = json["hosts"].as_array().unwrap().iter().filter(|h| h["host"] != holder.as_str() && h["role"] == "control-plane");
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
    assert!(report.contains("UNREACHABLE") && report.contains("DEGRADED: 3/4 hosts reachable; etcd 2/3"), "{report}");
    lab.reconnect(&holder).unwrap();
    lab.down().unwrap();
}
