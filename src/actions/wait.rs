//! Waiting until the cluster is really up: every etcd member healthy, every apiserver healthy,
//! and the control-plane endpoint answering `/healthz` with the cluster CA verified.
//!
//! etcd and the apiservers are asked on 127.0.0.1 of their own host through an SSH tunnel, so
//! no port but SSH has to be open between the operator and the hosts; the endpoint is asked
//! directly, because that is the path every client takes.

use std::future::Future;
use std::time::{Duration, Instant};

use super::error::ActionError;
use super::fanout;
use super::progress::Progress;
use super::rollout::Gates;
use super::session::Session;
use crate::host::apiserver::ApiServerClient;
use crate::host::etcd::{EtcdClient, Member};
use crate::https::{HttpsError, HttpsUrl, Request, TlsClient};
use crate::pki::Pki;
use crate::plan::{EndpointHost, Host, Plan};
use crate::transport::Remote;

/// How long to wait for everything, and how often to ask.
#[derive(Debug, Clone, Copy)]
pub struct WaitOptions {
    pub timeout: Duration,
    pub interval: Duration,
}

/// Waiting ran out of time; `last` is the last answer seen.
#[derive(Debug, thiserror::Error)]
#[error("{what} not ready after {}s: {last}", after.as_secs())]
pub struct WaitError {
    pub what: String,
    pub after: Duration,
    pub last: String,
}

/// Why a probe did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not ready yet; asking again may succeed.
    Retry(String),
    /// Asking again cannot help (the SSH connection to the host is gone).
    Fatal(String),
}

impl Failure {
    fn text(&self) -> &str {
        match self {
            Failure::Retry(t) | Failure::Fatal(t) => t,
        }
    }
}

impl From<String> for Failure {
    fn from(text: String) -> Self {
        Failure::Retry(text)
    }
}

/// Calls `probe` until it succeeds, fails fatally or `deadline` passes, reporting each failure
/// to `on_retry`.
pub async fn until<T, F, Fut>(
    what: &str,
    deadline: Instant,
    interval: Duration,
    mut probe: F,
    on_retry: impl Fn(&str),
) -> Result<T, WaitError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(t) => return Ok(t),
            Err(f @ Failure::Fatal(_)) => {
                return Err(WaitError { what: what.to_string(), after: started.elapsed(), last: f.text().to_string() });
            }
            Err(f) if Instant::now() + interval >= deadline => {
                return Err(WaitError { what: what.to_string(), after: started.elapsed(), last: f.text().to_string() });
            }
            Err(f) => {
                on_retry(f.text());
                tokio::time::sleep(interval).await;
            }
        }
    }
}

/// Checks a member list against the members the plan expects: all present, started (a member
/// that has not started yet has no name) and voting.
pub fn check_members(plan: &Plan, members: &[Member]) -> Result<(), String> {
    let mut missing = Vec::new();
    for host in plan.etcd_members() {
        match members.iter().find(|m| m.name == host.name) {
            Some(m) if m.is_learner => missing.push(format!("{} (still a learner)", host.name)),
            Some(_) => {}
            None => missing.push(host.name.clone()),
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} members started; waiting for {}",
            members.iter().filter(|m| !m.name.is_empty() && !m.is_learner).count(),
            plan.etcd_members().count(),
            missing.join(", ")
        ))
    }
}

/// How a failed call to a host's etcd or apiserver counts while waiting.
fn failure(retryable: bool, text: String) -> Failure {
    if retryable { Failure::Retry(text) } else { Failure::Fatal(text) }
}

/// `GET /health` of the etcd member on `host`, through its tunnel.
pub async fn etcd_health<R: Remote>(remote: &R, host: &Host, client: &TlsClient) -> Result<(), Failure> {
    let etcd = EtcdClient::with_tls(remote, host, client.clone());
    etcd.health().await.map_err(|e| failure(e.is_retryable(), e.to_string()))
}

/// The member list as the etcd member on `host` sees it.
pub async fn etcd_members<R: Remote>(remote: &R, host: &Host, client: &TlsClient) -> Result<Vec<Member>, Failure> {
    let etcd = EtcdClient::with_tls(remote, host, client.clone());
    etcd.members().await.map_err(|e| failure(e.is_retryable(), e.to_string()))
}

/// `GET /readyz` of the apiserver on `host`, through its tunnel.
pub async fn apiserver_ready<R: Remote>(
    remote: &R,
    plan: &Plan,
    host: &Host,
    client: &TlsClient,
) -> Result<(), Failure> {
    let api = ApiServerClient::with_tls(remote, plan, host, client.clone());
    api.readyz().await.map_err(|e| failure(e.is_retryable(), e.to_string()))
}

