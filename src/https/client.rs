//! The HTTPS client: one request per connection, over any stream.
//!
//! kubeha's requests are rare and small (health checks, etcd member calls), and many go through
//! SSH channels opened for the purpose, so there is no connection pool: each call does a TLS
//! handshake on the stream it is given, sends one HTTP/1.1 request and reads the whole answer,
//! all under one timeout.
//!
//! The one large answer kubeha reads, an etcd snapshot, comes through
//! [`TlsClient::request_streaming`] instead: the body is handed over piece by piece as it
//! arrives ([`StreamingResponse::chunk`]), without the size cap, and the timeout bounds each
//! wait for data rather than the whole transfer.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
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

const JSON: &str = "application/json";

/// Answers larger than this are refused (kubeha only reads small JSON documents).
const MAX_BODY: usize = 8 << 20;

/// An HTTP request: method, path and an optional JSON body with its content type.
#[derive(Debug, Clone)]
pub struct Request {
    method: hyper::Method,
    path: String,
    json: Option<Vec<u8>>,
    content_type: &'static str,
}

impl Request {
    /// `GET path`.
    pub fn get(path: &str) -> Request {
        Request { method: hyper::Method::GET, path: path.to_string(), json: None, content_type: JSON }
    }

    /// `DELETE path`.
    pub fn delete(path: &str) -> Request {
        Request { method: hyper::Method::DELETE, path: path.to_string(), json: None, content_type: JSON }
    }

    /// `POST path` with `body` as `application/json`.
    pub fn post_json(path: &str, body: &serde_json::Value) -> Request {
        Request {
            method: hyper::Method::POST,
            path: path.to_string(),
            json: Some(body.to_string().into_bytes()),
            content_type: JSON,
        }
    }

    /// A Kubernetes server-side apply: `PATCH path` with `body` as `application/apply-patch+yaml`
    /// (JSON is YAML).
    pub fn apply(path: &str, body: &serde_json::Value) -> Request {
        Request {
            method: hyper::Method::PATCH,
            path: path.to_string(),
            json: Some(body.to_string().into_bytes()),
            content_type: "application/apply-patch+yaml",
        }
    }

    /// The path (with query) this request asks for.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The method (`GET`, `POST`, `PATCH`).
    pub fn method(&self) -> &str {
        self.method.as_str()
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
        self.exchange(stream, server_name, &host_header(server_name), request).await
    }

    /// Like [`TlsClient::request`], but returns as soon as the response head has arrived; the
    /// body is then read piece by piece with [`StreamingResponse::chunk`], with no size limit.
    /// The client's timeout bounds the handshake and the wait for the head, and then each wait
    /// for the next piece of the body (not the whole transfer).
    pub async fn request_streaming<S>(
        &self,
        stream: S,
        server_name: &str,
        request: &Request,
    ) -> Result<StreamingResponse, HttpsError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let host = host_header(server_name);
        let name = tls_server_name(server_name)?;
        let work = async {
            let tls = self.handshake(name, stream, &host).await?;
            let (mut sender, conn) = http1::handshake(TokioIo::new(tls)).await.map_err(|e| http_error(&host, &e))?;
            let req = build_request(request, &host)?;
            let mut conn: ConnectionFuture = Box::pin(conn);
            let mut send = pin!(sender.send_request(req));
            let (head, conn) = tokio::select! {
                biased;
                head = &mut send => (head.map_err(|e| http_error(&host, &e))?, Some(conn)),
                conn_result = &mut conn => match send.await {
                    // The server sent everything and closed: the body is buffered in `head`.
                    Ok(head) => (head, None),
                    Err(e) => return Err(match conn_result {
                        Err(conn_err) => http_error(&host, &conn_err),
                        Ok(()) => http_error(&host, &e),
                    }),
                },
            };
            Ok(StreamingResponse {
                status: head.status().as_u16(),
                body: head.into_body(),
                conn,
                _sender: sender,
                server: host.clone(),
                idle: self.timeout,
            })
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(HttpsError::Timeout { server: host, stage: "HTTPS request", after: self.timeout }),
        }
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
        let name = tls_server_name(server_name)?;
        let work = async {
            let tls = self.handshake(name, stream, host).await?;
            round_trip(tls, host, request).await
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(result) => result,
            Err(_) => {
                Err(HttpsError::Timeout { server: host.to_string(), stage: "HTTPS request", after: self.timeout })
            }
        }
    }

    /// The TLS handshake on `stream`, verifying the server's certificate for `name`.
    async fn handshake<S>(
        &self,
        name: ServerName<'static>,
        stream: S,
        host: &str,
    ) -> Result<tokio_rustls::client::TlsStream<S>, HttpsError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.connector
            .connect(name, stream)
            .await
            .map_err(|e| classify(host, &e, |detail| HttpsError::Handshake { server: host.to_string(), detail }))
    }
}

