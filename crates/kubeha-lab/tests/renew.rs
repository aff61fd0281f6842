//! End to end: `kubeha certs renew` (the built binary) against a lab of three control planes and
//! a worker while clients keep using the cluster: a `/healthz` loop through the VIP (a new TLS
//! connection each time, the cluster CA verified) and an etcd write/read loop with the
//! apiserver's etcd client certificate. Then a renewal cut short by a host cut off the network,
//! and the re-run that finishes it. Needs root (skipped otherwise). Labs `rn*` on subnets
//! 198.18.46-47.0/24 in `/tmp/kubeha-e2e/<name>` (kept after a failure for its logs).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use kubeha::pki::expiry::{Signers, describe};
use kubeha_lab::{Lab, LabSpec, wait_for};

fn lab(name: &str, subnet: u8) -> Lab {
    let mut spec = LabSpec::new(name, subnet);
    spec.dir = PathBuf::from("/tmp/kubeha-e2e").join(name);
    if spec.dir.join("lab.json").exists() {
        Lab::open(&spec.dir).unwrap().down().unwrap();
    }
    let _ = std::fs::remove_dir_all(spec.dir.join("state"));
    spec.exe = Some(env!("CARGO_BIN_EXE_kubeha-lab").into());
    Lab::up(spec).unwrap()
}

fn state(lab: &Lab) -> PathBuf {
    lab.dir().join("state")
}

fn kubeha(lab: &Lab, args: &[&str]) -> Output {
    Command::new(support::kubeha_bin())
        .args(args)
        .arg("-i")
        .arg(lab.inventory_path())
        .arg("--state-dir")
        .arg(state(lab))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed ({:?}):\n{}", out.status.code(), text(out));
}

