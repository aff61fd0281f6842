//! The kube-controller-manager and kube-scheduler stand-ins: components that reach the
//! apiserver through kubeconfigs and serve only their own health endpoints.
//!
//! Startup refuses what the real binaries refuse at startup: missing files, an unparsable
//! kubeconfig or one whose client certificate does not match its key, signing pairs that do not
//! match. Whether the kubeconfigs' credentials are *accepted* is only known by asking the
//! apiserver, which may not be up yet; like the real components the stand-ins keep running and
//! retry. Unlike them, they report it: `/healthz` fails while any kubeconfig cannot `GET /api`
//! (the real components stay "healthy" while their leader election fails with 401/403, which
//! hides a broken credential from every health check).
//!
//! Leader election is not simulated: `--leader-elect` is accepted and every instance behaves as
//! if it held the lease.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::checks::{self, StartupError, load_certificates, load_pair, load_private_key};
use super::flags::Flags;
use super::health::Health;
use super::kubeconfig::{self, Kubeconfig};
use super::respond::{self, Reply};
use crate::https_server::{self, Handler, Peer, ServerTls};
use kubeha::https::Request;

/// Pause between credential checks while they fail, and once they pass.
const RECHECK_FAILING: Duration = Duration::from_secs(2);
const RECHECK_PASSING: Duration = Duration::from_secs(10);

