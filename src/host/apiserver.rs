//! The kube-apiserver of a host, asked through an SSH tunnel to its secure port on the host's
//! loopback: the health endpoints, and authenticated requests for what comes later.
//!
//! Going to the host's own apiserver (not the control-plane endpoint) tells which apiserver is
//! unwell, needs no port but SSH open, and works before the load balancer does. The serving
//! certificate is verified against the cluster CA for the loopback address: kubeha puts
//! `127.0.0.1` (and `::1` on IPv6 hosts) in it, unlike kubeadm (see `docs/pki.md`). `/healthz`,
//! `/livez` and `/readyz` are open to anonymous clients in a kubeadm cluster
//! (`system:public-info-viewer`); other requests need a client identity.
//!
//! Health answers are `ok`, or a list of checks with the failing ones marked `[-]`: a failure
//! is reported with the first such line, the one that says why.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::etcd::{https_is_retryable, tunnel_is_retryable};
use crate::https::{ClientIdentity, HttpsError, Request, Response, TlsClient};
use crate::plan::{Host, Plan};
use crate::transport::{Remote, TransportError};

/// An apiserver request, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiOp {
    Healthz,
    Readyz,
    Livez,
    /// Any other request: method and path.
    Request {
        method: String,
        path: String,
    },
}

impl fmt::Display for ApiOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiOp::Healthz => f.write_str("/healthz"),
            ApiOp::Readyz => f.write_str("/readyz"),
            ApiOp::Livez => f.write_str("/livez"),
            ApiOp::Request { method, path } => write!(f, "{method} {path}"),
        }
    }
}

/// A request to the apiserver on a host failed.
#[derive(Debug, thiserror::Error)]
#[error("{host}: kube-apiserver {op}: {kind}")]
#[non_exhaustive]
pub struct ApiServerError {
    /// The host's inventory name.
    pub host: String,
    pub op: ApiOp,
    #[source]
    pub kind: ApiServerErrorKind,
}

/// What went wrong (see [`ApiServerError`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiServerErrorKind {
    /// The SSH tunnel to the apiserver's port could not be opened.
    #[error(transparent)]
    Tunnel(TransportError),
    /// TLS or HTTP failed (certificate rejected, connection cut, timeout).
    #[error(transparent)]
    Https(HttpsError),
    /// A health endpoint did not answer `ok`; `reason` is its first failing check.
    #[error("unhealthy (HTTP {status}): {reason}")]
    Unhealthy { status: u16, reason: String },
    /// The apiserver refused the request: its status and message (from its `Status` object).
    #[error("answered HTTP {status}: {message}")]
    Rejected { status: u16, message: String },
    /// A successful answer kubeha cannot read.
    #[error("unexpected answer: {detail}")]
    BadAnswer { detail: String },
}

impl ApiServerError {
    /// The kind of error.
    pub fn kind(&self) -> &ApiServerErrorKind {
        &self.kind
    }

    /// Whether asking again later may succeed: the apiserver is not up or not ready yet, or
    /// answers 5xx/429. Not: the SSH connection is gone, the certificate does not verify, the
    /// request is refused (401, 403, 404), the answer is unreadable.
    pub fn is_retryable(&self) -> bool {
        match &self.kind {
            ApiServerErrorKind::Tunnel(e) => tunnel_is_retryable(e),
            ApiServerErrorKind::Https(e) => https_is_retryable(e),
            ApiServerErrorKind::Unhealthy { .. } => true,
            ApiServerErrorKind::Rejected { status, .. } => *status >= 500 || *status == 429,
            ApiServerErrorKind::BadAnswer { .. } => false,
        }
    }
}

/// The apiserver on one host, reached through `remote`.
pub struct ApiServerClient<'r, R> {
    remote: &'r R,
    /// The host's loopback address: where the tunnel goes and the name the certificate must
    /// carry.
    address: String,
    port: u16,
    tls: TlsClient,
}

