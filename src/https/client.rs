//! The HTTPS client: one request per connection, over any stream.
//!
//! kubeha's requests are rare and small (health checks, etcd member calls), and many go through
//! SSH channels opened for the purpose, so there is no connection pool: each call does a TLS
//! handshake on the stream it is given, sends one HTTP/1.1 request and reads the whole answer,
//! all under one timeout.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::error::classify;
use super::pem::{certificates, provider};
use super::{ClientIdentity, HttpsError, HttpsUrl};

/// Answers larger than this are refused (kubeha only reads small JSON documents).
const MAX_BODY: usize = 8 << 20;

/// An HTTP request: method, path and an optional JSON body.
#[derive(Debug, Clone)]
pub struct Request {
    method: hyper::Method,
    path: String,
    json: Option<Vec<u8>>,
}

impl Request {
    /// `GET path`.
    pub fn get(path: &str) -> Request {
        Request { method: hyper::Method::GET, path: path.to_string(), json: None }
    }

    /// `POST path` with `body` as `application/json`.
    pub fn post_json(path: &str, body: &serde_json::Value) -> Request {
        Request { method: hyper::Method::POST, path: path.to_string(), json: Some(body.to_string().into_bytes()) }
    }

    /// The path (with query) this request asks for.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// A complete HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// A TLS client that trusts exactly one CA bundle and optionally presents a client certificate.
///
/// Cheap to clone; build one per (CA, identity) and reuse it.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    timeout: Duration,
    connect_timeout: Duration,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client verifying servers against the CA certificates in `ca_pem`, with TLS 1.2 and 1.3,
    /// presenting `identity` when the server asks for a client certificate.
    /// Timeouts default to 10 s for a whole request and 5 s for a TCP connect.
    pub fn new(ca_pem: &[u8], identity: Option<&ClientIdentity>) -> Result<TlsClient, HttpsError> {
        TlsClient::from_certificates(certificates("CA certificate", ca_pem)?, identity)
    }

    /// Like [`TlsClient::new`] with already parsed CA certificates.
    pub fn from_certificates(
        ca: Vec<CertificateDer<'static>>,
        identity: Option<&ClientIdentity>,
    ) -> Result<TlsClient, HttpsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in ca {
            roots.add(cert).map_err(|e| HttpsError::Pem {
                what: "CA certificate".into(),
                reason: format!("not usable as a CA: {e}"),
            })?;
        }
        let provider = provider();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| HttpsError::Config { detail: e.to_string() })?;
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpsError::Config { detail: e.to_string() })?
            .with_webpki_verifier(verifier);
        let mut config = match identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| HttpsError::Config { detail: format!("client certificate {}: {e}", id.subject()) })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsClient {
            connector: TlsConnector::from(Arc::new(config)),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        })
    }

    /// Sets the time allowed for a whole request (handshake, request, response body).
    pub fn with_timeout(mut self, timeout: Duration) -> TlsClient {
        self.timeout = timeout;
        self
    }

    /// Sets the time allowed for a TCP connect (URL methods only).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> TlsClient {
        self.connect_timeout = timeout;
        self
    }

    /// Does a TLS handshake over `stream`, verifying the server's certificate for
    /// `server_name` (a DNS name or an IP address such as `127.0.0.1`), then sends `request`
    /// and reads the whole response.
    pub async fn request<S>(&self, stream: S, server_name: &str, request: &Request) -> Result<Response, HttpsError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let host = match server_name.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{server_name}]"),
            Err(_) => server_name.to_string(),
        };
        self.exchange(stream, server_name, &host, request).await
    }

    /// `GET url` over a fresh TCP connection; the URL's host is the TLS server name.
    pub async fn get(&self, url: &str) -> Result<Response, HttpsError> {
        let url = HttpsUrl::parse(url)?;
        self.send(&url, &Request::get(&url.path)).await
    }

    /// `POST url` with a JSON body over a fresh TCP connection.
    pub async fn post_json(&self, url: &str, body: &serde_json::Value) -> Result<Response, HttpsError> {
        let url = HttpsUrl::parse(url)?;
        self.send(&url, &Request::post_json(&url.path, body)).await
    }

    /// Connects to `url`'s host and port (within the connect timeout) and sends `request`
    /// (whose path is used, not the URL's).
    pub async fn send(&self, url: &HttpsUrl, request: &Request) -> Result<Response, HttpsError> {
        self.send_as(url, &url.host, request).await
    }

    /// Like [`TlsClient::send`], verifying the server's certificate for `server_name` instead
    /// of the URL's host (a kubeconfig's `tls-server-name`, or a VIP dialled by address whose
    /// certificate is checked for a DNS name).
    pub async fn send_as(&self, url: &HttpsUrl, server_name: &str, request: &Request) -> Result<Response, HttpsError> {
        let authority = url.authority();
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(&authority)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(source)) => return Err(HttpsError::Connect { addr: authority, source }),
            Err(_) => {
                return Err(HttpsError::Timeout {
                    server: authority,
                    stage: "TCP connect",
                    after: self.connect_timeout,
                });
            }
        };
        let _ = stream.set_nodelay(true);
        self.exchange(stream, server_name, &authority, request).await
    }

    async fn exchange<S>(
        &self,
        stream: S,
        server_name: &str,
        host: &str,
        request: &Request,
    ) -> Result<Response, HttpsError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|_| HttpsError::ServerName { name: server_name.to_string() })?;
        let work = async {
            let tls =
                self.connector.connect(name, stream).await.map_err(|e| {
                    classify(host, &e, |detail| HttpsError::Handshake { server: host.to_string(), detail })
                })?;
            round_trip(tls, host, request).await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => {
                Err(HttpsError::Timeout { server: host.to_string(), stage: "HTTPS request", after: self.timeout })
            }
        }
    }
}

