//! The kube-apiserver stand-in: refuses to start on the inputs the real one would refuse,
//! then serves the endpoints health checks, haproxy and kubectl use.
//!
//! Startup follows the real server's order: flag validation, certificate files, a first
//! linearizable read from etcd, then the TLS listener. Afterwards etcd is read again every two
//! seconds and `/healthz`, `/livez` and `/readyz` report `[-]etcd failed` while it fails.
//! Authentication is x509 only, as kubeadm's clients use: a verified client certificate is a
//! user (CN) with groups (O); a certificate that does not verify, or any bearer token, gets 401;
//! no certificate is `system:anonymous`, allowed the health and version endpoints only.
//!
//! Authenticated users also get discovery (`/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`)
//! for the kinds kubeha applies; reading and applying those objects (`rest`, stored in etcd by
//! `registry`) is for `system:masters` only: RBAC is not evaluated.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use super::checks::{self, StartupError, load_certificates, load_pair, load_private_key};
use super::etcd::EtcdProbe;
use super::flags::Flags;
use super::health::Health;
use super::registry::Registry;
use super::resources::{self, Route};
use super::respond::{self, Reply};
use super::rest::{self, Caller, ObjectRequest};
use super::version::KubeVersion;
use crate::https_server::{self, Handler, Peer, ServerTls};
use kubeha::https::{self, ClientIdentity, HttpsUrl, TlsClient};

/// How long startup waits for etcd to answer, like the real server's etcd dial timeout.
const ETCD_STARTUP_WAIT: Duration = Duration::from_secs(20);
/// Time allowed for one etcd read.
const ETCD_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between periodic etcd reads.
const ETCD_RECHECK: Duration = Duration::from_secs(2);
/// The largest request body accepted (the real server's limit is 3 MiB).
const MAX_REQUEST_BODY: usize = 3 << 20;

/// A started apiserver stand-in: checks passed, listener bound.
pub struct ApiServer {
    listener: TcpListener,
    tls: ServerTls,
    state: Arc<State>,
    etcd: EtcdProbe,
}

struct State {
    health: Health,
    version: KubeVersion,
    /// `advertise-address:secure-port`, reported by `/api`.
    advertised: Option<String>,
    registry: Registry,
}

/// Runs every startup check and binds the secure port.
pub async fn start(flags: &Flags, version: KubeVersion) -> Result<ApiServer, StartupError> {
    validate(flags)?;
    checks::check_files_readable(flags)?;
    let tls = serving_tls(flags)?;
    let etcd = etcd_probe(flags)?;
    other_pairs(flags)?;
    service_account_keys(flags)?;
    for flag in ["requestheader-client-ca-file", "kubelet-certificate-authority"] {
        if let Some(file) = flags.nonempty(flag) {
            load_certificates(flag, file)?;
        }
    }
    wait_for_etcd(&etcd).await?;

    let port = flags.int("secure-port") as u16;
    let bind: IpAddr = flags.str("bind-address").parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let addr = SocketAddr::new(bind, port);
    let listener = checks::listen_securely(addr).await?;
    let health = Health::new(&["etcd"]);
    health.set("etcd", Ok(()));
    let advertised =
        flags.nonempty("advertise-address").map(|a| SocketAddr::new(a.parse().unwrap_or(bind), port).to_string());
    let registry = Registry::new(etcd.clone());
    Ok(ApiServer { listener, tls, state: Arc::new(State { health, version, advertised, registry }), etcd })
}

impl ApiServer {
    /// The health state its `/healthz`, `/livez` and `/readyz` answer from.
    pub fn health(&self) -> Health {
        self.state.health.clone()
    }

    /// Serves until the future is dropped, re-reading etcd in the background.
    pub async fn run(self) {
        let state = self.state.clone();
        let etcd = self.etcd.clone();
        let watcher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ETCD_RECHECK).await;
                state.health.set("etcd", etcd.check_any().await);
            }
        });
        let state = self.state.clone();
        let handler: Handler = Arc::new(move |peer, req| {
            let state = state.clone();
            Box::pin(async move { handle(&state, peer, req).await })
        });
        https_server::serve(self.listener, self.tls, handler).await;
        watcher.abort();
    }
}