impl<R: Remote> fmt::Debug for ApiServerClient<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServerClient")
            .field("host", &self.remote.host())
            .field("address", &self.address)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl<'r, R: Remote> ApiServerClient<'r, R> {
    /// The apiserver on `host` (its loopback, the plan's `apiServer.bindPort`) through
    /// `remote`, verified against the cluster CA in `ca_pem`, presenting `identity` if given
    /// (anonymous otherwise, enough for the health endpoints).
    pub fn new(
        remote: &'r R,
        plan: &Plan,
        host: &Host,
        ca_pem: &[u8],
        identity: Option<&ClientIdentity>,
    ) -> Result<Self, HttpsError> {
        Ok(ApiServerClient::with_tls(remote, plan, host, TlsClient::new(ca_pem, identity)?))
    }

    /// Like [`ApiServerClient::new`] with a TLS client built once for many hosts (it must
    /// trust the cluster CA).
    pub fn with_tls(remote: &'r R, plan: &Plan, host: &Host, tls: TlsClient) -> Self {
        ApiServerClient { remote, address: host.loopback().to_string(), port: plan.api_server_bind_port, tls }
    }

    /// Another port than the plan's.
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// The time allowed for one request.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.tls = self.tls.with_timeout(timeout);
        self
    }

    /// The host's inventory name.
    pub fn host(&self) -> &str {
        self.remote.host()
    }

    /// `GET /healthz` (deprecated upstream in favour of `/livez` and `/readyz`, still served).
    pub async fn healthz(&self) -> Result<(), ApiServerError> {
        self.health(ApiOp::Healthz, "/healthz").await
    }

    /// `GET /readyz`: ready to serve (etcd reachable, informers synced, not shutting down).
    pub async fn readyz(&self) -> Result<(), ApiServerError> {
        self.health(ApiOp::Readyz, "/readyz").await
    }

    /// `GET /livez`: alive (a failure here means the apiserver should be restarted).
    pub async fn livez(&self) -> Result<(), ApiServerError> {
        self.health(ApiOp::Livez, "/livez").await
    }

    /// Sends `request` and returns the answer whatever its status; errors are the tunnel's and
    /// TLS/HTTP's only.
    pub async fn request(&self, request: &Request) -> Result<Response, ApiServerError> {
        let op = ApiOp::Request { method: request.method().to_string(), path: request.path().to_string() };
        self.send(op, request).await
    }

    /// `GET path`, read as JSON into `T`; an answer other than 2xx is
    /// [`ApiServerErrorKind::Rejected`] with the apiserver's message.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiServerError> {
        let request = Request::get(path);
        let op = ApiOp::Request { method: request.method().to_string(), path: path.to_string() };
        let response = self.send(op.clone(), &request).await?;
        if !response.is_success() {
            return Err(self.error(op, rejection(&response)));
        }
        response.json().map_err(|e| {
            self.error(op, ApiServerErrorKind::BadAnswer { detail: format!("{e}: {}", first_line(&response.text())) })
        })
    }

    async fn health(&self, op: ApiOp, path: &str) -> Result<(), ApiServerError> {
        let response = self.send(op.clone(), &Request::get(path)).await?;
        health_verdict(&response).map_err(|kind| self.error(op, kind))
    }

    async fn send(&self, op: ApiOp, request: &Request) -> Result<Response, ApiServerError> {
        let tunnel = match self.remote.open_tcp(&self.address, self.port).await {
            Ok(tunnel) => tunnel,
            Err(e) => return Err(self.error(op, ApiServerErrorKind::Tunnel(e))),
        };
        match self.tls.request(tunnel, &self.address, request).await {
            Ok(response) => Ok(response),
            Err(e) => Err(self.error(op, ApiServerErrorKind::Https(e))),
        }
    }

    fn error(&self, op: ApiOp, kind: ApiServerErrorKind) -> ApiServerError {
        ApiServerError { host: self.remote.host().to_string(), op, kind }
    }
}

/// The verdict on a health endpoint's answer: healthy is 2xx with the body `ok`; 401 and 403
/// are refusals (anonymous access to the health endpoints is off, or the identity lacks
/// rights), anything else is unhealthy with the first failing check as the reason.
fn health_verdict(response: &Response) -> Result<(), ApiServerErrorKind> {
    let body = response.text();
    match response.status {
        200..=299 if body.trim() == "ok" => Ok(()),
        401 | 403 => Err(rejection(response)),
        status => Err(ApiServerErrorKind::Unhealthy { status, reason: first_failure(&body).to_string() }),
    }
}

/// The first failing check (`[-]etcd failed: reason withheld`) of a health answer, else its
/// first line.
fn first_failure(text: &str) -> &str {
    text.lines().find(|l| l.starts_with("[-]")).map(str::trim).unwrap_or_else(|| first_line(text))
}

fn first_line(text: &str) -> &str {
    text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("")
}

