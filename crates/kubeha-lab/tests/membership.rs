//! End to end: changing a running cluster's membership with the built `kubeha` — `join-node`
//! (control planes and workers), `remove-node` and `reset` — while clients keep using it: a
//! `/healthz` loop through the VIP (a new TLS connection each time, the cluster CA verified) and
//! an etcd write/read loop with the apiserver's etcd client certificate, neither of which may
//! see a failure. The lab is up with every host; `init` runs with an inventory listing only the
//! first ones (`Lab::write_inventory_of`), then the full inventory names the rest for
//! `join-node`. Needs root (skipped otherwise). Labs `j*` on subnets 198.18.50-59.0/24 in
//! `/tmp/kubeha-e2e/<name>` (kept after a failure for its logs).

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubeha_lab::{Lab, LabSpec};
use support::cluster::*;

fn lab(name: &str, subnet: u8, control_planes: usize, workers: usize) -> Lab {
    let mut spec = LabSpec::new(name, subnet);
    (spec.control_planes, spec.workers) = (control_planes, workers);
    fresh_lab(spec)
}

/// `init` on the first three control planes and the first worker.
fn init_subset(lab: &Lab) -> PathBuf {
    let inventory = lab.write_inventory_of("inventory-init.yaml", &["cp1", "cp2", "cp3", "w1"]).unwrap();
    assert_ok(&kubeha_with(lab, &inventory, &["init", "--timeout", "3m"]), "kubeha init on cp1-3 and w1");
    inventory
}

/// `etcdctl member list` lines: (name, started, learner).
fn members(lab: &Lab, via: &[&str]) -> Vec<(String, bool, bool)> {
    let via: Vec<String> = via.iter().map(|s| s.to_string()).collect();
    let out = etcdctl_at(lab, &etcd_endpoints(lab, &via), &["member", "list"]);
    assert_ok(&out, "etcdctl member list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(", ").collect();
            (f[2].to_string(), f[1] == "started", f.last() == Some(&"true"))
        })
        .collect()
}

fn haproxy_backends(lab: &Lab, host: &str) -> usize {
    let cfg = std::fs::read_to_string(lab.host_path(host, "/etc/kubernetes/haproxy/haproxy.cfg").unwrap()).unwrap();
    cfg.lines().filter(|l| l.trim_start().starts_with("server ")).count()
}

