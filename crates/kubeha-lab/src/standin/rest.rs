//! The apiserver stand-in's object endpoints: `GET` of an object or a collection and server-side
//! apply (`PATCH` with `application/apply-patch+yaml`), stored in etcd through `registry`.
//!
//! Authorization is not RBAC: only members of `system:masters` (kubeadm's `super-admin.conf`)
//! may read or write objects, everyone else gets the real server's 403 text. Errors are
//! `metav1.Status` documents with the real server's reasons and (mostly) its messages.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::apply::{self, Outcome};
use super::registry::{Expected, Registry, Stored, Written, with_version};
use super::resources::{Resource, Route, percent_decode};
use super::respond::{self, Reply};

/// The group whose members may do anything (the real server's authorizer short-circuits it).
pub const MASTERS: &str = "system:masters";

/// The media type of server-side apply.
const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// How often an apply is retried after another writer changed the object in between.
const CONFLICT_RETRIES: usize = 5;

/// The authenticated client of a request.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
}

/// One object request, its body read.
#[derive(Debug)]
pub struct ObjectRequest<'a> {
    pub method: &'a str,
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// A request refused, as a `metav1.Status`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { code, reason, message: message.into(), details: json!({}) }
    }

    fn reply(&self) -> Reply {
        respond::status_with_details(self.code, self.reason, &self.message, &self.details)
    }
}

/// Answers a request for an object or a collection (`route` is not a discovery route).
pub async fn handle(registry: &Registry, caller: Caller<'_>, route: &Route, request: &ObjectRequest<'_>) -> Reply {
    match serve(registry, caller, route, request).await {
        Ok((code, body)) => respond::json(code, &body),
        Err(e) => {
            tracing::info!("{} {}: {e}", request.method, describe(route));
            e.reply()
        }
    }
}

async fn serve(
    registry: &Registry,
    caller: Caller<'_>,
    route: &Route,
    request: &ObjectRequest<'_>,
) -> Result<(u16, Value), ApiError> {
    authorize(caller, verb(request.method, route), route)?;
    let query = parse_query(request.query);
    match (request.method, route) {
        ("GET", Route::Object { resource, namespace, name }) => {
            let key = resource.key(namespace.as_deref(), name);
            match registry.get(&key).await.map_err(internal)? {
                Some(stored) => Ok((200, stored.served())),
                None => Err(not_found(resource, name)),
            }
        }
        ("GET", Route::Collection { resource, namespace }) => {
            list(registry, resource, namespace.as_deref(), &query).await
        }
        ("PATCH", Route::Object { resource, namespace, name }) => {
            check_apply_type(request.content_type)?;
            let manager = query.get("fieldManager").filter(|m| !m.is_empty()).ok_or_else(|| {
                ApiError::new(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
            })?;
            let applied = applied_object(request.body, resource, namespace.as_deref(), name)?;
            let dry_run = query.get("dryRun").is_some_and(|v| v == "All");
            let target = Target { registry, resource, key: resource.key(namespace.as_deref(), name), name };
            target.apply(&applied, manager, dry_run, caller.user).await
        }
        ("DELETE", Route::Object { resource, namespace, name }) => {
            let key = resource.key(namespace.as_deref(), name);
            match registry.delete(&key).await.map_err(internal)? {
                true => Ok((200, serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}))),
                false => Err(not_found(resource, name)),
            }
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource (the lab's kube-apiserver stand-in \
             serves GET, server-side apply and DELETE of one object only)",
        )),
    }
}

/// The verb the real authorizer would check.
fn verb(method: &str, route: &Route) -> &'static str {
    match (method, route) {
        ("GET", Route::Collection { .. }) => "list",
        ("GET", _) => "get",
        ("PATCH", _) => "patch",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("DELETE", Route::Collection { .. }) => "deletecollection",
        ("DELETE", _) => "delete",
        _ => "unknown",
    }
}

/// Only `system:masters`; the refusal in the real RBAC authorizer's words.
fn authorize(caller: Caller<'_>, verb: &str, route: &Route) -> Result<(), ApiError> {
    if caller.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let (resource, namespace, name) = match route {
        Route::Object { resource, namespace, name } => (*resource, namespace.as_deref(), Some(name.as_str())),
        Route::Collection { resource, namespace } => (*resource, namespace.as_deref(), None),
        Route::Discovery(_) => return Ok(()),
    };
    let subject = match name {
        Some(name) => format!("{} {name:?}", resource.qualified_name()),
        None => resource.qualified_name(),
    };
    let scope = match namespace {
        Some(ns) => format!("in the namespace {ns:?}"),
        None => "at the cluster scope".to_string(),
    };
    let mut error = ApiError::new(
        403,
        "Forbidden",
        format!(
            "{subject} is forbidden: User {:?} cannot {verb} resource {:?} in API group {:?} {scope}",
            caller.user, resource.name, resource.group
        ),
    );
    error.details = details(resource, name.unwrap_or_default());
    Err(error)
}

