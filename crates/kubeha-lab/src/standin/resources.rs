//! The API resources the apiserver stand-in stores: the kinds kubeha applies, where their REST
//! paths point, where the real apiserver keeps them in etcd, and the discovery documents
//! (`/api/v1`, `/apis`, `/apis/<group>/<version>`) kubectl reads to map a kind to a path.
//!
//! Discovery is the legacy (non-aggregated) form: kubectl asks for the aggregated form first
//! and falls back when the answer is plain `application/json`, as it does with older servers.

use serde_json::{Value, json};

/// One resource type: a data table like the real server's REST storage registrations.
#[derive(Debug, PartialEq, Eq)]
pub struct Resource {
    /// The API group, empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// The plural name in paths (`configmaps`).
    pub name: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// The directory under `/registry/` where the real apiserver stores these objects (usually
    /// the plural name; Nodes are `minions`, Services `services/specs`).
    pub etcd_dir: &'static str,
}

const fn resource(
    group: &'static str,
    name: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    etcd_dir: &'static str,
) -> Resource {
    Resource { group, version: "v1", name, singular, kind, namespaced, short_names, etcd_dir }
}

const RBAC: &str = "rbac.authorization.k8s.io";

/// Every resource served, grouped by API group in discovery order.
pub const RESOURCES: &[Resource] = &[
    resource("", "configmaps", "configmap", "ConfigMap", true, &["cm"], "configmaps"),
    resource("", "nodes", "node", "Node", false, &["no"], "minions"),
    resource("", "serviceaccounts", "serviceaccount", "ServiceAccount", true, &["sa"], "serviceaccounts"),
    resource("", "services", "service", "Service", true, &["svc"], "services/specs"),
    resource("apps", "daemonsets", "daemonset", "DaemonSet", true, &["ds"], "daemonsets"),
    resource("apps", "deployments", "deployment", "Deployment", true, &["deploy"], "deployments"),
    resource(
        "policy",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        "poddisruptionbudgets",
    ),
    resource(
        RBAC,
        "clusterrolebindings",
        "clusterrolebinding",
        "ClusterRoleBinding",
        false,
        &[],
        "clusterrolebindings",
    ),
    resource(RBAC, "clusterroles", "clusterrole", "ClusterRole", false, &[], "clusterroles"),
    resource(RBAC, "rolebindings", "rolebinding", "RoleBinding", true, &[], "rolebindings"),
    resource(RBAC, "roles", "role", "Role", true, &[], "roles"),
];

/// The verbs the stand-in serves for every resource.
pub const VERBS: [&str; 3] = ["get", "list", "patch"];

impl Resource {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// `configmaps` or `clusterrolebindings.rbac.authorization.k8s.io`, as messages name it.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() { self.name.to_string() } else { format!("{}.{}", self.name, self.group) }
    }

    /// The etcd key of one object: `/registry/configmaps/kube-system/coredns`.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) => format!("/registry/{}/{ns}/{name}", self.etcd_dir),
            None => format!("/registry/{}/{name}", self.etcd_dir),
        }
    }

    /// The etcd key prefix of a collection: all namespaces, or one.
    pub fn prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) => format!("/registry/{}/{ns}/", self.etcd_dir),
            None => format!("/registry/{}/", self.etcd_dir),
        }
    }
}

/// What a request path names.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    /// A discovery document, ready to serve.
    Discovery(Value),
    /// One object: `.../namespaces/<ns>/<resource>/<name>` or `.../<resource>/<name>`.
    Object { resource: &'static Resource, namespace: Option<String>, name: String },
    /// A collection, in one namespace or (`namespace: None`) all of them.
    Collection { resource: &'static Resource, namespace: Option<String> },
}

/// Maps a path below `/api` or `/apis` to what it names; `None` for paths the stand-in does not
/// serve (answered 404). `/api` and `/apis` themselves are answered by the caller.
pub fn route(path: &str) -> Option<Route> {
    let segments: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .map(|s| percent_decode(s).filter(|s| !s.contains('/')))
        .collect::<Option<Vec<_>>>()?;
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["apis"] => Some(Route::Discovery(group_list())),
        ["api", "v1"] => Some(Route::Discovery(resource_list("", "v1"))),
        ["apis", group] => group_document(group).map(Route::Discovery),
        ["apis", group, version] if known_group_version(group, version) => {
            Some(Route::Discovery(resource_list(group, version)))
        }
        ["api", "v1", rest @ ..] => resource_route("", "v1", rest),
        ["apis", group, version, rest @ ..] => resource_route(group, version, rest),
        _ => None,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Option<Route> {
    let find = |name: &str| RESOURCES.iter().find(|r| r.group == group && r.version == version && r.name == name);
    let valid = |name: &str| !name.is_empty();
    match rest {
        ["namespaces", ns, res] if valid(ns) => {
            let resource = find(res).filter(|r| r.namespaced)?;
            Some(Route::Collection { resource, namespace: Some(ns.to_string()) })
        }
        ["namespaces", ns, res, name] if valid(ns) && valid(name) => {
            let resource = find(res).filter(|r| r.namespaced)?;
            Some(Route::Object { resource, namespace: Some(ns.to_string()), name: name.to_string() })
        }
        [res] => Some(Route::Collection { resource: find(res)?, namespace: None }),
        [res, name] if valid(name) => {
            let resource = find(res).filter(|r| !r.namespaced)?;
            Some(Route::Object { resource, namespace: None, name: name.to_string() })
        }
        _ => None,
    }
}

/// Decodes `%XX` escapes (in a path segment or a query value); `None` for a malformed one.
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn known_group_version(group: &str, version: &str) -> bool {
    RESOURCES.iter().any(|r| !r.group.is_empty() && r.group == group && r.version == version)
}

/// The named groups, each once, in table order.
fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !out.contains(&r.group) {
            out.push(r.group);
        }
    }
    out
}