/// `/readyz` of one apiserver, directly, the cluster CA verified.
fn apiserver_readyz(lab: &Lab, host: &str) -> String {
    let ca = state(lab).join("pki/ca.crt");
    let url = format!("https://{}:6443/readyz", lab.host(host).unwrap().address);
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "5", "--cacert", &ca.to_string_lossy(), &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    text(&out)
}

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn join_node_grows_three_control_planes_to_five_and_adds_a_worker_under_load() {
    if !support::require_root() {
        return;
    }
    let lab = lab("ja", 50, 5, 2);
    init_subset(&lab);

    // init with the full inventory refuses the unjoined control planes and says what to run.
    let out = kubeha(&lab, &["init", "--timeout", "1m"]);
    assert_eq!(code(&out), Some(3), "{}", text(&out));
    assert!(text(&out).contains("kubeha join-node cp4 cp5"), "{}", text(&out));
    // An even count at the end is refused before anything changes.
    let out = kubeha(&lab, &["join-node", "cp4", "--timeout", "1m"]);
    assert_eq!(code(&out), Some(3), "{}", text(&out));
    assert!(text(&out).contains("would end with 4 etcd members"), "{}", text(&out));
    assert_eq!(members(&lab, &["cp1"]).len(), 3, "the refusal changed etcd");
    assert!(!lab.host_path("cp4", "/etc/kubernetes/kubeha/cluster.yaml").unwrap().exists());
    // A dry run lists what would happen and changes nothing.
    let out = kubeha(&lab, &["join-node", "cp4", "cp5", "w2", "--dry-run"]);
    assert_ok(&out, "join-node --dry-run");
    assert!(text(&out).contains("cp4: would add an etcd learner"), "{}", text(&out));
    assert!(text(&out).contains("cp1: would write /etc/kubernetes/haproxy/haproxy.cfg"), "{}", text(&out));
    assert_eq!(members(&lab, &["cp1"]).len(), 3, "the dry run changed etcd");

    let original: Vec<String> = ["cp1", "cp2", "cp3"].map(String::from).to_vec();
    let load = Load::start(&lab, &original, "kubeha-join-load");
    std::thread::sleep(Duration::from_secs(3));
    let joining = Instant::now();
    let out = kubeha(&lab, &["join-node", "cp4", "cp5", "w2", "--timeout", "3m"]);
    let took = joining.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let load = load.stop();
    println!("{}", text(&out));
    load.print("join-node cp4 cp5 w2", took);
    assert_ok(&out, "kubeha join-node cp4 cp5 w2");
    load.assert_no_failures("join-node", 20, 10);

    let list = members(&lab, &["cp1"]);
    assert_eq!(list.len(), 5, "{list:?}");
    assert!(list.iter().all(|(_, started, learner)| *started && !learner), "{list:?}");
    for cp in control_planes(&lab) {
        assert_eq!(haproxy_backends(&lab, &cp), 5, "{cp}'s haproxy");
    }
    for cp in ["cp4", "cp5"] {
        assert_eq!(apiserver_readyz(&lab, cp), "ok", "{cp}'s apiserver");
    }
    assert_eq!(String::from_utf8_lossy(&curl_healthz(&lab).stdout), "ok");
    assert_eq!(vip_holders(&lab).len(), 1, "{:?}", vip_holders(&lab));
    // w2's kubelet identity authenticates through the endpoint (anonymous users get 403).
    let kubectl =
        lab.exec("w2", &["kubectl", "--kubeconfig", "/etc/kubernetes/kubelet.conf", "get", "--raw", "/api"]).unwrap();
    assert!(kubectl.status.success(), "{}", text(&kubectl));
    assert!(String::from_utf8_lossy(&kubectl.stdout).contains("APIVersions"), "{}", text(&kubectl));
    assert!(!lab.host_path("w2", "/etc/kubernetes/pki/ca.key").unwrap().exists(), "w2 holds the CA key");
    // A re-run changes nothing; init with the full inventory now agrees.
    let again = kubeha(&lab, &["join-node", "cp4", "cp5", "w2", "--timeout", "2m"]);
    assert_ok(&again, "join-node re-run");
    assert!(text(&again).contains("already part of the cluster (converged): cp4, cp5, w2"), "{}", text(&again));
    let out = kubeha(&lab, &["init", "--timeout", "2m"]);
    assert_ok(&out, "init with the full inventory after the join");
    assert!(text(&out).contains("up and unchanged"), "{}", text(&out));

    // remove-node: an even count at the end is refused, nothing changes.
    let out = kubeha(&lab, &["remove-node", "cp5", "--timeout", "1m"]);
    assert_eq!(code(&out), Some(3), "{}", text(&out));
    assert!(text(&out).contains("would end with 4 etcd members"), "{}", text(&out));
    // With a member cut off, removing another is refused, nothing changes.
    lab.cut("cp4").unwrap();
    let out = kubeha(&lab, &["remove-node", "cp5", "--allow-even-members", "--timeout", "1m"]);
    lab.reconnect("cp4").unwrap();
    println!("{}", text(&out));
    assert_eq!(code(&out), Some(3), "{}", text(&out));
    assert!(text(&out).contains("cp4") && text(&out).contains("must be healthy"), "{}", text(&out));
    kubeha_lab::wait_for(Duration::from_secs(60), "cp4 to be healthy again", || {
        (text(&etcdctl(&lab, &["endpoint", "health"])).matches("is healthy").count() == 5).then_some(())
    })
    .unwrap();
    // The reconnected apiserver reads etcd again only every 2 s: let the cluster settle.
    for cp in control_planes(&lab) {
        kubeha_lab::wait_for(Duration::from_secs(60), "every apiserver to be ready", || {
            (apiserver_readyz(&lab, &cp) == "ok").then_some(())
        })
        .unwrap();
    }
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(members(&lab, &["cp1"]).len(), 5, "the refusal changed etcd");
    assert!(lab.host_path("cp5", "/etc/kubernetes/kubeha/cluster.yaml").unwrap().exists());

    // 5 → 3 by two removals under load.
    let load = Load::start(&lab, &original, "kubeha-remove-load");
    std::thread::sleep(Duration::from_secs(3));
    let removing = Instant::now();
    let first = kubeha(&lab, &["remove-node", "cp5", "--allow-even-members", "--timeout", "3m"]);
    let second = kubeha(&lab, &["remove-node", "cp4", "--timeout", "3m"]);
    let took = removing.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let load = load.stop();
    println!("{}\n{}", text(&first), text(&second));
    load.print("remove-node cp5, remove-node cp4", took);
    assert_ok(&first, "remove-node cp5");
    assert_ok(&second, "remove-node cp4");
    load.assert_no_failures("remove-node", 20, 10);
    let list = members(&lab, &["cp1"]);
    let mut names: Vec<&str> = list.iter().map(|m| m.0.as_str()).collect();
    names.sort();
    assert_eq!(names, ["cp1", "cp2", "cp3"], "{list:?}");
    assert!(list.iter().all(|(_, started, learner)| *started && !learner), "{list:?}");
    for cp in ["cp1", "cp2", "cp3"] {
        assert_eq!(haproxy_backends(&lab, cp), 3, "{cp}'s haproxy");
    }
    for gone in ["cp4", "cp5"] {
        assert!(
            !lab.host_path(gone, "/etc/kubernetes/kubeha/cluster.yaml").unwrap().exists(),
            "{gone} keeps its marker"
        );
        assert!(!lab.host_path(gone, "/etc/kubernetes/manifests/etcd.yaml").unwrap().exists());
    }
    assert_eq!(vip_holders(&lab).len(), 1, "{:?}", vip_holders(&lab));
    // A worker: its Node object (none in the lab: its kubelet does not register) and its files go.
    let out = kubeha(&lab, &["remove-node", "w2", "--timeout", "1m"]);
    assert_ok(&out, "remove-node w2");
    for gone in ["/etc/kubernetes/kubeha/cluster.yaml", "/etc/kubernetes/kubelet.conf", "/etc/kubernetes/pki/ca.crt"] {
        assert!(!lab.host_path("w2", gone).unwrap().exists(), "w2 keeps {gone}");
    }
    // The inventory still lists them: init refuses and says what to do.
    let out = kubeha(&lab, &["init", "--timeout", "1m"]);
    assert_eq!(code(&out), Some(3), "{}", text(&out));
    assert!(text(&out).contains("was removed from the cluster with `kubeha remove-node`"), "{}", text(&out));
    lab.down().unwrap();
}

