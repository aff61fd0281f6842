//! Kubeconfig files as kube-controller-manager and kube-scheduler load them: current context →
//! cluster (server, CA) and user (client certificate and key, embedded or as files).
//!
//! Only what kubeha writes and client-go needs to connect is read; a kubeconfig that client-go
//! would refuse at startup (unreadable, not YAML, dangling context, certificate not matching its
//! key) is refused here with the file named. YAML errors are reported without the snippet of
//! the input, which may be key data.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;

use super::checks::{StartupError, go_io_error};
use kubeha::https::{ClientIdentity, HttpsUrl, TlsClient};

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawConfig {
    #[serde(default)]
    clusters: Vec<Named<RawCluster>>,
    #[serde(default)]
    users: Vec<Named<RawUser>>,
    #[serde(default)]
    contexts: Vec<Named<RawContext>>,
    #[serde(default)]
    current_context: String,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    item: Option<T>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawCluster {
    #[serde(default)]
    server: String,
    certificate_authority_data: Option<String>,
    certificate_authority: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawUser {
    client_certificate_data: Option<String>,
    client_key_data: Option<String>,
    client_certificate: Option<String>,
    client_key: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawContext {
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    user: String,
}

/// A loaded kubeconfig, ready to connect.
#[derive(Debug, Clone)]
pub struct Kubeconfig {
    pub path: PathBuf,
    pub server: HttpsUrl,
    /// The name the server's certificate must be valid for (the server's host unless the
    /// kubeconfig sets `tls-server-name`).
    pub server_name: String,
    pub client: TlsClient,
    /// The client certificate's subject, for logs.
    pub user: Option<String>,
}

/// Loads the kubeconfig `path` (named by `--flag`); `master` overrides its server.
pub fn load(flag: &str, path: &str, master: Option<&str>) -> Result<Kubeconfig, StartupError> {
    let fail = |what: String| StartupError(format!("--{flag} {path}: invalid configuration: {what}"));
    let text = std::fs::read_to_string(path)
        .map_err(|e| StartupError(format!("--{flag}: {}", go_io_error("open", Path::new(path), &e))))?;
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let raw: RawConfig = serde_saphyr::from_str_with_options(&text, options).map_err(|e| fail(yaml_error(&e)))?;
    let dir = Path::new(path).parent().unwrap_or(Path::new("."));

    if raw.current_context.is_empty() {
        return Err(fail("no current-context is set".into()));
    }
    let context = find(&raw.contexts, &raw.current_context)
        .ok_or_else(|| fail(format!("context was not found for specified context: {}", raw.current_context)))?;
    let cluster = find(&raw.clusters, &context.cluster)
        .ok_or_else(|| fail(format!("cluster {:?} of context {:?} not found", context.cluster, raw.current_context)))?;
    let user = find(&raw.users, &context.user);

    if cluster.insecure_skip_tls_verify {
        return Err(fail("insecure-skip-tls-verify is not supported by the lab's stand-ins".into()));
    }
    let server_text = master.filter(|m| !m.is_empty()).unwrap_or(&cluster.server);
    if server_text.is_empty() {
        return Err(fail(format!("no server found for cluster {:?}", context.cluster)));
    }
    let server = HttpsUrl::parse(server_text).map_err(|e| fail(e.to_string()))?;

    let ca_pem = match (&cluster.certificate_authority_data, &cluster.certificate_authority) {
        (Some(data), _) => decode(data).map_err(|e| fail(format!("certificate-authority-data: {e}")))?,
        (None, Some(file)) => {
            read_relative(dir, file).map_err(|e| fail(format!("unable to read certificate-authority: {e}")))?
        }
        (None, None) => {
            return Err(fail(format!("cluster {:?} has no certificate-authority(-data)", context.cluster)));
        }
    };

    let identity = match user {
        None => None,
        Some(u) => {
            let cert = match (&u.client_certificate_data, &u.client_certificate) {
                (Some(d), _) => Some(decode(d).map_err(|e| fail(format!("client-certificate-data: {e}")))?),
                (None, Some(f)) => {
                    Some(read_relative(dir, f).map_err(|e| fail(format!("unable to read client-cert: {e}")))?)
                }
                (None, None) => None,
            };
            let key = match (&u.client_key_data, &u.client_key) {
                (Some(d), _) => Some(decode(d).map_err(|_| fail("client-key-data is not valid base64".into()))?),
                (None, Some(f)) => {
                    Some(read_relative(dir, f).map_err(|e| fail(format!("unable to read client-key: {e}")))?)
                }
                (None, None) => None,
            };
            match (cert, key) {
                (Some(cert), Some(key)) => Some(
                    ClientIdentity::from_pem_named("client-certificate-data", &cert, "client-key-data", &key).map_err(
                        |e| {
                            fail(format!("{e}").replace(
                                "private key does not match public key",
                                "tls: private key does not match public key",
                            ))
                        },
                    )?,
                ),
                (None, None) => None,
                _ => return Err(fail("client certificate and client key must be given together".into())),
            }
        }
    };

    let client = TlsClient::new(&ca_pem, identity.as_ref()).map_err(|e| fail(e.to_string()))?;
    let server_name = cluster.tls_server_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| server.host.clone());
    Ok(Kubeconfig {
        path: PathBuf::from(path),
        server,
        server_name,
        client,
        user: identity.map(|i| i.subject().to_string()),
    })
}

fn find<'a, T>(items: &'a [Named<T>], name: &str) -> Option<&'a T> {
    items.iter().find(|n| n.name == name).and_then(|n| n.item.as_ref())
}

fn decode(data: &str) -> Result<Vec<u8>, String> {
    let compact: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(compact).map_err(|_| "not valid base64".to_string())
}

fn read_relative(dir: &Path, file: &str) -> Result<Vec<u8>, String> {
    let path = if Path::new(file).is_absolute() { PathBuf::from(file) } else { dir.join(file) };
    std::fs::read(&path).map_err(|e| go_io_error("open", &path, &e))
}

/// A YAML error without its message, which may quote a value (and values here are keys).
fn yaml_error(err: &serde_saphyr::Error) -> String {
    match err.location() {
        Some(at) => format!("not a valid kubeconfig (YAML error at line {}, column {})", at.line(), at.column()),
        None => "not a valid kubeconfig (YAML error)".to_string(),
    }
}