fn group_entry(group: &str) -> Value {
    let gv = json!({"groupVersion": format!("{group}/v1"), "version": "v1"});
    json!({"name": group, "versions": [gv], "preferredVersion": gv})
}

/// `/apis`: an `APIGroupList` of the groups served.
fn group_list() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(group_entry).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`: one `APIGroup`.
fn group_document(group: &str) -> Option<Value> {
    if !groups().contains(&group) {
        return None;
    }
    let mut doc = group_entry(group);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `/api/v1` or `/apis/<group>/<version>`: an `APIResourceList`.
fn resource_list(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            json!({
                "name": r.name,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": VERBS,
                "shortNames": r.short_names,
            })
        })
        .collect();
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(path: &str) -> (&'static str, Option<String>, String) {
        match route(path) {
            Some(Route::Object { resource, namespace, name }) => (resource.name, namespace, name),
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn kubeha_object_paths_name_objects() {
        let cm = object("/api/v1/namespaces/kube-system/configmaps/coredns");
        assert_eq!(cm, ("configmaps", Some("kube-system".into()), "coredns".into()));
        let crb = object("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kubeadm:cluster-admins");
        assert_eq!(crb, ("clusterrolebindings", None, "kubeadm:cluster-admins".into()));
        assert_eq!(
            object("/apis/rbac.authorization.k8s.io/v1/clusterroles/kubeadm%3Aget-nodes").2,
            "kubeadm:get-nodes"
        );
        assert_eq!(object("/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy").0, "daemonsets");
        assert_eq!(object("/api/v1/nodes/cp1"), ("nodes", None, "cp1".into()));
    }

    #[test]
    fn collections_discovery_and_unknown_paths() {
        let Some(Route::Collection { resource, namespace }) = route("/api/v1/namespaces/kube-system/configmaps") else {
            panic!()
        };
        assert_eq!((resource.kind, namespace.as_deref()), ("ConfigMap", Some("kube-system")));
        assert!(matches!(route("/api/v1/configmaps"), Some(Route::Collection { namespace: None, .. })));
        let Some(Route::Discovery(apps)) = route("/apis/apps/v1") else { panic!() };
        assert_eq!(apps["resources"][0]["name"], "daemonsets");
        let Some(Route::Discovery(groups)) = route("/apis") else { panic!() };
        assert_eq!(groups["groups"].as_array().unwrap().len(), 3);
        for path in [
            "/api/v1/configmaps/x",                               // namespaced without a namespace
            "/api/v1/namespaces/kube-system/nodes/cp1",           // cluster-scoped in a namespace
            "/api/v1/namespaces/kube-system/configmaps/x/status", // subresources
            "/api/v1/namespaces/kube-system/secrets/x",           // not served
            "/apis/apps/v2/daemonsets",
            "/api/v1/namespaces/kube-system/configmaps/a%2Fb",
            "/api/v2",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }

    #[test]
    fn keys_follow_the_real_registry_layout() {
        let find = |name: &str| RESOURCES.iter().find(|r| r.name == name).unwrap();
        assert_eq!(find("configmaps").key(Some("kube-system"), "coredns"), "/registry/configmaps/kube-system/coredns");
        assert_eq!(find("nodes").key(None, "cp1"), "/registry/minions/cp1");
        assert_eq!(find("services").prefix(Some("kube-system")), "/registry/services/specs/kube-system/");
        assert_eq!(find("clusterroles").qualified_name(), "clusterroles.rbac.authorization.k8s.io");
    }
}
