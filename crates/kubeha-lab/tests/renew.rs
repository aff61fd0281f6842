//! End to end: `kubeha certs renew` (the built binary) against a lab of three control planes and
//! a worker while clients keep using the cluster: a `/healthz` loop through the VIP (a new TLS
//! connection each time, the cluster CA verified) and an etcd write/read loop with the
//! apiserver's etcd client certificate. Then a renewal cut short by a host cut off the network,
//! and the re-run that finishes it. Needs root (skipped otherwise). Labs `rn*` on subnets
//! 198.18.46-47.0/24 in `/tmp/kubeha-e2e/<name>` (kept after a failure for its logs).

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kubeha::pki::expiry::{Signers, describe};
use kubeha_lab::{Lab, LabSpec, wait_for};
use support::cluster::*;

fn lab(name: &str, subnet: u8) -> Lab {
    fresh_lab(LabSpec::new(name, subnet))
}

#[test]
fn renew_all_under_load_then_a_cut_host_stops_the_rollout_and_the_rerun_finishes() {
    if !support::require_root() {
        return;
    }
    let lab = lab("rna", 46);
    assert_ok(&kubeha(&lab, &["init", "--timeout", "3m"]), "kubeha init");
    let before: BTreeMap<String, _> =
        lab.hosts().iter().map(|h| (h.name.clone(), certificates(&lab, &h.name))).collect();
    let cas_before: Vec<Vec<u8>> = ["pki/ca.crt", "pki/etcd/ca.crt", "pki/front-proxy-ca.crt"]
        .iter()
        .map(|f| std::fs::read(state(&lab).join(f)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_secs(1)); // notAfter has one-second resolution

    // init warns about certificates on the hosts that end within the renewal window.
    let dry = kubeha(&lab, &["init", "--dry-run", "--renew-before", "400d"]);
    assert_ok(&dry, "init --dry-run --renew-before 400d");
    let warned = String::from_utf8_lossy(&dry.stderr);
    assert!(warned.contains("certificate(s) on the hosts end within 400d"), "{warned}");
    assert!(warned.contains("cp1: /etc/kubernetes/pki/apiserver.crt (CN=kube-apiserver) ends "), "{warned}");
    assert!(!warned.contains("/etc/kubernetes/pki/ca.crt"), "a CA was warned about: {warned}");
    let quiet = kubeha(&lab, &["init", "--dry-run"]);
    assert!(!String::from_utf8_lossy(&quiet.stderr).contains("on the hosts end within"), "{}", text(&quiet));

    // The dry run lists and writes nothing.
    let dry = kubeha(&lab, &["certs", "renew", "all", "--dry-run"]);
    assert_ok(&dry, "certs renew all --dry-run");
    let dry_out = String::from_utf8_lossy(&dry.stdout);
    assert!(dry_out.contains("would renew nodes/cp1/pki/apiserver.crt (renewal requested)"), "{dry_out}");
    assert!(dry_out.contains("cp2: would write /etc/kubernetes/pki/etcd/peer.crt"), "{dry_out}");
    assert_eq!(certificates(&lab, "cp1"), before["cp1"], "a dry run changed cp1");

    let load = Load::start(&lab, &control_planes(&lab), "kubeha-renew-load");
    std::thread::sleep(Duration::from_secs(3));
    let renewing = Instant::now();
    // The default --kubelet-sync (20s) is only an upper bound: kubeha sees each restarted pod's
    // new process and moves on.
    let out = kubeha(&lab, &["certs", "renew", "all", "--timeout", "3m"]);
    let renew_time = renewing.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let load = load.stop();
    println!("{}", text(&out));
    load.print("certs renew all", renew_time);
    assert_ok(&out, "kubeha certs renew all");
    assert!(!text(&out).contains("not seen restarting"), "a restart went unseen: {}", text(&out));
    load.assert_no_failures("the renewal", 20, 10);

    // Every leaf on every host: a new serial, a later notAfter. The CAs: unchanged.
    for h in lab.hosts() {
        let after = certificates(&lab, &h.name);
        assert_eq!(after.keys().collect::<Vec<_>>(), before[&h.name].keys().collect::<Vec<_>>(), "{}", h.name);
        for (path, (serial, not_after)) in &after {
            let (old_serial, old_not_after) = &before[&h.name][path];
            if path.ends_with("ca.crt") {
                assert_eq!((serial, not_after), (old_serial, old_not_after), "{}:{path} is a CA", h.name);
            } else {
                assert_ne!(serial, old_serial, "{}:{path} kept its serial", h.name);
                assert!(not_after > old_not_after, "{}:{path} does not end later", h.name);
            }
        }
    }
    let cas_after: Vec<Vec<u8>> = ["pki/ca.crt", "pki/etcd/ca.crt", "pki/front-proxy-ca.crt"]
        .iter()
        .map(|f| std::fs::read(state(&lab).join(f)).unwrap())
        .collect();
    assert_eq!(cas_before, cas_after, "a CA changed in the state directory");
    // The apiservers serve the new certificates: they restarted.
    for cp in control_planes(&lab) {
        let on_disk = &certificates(&lab, &cp)["/etc/kubernetes/pki/apiserver.crt"].0;
        assert_eq!(serial_hex(&served_serial(&lab, &cp)), serial_hex(on_disk), "{cp} serves an old certificate");
        let backup = lab.host_path(&cp, "/etc/kubernetes/kubeha/backup").unwrap();
        let stamps: Vec<_> = std::fs::read_dir(&backup).unwrap().flatten().collect();
        assert_eq!(stamps.len(), 1, "{cp}: {stamps:?}");
        let old = stamps[0].path().join("etc/kubernetes/pki/apiserver.crt");
        let old = describe(&std::fs::read(&old).unwrap(), &Signers::default()).unwrap();
        assert_eq!(
            old.serial, before[&cp]["/etc/kubernetes/pki/apiserver.crt"].0,
            "{cp}: the backup is the old certificate"
        );
    }
    let health = etcdctl(&lab, &["endpoint", "health"]);
    assert_eq!(text(&health).matches("is healthy").count(), 3, "{}", text(&health));
    let admin = state(&lab).join("admin.conf");
    let kubectl = Command::new("kubectl")
        .args(["--kubeconfig", &admin.to_string_lossy(), "get", "--raw", "/healthz"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&kubectl.stdout), "ok", "{}", text(&kubectl));
    let snapshots: Vec<_> = std::fs::read_dir(state(&lab).join("snapshots"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "db"))
        .collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert!(snapshots[0].path().with_extension("db.sha256").is_file(), "no checksum beside {snapshots:?}");
    let name = snapshots[0].file_name().to_string_lossy().into_owned();
    assert!(name.starts_with("rna-") && name.contains("-rev") && name.ends_with(".db"), "{name}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(snapshots[0].metadata().unwrap().permissions().mode() & 0o777, 0o600);

    // A host cut off during the renewal stops the roll-out with a clear message.
    let holder = vip_holders(&lab).pop().expect("a VIP holder");
    let order: Vec<String> =
        control_planes(&lab).into_iter().filter(|h| *h != holder).chain([holder.clone()]).collect();
    let (first, victim) = (order[0].clone(), order[1].clone());
    let child = Command::new(support::kubeha_bin())
        .args(["certs", "renew", "apiserver", "--timeout", "40s", "--command-timeout", "30s", "-i"])
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(state(&lab))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let backups = lab.host_path(&first, "/etc/kubernetes/kubeha/backup").unwrap();
    wait_for(Duration::from_secs(120), "the first host to be backed up", || {
        (std::fs::read_dir(&backups).unwrap().count() == 2).then_some(())
    })
    .unwrap();
    lab.cut(&victim).unwrap();
    let out = child.wait_with_output().unwrap();
    println!("{}", text(&out));
    assert!(!out.status.success(), "the renewal succeeded with {victim} cut off:\n{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains(&format!("the roll-out stopped at {victim}")), "{msg}");
    assert!(msg.contains("to continue:") && msg.contains(&format!("{holder} was not touched")), "{msg}");
    assert!(msg.contains(&format!("{first} has the renewed certificates")), "{msg}");
    // The others keep working.
    assert_eq!(String::from_utf8_lossy(&curl_healthz(&lab).stdout), "ok");
    assert_ok(&etcdctl(&lab, &["put", "kubeha-renew-cut", "still"]), "an etcd write with a host cut off");
    let first_serial = certificates(&lab, &first)["/etc/kubernetes/pki/apiserver.crt"].0.clone();
    let holder_serial = certificates(&lab, &holder)["/etc/kubernetes/pki/apiserver.crt"].0.clone();
    assert_eq!(serial_hex(&served_serial(&lab, &holder)), serial_hex(&holder_serial));

    // Back on the network, the re-run rolls out the certificates already issued.
    lab.reconnect(&victim).unwrap();
    wait_for(Duration::from_secs(60), "the cut member to be healthy", || {
        let h = etcdctl(&lab, &["endpoint", "health"]);
        (text(&h).matches("is healthy").count() == 3).then_some(())
    })
    .unwrap();
    let out = kubeha(&lab, &["certs", "renew", "apiserver", "--timeout", "3m"]);
    println!("{}", text(&out));
    assert_ok(&out, "the re-run of certs renew");
    assert!(text(&out).contains("continuing the renewal started at"), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("rolled out the renewal started at"), "{}", text(&out));
    assert_eq!(
        certificates(&lab, &first)["/etc/kubernetes/pki/apiserver.crt"].0,
        first_serial,
        "the first host was renewed again"
    );
    for cp in control_planes(&lab) {
        let want = describe(
            &std::fs::read(state(&lab).join(format!("nodes/{cp}/pki/apiserver.crt"))).unwrap(),
            &Signers::default(),
        )
        .unwrap();
        assert_eq!(
            serial_hex(&served_serial(&lab, &cp)),
            serial_hex(&want.serial),
            "{cp} does not serve the renewed certificate"
        );
    }
    assert_eq!(String::from_utf8_lossy(&curl_healthz(&lab).stdout), "ok");
    lab.down().unwrap();
}