/// `GET <endpoint>/healthz` from this machine, verifying the endpoint's name or address.
pub async fn endpoint_health(plan: &Plan, client: &TlsClient) -> Result<(), Failure> {
    let url =
        HttpsUrl::parse(&format!("{}/healthz", plan.endpoint_url())).map_err(|e| Failure::Fatal(e.to_string()))?;
    let name = match &plan.control_plane_endpoint.host {
        EndpointHost::Ip(ip) => ip.to_string(),
        EndpointHost::Dns(name) => name.clone(),
    };
    let response = client.send_as(&url, &name, &Request::get("/healthz")).await.map_err(|e| e.to_string())?;
    healthz(&response).map_err(Failure::Retry)
}

fn healthz(response: &crate::https::Response) -> Result<(), String> {
    let body = response.text();
    if response.is_success() && body.trim() == "ok" {
        Ok(())
    } else {
        Err(format!("/healthz answered {}: {}", response.status, first_line(&body)))
    }
}

fn first_line(text: &str) -> &str {
    text.lines().find(|l| l.starts_with("[-]")).or_else(|| text.lines().next()).unwrap_or("").trim()
}

/// kubeha's health checks of one cluster: the clients (etcd's healthcheck identity, the
/// cluster CA) made once, and the waits built from the probes above.
pub struct Health<'p> {
    plan: &'p Plan,
    etcd: TlsClient,
    api: TlsClient,
    interval: Duration,
}

impl<'p> Health<'p> {
    pub fn new(plan: &'p Plan, pki: &Pki, interval: Duration) -> Result<Self, HttpsError> {
        let probe_timeout = Duration::from_secs(5);
        let identity =
            pki.etcd_healthcheck_client().identity("etcd/healthcheck-client.crt", "etcd/healthcheck-client.key")?;
        Ok(Health {
            plan,
            etcd: TlsClient::new(pki.etcd_ca_cert_pem(), Some(&identity))?.with_timeout(probe_timeout),
            api: TlsClient::new(pki.ca_cert_pem(), None)?.with_timeout(probe_timeout),
            interval,
        })
    }

