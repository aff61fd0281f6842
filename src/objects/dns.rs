//! The CoreDNS add-on as kubeadm installs it (phases/addons/dns): RBAC, the Corefile, two
//! replicas spread over nodes, and the `kube-dns` Service at the cluster DNS address. kubeha
//! adds a PodDisruptionBudget (kubeadm has none), so draining nodes one by one never takes both
//! replicas away.

use serde_json::{Value, json};

use super::{KUBE_SYSTEM, Object};
use crate::plan::Plan;

/// The taint kubeha's control planes carry; CoreDNS tolerates it, as with kubeadm.
pub const CONTROL_PLANE_TAINT: &str = "node-role.kubernetes.io/control-plane";

pub fn objects(plan: &Plan) -> Vec<Object> {
    vec![
        Object::new(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
            ],
        })),
        Object::new(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": KUBE_SYSTEM}],
        })),
        Object::new(json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": KUBE_SYSTEM},
        })),
        Object::new(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": KUBE_SYSTEM},
            "data": {"Corefile": corefile(plan)},
        })),
        deployment(plan),
        Object::new(json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "coredns", "namespace": KUBE_SYSTEM, "labels": {"k8s-app": "kube-dns"}},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"k8s-app": "kube-dns"}}},
        })),
        service(plan),
    ]
}

/// kubeadm's Corefile; from v1.33 the cache no longer keeps the cluster's own answers.
fn corefile(plan: &Plan) -> String {
    let domain = &plan.networking.dns_domain;
    let cache = if plan.kubernetes_version.minor >= 33 {
        format!("cache 30 {{\n       disable success {domain}\n       disable denial {domain}\n    }}")
    } else {
        "cache 30".to_string()
    };
    format!(
        ".:53 {{\n    errors\n    health {{\n       lameduck 5s\n    }}\n    ready\n    \
         kubernetes {domain} in-addr.arpa ip6.arpa {{\n       pods insecure\n       fallthrough in-addr.arpa ip6.arpa\n       \
         ttl 30\n    }}\n    prometheus :9153\n    forward . /etc/resolv.conf {{\n       max_concurrent 1000\n    }}\n    \
         {cache}\n    loop\n    reload\n    loadbalance\n}}\n"
    )
}

fn deployment(plan: &Plan) -> Object {
    let image = plan.coredns_image();
    // From v1.34 kubeadm names the probe ports and probes them by name.
    let named = plan.kubeadm_release().named_probe_port;
    let mut ports = vec![
        json!({"containerPort": 53, "name": "dns", "protocol": "UDP"}),
        json!({"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"}),
        json!({"containerPort": 9153, "name": "metrics", "protocol": "TCP"}),
    ];
    if named {
        ports.push(json!({"containerPort": 8080, "name": "liveness-probe", "protocol": "TCP"}));
        ports.push(json!({"containerPort": 8181, "name": "readiness-probe", "protocol": "TCP"}));
    }
    let port = |name: &str, number: u16| -> Value { if named { json!(name) } else { json!(number) } };
    Object::new(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "coredns", "namespace": KUBE_SYSTEM, "labels": {"k8s-app": "kube-dns"}},
        "spec": {
            "replicas": 2,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
            "template": {
                "metadata": {"labels": {"k8s-app": "kube-dns"}},
                "spec": {
                    "priorityClassName": "system-cluster-critical",
                    "serviceAccountName": "coredns",
                    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchExpressions": [
                                {"key": "k8s-app", "operator": "In", "values": ["kube-dns"]}
                            ]},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }]}},
                    "tolerations": [
                        {"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": CONTROL_PLANE_TAINT, "effect": "NoSchedule"},
                    ],
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{
                        "name": "coredns",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "resources": {"limits": {"memory": "170Mi"}, "requests": {"cpu": "100m", "memory": "70Mi"}},
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns", "readOnly": true}],
                        "ports": ports,
                        "livenessProbe": {
                            "httpGet": {"path": "/health", "port": port("liveness-probe", 8080), "scheme": "HTTP"},
                            "initialDelaySeconds": 60,
                            "timeoutSeconds": 5,
                            "successThreshold": 1,
                            "failureThreshold": 5,
                        },
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": port("readiness-probe", 8181), "scheme": "HTTP"},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                            "readOnlyRootFilesystem": true,
                        },
                    }],
                    "dnsPolicy": "Default",
                    "volumes": [{
                        "name": "config-volume",
                        "configMap": {"name": "coredns", "items": [{"key": "Corefile", "path": "Corefile"}]},
                    }],
                },
            },
        },
    }))
}

fn service(plan: &Plan) -> Object {
    Object::new(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"},
            "name": "kube-dns",
            "namespace": KUBE_SYSTEM,
            "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"},
        },
        "spec": {
            "clusterIP": plan.cluster_dns_ip().to_string(),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
            ],
            "selector": {"k8s-app": "kube-dns"},
        },
    }))
}
