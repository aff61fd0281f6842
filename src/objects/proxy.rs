//! The kube-proxy add-on as kubeadm installs it (phases/addons/proxy): its ServiceAccount and
//! RBAC, the ConfigMap with its configuration and kubeconfig, and the DaemonSet on every node.

use serde_json::json;

use super::rbac::{BOOTSTRAP_GROUP, configmap_reader};
use super::{KUBE_SYSTEM, Object};
use crate::plan::Plan;

/// Where the DaemonSet mounts the ConfigMap.
const CONFIG_DIR: &str = "/var/lib/kube-proxy";

pub fn objects(plan: &Plan) -> Vec<Object> {
    let mut out = vec![
        Object::new(json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "kube-proxy", "namespace": KUBE_SYSTEM},
        })),
        Object::new(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "kubeadm:node-proxier"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node-proxier"},
            "subjects": [{"kind": "ServiceAccount", "name": "kube-proxy", "namespace": KUBE_SYSTEM}],
        })),
    ];
    out.extend(configmap_reader(
        "kube-proxy",
        KUBE_SYSTEM,
        "kube-proxy",
        vec![json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": BOOTSTRAP_GROUP})],
    ));
    out.push(config_map(plan));
    out.push(daemon_set(plan));
    out
}

/// The KubeProxyConfiguration: what kubeadm sets explicitly (bind address, kubeconfig, the pod
/// CIDR); everything else is kube-proxy's default.
fn configuration(plan: &Plan) -> String {
    let bind = if plan.networking.service_subnet.addr().is_ipv6() { "'::'" } else { "0.0.0.0" };
    let mut text = format!(
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nbindAddress: {bind}\nclientConnection:\n  \
         kubeconfig: {CONFIG_DIR}/kubeconfig.conf\n"
    );
    if let Some(pods) = plan.networking.pod_subnet {
        text.push_str(&format!("clusterCIDR: {pods}\n"));
    }
    text.push_str("kind: KubeProxyConfiguration\nmode: \"\"\n");
    text
}

/// kube-proxy reaches the apiservers through the endpoint, with its ServiceAccount token.
fn kubeconfig(plan: &Plan) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority: \
         /var/run/secrets/kubernetes.io/serviceaccount/ca.crt\n    server: {}\n  name: default\ncontexts:\n\
         - context:\n    cluster: default\n    namespace: default\n    user: default\n  name: default\n\
         current-context: default\nusers:\n- name: default\n  user:\n    \
         tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token",
        plan.endpoint_url()
    )
}

fn config_map(plan: &Plan) -> Object {
    Object::new(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kube-proxy", "namespace": KUBE_SYSTEM, "labels": {"app": "kube-proxy"}},
        "data": {"kubeconfig.conf": kubeconfig(plan), "config.conf": configuration(plan).trim_end()},
    }))
}

fn daemon_set(plan: &Plan) -> Object {
    let image = format!("{}/kube-proxy:{}", plan.image_repository, plan.kubernetes_version);
    Object::new(json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"labels": {"k8s-app": "kube-proxy"}, "name": "kube-proxy", "namespace": KUBE_SYSTEM},
        "spec": {
            "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-proxy"}},
                "spec": {
                    "priorityClassName": "system-node-critical",
                    "containers": [{
                        "name": "kube-proxy",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": [
                            "/usr/local/bin/kube-proxy",
                            format!("--config={CONFIG_DIR}/config.conf"),
                            "--hostname-override=$(NODE_NAME)",
                        ],
                        "securityContext": {"privileged": true},
                        "volumeMounts": [
                            {"mountPath": CONFIG_DIR, "name": "kube-proxy"},
                            {"mountPath": "/run/xtables.lock", "name": "xtables-lock", "readOnly": false},
                            {"mountPath": "/lib/modules", "name": "lib-modules", "readOnly": true},
                        ],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
                    }],
                    "hostNetwork": true,
                    "serviceAccountName": "kube-proxy",
                    "volumes": [
                        {"name": "kube-proxy", "configMap": {"name": "kube-proxy"}},
                        {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                        {"name": "lib-modules", "hostPath": {"path": "/lib/modules"}},
                    ],
                    "tolerations": [{"operator": "Exists"}],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                },
            },
        },
    }))
}