    /// Until the control plane's etcd member and apiserver answer healthy.
    pub async fn control_plane<R: Remote>(
        &self,
        host: &Host,
        remote: &R,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<(), WaitError> {
        let name = &host.name;
        let step = |what: &'static str| move |last: &str| progress.detail(name, format!("waiting for {what}: {last}"));
        progress.step(name, "waiting for etcd");
        until(
            &format!("{name}: etcd"),
            deadline,
            self.interval,
            || etcd_health(remote, host, &self.etcd),
            step("etcd"),
        )
        .await?;
        progress.step(name, "waiting for kube-apiserver");
        until(
            &format!("{name}: kube-apiserver"),
            deadline,
            self.interval,
            || apiserver_ready(remote, self.plan, host, &self.api),
            step("kube-apiserver"),
        )
        .await
    }

    /// One look at the control plane's etcd and apiserver: both healthy now, or what is not.
    pub async fn now<R: Remote>(&self, host: &Host, remote: &R) -> Result<(), String> {
        etcd_health(remote, host, &self.etcd).await.map_err(|f| format!("etcd: {}", f.text()))?;
        apiserver_ready(remote, self.plan, host, &self.api).await.map_err(|f| format!("kube-apiserver: {}", f.text()))
    }

    /// Until the control plane's etcd member answers healthy.
    pub async fn etcd<R: Remote>(
        &self,
        host: &Host,
        remote: &R,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<(), WaitError> {
        let name = &host.name;
        progress.step(name, "waiting for etcd");
        until(
            &format!("{name}: etcd"),
            deadline,
            self.interval,
            || etcd_health(remote, host, &self.etcd),
            |last| progress.detail(name, format!("waiting for etcd: {last}")),
        )
        .await
    }

    /// Until the member list, as `host`'s etcd sees it, has every planned member started and
    /// voting.
    pub async fn members<R: Remote>(
        &self,
        host: &Host,
        remote: &R,
        deadline: Instant,
        progress: &Progress,
    ) -> Result<(), WaitError> {
        until(
            "etcd membership",
            deadline,
            self.interval,
            || async {
                check_members(self.plan, &etcd_members(remote, host, &self.etcd).await?).map_err(Failure::Retry)
            },
            |last| progress.detail(&host.name, format!("waiting for etcd members: {last}")),
        )
        .await
    }

    /// Until every connected control plane of this plan has its etcd and apiserver healthy, etcd has every
    /// planned member, and the endpoint answers.
    pub async fn cluster<R: Remote>(&self, session: &Session<'_, R>) -> Result<(), ActionError> {
        let progress = session.progress;
        let deadline = Instant::now() + session.options.wait.timeout;
        let control_planes: Vec<(&Host, &R)> =
            session.control_planes().filter(|(h, _)| self.plan.host(&h.name).is_some()).collect();
        let results = fanout::each(&control_planes, control_planes.len().max(1), |(host, remote)| async move {
            self.control_plane(host, *remote, deadline, progress).await?;
            progress.finish(&host.name, "etcd and kube-apiserver healthy");
            Ok::<(), WaitError>(())
        })
        .await;
        for (_, result) in results {
            result?;
        }
        if let Some((first, remote)) = control_planes.first() {
            self.members(first, *remote, deadline, progress).await?;
        }
        self.endpoint(deadline, progress).await?;
        Ok(())
    }

    /// Until the control-plane endpoint answers `/healthz`, verified against the cluster CA.
    pub async fn endpoint(&self, deadline: Instant, progress: &Progress) -> Result<(), WaitError> {
        let endpoint = self.plan.endpoint_url();
        progress.note(format!("waiting for {endpoint}/healthz"));
        until(&format!("{endpoint}/healthz"), deadline, self.interval, || endpoint_health(self.plan, &self.api), |_| {})
            .await
    }
}

/// The gates of a rolling restart: the other etcd members must be healthy before a control plane
/// restarts (so the cluster keeps quorum while it is down), and it must be healthy again, with
/// every member back in the list, before the next one is touched.
impl<R: Remote> Gates<R> for Health<'_> {
    async fn before(&self, session: &Session<'_, R>, host: &Host) -> Result<(), ActionError> {
        let deadline = Instant::now() + session.options.wait.timeout;
        // The plan's members only: the inventory may list control planes that have not joined.
        let members =
            session.control_planes().filter(|(h, _)| h.name != host.name && self.plan.host(&h.name).is_some());
        for (other, remote) in members {
            until(
                &format!("{}: etcd (must be healthy before {} restarts)", other.name, host.name),
                deadline,
                self.interval,
                || etcd_health(remote, other, &self.etcd),
                |last| session.progress.detail(&host.name, format!("waiting for {}'s etcd: {last}", other.name)),
            )
            .await?;
        }
        Ok(())
    }

    async fn after(&self, session: &Session<'_, R>, host: &Host, remote: &R) -> Result<(), ActionError> {
        let deadline = Instant::now() + session.options.wait.timeout;
        self.control_plane(host, remote, deadline, session.progress).await?;
        self.members(host, remote, deadline, session.progress).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        crate::inventory::parse(include_str!("../../inventories/example.yaml"), std::path::Path::new("/")).unwrap()
    }

    fn members(json: &str) -> Vec<Member> {
        #[derive(serde::Deserialize)]
        struct List {
            members: Vec<Member>,
        }
        serde_json::from_str::<List>(json).unwrap().members
    }

    #[test]
    fn member_lists_count_started_voting_members() {
        let plan = plan();
        let all = members(
            r#"{"header":{},"members":[{"ID":"1","name":"cp1","peerURLs":["https://198.18.0.11:2380"],"clientURLs":["https://198.18.0.11:2379"]},
                {"ID":"2","name":"cp2","peerURLs":["https://198.18.0.12:2380"]},
                {"ID":"3","name":"cp3","peerURLs":["https://198.18.0.13:2380"]}]}"#,
        );
        assert_eq!(check_members(&plan, &all), Ok(()));
        let partial = members(
            r#"{"members":[{"name":"cp1"},{"peerURLs":["https://198.18.0.12:2380"]},{"name":"cp3","isLearner":true}]}"#,
        );
        assert_eq!(
            check_members(&plan, &partial).unwrap_err(),
            "1 of 3 members started; waiting for cp2, cp3 (still a learner)"
        );
    }

    #[tokio::test]
    async fn until_retries_then_reports_the_last_answer() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let ok = until(
            "thing",
            Instant::now() + Duration::from_secs(5),
            Duration::from_millis(5),
            || async {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n < 3 { Err(Failure::Retry(format!("try {n}"))) } else { Ok(n) }
            },
            |_| {},
        )
        .await;
        assert_eq!(ok.unwrap(), 3);
        let err = until::<(), _, _>(
            "thing",
            Instant::now() + Duration::from_millis(30),
            Duration::from_millis(10),
            || async { Err(Failure::Retry("still down".to_string())) },
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(err.last, "still down");
        assert!(err.to_string().starts_with("thing not ready after"));
        let started = Instant::now();
        let fatal = until::<(), _, _>(
            "thing",
            Instant::now() + Duration::from_secs(60),
            Duration::from_millis(10),
            || async { Err(Failure::Fatal("gone".to_string())) },
            |_| {},
        )
        .await
        .unwrap_err();
        assert_eq!(fatal.last, "gone");
        assert!(started.elapsed() < Duration::from_secs(30), "a fatal failure must not wait for the deadline");
    }
}