fn curl_healthz(lab: &Lab) -> Output {
    let ca = state(lab).join("pki/ca.crt");
    let url = format!("https://{}:8443/healthz", lab.vip());
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "5", "--cacert", &ca.to_string_lossy(), &url])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `etcdctl` against every control plane with the state directory's apiserver-etcd-client
/// certificate (read afresh by each call: the renewal replaces it).
fn etcdctl(lab: &Lab, args: &[&str]) -> Output {
    let pki = state(lab).join("pki");
    let p = |f: &str| pki.join(f).to_string_lossy().into_owned();
    let endpoints: Vec<String> =
        lab.hosts().iter().filter(|h| h.control_plane).map(|h| format!("https://{}:2379", h.address)).collect();
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .arg(format!("--cacert={}", p("etcd/ca.crt")))
        .arg(format!("--cert={}", p("apiserver-etcd-client.crt")))
        .arg(format!("--key={}", p("apiserver-etcd-client.key")))
        .arg("--dial-timeout=3s")
        .arg("--command-timeout=5s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Requests that succeeded and failed (with when and why, the first few).
#[derive(Debug, Default)]
struct Counts {
    ok: usize,
    failed: Vec<String>,
}

/// A client loop in a thread until `stop`.
fn load(
    stop: Arc<AtomicBool>,
    started: Instant,
    mut request: impl FnMut(usize) -> Result<(), String> + Send + 'static,
) -> std::thread::JoinHandle<Counts> {
    std::thread::spawn(move || {
        let mut counts = Counts::default();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            match request(i) {
                Ok(()) => counts.ok += 1,
                Err(e) => counts.failed.push(format!("{:.1}s: {e}", started.elapsed().as_secs_f64())),
            }
            i += 1;
        }
        counts
    })
}

/// Every certificate a host has under /etc/kubernetes (PEM files and kubeconfigs' client
/// certificates): serial and not-after, by path.
fn certificates(lab: &Lab, host: &str) -> BTreeMap<String, (String, i64)> {
    let signers = Signers::read(&state(lab));
    let mut out = BTreeMap::new();
    let base = lab.host_path(host, "/etc/kubernetes").unwrap();
    let mut files = Vec::new();
    walk(&base, &mut files);
    for path in files {
        let rel = Path::new("/etc/kubernetes").join(path.strip_prefix(&base).unwrap());
        let name = rel.to_string_lossy().into_owned();
        if name.contains("/kubeha/") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let pem = if name.ends_with(".crt") {
            bytes
        } else if name.ends_with(".conf") {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let Some(data) = text.lines().find_map(|l| l.trim().strip_prefix("client-certificate-data:")) else {
                continue;
            };
            base64::engine::general_purpose::STANDARD.decode(data.trim()).unwrap()
        } else {
            continue;
        };
        let info = describe(&pem, &signers).unwrap_or_else(|| panic!("{host}:{name} is not a certificate"));
        out.insert(name, (info.serial, info.not_after.unix_timestamp()));
    }
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().unwrap().is_dir() {
            walk(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

/// The serial of the certificate the apiserver on `host` serves.
fn served_serial(lab: &Lab, host: &str) -> String {
    let address = lab.host(host).unwrap().address;
    let script =
        format!("openssl s_client -connect {address}:6443 </dev/null 2>/dev/null | openssl x509 -noout -serial");
    let out = lab.exec(host, &["sh", "-c", &script]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("serial=").to_string()
}

fn control_planes(lab: &Lab) -> Vec<String> {
    lab.hosts().iter().filter(|h| h.control_plane).map(|h| h.name.clone()).collect()
}

/// Hosts whose eth0 holds the VIP.
fn vip_holders(lab: &Lab) -> Vec<String> {
    let vip = format!("{}/", lab.vip());
    control_planes(lab)
        .into_iter()
        .filter(|h| lab.sh(h, "ip -4 -o addr show dev eth0").unwrap_or_default().contains(&vip))
        .collect()
}

fn serial_hex(serial: &str) -> String {
    serial.replace(':', "").to_uppercase()
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

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let curl = {
        let lab = Lab::open(lab.dir()).unwrap();
        load(stop.clone(), started, move |_| {
            let out = curl_healthz(&lab);
            if String::from_utf8_lossy(&out.stdout) == "ok" { Ok(()) } else { Err(text(&out).trim().to_string()) }
        })
    };
    // etcd 3.4 closes its gRPC transport when stopped, without finishing requests in flight
    // ("transport is closing"): a request that reaches a member at that instant fails, whatever
    // the order of restarts. Clients retry such a request (the apiserver's etcd client does); so
    // does this loop, once, and counts first attempts that failed apart from requests that
    // failed.
    let retried = Arc::new(std::sync::Mutex::new(Vec::new()));
    let etcd = {
        let lab = Lab::open(lab.dir()).unwrap();
        let retried = retried.clone();
        load(stop.clone(), started, move |i| {
            let value = format!("v{i}");
            let attempt = || -> Result<(), String> {
                let put = etcdctl(&lab, &["put", "kubeha-renew-load", &value]);
                if !put.status.success() {
                    return Err(format!("put: {}", String::from_utf8_lossy(&put.stderr).lines().last().unwrap_or("")));
                }
                let get = etcdctl(&lab, &["get", "kubeha-renew-load", "--print-value-only"]);
                match String::from_utf8_lossy(&get.stdout).trim() {
                    v if v == value => Ok(()),
                    v => {
                        Err(format!("get: {v:?} instead of {value:?}: {}", String::from_utf8_lossy(&get.stderr).trim()))
                    }
                }
            };
            attempt().or_else(|first| {
                retried.lock().unwrap().push(format!("{:.1}s: {first}", started.elapsed().as_secs_f64()));
                attempt()
            })
        })
    };
    std::thread::sleep(Duration::from_secs(3));
    let renewing = Instant::now();
    let out = kubeha(&lab, &["certs", "renew", "all", "--timeout", "3m", "--kubelet-sync", "3s"]);
    let renew_time = renewing.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let (curl, etcd) = (curl.join().unwrap(), etcd.join().unwrap());
    println!("{}", text(&out));
    println!(
        "certs renew all took {:.1}s; /healthz through the VIP: {} ok, {} failed; etcd put+get: {} ok, {} failed \
         ({} first attempts retried)",
        renew_time.as_secs_f64(),
        curl.ok,
        curl.failed.len(),
        etcd.ok,
        etcd.failed.len(),
        retried.lock().unwrap().len()
    );
    for f in curl.failed.iter().chain(&etcd.failed) {
        println!("  failed at {f}");
    }
    for f in retried.lock().unwrap().iter() {
        println!("  retried at {f}");
    }
    assert_ok(&out, "kubeha certs renew all");
    assert!(curl.ok > 20 && etcd.ok > 10, "the loops hardly ran: {curl:?} {etcd:?}");
    assert!(curl.failed.is_empty(), "requests through the VIP failed during the renewal: {:?}", curl.failed);
    assert!(etcd.failed.is_empty(), "etcd requests failed during the renewal: {:?}", etcd.failed);

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
    let snapshots: Vec<_> = std::fs::read_dir(state(&lab).join("snapshots")).unwrap().flatten().collect();
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
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
        .args([
            "certs",
            "renew",
            "apiserver",
            "--timeout",
            "40s",
            "--kubelet-sync",
            "3s",
            "--command-timeout",
            "15s",
            "-i",
        ])
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
    let out = kubeha(&lab, &["certs", "renew", "apiserver", "--timeout", "3m", "--kubelet-sync", "3s"]);
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