/// The `Host` header for a server name: IPv6 addresses in brackets.
fn host_header(server_name: &str) -> String {
    match server_name.parse::<std::net::Ipv6Addr>() {
        Ok(_) => format!("[{server_name}]"),
        Err(_) => server_name.to_string(),
    }
}

fn tls_server_name(server_name: &str) -> Result<ServerName<'static>, HttpsError> {
    ServerName::try_from(server_name.to_string()).map_err(|_| HttpsError::ServerName { name: server_name.to_string() })
}

/// An error of the HTTP exchange with `host` (rustls errors found in its chain are classified
/// as verification or handshake failures).
fn http_error(host: &str, e: &(dyn std::error::Error + 'static)) -> HttpsError {
    classify(host, e, |detail| HttpsError::Http { server: host.to_string(), detail })
}

/// The hyper request for `request`, with kubeha's standard headers.
fn build_request(request: &Request, host: &str) -> Result<hyper::Request<Full<Bytes>>, HttpsError> {
    let mut builder = hyper::Request::builder()
        .method(request.method.clone())
        .uri(&request.path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, concat!("kubeha/", env!("CARGO_PKG_VERSION")))
        .header(hyper::header::ACCEPT, "application/json, */*");
    let body = match &request.json {
        Some(json) => {
            builder = builder.header(hyper::header::CONTENT_TYPE, request.content_type);
            Full::new(Bytes::from(json.clone()))
        }
        None => Full::new(Bytes::new()),
    };
    builder
        .body(body)
        .map_err(|e| HttpsError::Http { server: host.to_string(), detail: format!("building the request: {e}") })
}

/// Sends one request on an established TLS stream and collects the response, driving the
/// connection until the body is complete.
async fn round_trip<T>(tls: T, host: &str, request: &Request) -> Result<Response, HttpsError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http_err = |e: &(dyn std::error::Error + 'static)| http_error(host, e);
    let (mut sender, conn) = http1::handshake(TokioIo::new(tls)).await.map_err(|e| http_err(&e))?;
    let req = build_request(request, host)?;

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

/// The HTTP/1.1 connection task, driven by whoever reads the response.
type ConnectionFuture = Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

/// A response whose body is read as it arrives (see [`TlsClient::request_streaming`]).
///
/// The connection is driven while the body is read; dropping the response closes it.
pub struct StreamingResponse {
    /// The HTTP status code.
    pub status: u16,
    body: Incoming,
    /// `None` once the connection has finished (the rest of the body is then buffered).
    conn: Option<ConnectionFuture>,
    /// Kept so that hyper does not start closing the connection while the body is read.
    _sender: http1::SendRequest<Full<Bytes>>,
    server: String,
    idle: Duration,
}

impl std::fmt::Debug for StreamingResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingResponse")
            .field("status", &self.status)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl StreamingResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The next piece of the body as it came off the connection (never empty), or `None` at
    /// its end. Fails with [`HttpsError::Timeout`] when nothing arrives within the client's
    /// timeout, and with [`HttpsError::Http`] when the connection breaks before the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, HttpsError> {
        enum Step {
            Frame(Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>),
            Closed(Result<(), hyper::Error>),
        }
        let StreamingResponse { body, conn, server, idle, .. } = self;
        loop {
            let next = async {
                match conn.as_mut() {
                    Some(running) => tokio::select! {
                        biased;
                        frame = body.frame() => Step::Frame(frame),
                        closed = running => Step::Closed(closed),
                    },
                    None => Step::Frame(body.frame().await),
                }
            };
            let step = tokio::time::timeout(*idle, next).await.map_err(|_| HttpsError::Timeout {
                server: server.clone(),
                stage: "HTTPS response body",
                after: *idle,
            })?;
            match step {
                Step::Frame(None) => return Ok(None),
                Step::Frame(Some(Err(e))) => return Err(http_error(server, &e)),
                Step::Frame(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => return Ok(Some(data)),
                    // Empty data and trailers (etcd's gateway sends gRPC trailers).
                    _ => continue,
                },
                Step::Closed(result) => {
                    *conn = None;
                    // Whatever the server sent before closing is still buffered in the body;
                    // a broken connection also shows up there, except as the body's end.
                    if let Err(e) = result {
                        return Err(http_error(server, &e));
                    }
                }
            }
        }
    }

    /// Reads the rest of the body into a [`Response`], refusing more than the client's usual
    /// limit (8 MiB): for error answers, which are small documents.
    pub async fn into_response(mut self) -> Result<Response, HttpsError> {
        let mut body = Vec::new();
        while let Some(data) = self.chunk().await? {
            if body.len() + data.len() > MAX_BODY {
                return Err(HttpsError::Http {
                    server: self.server.clone(),
                    detail: format!("the response body exceeds {MAX_BODY} bytes"),
                });
            }
            body.extend_from_slice(&data);
        }
        Ok(Response { status: self.status, body })
    }
}
