//! The HTTPS server the stand-ins for kube-apiserver, kube-controller-manager and kube-scheduler
//! share: serving certificates, optional client certificates, and a small HTTP/1.1 accept loop.
//!
//! It builds on kubeha's HTTPS client half (`kubeha::https`: PEM loading, the crypto provider,
//! [`HttpsError`]). Client certificates are requested without being required and verified against
//! a client CA per connection, like kube-apiserver does (`verifier`). Each connection's client is
//! judged once after the handshake ([`Peer`]) and handed to the request handler, which decides
//! between 200, 401 and 403 as the real component would.

mod verifier;

#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use kubeha::https::{
    HttpsError, certificates, key_matches_certificate, private_key, provider, read_certificates, read_private_key,
};
use verifier::ClientCertPolicy;

/// Who is on the other end of a server connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// No client certificate was presented.
    Anonymous,
    /// A client certificate that chains to the client CA: the user is its CN, the groups its Os
    /// (Kubernetes' x509 authentication).
    Authenticated { user: String, groups: Vec<String> },
    /// A client certificate was presented but does not verify (or no client CA is configured).
    Rejected(String),
}

impl Peer {
    pub(crate) fn from_certificate(cert: &CertificateDer<'_>) -> Peer {
        match x509_parser::parse_x509_certificate(cert.as_ref()) {
            Ok((_, c)) => {
                let subject = c.subject();
                let user =
                    subject.iter_common_name().next().and_then(|a| a.as_str().ok()).unwrap_or_default().to_string();
                let groups = subject.iter_organization().filter_map(|a| a.as_str().ok()).map(str::to_string).collect();
                Peer::Authenticated { user, groups }
            }
            Err(e) => Peer::Rejected(format!("unparsable client certificate: {e}")),
        }
    }
}

/// A request handler: gets the connection's [`Peer`] and the request, returns the response.
pub type Handler = Arc<
    dyn Fn(Peer, hyper::Request<Incoming>) -> Pin<Box<dyn Future<Output = hyper::Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// A rustls server configuration with its client-certificate policy.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    policy: Option<Arc<ClientCertPolicy>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("client_ca", &self.policy.is_some()).finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Serves `chain` with `key`; when `client_ca` is given, client certificates are requested
    /// (not required) and judged against it. Fails if the key does not belong to the
    /// certificate.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_ca: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<ServerTls, HttpsError> {
        let Some(leaf) = chain.first() else {
            return Err(HttpsError::Config { detail: "no serving certificate".into() });
        };
        if !key_matches_certificate("serving certificate", leaf, &key)? {
            return Err(HttpsError::Pem {
                what: "serving certificate".into(),
                reason: "private key does not match public key".into(),
            });
        }
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpsError::Config { detail: e.to_string() })?;
        let (builder, policy) = match client_ca {
            Some(ca) => {
                let policy = Arc::new(ClientCertPolicy::new(ca)?);
                (builder.with_client_cert_verifier(policy.clone()), Some(policy))
            }
            None => (builder.with_no_client_auth(), None),
        };
        let mut config =
            builder.with_single_cert(chain, key).map_err(|e| HttpsError::Config { detail: e.to_string() })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls { config: Arc::new(config), policy })
    }

    /// Like [`ServerTls::new`] from PEM text.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], client_ca_pem: Option<&[u8]>) -> Result<ServerTls, HttpsError> {
        let chain = certificates("serving certificate", cert_pem)?;
        let key = private_key("serving key", key_pem)?;
        let client_ca = client_ca_pem.map(|pem| certificates("client CA", pem)).transpose()?;
        ServerTls::new(chain, key, client_ca)
    }

    /// Like [`ServerTls::new`] from PEM files (errors name the files).
    pub fn from_files(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTls, HttpsError> {
        let chain = read_certificates(&cert.display().to_string(), cert)?;
        let key = read_private_key(&key.display().to_string(), key)?;
        let client_ca = client_ca.map(|p| read_certificates(&p.display().to_string(), p)).transpose()?;
        ServerTls::new(chain, key, client_ca)
    }

    /// A fresh in-memory self-signed ECDSA P-256 certificate for `names` (DNS names or IP
    /// addresses), valid for a year; what kube-controller-manager and kube-scheduler serve when
    /// given no `--tls-cert-file`.
    pub fn self_signed(
        common_name: &str,
        names: &[String],
        client_ca: Option<Vec<CertificateDer<'static>>>,
    ) -> Result<ServerTls, HttpsError> {
        let gen_err = |e: rcgen::Error| HttpsError::Config { detail: format!("self-signed certificate: {e}") };
        let key = rcgen::KeyPair::generate().map_err(gen_err)?;
        let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(gen_err)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial)
            .map_err(|e| HttpsError::Config { detail: format!("random serial number: {e}") })?;
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - Duration::from_secs(3600);
        params.not_after = now + Duration::from_secs(365 * 24 * 3600);
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature, rcgen::KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.self_signed(&key).map_err(gen_err)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        ServerTls::new(vec![cert.der().clone()], key_der, client_ca)
    }

    /// The rustls configuration, for callers that run their own accept loop. Client
    /// certificates are not verified in the handshake: call [`ServerTls::peer`] on each
    /// accepted connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.clone()
    }

    /// Judges the client of a finished handshake (see [`Peer`]).
    pub fn peer(&self, conn: &rustls::ServerConnection) -> Peer {
        let presented = conn.peer_certificates();
        match &self.policy {
            Some(policy) => policy.judge(presented),
            None if presented.is_some_and(|c| !c.is_empty()) => {
                Peer::Rejected("no client CA is configured to verify client certificates".into())
            }
            None => Peer::Anonymous,
        }
    }
}

/// Accepts TLS connections on `listener` forever, serving HTTP/1.1 with `handler`. Failed
/// handshakes are logged (at debug level) and dropped, as Go servers do. Stop it by dropping or
/// aborting the future.
pub async fn serve(listener: TcpListener, tls: ServerTls, handler: Handler) {
    let tls = Arc::new(tls);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept on {:?}: {e}", listener.local_addr().ok());
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let tls = tls.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_stream(tcp, &tls, handler).await {
                tracing::debug!("connection from {remote}: {e}");
            }
        });
    }
}

/// Serves one connection on an accepted stream (TCP, or an in-memory pipe in tests): TLS
/// handshake (within 10 s), then HTTP/1.1 requests until the client closes.
pub async fn serve_stream<S>(stream: S, tls: &ServerTls, handler: Handler) -> Result<(), HttpsError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let acceptor = TlsAcceptor::from(tls.config());
    let stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(HttpsError::Handshake { server: "client".into(), detail: e.to_string() }),
        Err(_) => {
            return Err(HttpsError::Timeout {
                server: "client".into(),
                stage: "TLS handshake",
                after: Duration::from_secs(10),
            });
        }
    };
    let peer = tls.peer(stream.get_ref().1);
    let service = service_fn(move |req| {
        let fut = handler(peer.clone(), req);
        async move { Ok::<_, Infallible>(fut.await) }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
        .map_err(|e| HttpsError::Http { server: "client".into(), detail: e.to_string() })
}
