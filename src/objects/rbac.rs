//! kubeadm's RBAC: what gives `admin.conf` its rights, lets kubelets renew their client
//! certificates, and lets joining nodes read what they need (cmd/kubeadm/app/phases/
//! {kubeconfig,bootstraptoken/node,bootstraptoken/clusterinfo}).

use serde_json::{Value, json};

use super::{KUBE_PUBLIC, Object};

/// The group `admin.conf`'s certificate carries (kubeadm 1.29+), bound to `cluster-admin`.
pub const CLUSTER_ADMINS_GROUP: &str = "kubeadm:cluster-admins";
/// The group of kubeadm's default bootstrap tokens (what `kubeadm join` authenticates as).
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// The group of every kubelet's client certificate.
pub const NODES_GROUP: &str = "system:nodes";

const RBAC: &str = "rbac.authorization.k8s.io/v1";

fn group(name: &str) -> Value {
    json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name})
}

fn cluster_role_binding(name: &str, role: &str, subjects: Vec<Value>) -> Object {
    Object::new(json!({
        "apiVersion": RBAC,
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    }))
}

/// A Role in `namespace` allowing `get` of the named ConfigMap, and its binding to `subjects`.
pub fn configmap_reader(name: &str, namespace: &str, configmap: &str, subjects: Vec<Value>) -> [Object; 2] {
    [
        Object::new(json!({
            "apiVersion": RBAC,
            "kind": "Role",
            "metadata": {"name": name, "namespace": namespace},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [configmap], "verbs": ["get"]}],
        })),
        Object::new(json!({
            "apiVersion": RBAC,
            "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subjects,
        })),
    ]
}

/// Readers of kubeadm's configuration ConfigMaps: joining nodes and running kubelets.
pub fn node_readers() -> Vec<Value> {
    vec![group(BOOTSTRAP_GROUP), group(NODES_GROUP)]
}

/// The cluster-wide RBAC objects, in kubeadm's order.
pub fn objects() -> Vec<Object> {
    let mut out = vec![
        // phases/kubeconfig: admin.conf's group gets cluster-admin.
        cluster_role_binding("kubeadm:cluster-admins", "cluster-admin", vec![group(CLUSTER_ADMINS_GROUP)]),
        // phases/bootstraptoken/node: joining kubelets may ask for a certificate and have it
        // approved; running kubelets' renewals are approved; joining nodes may read Nodes.
        cluster_role_binding("kubeadm:kubelet-bootstrap", "system:node-bootstrapper", vec![group(BOOTSTRAP_GROUP)]),
        cluster_role_binding(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![group(BOOTSTRAP_GROUP)],
        ),
        cluster_role_binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![group(NODES_GROUP)],
        ),
        Object::new(json!({
            "apiVersion": RBAC,
            "kind": "ClusterRole",
            "metadata": {"name": "kubeadm:get-nodes"},
            "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
        })),
        cluster_role_binding("kubeadm:get-nodes", "kubeadm:get-nodes", vec![group(BOOTSTRAP_GROUP)]),
    ];
    // phases/bootstraptoken/clusterinfo: anyone may read cluster-info (it holds only the CA
    // certificate and the endpoint).
    out.extend(configmap_reader(
        "kubeadm:bootstrap-signer-clusterinfo",
        KUBE_PUBLIC,
        "cluster-info",
        vec![json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:anonymous"})],
    ));
    out
}
