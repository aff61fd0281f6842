//! The Kubernetes API objects kubeha applies once the control plane is up: what makes the
//! cluster usable (kubeadm's RBAC, its configuration ConfigMaps, `cluster-info`) and the add-ons
//! every node needs (kube-proxy, CoreDNS).
//!
//! Objects are plain data made from the plan and the PKI, as kubeadm makes them for the same
//! Kubernetes version; [`Object::apply_path`] says where server-side apply sends each one.
//! Building them does no I/O, so `render` can write them for review and tests can compare them
//! with kubeadm's without a cluster.

mod config;
mod dns;
mod proxy;
pub(crate) mod rbac;

use serde_json::Value;

use crate::pki::Pki;
use crate::plan::Plan;

/// Where add-ons and kubeadm's objects live.
pub const KUBE_SYSTEM: &str = "kube-system";
pub const KUBE_PUBLIC: &str = "kube-public";

/// The field manager of everything kubeha applies.
pub const FIELD_MANAGER: &str = "kubeha";

/// One API object, as sent with server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub body: Value,
}

impl Object {
    fn new(body: Value) -> Object {
        debug_assert!(body["apiVersion"].is_string() && body["kind"].is_string(), "{body}");
        Object { body }
    }

    pub fn api_version(&self) -> &str {
        self.body["apiVersion"].as_str().unwrap_or_default()
    }

    pub fn kind(&self) -> &str {
        self.body["kind"].as_str().unwrap_or_default()
    }

    pub fn name(&self) -> &str {
        self.body["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn namespace(&self) -> Option<&str> {
        self.body["metadata"]["namespace"].as_str()
    }

    /// `Kind namespace/name` for messages.
    pub fn describe(&self) -> String {
        match self.namespace() {
            Some(ns) => format!("{} {ns}/{}", self.kind(), self.name()),
            None => format!("{} {}", self.kind(), self.name()),
        }
    }

    /// The object's REST path: `/api/v1/namespaces/kube-system/configmaps/coredns`.
    pub fn path(&self) -> String {
        let prefix = match self.api_version() {
            "v1" => "/api/v1".to_string(),
            group_version => format!("/apis/{group_version}"),
        };
        let resource = plural(self.kind());
        match self.namespace() {
            Some(ns) => format!("{prefix}/namespaces/{ns}/{resource}/{}", self.name()),
            None => format!("{prefix}/{resource}/{}", self.name()),
        }
    }

    /// The path of a server-side apply of this object by kubeha, taking over fields another
    /// manager changed (kubeha's objects are kubeha's).
    pub fn apply_path(&self) -> String {
        format!("{}?fieldManager={FIELD_MANAGER}&force=true", self.path())
    }

    /// A file name for `render --out`: `<kind>-<namespace>-<name>.yaml`, lower case.
    pub fn file_name(&self) -> String {
        let ns = self.namespace().map(|n| format!("{n}-")).unwrap_or_default();
        format!("{}-{ns}{}.yaml", self.kind().to_ascii_lowercase(), self.name().replace(':', "-"))
    }
}

/// The resource name of a kind: kubeha's own kinds and those CNI manifests use, else the
/// API's regular plural (`-y` → `-ies`, `-s`/`-x`/`-ch` → `-es`, else `-s`).
fn plural(kind: &str) -> String {
    match kind {
        "Endpoints" => "endpoints".into(),
        "NetworkPolicy" => "networkpolicies".into(),
        "PodSecurityPolicy" => "podsecuritypolicies".into(),
        "ClusterRole" => "clusterroles".into(),
        "ClusterRoleBinding" => "clusterrolebindings".into(),
        "Role" => "roles".into(),
        "RoleBinding" => "rolebindings".into(),
        "ConfigMap" => "configmaps".into(),
        "ServiceAccount" => "serviceaccounts".into(),
        "Service" => "services".into(),
        "DaemonSet" => "daemonsets".into(),
        "Deployment" => "deployments".into(),
        "PodDisruptionBudget" => "poddisruptionbudgets".into(),
        "Node" => "nodes".into(),
        other => {
            let lower = other.to_ascii_lowercase();
            if let Some(stem) = lower.strip_suffix('y').filter(|s| !s.ends_with(['a', 'e', 'o', 'u'])) {
                format!("{stem}ies")
            } else if lower.ends_with('s') || lower.ends_with('x') || lower.ends_with("ch") {
                format!("{lower}es")
            } else {
                format!("{lower}s")
            }
        }
    }
}

pub use dns::CONTROL_PLANE_TAINT;

/// Every object kubeha applies to the cluster of `plan`, in apply order: RBAC and
/// configuration first, then the add-ons the inventory keeps on (kube-proxy, CoreDNS), then
/// the objects of its CNI manifest, in the file's order.
pub fn cluster_objects(plan: &Plan, pki: &Pki) -> Vec<Object> {
    let mut objects = kubeha_objects(plan, pki);
    objects.extend(cni_objects(plan));
    objects
}

/// kubeha's own objects: independent of each other (a binding may name a role applied in the
/// same breath), so they can be applied all at once.
pub fn kubeha_objects(plan: &Plan, pki: &Pki) -> Vec<Object> {
    let mut objects = rbac::objects();
    objects.extend(config::objects(plan, pki));
    if plan.addons.kube_proxy {
        objects.extend(proxy::objects(plan));
    }
    if plan.addons.core_dns {
        objects.extend(dns::objects(plan));
    }
    objects
}

/// The objects of the inventory's CNI manifest, in the file's order (a namespace or a custom
/// resource definition before what uses it).
pub fn cni_objects(plan: &Plan) -> Vec<Object> {
    plan.networking.cni_manifest.iter().flat_map(|cni| cni.objects.iter().cloned().map(Object::new)).collect()
}

/// The labels kubeha gives a control plane's Node (kubeadm's mark-control-plane), as a partial
/// Node for server-side apply: kubeha owns these labels and nothing else of the Node.
pub fn control_plane_node(name: &str) -> Object {
    Object::new(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "node-role.kubernetes.io/control-plane": "",
                "node.kubernetes.io/exclude-from-external-load-balancers": "",
            },
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_api_layout() {
        let cm = Object::new(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"}
        }));
        assert_eq!(cm.path(), "/api/v1/namespaces/kube-system/configmaps/coredns");
        assert_eq!(cm.apply_path(), "/api/v1/namespaces/kube-system/configmaps/coredns?fieldManager=kubeha&force=true");
        let crb = Object::new(serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubeadm:cluster-admins"}
        }));
        assert_eq!(crb.path(), "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kubeadm:cluster-admins");
        assert_eq!(crb.file_name(), "clusterrolebinding-kubeadm-cluster-admins.yaml");
        assert_eq!(crb.describe(), "ClusterRoleBinding kubeadm:cluster-admins");
        assert_eq!(plural("NetworkPolicy"), "networkpolicies");
        assert_eq!(plural("CustomResourceDefinition"), "customresourcedefinitions");
        assert_eq!(plural("Gateway"), "gateways");
        assert_eq!(plural("IngressClass"), "ingressclasses");
        assert_eq!(plural("Namespace"), "namespaces");
    }
}
