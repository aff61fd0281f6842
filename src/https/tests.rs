//! The client without a server: timeouts, refused names and URLs, and key formats made by
//! openssl. Client and server together (verification by CA and server name, client
//! certificates, JSON POST) are tested where the server lives, in the lab crate.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::*;

/// A self-signed CA certificate (PEM).
fn ca_pem(name: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.remove(DnType::CommonName);
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let server_ca = ca_pem("etcd-ca");
    let client = TlsClient::new(server_ca.as_bytes(), None).unwrap().with_timeout(Duration::from_millis(300));
    let (stream, _silent) = tokio::io::duplex(1024);
    let err = client.request(stream, "127.0.0.1", &Request::get("/")).await.unwrap_err();
    assert!(matches!(err, HttpsError::Timeout { .. }), "{err}");
    assert!(err.is_transient());
}

#[test]
fn invalid_server_names_and_urls_are_refused() {
    let server_ca = ca_pem("ca");
    let client = TlsClient::new(server_ca.as_bytes(), None).unwrap();
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
