//! What the tests that run `kubeha` against a running lab cluster share: a fresh lab, running the
//! built `kubeha` on it, `etcdctl` and `curl` as clients, the client load loops that must see no
//! failure while a command changes the cluster, and reading the certificates on a host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use kubeha::pki::expiry::{Signers, describe};
use kubeha_lab::{Lab, LabSpec};

/// A lab from `spec` in `/tmp/kubeha-e2e/<name>`, after tearing down one a failed run left
/// there (kept for its logs until then) and forgetting its state directory.
pub fn fresh_lab(mut spec: LabSpec) -> Lab {
    spec.dir = PathBuf::from("/tmp/kubeha-e2e").join(&spec.name);
    if spec.dir.join("lab.json").exists() {
        Lab::open(&spec.dir).unwrap().down().unwrap();
    }
    let _ = std::fs::remove_dir_all(spec.dir.join("state"));
    spec.exe = Some(env!("CARGO_BIN_EXE_kubeha-lab").into());
    Lab::up(spec).unwrap()
}

/// The lab's state directory (kubeha's `--state-dir`).
pub fn state(lab: &Lab) -> PathBuf {
    lab.dir().join("state")
}

/// Runs the built `kubeha` with `args`, the lab's inventory and state directory, no agent.
pub fn kubeha(lab: &Lab, args: &[&str]) -> Output {
    kubeha_with(lab, &lab.inventory_path(), args)
}

/// Runs the built `kubeha` with `args`, `inventory` and the lab's state directory, no agent.
pub fn kubeha_with(lab: &Lab, inventory: &Path, args: &[&str]) -> Output {
    Command::new(super::kubeha_bin())
        .args(args)
        .arg("-i")
        .arg(inventory)
        .arg("--state-dir")
        .arg(state(lab))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// stdout then stderr.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn assert_ok(out: &Output, what: &str) {
    assert!(out.status.success(), "{what} failed ({:?}):\n{}", out.status.code(), text(out));
}

/// `/healthz` through the VIP, a new TLS connection verified against the cluster CA.
pub fn curl_healthz(lab: &Lab) -> Output {
    let ca = state(lab).join("pki/ca.crt");
    let url = format!("https://{}:8443/healthz", lab.vip());
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "5", "--cacert", &ca.to_string_lossy(), &url])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The lab's control planes, in inventory order.
pub fn control_planes(lab: &Lab) -> Vec<String> {
    lab.hosts().iter().filter(|h| h.control_plane).map(|h| h.name.clone()).collect()
}

/// `https://<address>:2379` of each named host.
pub fn etcd_endpoints(lab: &Lab, hosts: &[String]) -> Vec<String> {
    hosts.iter().map(|h| format!("https://{}:2379", lab.host(h).unwrap().address)).collect()
}

