//! The etcd client against a scripted gateway on a [`MemoryRemote`]'s loopback: the requests it
//! sends, the answers it reads (in etcd 3.4's JSON, ids as strings), how refusals are
//! classified, and snapshots streamed to a sink. `tests/etcd_client.rs` runs the same calls
//! against a real etcd.

use std::sync::{Arc, Mutex};

use super::snapshot::tests::{snapshot_bytes, stream};
use super::*;
use crate::https::testing::{Reply, Script, Seen, TestPki, serve};
use crate::transport::{Call, MemoryRemote, Output, TransportError};

fn host() -> Host {
    let plan =
        crate::inventory::parse(include_str!("../../../inventories/example.yaml"), std::path::Path::new("/")).unwrap();
    plan.host("cp1").unwrap().clone()
}

/// A host whose etcd answers with `script`; returns the host and the requests etcd saw.
fn etcd_host(
    pki: &TestPki,
    script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
) -> (MemoryRemote, Arc<Mutex<Vec<Seen>>>) {
    let remote = MemoryRemote::new("cp1");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let script: Script = Arc::new(move |req: &Seen| {
        record.lock().unwrap().push(req.clone());
        script(req)
    });
    let config = pki.server_config(true);
    remote
        .listen_tcp("127.0.0.1", layout::ETCD_CLIENT_PORT, move |stream| serve(stream, config.clone(), script.clone()));
    (remote, seen)
}

fn client<'r>(remote: &'r MemoryRemote, pki: &TestPki) -> EtcdClient<'r, MemoryRemote> {
    EtcdClient::new(remote, &host(), pki.ca_pem.as_bytes(), &pki.client_identity()).unwrap()
}

const HEADER: &str = r#""header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"1","raft_term":"2"}"#;

#[tokio::test]
async fn health_status_and_members_are_typed() {
    let pki = TestPki::new();
    let (remote, seen) = etcd_host(&pki, |req| match req.path.as_str() {
        "/health" => Reply::new(200, r#"{"health":"true"}"#),
        "/v3/maintenance/status" => Reply::new(
            200,
            format!(
                r#"{{{HEADER},"version":"3.4.23","dbSize":"20480","leader":"10276657743932975437","raftIndex":"5",
                "raftTerm":"2","raftAppliedIndex":"5","dbSizeInUse":"16384"}}"#
            ),
        ),
        "/v3/cluster/member/list" => Reply::new(
            200,
            format!(
                r#"{{{HEADER},"members":[{{"ID":"10276657743932975437","name":"cp1","peerURLs":["https://198.18.0.11:2380"],
                "clientURLs":["https://198.18.0.11:2379"]}},{{"ID":"18446744073709551615","peerURLs":["https://198.18.0.12:2380"],"isLearner":true}}]}}"#
            ),
        ),
        _ => Reply::new(404, "404 page not found"),
    });
    let etcd = client(&remote, &pki);
    etcd.health().await.unwrap();
    let status = etcd.status().await.unwrap();
    assert_eq!(
        status,
        Status {
            cluster_id: 14841639068965178418,
            member_id: 10276657743932975437,
            leader_id: 10276657743932975437,
            raft_term: 2,
            raft_index: 5,
            raft_applied_index: 5,
            revision: 1,
            db_size: 20480,
            db_size_in_use: 16384,
            version: "3.4.23".into(),
            is_learner: false,
            errors: vec![],
        }
    );
    assert!(status.is_leader());
    let members = etcd.members().await.unwrap();
    assert_eq!(members.len(), 2);
    assert_eq!(members[0].id, 10276657743932975437);
    assert!(members[0].is_started() && !members[0].is_learner);
    assert_eq!(members[0].client_urls, ["https://198.18.0.11:2379"]);
    assert_eq!(members[1].id, u64::MAX, "ids above 2^53 survive as strings");
    assert!(!members[1].is_started() && members[1].is_learner);

    let seen = seen.lock().unwrap();
    let asked: Vec<(&str, &str)> = seen.iter().map(|s| (s.method.as_str(), s.path.as_str())).collect();
    assert_eq!(asked, [("GET", "/health"), ("POST", "/v3/maintenance/status"), ("POST", "/v3/cluster/member/list")]);
    assert!(seen.iter().all(|s| s.client_cert), "etcd requires the client certificate");
    let tunnels: Vec<Call> = remote.calls();
    assert!(tunnels.iter().all(|c| *c == Call::OpenTcp { address: "127.0.0.1".into(), port: 2379 }), "{tunnels:?}");
    assert_eq!(tunnels.len(), 3, "one tunnel per call");
}

