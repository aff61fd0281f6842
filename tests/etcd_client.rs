//! kubeha's etcd client against a real etcd (3.4 here): one member on 127.0.0.1 with random
//! ports and client-certificate authentication, certificates from kubeha's own PKI, and the
//! client's tunnel bridged to it by a `MemoryRemote` as SSH would. Snapshots are checked with
//! the real `etcdctl`. No root needed; etcd is stopped by its PID even when the test fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use kubeha::host::etcd::{EtcdClient, EtcdErrorKind};
use kubeha::https::{ClientIdentity, Request, TlsClient};
use kubeha::pki::CertAndKey;
use kubeha::plan::Plan;
use kubeha::transport::{MemoryRemote, Remote};
use sha2::{Digest, Sha256};

/// A running etcd, killed (by PID) and reaped when dropped.
struct RealEtcd {
    child: Child,
    client_port: u16,
    log: PathBuf,
}

impl Drop for RealEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RealEtcd {
    fn log(&self) -> String {
        let bytes = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&bytes[bytes.len().saturating_sub(4000)..]).into_owned()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The certificates and keys of `cp1`'s etcd, and the two client identities kubeha uses with
/// etcd, from a cluster PKI generated for the example inventory.
struct Certs {
    dir: PathBuf,
    healthcheck: CertAndKey,
    apiserver_etcd_client: CertAndKey,
    etcd_ca: Vec<u8>,
}

fn certs(plan: &Plan, dir: &Path) -> Certs {
    let state = dir.join("state");
    kubeha::pki::generate(plan, &state).unwrap();
    let pki = kubeha::pki::load(plan, &state).unwrap();
    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir).unwrap();
    let files = pki.host_files(plan.host("cp1").unwrap());
    for name in ["ca.crt", "server.crt", "server.key"] {
        let path = Path::new("/etc/kubernetes/pki/etcd").join(name);
        let file = files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("{} is shipped", path.display()));
        std::fs::write(pki_dir.join(name), &file.content).unwrap();
    }
    let healthcheck = pki.etcd_healthcheck_client();
    std::fs::write(pki_dir.join("healthcheck-client.crt"), &healthcheck.cert_pem).unwrap();
    std::fs::write(pki_dir.join("healthcheck-client.key"), &healthcheck.key_pem).unwrap();
    Certs {
        dir: pki_dir,
        healthcheck,
        apiserver_etcd_client: pki.apiserver_etcd_client(),
        etcd_ca: pki.etcd_ca_cert_pem().to_vec(),
    }
}

fn start_etcd(dir: &Path, certs: &Certs) -> RealEtcd {
    let (client_port, peer_port) = (free_port(), free_port());
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let client_url = format!("https://127.0.0.1:{client_port}");
    let log = dir.join("etcd.log");
    let out = std::fs::File::create(&log).unwrap();
    let pki = |name: &str| certs.dir.join(name).to_str().unwrap().to_string();
    let child = Command::new("etcd")
        .args(["--name", "cp1", "--data-dir", dir.join("data").to_str().unwrap()])
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("cp1={peer_url}"), "--initial-cluster-state", "new"])
        .args(["--client-cert-auth", "--trusted-ca-file", &pki("ca.crt")])
        .args(["--cert-file", &pki("server.crt"), "--key-file", &pki("server.key")])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("etcd is installed (apt-get install etcd-server etcd-client)");
    RealEtcd { child, client_port, log }
}

/// `cp1` as kubeha reaches it: port 2379 on its loopback, through a tunnel that here is an
/// in-memory connection copied to the real etcd's random port.
fn bridged_host(etcd_port: u16) -> MemoryRemote {
    let remote = MemoryRemote::new("cp1");
    remote.listen_tcp("127.0.0.1", kubeha::host::layout::ETCD_CLIENT_PORT, move |mut tunnel| {
        tokio::spawn(async move {
            if let Ok(mut tcp) = tokio::net::TcpStream::connect(("127.0.0.1", etcd_port)).await {
                let _ = tokio::io::copy_bidirectional(&mut tunnel, &mut tcp).await;
            }
        });
    });
    remote
}

fn identity(name: &str, pair: &CertAndKey) -> ClientIdentity {
    ClientIdentity::from_pem_named(&format!("{name}.crt"), &pair.cert_pem, &format!("{name}.key"), &pair.key_pem)
        .unwrap()
}