/// `etcdctl` against `endpoints` with the state directory's apiserver-etcd-client certificate
/// (read afresh by each call: renewals and CA rotations replace it).
pub fn etcdctl_at(lab: &Lab, endpoints: &[String], args: &[&str]) -> Output {
    let pki = state(lab).join("pki");
    let p = |f: &str| pki.join(f).to_string_lossy().into_owned();
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

/// `etcdctl` against every control plane of the lab.
pub fn etcdctl(lab: &Lab, args: &[&str]) -> Output {
    etcdctl_at(lab, &etcd_endpoints(lab, &control_planes(lab)), args)
}

/// Hosts whose eth0 holds the VIP.
pub fn vip_holders(lab: &Lab) -> Vec<String> {
    let vip = format!("{}/", lab.vip());
    control_planes(lab)
        .into_iter()
        .filter(|h| lab.sh(h, "ip -4 -o addr show dev eth0").unwrap_or_default().contains(&vip))
        .collect()
}

/// Requests that succeeded and failed (with when and why).
#[derive(Debug, Default)]
pub struct Counts {
    pub ok: usize,
    pub failed: Vec<String>,
}

/// A client loop in a thread until `stop`.
fn spawn_loop(
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

/// Two clients using the cluster while a command changes it: `/healthz` through the VIP (a new
/// TLS connection each time, the cluster CA verified) and an etcd put + get with the
/// apiserver's etcd client certificate.
pub struct Load {
    stop: Arc<AtomicBool>,
    curl: std::thread::JoinHandle<Counts>,
    etcd: std::thread::JoinHandle<Counts>,
    retried: Arc<Mutex<Vec<String>>>,
}

/// What the load loops saw.
#[derive(Debug)]
pub struct LoadReport {
    pub curl: Counts,
    pub etcd: Counts,
    /// etcd first attempts that failed and were retried.
    pub retried: Vec<String>,
}

impl Load {
    /// Starts both loops; the etcd loop talks to `etcd_hosts` (as endpoints, read each time
    /// from the lab) and writes `key`.
    pub fn start(lab: &Lab, etcd_hosts: &[String], key: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let curl = {
            let lab = Lab::open(lab.dir()).unwrap();
            spawn_loop(stop.clone(), started, move |_| {
                let out = curl_healthz(&lab);
                if String::from_utf8_lossy(&out.stdout) == "ok" { Ok(()) } else { Err(text(&out).trim().to_string()) }
            })
        };
        // etcd 3.4 closes its gRPC transport when stopped, without finishing requests in flight
        // ("transport is closing"): a request that reaches a member at that instant fails,
        // whatever the order of restarts. Clients retry such a request (the apiserver's etcd
        // client does, after a backoff); so does this loop, once, a second later, and counts
        // first attempts that failed apart from requests that failed. Without the pause the
        // retry can land in the leader change the stop starts (a stopping leader hands over
        // leadership), where a proposal is dropped and the put hangs until its timeout.
        let retried = Arc::new(Mutex::new(Vec::new()));
        let etcd = {
            let lab = Lab::open(lab.dir()).unwrap();
            let endpoints = etcd_endpoints(&lab, etcd_hosts);
            let (retried, key) = (retried.clone(), key.to_string());
            spawn_loop(stop.clone(), started, move |i| {
                let value = format!("v{i}");
                let attempt = || -> Result<(), String> {
                    let put = etcdctl_at(&lab, &endpoints, &["put", &key, &value]);
                    if !put.status.success() {
                        let err = String::from_utf8_lossy(&put.stderr);
                        return Err(format!("put: {}", err.lines().last().unwrap_or("")));
                    }
                    let get = etcdctl_at(&lab, &endpoints, &["get", &key, "--print-value-only"]);
                    match String::from_utf8_lossy(&get.stdout).trim() {
                        v if v == value => Ok(()),
                        v => Err(format!(
                            "get: {v:?} instead of {value:?}: {}",
                            String::from_utf8_lossy(&get.stderr).trim()
                        )),
                    }
                };
                attempt().or_else(|first| {
                    retried.lock().unwrap().push(format!("{:.1}s: {first}", started.elapsed().as_secs_f64()));
                    std::thread::sleep(Duration::from_secs(1));
                    attempt()
                })
            })
        };
        Load { stop, curl, etcd, retried }
    }

    /// Stops both loops and returns what they saw.
    pub fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let (curl, etcd) = (self.curl.join().unwrap(), self.etcd.join().unwrap());
        let retried = std::mem::take(&mut *self.retried.lock().unwrap());
        LoadReport { curl, etcd, retried }
    }
}

impl LoadReport {
    /// Prints the counts and every failure and retry, after `what` and how long it took.
    pub fn print(&self, what: &str, took: Duration) {
        println!(
            "{what} took {:.1}s; /healthz through the VIP: {} ok, {} failed; etcd put+get: {} ok, {} failed ({} first \
             attempts retried)",
            took.as_secs_f64(),
            self.curl.ok,
            self.curl.failed.len(),
            self.etcd.ok,
            self.etcd.failed.len(),
            self.retried.len()
        );
        for f in self.curl.failed.iter().chain(&self.etcd.failed) {
            println!("  failed at {f}");
        }
        for f in &self.retried {
            println!("  retried at {f}");
        }
    }

    /// Both loops ran (at least `curl` and `etcd` requests) and no request failed.
    pub fn assert_no_failures(&self, what: &str, curl: usize, etcd: usize) {
        assert!(self.curl.ok > curl && self.etcd.ok > etcd, "the loops hardly ran: {self:?}");
        assert!(self.curl.failed.is_empty(), "requests through the VIP failed during {what}: {:?}", self.curl.failed);
        assert!(self.etcd.failed.is_empty(), "etcd requests failed during {what}: {:?}", self.etcd.failed);
    }
}

/// Every certificate a host has under /etc/kubernetes (PEM files and kubeconfigs' client
/// certificates, not kubeha's own backups): serial and not-after, by path.
pub fn certificates(lab: &Lab, host: &str) -> BTreeMap<String, (String, i64)> {
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
pub fn served_serial(lab: &Lab, host: &str) -> String {
    let address = lab.host(host).unwrap().address;
    let script =
        format!("openssl s_client -connect {address}:6443 </dev/null 2>/dev/null | openssl x509 -noout -serial");
    let out = lab.exec(host, &["sh", "-c", &script]).unwrap();
    String::from_utf8_lossy(&out.stdout).trim().trim_start_matches("serial=").to_string()
}

/// A serial as hex digits without colons, upper case.
pub fn serial_hex(serial: &str) -> String {
    serial.replace(':', "").to_uppercase()
}