#[tokio::test]
async fn unhealthy_answers_carry_etcds_reason() {
    let pki = TestPki::new();
    for (status, body, reason) in [
        (503, r#"{"health":"false","reason":"RAFT NO LEADER"}"#, "RAFT NO LEADER"),
        (503, r#"{"health":"false"}"#, r#"health is "false""#),
        (404, "404 page not found\n", "404 page not found"),
    ] {
        let (remote, _) = etcd_host(&pki, move |_| Reply::new(status, body));
        let err = client(&remote, &pki).health().await.unwrap_err();
        assert!(
            matches!(&err.kind, EtcdErrorKind::Unhealthy { status: s, reason: r } if *s == status && r == reason),
            "{err:?}"
        );
        assert!(err.is_retryable());
        assert_eq!(err.to_string(), format!("cp1: etcd health check: unhealthy (HTTP {status}): {reason}"));
    }
}

#[tokio::test]
async fn membership_changes_and_how_refusals_are_classified() {
    let pki = TestPki::new();
    let learner = r#"{"ID":"6308427885985348428","peerURLs":["https://198.18.0.12:2380"],"isLearner":true}"#;
    let voter = r#"{"ID":"3319814642761637952","name":"cp1","peerURLs":["https://198.18.0.11:2380"]}"#;
    let not_ready = "etcdserver: can only promote a learner member which is in sync with leader";
    let (remote, seen) = etcd_host(&pki, move |req| {
        let id = req.json()["ID"].as_str().unwrap_or_default().to_string();
        let refusal = |status, code, message: &str| {
            // etcd 3.4/3.5 (grpc-gateway v1) repeat the message under "error"; 3.6 does not.
            Reply::json(status, serde_json::json!({"error": message, "message": message, "code": code}))
        };
        match (req.path.as_str(), id.as_str()) {
            ("/v3/cluster/member/add", _) if req.json()["peerURLs"][0] == "https://198.18.0.12:2380" => {
                Reply::new(200, format!(r#"{{{HEADER},"member":{learner},"members":[{voter},{learner}]}}"#))
            }
            ("/v3/cluster/member/add", _) => Reply::json(
                412,
                serde_json::json!({"code": 9, "message": "etcdserver: too many learner members in cluster"}),
            ),
            ("/v3/cluster/member/promote", "6308427885985348428") => refusal(412, 9, not_ready),
            ("/v3/cluster/member/promote", "3319814642761637952") => {
                refusal(412, 9, "etcdserver: can only promote a learner member")
            }
            ("/v3/cluster/member/remove", "6308427885985348428") => {
                Reply::new(200, format!(r#"{{{HEADER},"members":[{voter}]}}"#))
            }
            ("/v3/cluster/member/remove", "1") => refusal(503, 14, "etcdserver: unhealthy cluster"),
            ("/v3/cluster/member/remove", _) => refusal(404, 5, "etcdserver: member not found"),
            _ => Reply::new(500, "unexpected"),
        }
    });
    let etcd = client(&remote, &pki);

    let added = etcd.add_learner(&["https://198.18.0.12:2380"]).await.unwrap();
    assert_eq!(added.member.id, 6308427885985348428);
    assert!(added.member.is_learner && !added.member.is_started());
    assert_eq!(added.members.len(), 2);
    let err = etcd.add_learner(&["https://198.18.0.13:2380".to_string()]).await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::TooManyLearners), "{err:?}");
    assert!(err.is_retryable());

    let err = etcd.promote(6308427885985348428).await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::LearnerNotReady), "{err:?}");
    assert!(err.is_retryable());
    assert_eq!(err.op, EtcdOp::Promote { id: 6308427885985348428 });
    assert_eq!(
        err.to_string(),
        "cp1: etcd promoting member 578c09bd23533b4c: the learner is not in sync with the leader yet"
    );
    let err = etcd.promote(3319814642761637952).await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::NotALearner) && !err.is_retryable(), "{err:?}");

    let left = etcd.remove(6308427885985348428).await.unwrap();
    assert_eq!(left.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["cp1"]);
    let err = etcd.remove(42).await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::MemberNotFound) && !err.is_retryable(), "{err:?}");
    let err = etcd.remove(1).await.unwrap_err();
    assert!(
        matches!(&err.kind, EtcdErrorKind::Rejected { status: 503, code: Some(14), message } if message == "etcdserver: unhealthy cluster"),
        "{err:?}"
    );
    assert!(err.is_retryable());

    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].json(), serde_json::json!({"peerURLs": ["https://198.18.0.12:2380"], "isLearner": true}));
    assert_eq!(seen[2].json(), serde_json::json!({"ID": "6308427885985348428"}), "ids go out as strings");
}