fn details(resource: &Resource, name: &str) -> Value {
    let mut details = json!({"kind": resource.name});
    if !name.is_empty() {
        details["name"] = json!(name);
    }
    if !resource.group.is_empty() {
        details["group"] = json!(resource.group);
    }
    details
}

fn not_found(resource: &Resource, name: &str) -> ApiError {
    let mut error = ApiError::new(404, "NotFound", format!("{} {name:?} not found", resource.qualified_name()));
    error.details = details(resource, name);
    error
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(500, "InternalError", format!("Internal error occurred: {e}"))
}

fn describe(route: &Route) -> String {
    match route {
        Route::Object { resource, namespace: Some(ns), name } => format!("{} {ns}/{name}", resource.name),
        Route::Object { resource, name, .. } => format!("{} {name}", resource.name),
        Route::Collection { resource, .. } => format!("{} (list)", resource.name),
        Route::Discovery(_) => "discovery".into(),
    }
}

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(k)?, percent_decode(&v.replace('+', " "))?))
        })
        .collect()
}

/// A list of the collection; selectors and watches are refused rather than ignored.
async fn list(
    registry: &Registry,
    resource: &Resource,
    namespace: Option<&str>,
    query: &BTreeMap<String, String>,
) -> Result<(u16, Value), ApiError> {
    for unsupported in ["watch", "labelSelector", "fieldSelector"] {
        if query.get(unsupported).is_some_and(|v| !v.is_empty() && v != "false") {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("{unsupported} is not simulated by the lab's kube-apiserver stand-in"),
            ));
        }
    }
    let (items, revision) = registry.list(&resource.prefix(namespace)).await.map_err(internal)?;
    let items: Vec<Value> = items.iter().map(Stored::served).collect();
    Ok((
        200,
        json!({
            "kind": format!("{}List", resource.kind),
            "apiVersion": resource.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
            "items": items,
        }),
    ))
}

/// Refuses other patch types with the real server's 415.
fn check_apply_type(content_type: Option<&str>) -> Result<(), ApiError> {
    let media = content_type.unwrap_or_default().split(';').next().unwrap_or_default().trim();
    if media == APPLY_PATCH {
        return Ok(());
    }
    Err(ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: {APPLY_PATCH} \
             (the lab's kube-apiserver stand-in does not simulate {media:?} patches)"
        ),
    ))
}

/// The applied object from the body (JSON, or YAML), checked against the URL: its type must be
/// the resource's, its name and namespace the URL's (filled in when left out).
fn applied_object(body: &[u8], resource: &Resource, namespace: Option<&str>, name: &str) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| ApiError::new(400, "BadRequest", format!("body: {e}")))?;
    let mut object: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text)
            .map_err(|e| ApiError::new(400, "BadRequest", format!("error decoding YAML: {e}")))?,
    };
    let bad = |m: String| Err(ApiError::new(400, "BadRequest", m));
    if !object.is_object() {
        return bad("the body of an apply patch must be an object".into());
    }
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    if api_version != resource.api_version() || kind != resource.kind {
        return bad(format!(
            "the object's type ({api_version}, Kind={kind}) does not match the URL's ({}, Kind={})",
            resource.api_version(),
            resource.kind
        ));
    }
    if !object["metadata"].is_object() {
        object["metadata"] = json!({});
    }
    match object["metadata"]["name"].as_str() {
        Some(given) if given != name => {
            return bad(format!("the name of the object ({given}) does not match the name on the URL ({name})"));
        }
        _ => object["metadata"]["name"] = json!(name),
    }
    let metadata = object["metadata"].as_object_mut().expect("metadata was made an object");
    match (namespace, metadata.get("namespace").and_then(Value::as_str)) {
        (Some(url), Some(given)) if given != url => {
            return bad("the namespace of the provided object does not match the namespace sent on the request".into());
        }
        (Some(url), _) => {
            metadata.insert("namespace".into(), json!(url));
        }
        (None, _) => {
            metadata.remove("namespace");
        }
    }
    Ok(object)
}

/// One object's key and resource, for an apply.
struct Target<'a> {
    registry: &'a Registry,
    resource: &'a Resource,
    key: String,
    name: &'a str,
}

