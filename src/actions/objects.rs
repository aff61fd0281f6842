//! The cluster-objects phase: kubeha's API objects applied with server-side apply (field
//! manager `kubeha`) through one control plane's tunnel, as `super-admin.conf` (the identity
//! that needs no RBAC: `admin.conf`'s rights are among the objects applied).
//!
//! Each object is read first, then applied; comparing resource versions tells what happened:
//! created, unchanged (an apply that changes nothing does not bump the version, so a re-run
//! changes nothing), or updated — changed by hand since, or by a newer kubeha — and converged.

use std::time::Instant;

use super::error::ActionError;
use super::fanout;
use super::session::Session;
use super::wait::{Failure, WaitError, until};
use crate::host::apiserver::{ApiServerClient, ApiServerError, ApiServerErrorKind};
use crate::https::Request;
use crate::objects::{Object, control_plane_node};
use crate::pki::Pki;
use crate::plan::Host;
use crate::transport::Remote;

/// What applying one object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Created,
    Unchanged,
    /// It differed from what kubeha applies (changed by hand, or by an older kubeha) and was
    /// brought back.
    Updated,
    /// A control plane's Node is not registered yet: its labels are applied on a later run.
    NotRegistered,
}

/// One object and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    pub object: String,
    pub outcome: Outcome,
}

/// How many objects are applied at once (each is one tunnel and one TLS handshake away).
const AT_ONCE: usize = 8;

/// Applies `independent` objects all at once (within a bound), then `ordered` ones one after
/// the other, then the control planes' Node labels, through `host`'s apiserver; waits (until
/// the session's timeout) while the apiserver answers with errors that may pass. Results come
/// in that order.
pub async fn apply<R: Remote>(
    session: &Session<'_, R>,
    host: &Host,
    remote: &R,
    pki: &Pki,
    independent: &[Object],
    ordered: &[Object],
) -> Result<Vec<Applied>, ActionError> {
    let identity = pki.super_admin().identity("super-admin.conf", "super-admin.conf")?;
    let api = ApiServerClient::new(remote, session.plan, host, pki.ca_cert_pem(), Some(&identity))?;
    apply_with(session, host, &api, independent, ordered).await
}

/// [`apply`] through a given client.
async fn apply_with<R: Remote>(
    session: &Session<'_, R>,
    host: &Host,
    api: &ApiServerClient<'_, R>,
    independent: &[Object],
    ordered: &[Object],
) -> Result<Vec<Applied>, ActionError> {
    let deadline = Instant::now() + session.options.wait.timeout;
    let interval = session.options.wait.interval;
    let progress = session.progress;
    let one = |object| {
        progress.detail(&host.name, format!("applying {}", Object::describe(object)));
        applied(api, object, deadline, interval)
    };
    let mut out = Vec::new();
    for (object, result) in fanout::each(independent, AT_ONCE, one).await {
        out.push(Applied { object: object.describe(), outcome: result? });
    }
    for object in ordered {
        out.push(Applied { object: object.describe(), outcome: one(object).await? });
    }
    for control_plane in session.plan.control_planes() {
        let node = control_plane_node(&control_plane.name);
        let outcome = until(&node.describe(), deadline, interval, || label_node(api, &node), |_| {}).await?;
        out.push(Applied { object: node.describe(), outcome });
    }
    Ok(out)
}

/// Applies `object`, asking again while the apiserver answers with errors that may pass.
async fn applied<R: Remote>(
    api: &ApiServerClient<'_, R>,
    object: &Object,
    deadline: Instant,
    interval: std::time::Duration,
) -> Result<Outcome, WaitError> {
    until(&object.describe(), deadline, interval, || apply_one(api, object), |_| {}).await
}

fn failure(e: ApiServerError) -> Failure {
    if e.is_retryable() { Failure::Retry(e.to_string()) } else { Failure::Fatal(e.to_string()) }
}