/// The refusal in an unsuccessful answer: the message of the apiserver's `Status` object, or
/// the body's first line.
fn rejection(response: &Response) -> ApiServerErrorKind {
    #[derive(Deserialize)]
    struct Status {
        #[serde(default)]
        message: String,
    }
    let message = match response.json::<Status>() {
        Ok(s) if !s.message.is_empty() => s.message,
        _ => first_line(&response.text()).to_string(),
    };
    ApiServerErrorKind::Rejected { status: response.status, message }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::https::testing::{Reply, Script, Seen, TestPki, serve};
    use crate::transport::{Call, MemoryRemote};

    const NOT_READY: &str = "[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n[+]informer-sync ok\n\
                             [-]poststarthook/rbac/bootstrap-roles failed: not finished\nreadyz check failed\n";

    fn response(status: u16, body: &str) -> Response {
        Response { status, body: body.as_bytes().to_vec() }
    }

    #[test]
    fn health_answers_are_judged_by_their_first_failing_check() {
        assert!(health_verdict(&response(200, "ok")).is_ok());
        assert!(health_verdict(&response(200, "ok\n")).is_ok());
        let cases = [
            (500, NOT_READY, "[-]etcd failed: reason withheld"),
            (503, "", ""),
            (200, "[+]ping ok\nhealthz check passed\n", "[+]ping ok"),
            (502, "\n  upstream gone \n", "upstream gone"),
        ];
        for (status, body, reason) in cases {
            match health_verdict(&response(status, body)) {
                Err(ApiServerErrorKind::Unhealthy { status: s, reason: r }) => {
                    assert_eq!((s, r.as_str()), (status, reason), "{body:?}")
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
        let forbidden = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"forbidden: User \"system:anonymous\" cannot get path \"/readyz\"","reason":"Forbidden","code":403}"#;
        match health_verdict(&response(403, forbidden)) {
            Err(ApiServerErrorKind::Rejected { status: 403, message }) => {
                assert_eq!(message, r#"forbidden: User "system:anonymous" cannot get path "/readyz""#)
            }
            other => panic!("{other:?}"),
        }
    }

    fn plan() -> Plan {
        crate::inventory::parse(include_str!("../../inventories/example.yaml"), std::path::Path::new("/")).unwrap()
    }

    /// A host whose apiserver answers with `script` on the plan's port.
    fn apiserver_host(pki: &TestPki, script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> MemoryRemote {
        let remote = MemoryRemote::new("cp1");
        let script: Script = Arc::new(script);
        let config = pki.server_config(false);
        remote.listen_tcp("127.0.0.1", plan().api_server_bind_port, move |stream| {
            serve(stream, config.clone(), script.clone())
        });
        remote
    }

    #[tokio::test]
    async fn health_endpoints_through_the_tunnel() {
        let pki = TestPki::new();
        let remote = apiserver_host(&pki, |req| match req.path.as_str() {
            "/healthz" | "/livez" => Reply::new(200, "ok"),
            _ => Reply::new(500, NOT_READY),
        });
        let plan = plan();
        let api = ApiServerClient::new(&remote, &plan, plan.host("cp1").unwrap(), pki.ca_pem.as_bytes(), None).unwrap();
        api.healthz().await.unwrap();
        api.livez().await.unwrap();
        let err = api.readyz().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cp1: kube-apiserver /readyz: unhealthy (HTTP 500): [-]etcd failed: reason withheld"
        );
        assert!(err.is_retryable());
        assert_eq!(remote.calls()[0], Call::OpenTcp { address: "127.0.0.1".into(), port: 6443 });

        // Nothing listening on another port: a tunnel error, worth retrying.
        let err = api.with_port(6444).healthz().await.unwrap_err();
        assert!(matches!(err.kind, ApiServerErrorKind::Tunnel(_)) && err.is_retryable(), "{err:?}");
    }

    #[tokio::test]
    async fn authenticated_requests() {
        let pki = TestPki::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let remote = apiserver_host(&pki, move |req| {
            record.lock().unwrap().push(req.clone());
            match (req.client_cert, req.path.as_str()) {
                (true, "/version") => Reply::new(200, r#"{"major":"1","minor":"31","gitVersion":"v1.31.4"}"#),
                (true, "/garbage") => Reply::new(200, "<html>"),
                (true, _) => Reply::new(
                    404,
                    r#"{"kind":"Status","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#,
                ),
                (false, _) => Reply::new(401, r#"{"kind":"Status","message":"Unauthorized","code":401}"#),
            }
        });
        let plan = plan();
        let host = plan.host("cp1").unwrap();
        let identity = pki.client_identity();
        let api = ApiServerClient::new(&remote, &plan, host, pki.ca_pem.as_bytes(), Some(&identity)).unwrap();

        #[derive(Debug, Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Version {
            git_version: String,
        }
        assert_eq!(api.get_json::<Version>("/version").await.unwrap().git_version, "v1.31.4");
        let err = api.get_json::<Version>("/apis/nope").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "cp1: kube-apiserver GET /apis/nope: answered HTTP 404: the server could not find the requested resource"
        );
        assert!(!err.is_retryable());
        let err = api.get_json::<Version>("/garbage").await.unwrap_err();
        assert!(matches!(err.kind, ApiServerErrorKind::BadAnswer { .. }) && !err.is_retryable(), "{err:?}");
        let raw = api.request(&Request::get("/apis/nope")).await.unwrap();
        assert_eq!(raw.status, 404, "request returns every answer as it is");

        let anonymous = ApiServerClient::new(&remote, &plan, host, pki.ca_pem.as_bytes(), None).unwrap();
        let err = anonymous.get_json::<Version>("/version").await.unwrap_err();
        assert!(
            matches!(&err.kind, ApiServerErrorKind::Rejected { status: 401, message } if message == "Unauthorized")
        );
        assert!(seen.lock().unwrap().iter().filter(|s| s.client_cert).count() == 4);
        assert!(!format!("{api:?}").contains("PRIVATE"));
    }
}