#[tokio::test]
async fn snapshots_stream_to_the_sink_and_are_checked() {
    let pki = TestPki::new();
    let snapshot = snapshot_bytes(300_000);
    let body = stream(&snapshot, 32 * 1024);
    let mut damaged = snapshot.clone();
    damaged[1000] ^= 0xff;
    let damaged = stream(&damaged, 32 * 1024);
    let damaged_too = damaged.clone();
    let (remote, _) = etcd_host(&pki, move |req| {
        let body = if req.json()["damaged"] == true { &damaged } else { &body };
        // Pieces that cut lines anywhere, as the network may.
        Reply { status: 200, chunks: body.chunks(10_000).map(<[u8]>::to_vec).collect(), stall: false }
    });
    let etcd = client(&remote, &pki);
    let mut sink = Vec::new();
    let info = etcd.snapshot(&mut sink).await.unwrap();
    assert_eq!(sink, snapshot);
    assert_eq!(info.size, snapshot.len() as u64);
    use sha2::Digest;
    assert_eq!(info.sha256, hex::encode(sha2::Sha256::digest(&snapshot)));

    let (remote, _) = etcd_host(&pki, move |_| Reply { status: 200, chunks: vec![damaged_too.clone()], stall: false });
    let err = client(&remote, &pki).snapshot(&mut Vec::new()).await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::SnapshotDamaged { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cp1: etcd snapshot: the snapshot is damaged"), "{err}");

    let (remote, _) = etcd_host(&pki, |_| {
        Reply::json(
            503,
            serde_json::json!({"error": "etcdserver: no leader", "message": "etcdserver: no leader", "code": 14}),
        )
    });
    let err = client(&remote, &pki).snapshot(&mut Vec::new()).await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::Rejected { status: 503, .. }) && err.is_retryable(), "{err:?}");
}

/// A host whose SSH connection is gone.
struct Gone;

impl Remote for Gone {
    fn host(&self) -> &str {
        "cp1"
    }

    async fn exec(&self, _command: &str, _stdin: &[u8]) -> Result<Output, TransportError> {
        unreachable!("the etcd client only opens tunnels")
    }

    async fn open_tcp(&self, _address: &str, _port: u16) -> Result<Tunnel, TransportError> {
        Err(TransportError::Disconnected { host: "cp1".into(), what: "opening a channel".into(), reason: None })
    }
}

#[tokio::test]
async fn what_retrying_cannot_fix_is_fatal() {
    let pki = TestPki::new();
    // Nothing listening yet: retry.
    let remote = MemoryRemote::new("cp1");
    let err = client(&remote, &pki).health().await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::Tunnel(TransportError::TargetUnreachable { .. })), "{err:?}");
    assert!(err.is_retryable());
    // The SSH connection is gone: fatal.
    let etcd = EtcdClient::new(&Gone, &host(), pki.ca_pem.as_bytes(), &pki.client_identity()).unwrap();
    let err = etcd.members().await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::Tunnel(TransportError::Disconnected { .. })) && !err.is_retryable());
    assert!(err.to_string().starts_with("cp1: etcd member list: cp1: connection lost"), "{err}");
    // A server certificate from another CA: fatal.
    let (remote, _) = etcd_host(&pki, |_| Reply::new(200, r#"{"health":"true"}"#));
    let other = TestPki::new();
    let etcd = EtcdClient::new(&remote, &host(), other.ca_pem.as_bytes(), &pki.client_identity()).unwrap();
    let err = etcd.health().await.unwrap_err();
    assert!(matches!(&err.kind, EtcdErrorKind::Https(e) if e.is_verification_failure()), "{err:?}");
    assert!(!err.is_retryable());
    // A 2xx answer that is not the gateway's JSON: fatal.
    let (remote, _) = etcd_host(&pki, |_| Reply::new(200, "<html>"));
    let err = client(&remote, &pki).status().await.unwrap_err();
    assert!(matches!(err.kind, EtcdErrorKind::BadAnswer { .. }) && !err.is_retryable(), "{err:?}");
    // No key material in Debug or messages.
    let text = format!("{etcd:?} {err:?} {err}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
}