impl Target<'_> {
    /// Reads, merges and writes conditionally, again when another write came in between:
    /// 201 with the new object, 200 with the updated (or unchanged, same version) one.
    async fn apply(&self, applied: &Value, manager: &str, dry_run: bool, user: &str) -> Result<(u16, Value), ApiError> {
        for _ in 0..CONFLICT_RETRIES {
            let live = self.registry.get(&self.key).await.map_err(internal)?;
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            let mut object = match apply::apply(live.as_ref().map(|s| &s.object), applied, manager, &now) {
                Outcome::Unchanged => {
                    let live = live.expect("only an existing object is unchanged");
                    tracing::info!("apply {} by {manager:?} ({user}): unchanged at {}", self.key, live.mod_revision);
                    return Ok((200, live.served()));
                }
                Outcome::Write(object) => object,
            };
            let (code, expected) = match &live {
                Some(live) => (200, Expected::Revision(live.mod_revision)),
                None => {
                    object["metadata"]["uid"] = json!(new_uid());
                    object["metadata"]["creationTimestamp"] = json!(now);
                    (201, Expected::Absent)
                }
            };
            if dry_run {
                return Ok((code, object));
            }
            match self.registry.put(&self.key, &object, expected).await.map_err(internal)? {
                Written::Stored(revision) => {
                    let what = if code == 201 { "created" } else { "updated" };
                    tracing::info!("apply {} by {manager:?} ({user}): {what} at {revision}", self.key);
                    return Ok((code, with_version(object, revision)));
                }
                Written::Conflict => tracing::info!("apply {}: changed meanwhile, applying again", self.key),
            }
        }
        Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {:?}: the object has been modified; please apply your changes \
                 to the latest version and try again",
                self.resource.qualified_name(),
                self.name
            ),
        ))
    }
}

/// A random (version 4) UUID.
fn new_uid() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness: the clock is unique enough for a lab.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        b = nanos.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standin::resources::RESOURCES;

    fn resource(name: &str) -> &'static Resource {
        RESOURCES.iter().find(|r| r.name == name).unwrap()
    }

    #[test]
    fn only_masters_pass_and_others_get_the_real_refusal() {
        let route = Route::Object {
            resource: resource("configmaps"),
            namespace: Some("kube-system".into()),
            name: "coredns".into(),
        };
        let masters = vec![MASTERS.to_string()];
        assert!(authorize(Caller { user: "kubernetes-super-admin", groups: &masters }, "patch", &route).is_ok());
        let admins = vec!["kubeadm:cluster-admins".to_string()];
        let err = authorize(Caller { user: "kubernetes-admin", groups: &admins }, "get", &route).unwrap_err();
        assert_eq!((err.code, err.reason), (403, "Forbidden"));
        assert_eq!(
            err.message,
            "configmaps \"coredns\" is forbidden: User \"kubernetes-admin\" cannot get resource \"configmaps\" in API \
             group \"\" in the namespace \"kube-system\""
        );
        let crbs = Route::Collection { resource: resource("clusterrolebindings"), namespace: None };
        let err = authorize(Caller { user: "u", groups: &[] }, "list", &crbs).unwrap_err();
        assert!(
            err.message.starts_with("clusterrolebindings.rbac.authorization.k8s.io is forbidden"),
            "{}",
            err.message
        );
        assert!(err.message.ends_with("at the cluster scope"), "{}", err.message);
    }

    #[test]
    fn applied_objects_must_match_their_url() {
        let cm = resource("configmaps");
        let ok =
            applied_object(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"}}"#, cm, Some("ns"), "c");
        assert_eq!(ok.unwrap()["metadata"], json!({"name": "c", "namespace": "ns"}));
        let yaml = applied_object(
            b"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n",
            cm,
            Some("ns"),
            "c",
        );
        assert_eq!(yaml.unwrap()["data"]["a"], "b");
        for body in [
            &br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"other"}}"#[..],
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c","namespace":"x"}}"#,
            br#"{"apiVersion":"apps/v1","kind":"ConfigMap","metadata":{"name":"c"}}"#,
            br#"[1]"#,
        ] {
            let err = applied_object(body, cm, Some("ns"), "c").unwrap_err();
            assert_eq!(err.code, 400, "{}", String::from_utf8_lossy(body));
        }
        let node = applied_object(
            br#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"cp1","namespace":"x"}}"#,
            resource("nodes"),
            None,
            "cp1",
        );
        assert_eq!(node.unwrap()["metadata"], json!({"name": "cp1"}));
    }

    #[test]
    fn only_server_side_apply_patches_are_accepted() {
        assert!(check_apply_type(Some("application/apply-patch+yaml")).is_ok());
        assert!(check_apply_type(Some("application/apply-patch+yaml; charset=utf-8")).is_ok());
        assert_eq!(check_apply_type(Some("application/merge-patch+json")).unwrap_err().code, 415);
        assert_eq!(check_apply_type(None).unwrap_err().code, 415);
    }

    #[test]
    fn queries_and_uids() {
        let q = parse_query(Some("fieldManager=kubeha&force=true&x=a%3Ab"));
        assert_eq!((q["fieldManager"].as_str(), q["force"].as_str(), q["x"].as_str()), ("kubeha", "true", "a:b"));
        let uid = new_uid();
        assert_eq!((uid.len(), &uid[14..15]), (36, "4"));
        assert_ne!(uid, new_uid());
    }
}