/// The object's resource version, or `None` where it does not exist.
async fn resource_version<R: Remote>(api: &ApiServerClient<'_, R>, object: &Object) -> Result<Option<String>, Failure> {
    match api.get_json::<serde_json::Value>(&object.path()).await {
        Ok(found) => Ok(Some(found["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_string())),
        Err(e) if matches!(e.kind(), ApiServerErrorKind::Rejected { status: 404, .. }) => Ok(None),
        Err(e) => Err(failure(e)),
    }
}

async fn apply_one<R: Remote>(api: &ApiServerClient<'_, R>, object: &Object) -> Result<Outcome, Failure> {
    let before = resource_version(api, object).await?;
    let response = api.request(&Request::apply(&object.apply_path(), &object.body)).await.map_err(failure)?;
    if !response.is_success() {
        let text = format!("apply of {} answered HTTP {}: {}", object.describe(), response.status, response.text());
        return Err(if response.status >= 500 { Failure::Retry(text) } else { Failure::Fatal(text) });
    }
    let after: serde_json::Value =
        response.json().map_err(|e| Failure::Fatal(format!("{}: {e}", object.describe())))?;
    let after = after["metadata"]["resourceVersion"].as_str().unwrap_or_default();
    Ok(match before {
        None => Outcome::Created,
        Some(before) if before == after => Outcome::Unchanged,
        Some(_) => Outcome::Updated,
    })
}

/// Labels an existing Node; a Node that does not exist yet is left to its kubelet (applying
/// would create it).
async fn label_node<R: Remote>(api: &ApiServerClient<'_, R>, node: &Object) -> Result<Outcome, Failure> {
    if resource_version(api, node).await?.is_none() {
        return Ok(Outcome::NotRegistered);
    }
    apply_one(api, node).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::actions::fake::{self, MemoryConnector};
    use crate::actions::progress::Progress;
    use crate::actions::session::SessionOptions;
    use crate::actions::wait::WaitOptions;
    use crate::https::TlsClient;
    use crate::https::testing::{Reply, Seen, TestPki, serve};
    use crate::transport::MemoryRemote;

    /// Just enough of an apiserver: objects by path; an apply that changes nothing keeps the
    /// resource version, any other bumps it. Every request is recorded.
    #[derive(Default)]
    struct Store {
        objects: BTreeMap<String, serde_json::Value>,
        version: u64,
        requests: Vec<String>,
    }

    fn answer(store: &Mutex<Store>, seen: &Seen) -> Reply {
        let mut store = store.lock().unwrap();
        store.requests.push(format!("{} {}", seen.method, seen.path));
        let path = seen.path.split('?').next().unwrap().to_string();
        let not_found = || Reply::json(404, serde_json::json!({"kind": "Status", "message": "not found", "code": 404}));
        match seen.method.as_str() {
            "GET" => store.objects.get(&path).map_or_else(not_found, |o| Reply::json(200, o.clone())),
            "PATCH" => {
                let mut body = seen.json();
                let old = store.objects.get(&path).cloned();
                let version = match &old {
                    Some(o)
                        if {
                            let mut same = o.clone();
                            same["metadata"].as_object_mut().unwrap().remove("resourceVersion");
                            same == body
                        } =>
                    {
                        o["metadata"]["resourceVersion"].as_str().unwrap().to_string()
                    }
                    _ => {
                        store.version += 1;
                        store.version.to_string()
                    }
                };
                body["metadata"]["resourceVersion"] = serde_json::json!(version);
                store.objects.insert(path, body.clone());
                Reply::json(if old.is_some() { 200 } else { 201 }, body)
            }
            _ => Reply::json(405, serde_json::json!({"message": "method not allowed"})),
        }
    }

    #[tokio::test]
    async fn objects_are_created_then_left_alone_and_hand_edits_are_converged() {
        let plan = fake::plan();
        let hosts = MemoryConnector::new(&plan);
        let remote: &MemoryRemote = hosts.host("cp1");
        let test_pki = TestPki::new();
        let store = Arc::new(Mutex::new(Store::default()));
        let (config, served) = (test_pki.server_config(false), store.clone());
        remote.listen_tcp("127.0.0.1", plan.api_server_bind_port, move |stream| {
            let served = served.clone();
            serve(stream, config.clone(), Arc::new(move |seen: &Seen| answer(&served, seen)));
        });
        let dir = tempfile::tempdir().unwrap();
        let options = SessionOptions {
            wait: WaitOptions { timeout: Duration::from_secs(5), interval: Duration::from_millis(20) },
            ..SessionOptions::default()
        };
        let progress = Progress::hidden();
        let session = Session::open(&plan, dir.path(), options, &hosts, &progress).await.unwrap();
        let (host, conn) = session.control_planes().next().unwrap();
        let tls = TlsClient::new(test_pki.ca_pem.as_bytes(), Some(&test_pki.client_identity())).unwrap();
        let api = ApiServerClient::with_tls(conn, &plan, host, tls);
        let objects = crate::objects::rbac::objects();

        let first = apply_with(&session, host, &api, &objects, &[]).await.unwrap();
        assert!(first[..objects.len()].iter().all(|a| a.outcome == Outcome::Created), "{first:?}");
        assert!(first[objects.len()..].iter().all(|a| a.outcome == Outcome::NotRegistered), "{first:?}");
        let requests = store.lock().unwrap().requests.clone();
        assert!(
            requests.iter().any(|r| r.starts_with("PATCH /apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kubeadm:cluster-admins?fieldManager=kubeha&force=true")),
            "{requests:?}"
        );
        assert!(
            !requests.iter().any(|r| r.starts_with("PATCH /api/v1/nodes/")),
            "a missing Node was created: {requests:?}"
        );

        let again = apply_with(&session, host, &api, &objects, &[]).await.unwrap();
        assert!(again[..objects.len()].iter().all(|a| a.outcome == Outcome::Unchanged), "{again:?}");

        // Someone edits a binding by hand, and cp2's Node registers.
        {
            let mut store = store.lock().unwrap();
            let path = objects[0].path();
            store.objects.get_mut(&path).unwrap()["subjects"] = serde_json::json!([]);
            store.objects.insert(
                "/api/v1/nodes/cp2".into(),
                serde_json::json!({"metadata": {"name": "cp2", "resourceVersion": "77"}}),
            );
        }
        let third = apply_with(&session, host, &api, &objects, &[]).await.unwrap();
        assert_eq!(third[0].outcome, Outcome::Updated);
        assert!(third[1..objects.len()].iter().all(|a| a.outcome == Outcome::Unchanged), "{third:?}");
        let cp2 = third.iter().find(|a| a.object == "Node cp2").unwrap();
        assert_eq!(cp2.outcome, Outcome::Updated);
        let labels = store.lock().unwrap().objects["/api/v1/nodes/cp2"]["metadata"]["labels"].clone();
        assert_eq!(labels["node-role.kubernetes.io/control-plane"], "");
        session.close(&hosts).await;
    }
}
