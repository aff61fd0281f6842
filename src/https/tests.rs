//! Client and server over in-memory pipes: verification by CA and server name (IP and DNS),
//! client certificate authentication, JSON POST, timeouts, and key formats made by openssl.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

use super::*;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.remove(DnType::CommonName);
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
}

/// A leaf signed by `ca`: returns (certificate PEM, key PEM).
fn leaf(ca: &Ca, cn: &str, orgs: &[&str], sans: &[&str], usage: ExtendedKeyUsagePurpose) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.remove(DnType::CommonName);
    params.distinguished_name.push(DnType::CommonName, cn);
    for org in orgs {
        params.distinguished_name.push(DnType::OrganizationName, *org);
    }
    params.extended_key_usages = vec![usage];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A server on one end of an in-memory pipe answering with the peer and the request it saw.
fn start_server(server_ca: &Ca, client_ca: Option<&Ca>) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<()>) {
    let (cert, key) = leaf(server_ca, "server", &[], &["etcd.test", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let tls = ServerTls::from_pem(cert.as_bytes(), key.as_bytes(), client_ca.map(|c| c.pem.as_bytes())).unwrap();
    let handler: Handler = Arc::new(|peer, req| {
        Box::pin(async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let content_type =
                req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
            let (status, who) = match &peer {
                Peer::Anonymous => (200, "anonymous".to_string()),
                Peer::Authenticated { user, groups } => (200, format!("{user}/{}", groups.join(","))),
                Peer::Rejected(reason) => (401, format!("rejected: {reason}")),
            };
            let doc = serde_json::json!({
                "who": who, "method": method, "path": path, "contentType": content_type,
                "body": String::from_utf8_lossy(&body),
            });
            let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(doc.to_string())));
            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
            resp
        })
    });
    let (client_end, server_end) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(async move {
        let _ = serve_stream(server_end, &tls, handler).await;
    });
    (client_end, task)
}

#[tokio::test]
async fn verifies_ip_and_dns_server_names() {
    let server_ca = ca("etcd-ca");
    let client = TlsClient::new(server_ca.pem.as_bytes(), None).unwrap();
    for name in ["127.0.0.1", "etcd.test"] {
        let (stream, _server) = start_server(&server_ca, None);
        let resp = client.request(stream, name, &Request::get("/health")).await.unwrap();
        assert_eq!(resp.status, 200, "{name}");
        let doc: serde_json::Value = resp.json().unwrap();
        assert_eq!(doc["path"], "/health");
        assert_eq!(doc["who"], "anonymous");
    }
}