fn etcdctl(args: &[&str]) -> std::process::Output {
    let out = Command::new("etcdctl").env("ETCDCTL_API", "3").args(args).output().expect("etcdctl is installed");
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

#[tokio::test]
async fn the_client_against_a_real_etcd() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let plan = kubeha::inventory::parse(include_str!("../inventories/example.yaml"), Path::new("/")).unwrap();
    let host = plan.host("cp1").unwrap();
    let certs = certs(&plan, dir.path());
    let mut etcd = start_etcd(dir.path(), &certs);
    let remote = bridged_host(etcd.client_port);

    // Health with the healthcheck identity, membership with the apiserver's, as kubeadm does.
    let health =
        EtcdClient::new(&remote, host, &certs.etcd_ca, &identity("etcd/healthcheck-client", &certs.healthcheck))
            .unwrap()
            .with_timeout(Duration::from_secs(5));
    let member_identity = identity("apiserver-etcd-client", &certs.apiserver_etcd_client);
    let client = EtcdClient::new(&remote, host, &certs.etcd_ca, &member_identity).unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match health.health().await {
            Ok(()) => break,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                if let Ok(Some(exit)) = etcd.child.try_wait() {
                    panic!("etcd exited ({exit}): {e}\n{}", etcd.log());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("etcd did not become healthy: {e}\n{}", etcd.log()),
        }
    }
    let up = started.elapsed();

    let status = health.status().await.unwrap();
    assert!(status.version.starts_with("3."), "{status:?}");
    assert!(status.is_leader() && !status.is_learner && status.member_id != 0, "{status:?}");
    assert!(status.raft_index > 0 && status.raft_term > 0 && status.db_size > 0, "{status:?}");

    let members = health.members().await.unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].id, status.member_id);
    assert_eq!(members[0].name, "cp1");
    assert_eq!(members[0].client_urls, [format!("https://127.0.0.1:{}", etcd.client_port)]);
    assert!(!members[0].is_learner);

    // Some data, so that the snapshot takes many messages.
    let tls = TlsClient::new(&certs.etcd_ca, Some(&member_identity)).unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for i in 0..8u8 {
        let value: Vec<u8> = (0..128 * 1024).map(|j: u32| (j as u8).wrapping_mul(31).wrapping_add(i)).collect();
        let put = serde_json::json!({"key": b64(format!("kubeha-test/{i}").as_bytes()), "value": b64(&value)});
        let tunnel = remote.open_tcp("127.0.0.1", 2379).await.unwrap();
        let resp = tls.request(tunnel, "127.0.0.1", &Request::post_json("/v3/kv/put", &put)).await.unwrap();
        assert!(resp.is_success(), "put: {} {}", resp.status, resp.text());
    }

    // A learner that will never start: it stays behind, so it cannot be promoted.
    let learner_url = format!("http://127.0.0.1:{}", free_port());
    let added = client.add_learner(&[learner_url.as_str()]).await.unwrap();
    assert!(added.member.is_learner && added.member.id != 0, "{added:?}");
    assert_eq!(added.member.peer_urls, [learner_url.as_str()]);
    assert_eq!(added.members.len(), 2, "{added:?}");
    let members = client.members().await.unwrap();
    let learner = members.iter().find(|m| m.id == added.member.id).expect("the learner is listed");
    assert!(learner.is_learner && !learner.is_started(), "{learner:?}");

    let err = client.promote(added.member.id).await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::LearnerNotReady), "{err:?}");
    assert!(err.is_retryable(), "{err}");
    let err = client.add_learner(&[format!("http://127.0.0.1:{}", free_port())]).await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::TooManyLearners) && err.is_retryable(), "{err:?}");
    let err = client.add_learner(&[learner_url.as_str()]).await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::PeerUrlsExist) && !err.is_retryable(), "the same URL again: {err:?}");
    let err = client.promote(status.member_id).await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::NotALearner) && !err.is_retryable(), "{err:?}");

    let left = client.remove(added.member.id).await.unwrap();
    assert_eq!(left.iter().map(|m| m.id).collect::<Vec<_>>(), [status.member_id]);
    assert_eq!(client.members().await.unwrap().len(), 1);
    let err = client.remove(added.member.id).await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::MemberNotFound) && !err.is_retryable(), "{err:?}");
    assert!(err.to_string().starts_with(&format!("cp1: etcd removing member {:x}: ", added.member.id)), "{err}");

    // A snapshot streamed to a file, accepted by etcdctl, identical to etcdctl's own.
    let path = dir.path().join("snapshot.db");
    let mut file = tokio::fs::File::create(&path).await.unwrap();
    let snap_started = Instant::now();
    let info = client.snapshot(&mut file).await.unwrap();
    let snap_took = snap_started.elapsed();
    file.sync_all().await.unwrap();
    drop(file);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(info.size, bytes.len() as u64);
    assert_eq!(info.sha256, hex::encode(Sha256::digest(&bytes)));
    assert!(info.size > 1 << 20, "{info:?}");
    let out = etcdctl(&["snapshot", "status", path.to_str().unwrap(), "-w", "json"]);
    let status_json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(status_json["totalKey"].as_u64().unwrap() >= 8, "{status_json}");
    // `restore` checks the SHA-256 etcd appended (refusing a snapshot without it).
    let restored = dir.path().join("restored");
    etcdctl(&["snapshot", "restore", path.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()]);
    assert!(restored.join("member/snap/db").exists());

    let theirs = dir.path().join("etcdctl.db");
    let pki = |name: &str| certs.dir.join(name).to_str().unwrap().to_string();
    etcdctl(&[
        "--endpoints",
        &format!("https://127.0.0.1:{}", etcd.client_port),
        "--cacert",
        &pki("ca.crt"),
        "--cert",
        &pki("healthcheck-client.crt"),
        "--key",
        &pki("healthcheck-client.key"),
        "snapshot",
        "save",
        theirs.to_str().unwrap(),
    ]);
    let out = etcdctl(&["snapshot", "status", theirs.to_str().unwrap(), "-w", "json"]);
    let theirs_json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status_json, theirs_json, "etcdctl sees the same database in both snapshots");
    assert!(std::fs::read(&theirs).unwrap() == bytes, "the same bytes as `etcdctl snapshot save`");

    eprintln!(
        "etcd healthy after {up:?}; snapshot of {} bytes in {snap_took:?}; whole test {:?}",
        info.size,
        started.elapsed()
    );
}
