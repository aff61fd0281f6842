//! The apiserver stand-in's view of etcd: a linearizable read through etcd's JSON gateway.
//!
//! kube-apiserver's etcd health check reads the key `health` with a linearizable Get, which
//! etcd can only answer with a quorum behind it; a member that is up but cut off fails it. The
//! stand-in does the same read, `POST /v3/kv/range {"key": base64("health")}` (served by etcd
//! 3.4 and later on the client port), with the apiserver's etcd client certificate, verifying
//! etcd's serving certificate against `--etcd-cafile` for the URL's host.
//!
//! The same client carries the object store's reads and writes ([`EtcdProbe::call`], used by
//! `registry`): any JSON gateway method, sent to the first server that answers.

use std::time::Duration;

use base64::Engine as _;

use kubeha::https::{HttpsUrl, Request, TlsClient};

/// Why an etcd call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    #[error("no etcd server answered: {0}")]
    Unreachable(String),
    #[error("etcd answered {path} with HTTP {status}: {body}")]
    Refused { path: String, status: u16, body: String },
    #[error("etcd answered {path} with invalid JSON: {detail}")]
    InvalidAnswer { path: String, detail: String },
}

/// A client for the `--etcd-servers` URLs.
#[derive(Debug, Clone)]
pub struct EtcdProbe {
    client: TlsClient,
    pub servers: Vec<HttpsUrl>,
}

impl EtcdProbe {
    pub fn new(client: TlsClient, servers: Vec<HttpsUrl>, timeout: Duration) -> EtcdProbe {
        EtcdProbe { client: client.with_timeout(timeout).with_connect_timeout(timeout), servers }
    }

    /// Does the linearizable read on one server.
    pub async fn check(&self, server: &HttpsUrl) -> Result<(), String> {
        let key = base64::engine::general_purpose::STANDARD.encode("health");
        let request = Request::post_json("/v3/kv/range", &serde_json::json!({ "key": key }));
        let resp = self.client.send(server, &request).await.map_err(|e| e.to_string())?;
        if !resp.is_success() {
            let mut body = resp.text();
            body.truncate(300);
            return Err(format!("{server}: linearizable read answered HTTP {}: {}", resp.status, body.trim()));
        }
        let doc: serde_json::Value =
            resp.json().map_err(|e| format!("{server}: linearizable read answered with invalid JSON: {e}"))?;
        if doc.get("header").is_none() {
            return Err(format!("{server}: linearizable read answered without a response header: {doc}"));
        }
        Ok(())
    }

    /// `POST path` with a JSON body to the first server that answers; the answer's JSON.
    pub async fn call(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, EtcdError> {
        let request = Request::post_json(path, body);
        let mut errors = Vec::new();
        for server in &self.servers {
            let resp = match self.client.send(server, &request).await {
                Ok(resp) => resp,
                Err(e) => {
                    errors.push(format!("{server}: {e}"));
                    continue;
                }
            };
            if !resp.is_success() {
                let mut body = resp.text();
                body.truncate(300);
                return Err(EtcdError::Refused { path: path.to_string(), status: resp.status, body });
            }
            return resp.json().map_err(|e| EtcdError::InvalidAnswer { path: path.to_string(), detail: e.to_string() });
        }
        Err(EtcdError::Unreachable(errors.join("; ")))
    }

    /// Healthy when any server answers, as the real apiserver's etcd client (which balances over
    /// all endpoints) is.
    pub async fn check_any(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        for server in &self.servers {
            match self.check(server).await {
                Ok(()) => return Ok(()),
                Err(e) => errors.push(e),
            }
        }
        Err(errors.join("; "))
    }
}