#[tokio::test]
async fn name_mismatch_is_a_verification_failure() {
    let server_ca = ca("etcd-ca");
    let client = TlsClient::new(server_ca.pem.as_bytes(), None).unwrap();
    for name in ["other.test", "192.0.2.7"] {
        let (stream, _server) = start_server(&server_ca, None);
        let err = client.request(stream, name, &Request::get("/")).await.unwrap_err();
        assert_eq!(err.verify_failure(), Some(VerifyFailure::NameMismatch), "{name}: {err}");
        let text = err.to_string();
        assert!(text.contains("127.0.0.1") && text.contains(name), "{text}");
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn wrong_ca_is_a_verification_failure() {
    let server_ca = ca("etcd-ca");
    let other = ca("other-ca");
    let client = TlsClient::new(other.pem.as_bytes(), None).unwrap();
    let (stream, _server) = start_server(&server_ca, None);
    let err = client.request(stream, "127.0.0.1", &Request::get("/")).await.unwrap_err();
    assert_eq!(err.verify_failure(), Some(VerifyFailure::UnknownCa), "{err}");
    assert!(err.to_string().contains("unknown authority"), "{err}");
}

#[tokio::test]
async fn client_certificates_are_judged_against_the_client_ca() {
    let server_ca = ca("ca");
    let client_ca = ca("client-ca");
    let (cert, key) =
        leaf(&client_ca, "kubernetes-admin", &["kubeadm:cluster-admins"], &[], ExtendedKeyUsagePurpose::ClientAuth);
    let identity = ClientIdentity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let client = TlsClient::new(server_ca.pem.as_bytes(), Some(&identity)).unwrap();
    let (stream, _server) = start_server(&server_ca, Some(&client_ca));
    let resp = client.request(stream, "127.0.0.1", &Request::get("/api")).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json::<serde_json::Value>().unwrap()["who"], "kubernetes-admin/kubeadm:cluster-admins");

    // Without a certificate: anonymous.
    let anonymous = TlsClient::new(server_ca.pem.as_bytes(), None).unwrap();
    let (stream, _server) = start_server(&server_ca, Some(&client_ca));
    let resp = anonymous.request(stream, "127.0.0.1", &Request::get("/api")).await.unwrap();
    assert_eq!(resp.json::<serde_json::Value>().unwrap()["who"], "anonymous");

    // A certificate from another CA completes the handshake but is rejected, as kube-apiserver
    // answers 401 rather than failing TLS.
    let stranger_ca = ca("stranger");
    let (cert, key) = leaf(&stranger_ca, "intruder", &[], &[], ExtendedKeyUsagePurpose::ClientAuth);
    let stranger = ClientIdentity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let client = TlsClient::new(server_ca.pem.as_bytes(), Some(&stranger)).unwrap();
    let (stream, _server) = start_server(&server_ca, Some(&client_ca));
    let resp = client.request(stream, "127.0.0.1", &Request::get("/api")).await.unwrap();
    assert_eq!(resp.status, 401);
    assert!(resp.text().contains("unknown authority"), "{}", resp.text());

    // A server certificate is not a client certificate (extended key usage).
    let (cert, key) = leaf(&client_ca, "server-as-client", &[], &["x.test"], ExtendedKeyUsagePurpose::ServerAuth);
    let wrong_usage = ClientIdentity::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();
    let client = TlsClient::new(server_ca.pem.as_bytes(), Some(&wrong_usage)).unwrap();
    let (stream, _server) = start_server(&server_ca, Some(&client_ca));
    let resp = client.request(stream, "127.0.0.1", &Request::get("/api")).await.unwrap();
    assert_eq!(resp.status, 401, "{}", resp.text());
}

#[tokio::test]
async fn posts_json() {
    let server_ca = ca("etcd-ca");
    let client = TlsClient::new(server_ca.pem.as_bytes(), None).unwrap();
    let (stream, _server) = start_server(&server_ca, None);
    let body = serde_json::json!({"key": "aGVhbHRo", "nested": {"n": 3}});
    let resp = client.request(stream, "127.0.0.1", &Request::post_json("/v3/kv/range", &body)).await.unwrap();
    let doc: serde_json::Value = resp.json().unwrap();
    assert_eq!(doc["method"], "POST");
    assert_eq!(doc["path"], "/v3/kv/range");
    assert_eq!(doc["contentType"], "application/json");
    let echoed: serde_json::Value = serde_json::from_str(doc["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed, body);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let server_ca = ca("etcd-ca");
    let client = TlsClient::new(server_ca.pem.as_bytes(), None).unwrap().with_timeout(Duration::from_millis(300));
    let (stream, _silent) = tokio::io::duplex(1024);
    let err = client.request(stream, "127.0.0.1", &Request::get("/")).await.unwrap_err();
    assert!(matches!(err, HttpsError::Timeout { .. }), "{err}");
    assert!(err.is_transient());
}

#[test]
fn invalid_server_names_and_urls_are_refused() {
    let server_ca = ca("ca");
    let client = TlsClient::new(server_ca.pem.as_bytes(), None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (stream, _other) = tokio::io::duplex(1024);
    let err = rt.block_on(client.request(stream, "not a name!", &Request::get("/"))).unwrap_err();
    assert!(matches!(err, HttpsError::ServerName { .. }), "{err}");
    let err = rt.block_on(client.get("http://198.18.240.1/")).unwrap_err();
    assert!(matches!(err, HttpsError::Url { .. }), "{err}");
}

/// Keys in every PEM form kubeadm and openssl write load, match their certificates, and
/// never show up in errors or `Debug`.
#[test]
fn key_formats_from_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(d).output().expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["genrsa", "-traditional", "-out", "rsa1.key", "2048"]);
    run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa8.key"]);
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-out", "ec1.key"]);
    run(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ec8.key"]);
    let names = ["rsa1", "rsa8", "ec1", "ec8"];
    for name in names {
        run(&[
            "req",
            "-new",
            "-x509",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={name}"),
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
        ]);
    }
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();
    let header = String::from_utf8(read("rsa1.key")).unwrap();
    assert!(header.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "PKCS#1 expected");
    assert!(String::from_utf8(read("ec1.key")).unwrap().contains("BEGIN EC PRIVATE KEY"), "SEC1 expected");
    for name in names {
        let id = ClientIdentity::from_pem(&read(&format!("{name}.crt")), &read(&format!("{name}.key")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(id.subject().contains(name));
        assert!(!format!("{id:?}").contains("BEGIN"), "Debug shows key material");
    }
    // Mismatched pair, and garbage in a key file: errors without key bytes.
    let err = ClientIdentity::from_pem(&read("rsa1.crt"), &read("ec8.key")).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let key_text = String::from_utf8(read("ec8.key")).unwrap();
    let body_line = key_text.lines().nth(1).unwrap();
    let broken = key_text.replace(body_line, &format!("{}!!", &body_line[..body_line.len() - 2]));
    let err = private_key("broken.key", broken.as_bytes()).unwrap_err();
    assert!(!err.to_string().contains(&body_line[..20]), "error quotes the key: {err}");
    let err = private_key("cert-not-key", &read("rsa1.crt")).unwrap_err();
    assert!(err.to_string().contains("no PEM private key"), "{err}");
}

/// The streaming variant hands the body over in the pieces the server sent, is not bound by
/// the 8 MiB cap of whole-body requests, and times out per wait when a body stalls.
#[tokio::test]
async fn streams_bodies_in_pieces_without_the_size_cap() {
    use super::testing::{Reply, Script, TestPki, serve};

    let pki = TestPki::new();
    let identity = pki.client_identity();
    let client = TlsClient::new(pki.ca_pem.as_bytes(), Some(&identity)).unwrap().with_timeout(Duration::from_secs(5));
    let piece = vec![b'x'; 1 << 20];
    let pieces = 9;
    let script: Script = Arc::new(move |seen| {
        assert!(seen.client_cert);
        match seen.path.as_str() {
            "/big" => Reply { status: 200, chunks: vec![piece.clone(); pieces], stall: false },
            "/stall" => Reply { status: 200, chunks: vec![b"first".to_vec()], stall: true },
            _ => Reply::new(404, "not found"),
        }
    });
    let open = |config| {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        serve(theirs, config, script.clone());
        ours
    };

    let mut resp =
        client.request_streaming(open(pki.server_config(true)), "127.0.0.1", &Request::get("/big")).await.unwrap();
    assert!(resp.is_success());
    let (mut total, mut count) = (0, 0);
    while let Some(data) = resp.chunk().await.unwrap() {
        assert!(!data.is_empty());
        total += data.len();
        count += 1;
    }
    assert_eq!(total, pieces << 20);
    assert!(count >= pieces, "{count} pieces");
    assert!(resp.chunk().await.unwrap().is_none(), "the end stays the end");
    // The whole-body request refuses the same answer.
    let err = client.request(open(pki.server_config(true)), "127.0.0.1", &Request::get("/big")).await.unwrap_err();
    assert!(matches!(err, HttpsError::Http { .. }), "{err}");

    let resp =
        client.request_streaming(open(pki.server_config(true)), "127.0.0.1", &Request::get("/nope")).await.unwrap();
    assert_eq!(resp.status, 404);
    assert_eq!(resp.into_response().await.unwrap().text(), "not found");

    let client = client.with_timeout(Duration::from_millis(300));
    let mut resp =
        client.request_streaming(open(pki.server_config(true)), "127.0.0.1", &Request::get("/stall")).await.unwrap();
    assert_eq!(resp.chunk().await.unwrap().unwrap().as_ref(), b"first");
    let err = resp.chunk().await.unwrap_err();
    assert!(matches!(err, HttpsError::Timeout { stage: "HTTPS response body", .. }), "{err}");
}

#[tokio::test]
async fn streaming_reports_a_body_cut_short() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let pki = super::testing::TestPki::new();
    let client = TlsClient::new(pki.ca_pem.as_bytes(), None).unwrap();
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let config = pki.server_config(false);
    tokio::spawn(async move {
        let mut tls = tokio_rustls::TlsAcceptor::from(config).accept(theirs).await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = tls.read(&mut buf).await.unwrap();
        tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial").await.unwrap();
        tls.shutdown().await.unwrap();
    });
    let mut resp = client.request_streaming(ours, "127.0.0.1", &Request::get("/")).await.unwrap();
    let mut got = Vec::new();
    let err = loop {
        match resp.chunk().await {
            Ok(Some(data)) => got.extend_from_slice(&data),
            Ok(None) => panic!("a body cut short must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, b"partial");
    assert!(matches!(err, HttpsError::Http { .. }), "{err}");
}