#[test]
fn a_join_cut_by_a_killed_sshd_is_finished_by_the_rerun_then_reset_and_init_start_afresh() {
    if !support::require_root() {
        return;
    }
    let lab = lab("jb", 51, 4, 1);
    init_subset(&lab);
    assert_ok(&etcdctl_at(&lab, &etcd_endpoints(&lab, &["cp1".into()]), &["put", "kubeha-old", "data"]), "etcd put");

    // sshd killed on the joining host (listener and open sessions) once kubeha writes to it.
    let child = Command::new(support::kubeha_bin())
        .args(["join-node", "cp4", "--allow-even-members", "--timeout", "1m"])
        .args(["--command-timeout", "15s", "-i"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(state(&lab))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let marker = lab.host_path("cp4", "/etc/kubernetes/kubeha/cluster.yaml").unwrap();
    kubeha_lab::wait_for(Duration::from_secs(120), "kubeha to write to cp4", || marker.exists().then_some(())).unwrap();
    lab.ssh_stop("cp4").unwrap();
    let killed = lab.kill_ssh_sessions("cp4").unwrap();
    let out = child.wait_with_output().unwrap();
    println!("killed {killed} session(s)\n{}", text(&out));
    assert!(!out.status.success(), "the join succeeded with cp4's sshd killed:\n{}", text(&out));
    let msg = text(&out);
    let step = ["writing its", "promoting its etcd learner", "waiting for its etcd", "starting its keepalived"];
    assert!(msg.contains("error: cp4: joining as a control plane: cp4: "), "{msg}");
    assert!(step.iter().any(|s| msg.contains(s)), "no step named: {msg}");
    // The rest of the cluster is healthy.
    let health = etcdctl_at(&lab, &etcd_endpoints(&lab, &control_planes(&lab)[..3]), &["endpoint", "health"]);
    assert_eq!(text(&health).matches("is healthy").count(), 3, "{}", text(&health));
    assert_eq!(String::from_utf8_lossy(&curl_healthz(&lab).stdout), "ok");

    // The re-run finishes the join: no second member, no learner left.
    lab.ssh_start("cp4").unwrap();
    let out = kubeha(&lab, &["join-node", "cp4", "--allow-even-members", "--timeout", "3m"]);
    println!("{}", text(&out));
    assert_ok(&out, "the re-run of join-node cp4");
    let list = members(&lab, &["cp1"]);
    let mut names: Vec<&str> = list.iter().map(|m| m.0.as_str()).collect();
    names.sort();
    assert_eq!(names, ["cp1", "cp2", "cp3", "cp4"], "{list:?}");
    assert!(list.iter().all(|(_, started, learner)| *started && !learner), "{list:?}");
    assert_eq!(apiserver_readyz(&lab, "cp4"), "ok");

    // reset: a running member is refused; without --yes it only lists.
    let out = kubeha(&lab, &["reset", "cp2", "--yes"]);
    assert_eq!(code(&out), Some(3), "{}", text(&out));
    assert!(text(&out).contains("kubeha remove-node cp2"), "{}", text(&out));
    let out = kubeha(&lab, &["reset", "--all"]);
    assert_ok(&out, "reset --all (a listing)");
    assert!(text(&out).contains("cp1: would remove /etc/kubernetes/manifests/etcd.yaml"), "{}", text(&out));
    assert!(marker.exists(), "the listing removed something");
    // The same listing for scripts: one entry per host, nothing removed.
    let out = kubeha(&lab, &["reset", "--all", "-o", "json"]);
    assert_ok(&out, "reset --all -o json");
    let listing: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(listing["dryRun"], true, "{listing}");
    let cp1 = listing["hosts"].as_array().unwrap().iter().find(|h| h["name"] == "cp1").unwrap().clone();
    assert!(cp1["removed"].as_array().unwrap().iter().any(|p| p == "/etc/kubernetes/manifests/etcd.yaml"), "{cp1}");
    assert!(marker.exists(), "the listing removed something");
    // reset --all --yes --delete-etcd-data, then init: a fresh cluster.
    let out = kubeha(&lab, &["reset", "--all", "--yes", "--delete-etcd-data", "--timeout", "2m"]);
    println!("{}", text(&out));
    assert_ok(&out, "reset --all --yes --delete-etcd-data");
    for h in lab.hosts() {
        assert!(!lab.host_path(&h.name, "/etc/kubernetes/kubeha/cluster.yaml").unwrap().exists(), "{}", h.name);
        assert!(!lab.host_path(&h.name, "/etc/kubernetes/pki/ca.crt").unwrap().exists(), "{}", h.name);
    }
    let empty = std::fs::read_dir(lab.host_path("cp1", "/var/lib/etcd").unwrap()).map(|d| d.count()).unwrap_or(0);
    assert_eq!(empty, 0, "cp1's etcd data is still there");
    assert_ok(&kubeha(&lab, &["init", "--timeout", "3m"]), "init after reset");
    let list = members(&lab, &["cp1"]);
    assert_eq!(list.len(), 4, "{list:?}");
    let old = etcdctl(&lab, &["get", "kubeha-old", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&old.stdout).trim(), "", "the old cluster's data survived");
    assert_eq!(String::from_utf8_lossy(&curl_healthz(&lab).stdout), "ok");
    lab.down().unwrap();
}