fn validate(flags: &Flags) -> Result<(), StartupError> {
    let mut errors = Vec::new();
    if flags.nonempty("etcd-servers").is_none() {
        errors.push("--etcd-servers must be specified".to_string());
    }
    if flags.nonempty("service-account-issuer").is_none() {
        errors.push("service-account-issuer is a required flag".to_string());
    }
    if flags.nonempty("service-account-signing-key-file").is_none()
        || flags.nonempty("service-account-issuer").is_none()
    {
        errors.push("--service-account-signing-key-file and --service-account-issuer are required flags".to_string());
    }
    let port = flags.int("secure-port");
    if !(1..=65535).contains(&port) {
        errors.push(format!("--secure-port {port} must be between 1 and 65535, inclusive. It cannot be turned off"));
    }
    for flag in ["bind-address", "advertise-address"] {
        if let Some(v) = flags.nonempty(flag)
            && v.parse::<IpAddr>().is_err()
        {
            errors.push(format!("--{flag} {v:?} is not a valid IP address"));
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(StartupError(errors.remove(0))),
        _ => Err(StartupError(format!("[{}]", errors.join(", ")))),
    }
}

/// The serving certificate (checked valid now) with the client CA, or an in-memory
/// self-signed one when no `--tls-cert-file` is given (the real server writes one to
/// `--cert-dir`).
fn serving_tls(flags: &Flags) -> Result<ServerTls, StartupError> {
    let client_ca = match flags.nonempty("client-ca-file") {
        Some(path) => {
            let ca = load_certificates("client-ca-file", path)?;
            tracing::info!("--client-ca-file {path}: {}", checks::describe(&ca[0]));
            Some(ca)
        }
        None => None,
    };
    let tls = match load_pair(flags, "tls-cert-file", "tls-private-key-file")? {
        Some(pair) => {
            let path = flags.str("tls-cert-file");
            checks::check_valid_now("tls-cert-file", path, &pair.chain[0])?;
            ServerTls::new(pair.chain, pair.key, client_ca)
        }
        None => {
            tracing::info!("no --tls-cert-file: serving an in-memory self-signed certificate");
            ServerTls::self_signed(
                &format!("localhost@{}", unix_now()),
                &["localhost".into(), "127.0.0.1".into()],
                client_ca,
            )
        }
    };
    tls.map_err(|e| StartupError(format!("unable to load server certificate: {e}")))
}

/// The etcd client from `--etcd-*`, its certificate checked against `--etcd-cafile`.
fn etcd_probe(flags: &Flags) -> Result<EtcdProbe, StartupError> {
    let mut servers = Vec::new();
    for url in flags.str("etcd-servers").split(',').filter(|s| !s.is_empty()) {
        if url.starts_with("http://") {
            return Err(StartupError(format!(
                "--etcd-servers {url}: the lab's stand-in only talks TLS to etcd (use an https:// URL)"
            )));
        }
        servers.push(HttpsUrl::parse(url).map_err(|e| StartupError(format!("--etcd-servers: {e}")))?);
    }
    let ca_path = flags
        .nonempty("etcd-cafile")
        .ok_or_else(|| StartupError("--etcd-cafile must be specified for https:// --etcd-servers".into()))?;
    let ca = load_certificates("etcd-cafile", ca_path)?;
    tracing::info!("--etcd-cafile {ca_path}: {}", checks::describe(&ca[0]));
    let pair = load_pair(flags, "etcd-certfile", "etcd-keyfile")?;
    let identity = match pair {
        Some(pair) => {
            let cert_path = flags.str("etcd-certfile");
            checks::check_client_chain("etcd-certfile", cert_path, &pair.chain, "etcd-cafile", ca_path)?;
            Some(
                ClientIdentity::from_der(pair.chain, pair.key)
                    .map_err(|e| StartupError(format!("--etcd-certfile {cert_path}: {e}")))?,
            )
        }
        None => None,
    };
    let client = TlsClient::from_certificates(ca, identity.as_ref())
        .map_err(|e| StartupError(format!("--etcd-cafile {ca_path}: {e}")))?;
    Ok(EtcdProbe::new(client, servers, ETCD_READ_TIMEOUT))
}

/// The kubelet and front-proxy client pairs, each chained to the CA that will verify it.
fn other_pairs(flags: &Flags) -> Result<(), StartupError> {
    for (cert_flag, key_flag, ca_flag) in [
        ("kubelet-client-certificate", "kubelet-client-key", "client-ca-file"),
        ("proxy-client-cert-file", "proxy-client-key-file", "requestheader-client-ca-file"),
    ] {
        if let Some(pair) = load_pair(flags, cert_flag, key_flag)?
            && let Some(ca_path) = flags.nonempty(ca_flag)
        {
            checks::check_client_chain(cert_flag, flags.str(cert_flag), &pair.chain, ca_flag, ca_path)?;
        }
    }
    Ok(())
}

/// The service-account signing key's public half must be among the verification keys, or
/// tokens the server issues would not verify.
fn service_account_keys(flags: &Flags) -> Result<(), StartupError> {
    let Some(signing_path) = flags.nonempty("service-account-signing-key-file") else {
        return Ok(());
    };
    let key = load_private_key("service-account-signing-key-file", signing_path)?;
    let public = https::public_key_of(signing_path, &key)
        .map_err(|e| StartupError(format!("--service-account-signing-key-file {signing_path}: {e}")))?;
    let Some(verify_path) = flags.nonempty("service-account-key-file") else {
        return Ok(());
    };
    if !checks::file_holds_public_key("service-account-key-file", verify_path, public.as_ref())? {
        return Err(StartupError(format!(
            "--service-account-key-file {verify_path} does not contain the public key of \
             --service-account-signing-key-file {signing_path}"
        )));
    }
    tracing::info!(
        "--service-account-key-file {verify_path} holds the public key of --service-account-signing-key-file {signing_path}"
    );
    Ok(())
}

/// Reads etcd at the `--etcd-servers` URLs until one answers, for up to [`ETCD_STARTUP_WAIT`]:
/// as the real server's etcd client, which balances over every URL, one member is enough.
async fn wait_for_etcd(etcd: &EtcdProbe) -> Result<(), StartupError> {
    let deadline = Instant::now() + ETCD_STARTUP_WAIT;
    loop {
        let mut first_error = None;
        for server in &etcd.servers {
            match etcd.check(server).await {
                Ok(()) => {
                    tracing::info!("etcd at {server} answered a linearizable read");
                    return Ok(());
                }
                Err(e) => {
                    tracing::warn!("waiting for etcd: {e}");
                    first_error.get_or_insert((server, e));
                }
            }
        }
        if let Some((server, e)) = first_error
            && Instant::now() >= deadline
        {
            return Err(StartupError(format!(
                "--etcd-servers {server}: etcd did not answer a linearizable read within {ETCD_STARTUP_WAIT:?}: {e}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn handle(state: &State, peer: Peer, req: hyper::Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let (user, groups) = match peer {
        Peer::Authenticated { user, groups } => (user, groups),
        Peer::Rejected(reason) => {
            tracing::info!("Unable to authenticate the request to {path}: {reason}");
            return respond::unauthorized();
        }
        Peer::Anonymous if req.headers().contains_key(hyper::header::AUTHORIZATION) => {
            tracing::info!("Unable to authenticate the request to {path}: bearer tokens are not simulated");
            return respond::unauthorized();
        }
        Peer::Anonymous => {
            return match path.as_str() {
                "/healthz" | "/livez" | "/readyz" | "/version" | "/version/" => public(state, &path, query.as_deref()),
                _ => respond::status(
                    403,
                    "Forbidden",
                    &format!("forbidden: User \"system:anonymous\" cannot get path \"{path}\""),
                ),
            };
        }
    };
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/" => public(state, &path, query.as_deref()),
        "/api" | "/api/" => api_versions(state),
        _ => match resources::route(&path) {
            Some(Route::Discovery(doc)) => respond::json(200, &doc),
            Some(route) => {
                let method = req.method().as_str().to_string();
                let content_type =
                    req.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
                let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY).collect().await {
                    Ok(body) => body.to_bytes(),
                    Err(e) => return respond::status(413, "RequestEntityTooLarge", &format!("request body: {e}")),
                };
                let request = ObjectRequest {
                    method: &method,
                    query: query.as_deref(),
                    content_type: content_type.as_deref(),
                    body: &body,
                };
                rest::handle(&state.registry, Caller { user: &user, groups: &groups }, &route, &request).await
            }
            None => respond::status(404, "NotFound", "the server could not find the requested resource"),
        },
    }
}

/// The endpoints anyone may read: health and version.
fn public(state: &State, path: &str, query: Option<&str>) -> Reply {
    match path {
        "/version" | "/version/" => respond::json(200, &state.version.document()),
        _ => state.health.respond(&path[1..], query),
    }
}

/// `/api`: the core group's versions, and where clients should reach this server.
fn api_versions(state: &State) -> Reply {
    let addresses: Vec<serde_json::Value> =
        state.advertised.iter().map(|a| serde_json::json!({"clientCIDR": "0.0.0.0/0", "serverAddress": a})).collect();
    respond::json(
        200,
        &serde_json::json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": addresses}),
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}