/// A started controller-manager or scheduler stand-in.
pub struct Delegated {
    listener: Option<(TcpListener, ServerTls)>,
    health: Health,
    kubeconfigs: Vec<(&'static str, Kubeconfig)>,
}

/// Runs the startup checks of `component` and binds its secure port (unless `--secure-port=0`).
pub async fn start(component: &str, flags: &Flags) -> Result<Delegated, StartupError> {
    checks::check_files_readable(flags)?;
    if component == "kube-controller-manager" {
        controller_manager_files(flags)?;
    } else if let Some(config) = flags.nonempty("config") {
        tracing::warn!(
            "--config {config}: the stand-in does not interpret KubeSchedulerConfiguration; using --kubeconfig"
        );
    }
    let kubeconfigs = load_kubeconfigs(flags)?;

    let client_ca = match flags.nonempty("client-ca-file") {
        Some(path) => Some(load_certificates("client-ca-file", path)?),
        None => None,
    };
    if let Some(path) = flags.nonempty("requestheader-client-ca-file") {
        load_certificates("requestheader-client-ca-file", path)?;
    }
    let bind: IpAddr = flags.str("bind-address").parse().map_err(|_| {
        StartupError(format!("--bind-address {:?} is not a valid IP address", flags.str("bind-address")))
    })?;
    let port = flags.int("secure-port");
    if !(0..=65535).contains(&port) {
        return Err(StartupError(format!(
            "--secure-port {port} must be between 0 and 65535, inclusive. 0 for turning off secure port"
        )));
    }
    let tls = match load_pair(flags, "tls-cert-file", "tls-private-key-file")? {
        Some(pair) => ServerTls::new(pair.chain, pair.key, client_ca),
        None => {
            // As the real components do without --tls-cert-file (they keep it in memory too
            // unless --cert-dir is set).
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            if !bind.is_unspecified() {
                names.push(bind.to_string());
            }
            ServerTls::self_signed(&format!("localhost@{}", unix_now()), &names, client_ca)
        }
    }
    .map_err(|e| StartupError(format!("unable to load server certificate: {e}")))?;

    let listener = if port == 0 {
        tracing::info!("--secure-port=0: not serving");
        None
    } else {
        let addr = SocketAddr::new(bind, port as u16);
        let listener = checks::listen_securely(addr).await?;
        Some((listener, tls))
    };
    Ok(Delegated { listener, health: Health::new(&["leaderElection", "kubeconfig"]), kubeconfigs })
}

impl Delegated {
    /// Serves until the future is dropped, checking the kubeconfigs' credentials in the
    /// background.
    pub async fn run(self) {
        self.health.set("leaderElection", Ok(()));
        let health = self.health.clone();
        let kubeconfigs = self.kubeconfigs;
        let checker = tokio::spawn(async move {
            loop {
                let result = check_all(&kubeconfigs).await;
                let pause = if result.is_ok() { RECHECK_PASSING } else { RECHECK_FAILING };
                health.set("kubeconfig", result);
                tokio::time::sleep(pause).await;
            }
        });
        match self.listener {
            Some((listener, tls)) => {
                let health = self.health.clone();
                let handler: Handler = Arc::new(move |peer, req| {
                    let reply = handle(&health, peer, req.uri().path(), req.uri().query());
                    Box::pin(async move { reply })
                });
                https_server::serve(listener, tls, handler).await;
            }
            None => std::future::pending::<()>().await,
        }
        checker.abort();
    }
}

/// The signing, root CA and service-account files kube-controller-manager reads at startup.
fn controller_manager_files(flags: &Flags) -> Result<(), StartupError> {
    for (cert, key) in [
        ("cluster-signing-cert-file", "cluster-signing-key-file"),
        ("cluster-signing-kubelet-serving-cert-file", "cluster-signing-kubelet-serving-key-file"),
        ("cluster-signing-kubelet-client-cert-file", "cluster-signing-kubelet-client-key-file"),
        ("cluster-signing-kube-apiserver-client-cert-file", "cluster-signing-kube-apiserver-client-key-file"),
        ("cluster-signing-legacy-unknown-cert-file", "cluster-signing-legacy-unknown-key-file"),
    ] {
        load_pair(flags, cert, key)?;
    }
    if let Some(path) = flags.nonempty("root-ca-file") {
        let ca = load_certificates("root-ca-file", path)?;
        tracing::info!("--root-ca-file {path}: {}", checks::describe(&ca[0]));
    }
    if let Some(path) = flags.nonempty("service-account-private-key-file") {
        load_private_key("service-account-private-key-file", path)?;
        tracing::info!("--service-account-private-key-file {path}: a usable private key");
    }
    Ok(())
}

/// Loads `--kubeconfig` and the authentication/authorization kubeconfigs (each file once).
fn load_kubeconfigs(flags: &Flags) -> Result<Vec<(&'static str, Kubeconfig)>, StartupError> {
    if flags.nonempty("kubeconfig").is_none() && flags.nonempty("master").is_none() {
        return Err(StartupError(
            "invalid configuration: no configuration has been provided, try setting KUBERNETES_MASTER environment variable"
                .into(),
        ));
    }
    let mut loaded: Vec<(&'static str, Kubeconfig)> = Vec::new();
    for flag in ["kubeconfig", "authentication-kubeconfig", "authorization-kubeconfig"] {
        let Some(path) = flags.nonempty(flag) else { continue };
        if loaded.iter().any(|(_, k)| k.path.as_os_str() == path) {
            continue;
        }
        let master = if flag == "kubeconfig" { flags.nonempty("master") } else { None };
        let kc = kubeconfig::load(flag, path, master)?;
        tracing::info!(
            "--{flag} {path}: server {}, user {}",
            kc.server,
            kc.user.as_deref().unwrap_or("(no client certificate)")
        );
        loaded.push((flag, kc));
    }
    if loaded.is_empty() {
        return Err(StartupError("--master without --kubeconfig gives the stand-in no credentials to check".into()));
    }
    Ok(loaded)
}

/// `GET /api` with each kubeconfig's credentials, verifying the server with its CA.
async fn check_all(kubeconfigs: &[(&'static str, Kubeconfig)]) -> Result<(), String> {
    for (flag, kc) in kubeconfigs {
        let url = kc.server.with_path("/api");
        let resp = kc
            .client
            .send_as(&url, &kc.server_name, &Request::get("/api"))
            .await
            .map_err(|e| format!("--{flag} {}: {e}", kc.path.display()))?;
        match resp.status {
            200 => {}
            401 => {
                return Err(format!(
                    "--{flag} {}: {url} answered 401 Unauthorized: the apiserver does not accept the client certificate",
                    kc.path.display()
                ));
            }
            status => {
                let mut body = resp.text();
                body.truncate(200);
                return Err(format!("--{flag} {}: {url} answered HTTP {status}: {}", kc.path.display(), body.trim()));
            }
        }
    }
    Ok(())
}

fn handle(health: &Health, peer: Peer, path: &str, query: Option<&str>) -> Reply {
    if let Peer::Rejected(reason) = peer {
        tracing::info!("Unable to authenticate the request to {path}: {reason}");
        return respond::unauthorized();
    }
    match path {
        "/healthz" | "/livez" | "/readyz" => health.respond(&path[1..], query),
        _ => match peer {
            Peer::Authenticated { .. } => {
                respond::status(404, "NotFound", "the server could not find the requested resource")
            }
            _ => respond::status(
                403,
                "Forbidden",
                &format!("forbidden: User \"system:anonymous\" cannot get path \"{path}\""),
            ),
        },
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
}
