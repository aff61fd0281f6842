//! Test support: a throwaway CA with a loopback server certificate and a client identity, and
//! a small HTTPS server for one in-memory connection whose answers a test scripts.
//!
//! Built on tokio-rustls and hyper directly (not on [`super::serve_stream`], which serves the
//! lab's stand-ins) so that tests of the clients built on [`super::TlsClient`] can make a server
//! behave like etcd (client certificates required) or kube-apiserver (optional), and send a body
//! in pieces or stall in the middle of one.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::{ClientIdentity, provider};

/// A CA with a server certificate for `127.0.0.1`, `::1` and `localhost`, and a client
/// certificate (`CN=kube-etcd-healthcheck-client`), all signed by it.
pub(crate) struct TestPki {
    pub ca_pem: String,
    server: (String, String),
    client: (String, String),
}

impl TestPki {
    pub(crate) fn new() -> TestPki {
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.remove(DnType::CommonName);
        params.distinguished_name.push(DnType::CommonName, "test-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(params, ca_key);
        let leaf = |cn: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
            params.distinguished_name.remove(DnType::CommonName);
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            (params.signed_by(&key, &issuer).unwrap().pem(), key.serialize_pem())
        };
        let server = leaf("server", &["127.0.0.1", "::1", "localhost"], ExtendedKeyUsagePurpose::ServerAuth);
        let client = leaf("kube-etcd-healthcheck-client", &[], ExtendedKeyUsagePurpose::ClientAuth);
        TestPki { ca_pem, server, client }
    }

    /// The client identity signed by this CA.
    pub(crate) fn client_identity(&self) -> ClientIdentity {
        ClientIdentity::from_pem(self.client.0.as_bytes(), self.client.1.as_bytes()).unwrap()
    }

    /// A server configuration with the server certificate; client certificates signed by this
    /// CA are required when `require_client_cert` (as etcd's `--client-cert-auth` does), else
    /// optional.
    pub(crate) fn server_config(&self, require_client_cert: bool) -> Arc<ServerConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).unwrap()).unwrap();
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
        let verifier =
            if require_client_cert { builder.build() } else { builder.allow_unauthenticated().build() }.unwrap();
        let chain = vec![CertificateDer::from_pem_slice(self.server.0.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(self.server.1.as_bytes()).unwrap();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// A request as the test server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// Whether the client presented a certificate.
    pub client_cert: bool,
}

impl Seen {
    /// The body parsed as JSON (`null` when empty).
    pub(crate) fn json(&self) -> serde_json::Value {
        if self.body.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&self.body).unwrap() }
    }
}

/// A scripted answer: a status and a body sent in the given pieces (each its own chunk on the
/// wire, a moment apart), optionally never finished.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub chunks: Vec<Vec<u8>>,
    pub stall: bool,
}

impl Reply {
    pub(crate) fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply { status, chunks: vec![body.into()], stall: false }
    }

    pub(crate) fn json(status: u16, body: serde_json::Value) -> Reply {
        Reply::new(status, body.to_string())
    }
}

/// How the test server answers each request.
pub(crate) type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// Serves HTTPS on `stream` (the host's end of an in-memory connection) in a new task,
/// answering each request with `script`.
pub(crate) fn serve(stream: tokio::io::DuplexStream, config: Arc<ServerConfig>, script: Script) {
    tokio::spawn(async move {
        let Ok(tls) = TlsAcceptor::from(config).accept(stream).await else { return };
        let client_cert = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let script = script.clone();
            async move {
                let method = req.method().to_string();
                let path = req.uri().to_string();
                let body = req.into_body().collect().await.map(|b| b.to_bytes().to_vec()).unwrap_or_default();
                let reply = script(&Seen { method, path, body, client_cert });
                Ok::<_, Infallible>(response(reply))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
    });
}

fn response(reply: Reply) -> hyper::Response<BoxBody<Bytes, Infallible>> {
    let pieces = futures::stream::iter(reply.chunks).then(|chunk| async move {
        // A pause between pieces so that they leave as separate chunks.
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok::<_, Infallible>(Frame::data(Bytes::from(chunk)))
    });
    let body = if reply.stall {
        BoxBody::new(StreamBody::new(pieces.chain(futures::stream::pending())))
    } else {
        BoxBody::new(StreamBody::new(pieces))
    };
    let mut resp = hyper::Response::new(body);
    *resp.status_mut() = hyper::StatusCode::from_u16(reply.status).unwrap();
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    resp
}
