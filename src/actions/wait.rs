//! Waiting until the cluster is really up: every etcd member healthy, every apiserver healthy,
//! and the control-plane endpoint answering `/healthz` with the cluster CA verified.
//!
//! etcd and the apiservers are asked on 127.0.0.1 of their own host through an SSH tunnel, so
//! no port but SSH has to be open between the operator and the hosts; the endpoint is asked
//! directly, because that is the path every client takes.

use std::future::Future;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::https::{HttpsUrl, Request, TlsClient};
use crate::plan::{EndpointHost, Plan};
use crate::transport::{Remote, TransportError};

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

/// One etcd member as the member list reports it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Member {
    #[serde(default)]
    pub name: String,
    #[serde(default, rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(default, rename = "clientURLs")]
    pub client_urls: Vec<String>,
    #[serde(default, rename = "isLearner")]
    pub is_learner: bool,
}

#[derive(Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<Member>,
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

/// `GET /health` of the etcd member on `remote`, through a tunnel to its 127.0.0.1:2379.
pub async fn etcd_health<R: Remote>(remote: &R, client: &TlsClient) -> Result<(), Failure> {
    let response = local_request(remote, 2379, client, &Request::get("/health")).await?;
    #[derive(Deserialize)]
    struct Health {
        health: String,
    }
    match response.json::<Health>() {
        Ok(h) if response.is_success() && h.health == "true" => Ok(()),
        _ => Err(format!("etcd /health answered {}: {}", response.status, response.text().trim()).into()),
    }
}

/// The member list as the etcd member on `remote` sees it.
pub async fn etcd_members<R: Remote>(remote: &R, client: &TlsClient) -> Result<Vec<Member>, Failure> {
    let request = Request::post_json("/v3/cluster/member/list", &serde_json::json!({}));
    let response = local_request(remote, 2379, client, &request).await?;
    if !response.is_success() {
        return Err(format!("etcd member list answered {}: {}", response.status, response.text().trim()).into());
    }
    response.json::<MemberList>().map(|l| l.members).map_err(|e| format!("etcd member list: {e}").into())
}

/// `GET /healthz` of the apiserver on `remote`, through a tunnel to its 127.0.0.1:`port`.
pub async fn apiserver_health<R: Remote>(remote: &R, port: u16, client: &TlsClient) -> Result<(), Failure> {
    let response = local_request(remote, port, client, &Request::get("/healthz")).await?;
    healthz(&response).map_err(Failure::Retry)
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

async fn local_request<R: Remote>(
    remote: &R,
    port: u16,
    client: &TlsClient,
    request: &Request,
) -> Result<crate::https::Response, Failure> {
    let tunnel = remote.open_tcp("127.0.0.1", port).await.map_err(|e| match e {
        TransportError::Disconnected { .. } | TransportError::ForwardingRefused { .. } => Failure::Fatal(e.to_string()),
        e => Failure::Retry(e.to_string()),
    })?;
    client.request(tunnel, "127.0.0.1", request).await.map_err(|e| Failure::Retry(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        crate::inventory::parse(include_str!("../../inventories/example.yaml"), std::path::Path::new("/")).unwrap()
    }

    fn members(json: &str) -> Vec<Member> {
        serde_json::from_str::<MemberList>(json).unwrap().members
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