/// Sends one request on an established TLS stream and collects the response, driving the
/// connection until the body is complete.
async fn round_trip<T>(tls: T, host: &str, request: &Request) -> Result<Response, HttpsError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |e: &(dyn std::error::Error + 'static)| {
        classify(host, e, |detail| HttpsError::Http { server: host.to_string(), detail })
    };
    let (mut sender, conn) = http1::handshake(TokioIo::new(tls)).await.map_err(|e| http_err(&e))?;

    let mut builder = hyper::Request::builder()
        .method(request.method.clone())
        .uri(&request.path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, concat!("kubeha/", env!("CARGO_PKG_VERSION")))
        .header(hyper::header::ACCEPT, "application/json, */*");
    let body = match &request.json {
        Some(json) => {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(json.clone()))
        }
        None => Full::new(Bytes::new()),
    };
    let req = builder
        .body(body)
        .map_err(|e| HttpsError::Http { server: host.to_string(), detail: format!("building the request: {e}") })?;

    let exchange = async move {
        let resp = sender.send_request(req).await.map_err(|e| http_err(&e))?;
        let status = resp.status().as_u16();
        let collected = Limited::new(resp.into_body(), MAX_BODY).collect().await.map_err(|e| {
            let e: &(dyn std::error::Error + 'static) = &*e;
            http_err(e)
        })?;
        Ok::<_, HttpsError>(Response { status, body: collected.to_bytes().to_vec() })
    };
    let mut exchange = pin!(exchange);
    let mut conn = pin!(conn);
    tokio::select! {
        biased;
        result = &mut exchange => result,
        conn_result = &mut conn => {
            // The connection may finish (server closed after the last byte) just before the
            // exchange has seen the end of the body: let the exchange finish on what it has.
            match exchange.await {
                Ok(resp) => Ok(resp),
                Err(e) => match conn_result {
                    Err(conn_err) => Err(http_err(&conn_err)),
                    Ok(()) => Err(e),
                },
            }
        }
    }
}
