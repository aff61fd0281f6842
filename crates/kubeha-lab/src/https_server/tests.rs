//! kubeha's HTTPS client against this server over in-memory pipes: verification by CA and
//! server name (IP and DNS), client certificate authentication, JSON POST.

use std::sync::Arc;

use http_body_util::BodyExt;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

use kubeha::https::{ClientIdentity, Request, TlsClient, VerifyFailure};

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
