//! kubeadm's configuration objects, so kubeadm's own tooling keeps working on a kubeha cluster
//! (`kubeadm upgrade plan`, `kubeadm join`, `kubeadm certs check-expiration` read them):
//! `kube-system/kubeadm-config` (the ClusterConfiguration), `kube-system/kubelet-config` (the
//! nodes' KubeletConfiguration) and `kube-public/cluster-info` (the CA and the endpoint, for
//! discovery), each with the Role kubeadm lets readers use (phases/{uploadconfig,kubelet,
//! bootstraptoken/clusterinfo}).

use std::fmt::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::rbac::{configmap_reader, node_readers};
use super::{KUBE_PUBLIC, KUBE_SYSTEM, Object};
use crate::host::layout::{ETCD_DATA_DIR, PKI_DIR};
use crate::pki::Pki;
use crate::plan::{KeyAlgorithm, Plan, San};

fn config_map(name: &str, namespace: &str, key: &str, value: String) -> Object {
    Object::new(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: value},
    }))
}

/// The objects, in kubeadm's order.
pub fn objects(plan: &Plan, pki: &Pki) -> Vec<Object> {
    let mut out = vec![config_map("kubeadm-config", KUBE_SYSTEM, "ClusterConfiguration", cluster_configuration(plan))];
    out.extend(configmap_reader("kubeadm:nodes-kubeadm-config", KUBE_SYSTEM, "kubeadm-config", node_readers()));
    if let Ok(kubelet) = crate::render::kubelet_config(plan) {
        out.push(config_map("kubelet-config", KUBE_SYSTEM, "kubelet", kubelet));
        out.extend(configmap_reader("kubeadm:kubelet-config", KUBE_SYSTEM, "kubelet-config", node_readers()));
    }
    out.push(config_map("cluster-info", KUBE_PUBLIC, "kubeconfig", cluster_info(plan, pki)));
    out
}

/// kubeadm's name for a key algorithm (`encryptionAlgorithm`).
fn encryption_algorithm(algorithm: KeyAlgorithm) -> &'static str {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => "ECDSA-P256",
        KeyAlgorithm::Rsa2048 => "RSA-2048",
        KeyAlgorithm::Rsa3072 => "RSA-3072",
        KeyAlgorithm::Rsa4096 => "RSA-4096",
    }
}

/// A duration as Go prints it for kubeadm's validity periods (`8760h0m0s`).
fn go_hours(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    format!("{}h{}m{}s", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The `kubeadm.k8s.io/v1beta4` ClusterConfiguration describing the cluster kubeha built, with
/// the fields kubeadm uploads after defaulting.
pub fn cluster_configuration(plan: &Plan) -> String {
    let net = &plan.networking;
    let certs = &plan.certificates;
    let mut out = String::new();
    let _ = writeln!(out, "apiServer:");
    if certs.extra_sans.is_empty() {
        out.truncate(0);
        let _ = writeln!(out, "apiServer: {{}}");
    } else {
        let _ = writeln!(out, "  certSANs:");
        for san in &certs.extra_sans {
            let text = match san {
                San::Ip(ip) => ip.to_string(),
                San::Dns(name) => name.clone(),
            };
            let _ = writeln!(out, "  - {}", json!(text));
        }
    }
    let _ = writeln!(out, "apiVersion: kubeadm.k8s.io/v1beta4");
    let _ = writeln!(out, "caCertificateValidityPeriod: {}", go_hours(certs.ca_validity));
    let _ = writeln!(out, "certificateValidityPeriod: {}", go_hours(certs.validity));
    let _ = writeln!(out, "certificatesDir: {PKI_DIR}");
    let _ = writeln!(out, "clusterName: {}", json!(plan.name));
    let _ = writeln!(out, "controlPlaneEndpoint: {}", json!(plan.control_plane_endpoint.to_string()));
    let _ = writeln!(out, "controllerManager: {{}}");
    let _ = writeln!(out, "dns: {{}}");
    let _ = writeln!(out, "encryptionAlgorithm: {}", encryption_algorithm(certs.key_algorithm));
    let _ =
        writeln!(out, "etcd:\n  local:\n    dataDir: {ETCD_DATA_DIR}\n    imageTag: {}", json!(plan.etcd_version.tag));
    let _ = writeln!(out, "imageRepository: {}", json!(plan.image_repository));
    let _ = writeln!(out, "kind: ClusterConfiguration");
    let _ = writeln!(out, "kubernetesVersion: {}", plan.kubernetes_version);
    let _ = writeln!(out, "networking:\n  dnsDomain: {}", json!(net.dns_domain));
    if let Some(pods) = net.pod_subnet {
        let _ = writeln!(out, "  podSubnet: {pods}");
    }
    let _ = writeln!(out, "  serviceSubnet: {}", net.service_subnet);
    let _ = writeln!(out, "proxy: {{}}");
    let _ = writeln!(out, "scheduler: {{}}");
    out
}

/// `cluster-info`'s kubeconfig: only a cluster entry (named `""`, as kubeadm writes it) with
/// the CA certificate and the endpoint; no credentials.
fn cluster_info(plan: &Plan, pki: &Pki) -> String {
    format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: {}\n  name: \"\"\n\
         contexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {{}}\nusers: null\n",
        STANDARD.encode(pki.ca_cert_pem()),
        plan.endpoint_url()
    )
}
