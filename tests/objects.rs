//! The cluster objects kubeha applies: each one is a valid object of its Kubernetes type (a
//! round trip through k8s-openapi's types loses nothing), the set is kubeadm's plus the add-ons,
//! and the values that depend on the plan (DNS IP, endpoint, images, CA) are right.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kubeha::objects::{Object, cluster_objects, control_plane_node};
use serde_json::Value;

/// The example inventory's plan and a fresh PKI for it.
fn example() -> (kubeha::plan::Plan, tempfile::TempDir, kubeha::pki::Pki) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/example.yaml");
    let plan = kubeha::inventory::load(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    kubeha::pki::generate(&plan, dir.path()).unwrap();
    let pki = kubeha::pki::load(&plan, dir.path()).unwrap();
    (plan, dir, pki)
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(object: &Object) {
    let typed: T = serde_json::from_value(object.body.clone())
        .unwrap_or_else(|e| panic!("{} is not a valid {}: {e}", object.describe(), object.kind()));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(back, object.body, "{} does not round-trip through its type", object.describe());
}

fn check(object: &Object) {
    match object.kind() {
        "ClusterRole" => round_trip::<ClusterRole>(object),
        "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(object),
        "Role" => round_trip::<Role>(object),
        "RoleBinding" => round_trip::<RoleBinding>(object),
        "ConfigMap" => round_trip::<ConfigMap>(object),
        "ServiceAccount" => round_trip::<ServiceAccount>(object),
        "Service" => round_trip::<Service>(object),
        "DaemonSet" => round_trip::<DaemonSet>(object),
        "Deployment" => round_trip::<Deployment>(object),
        "PodDisruptionBudget" => round_trip::<PodDisruptionBudget>(object),
        "Node" => round_trip::<Node>(object),
        other => panic!("{} has a kind the test does not know: {other}", object.describe()),
    }
}

fn find<'a>(objects: &'a [Object], kind: &str, name: &str) -> &'a Value {
    &objects.iter().find(|o| o.kind() == kind && o.name() == name).unwrap_or_else(|| panic!("no {kind} {name}")).body
}

#[test]
fn every_object_is_valid_and_the_set_is_kubeadms_plus_the_add_ons() {
    let (plan, _dir, pki) = example();
    let objects = cluster_objects(&plan, &pki);
    for object in &objects {
        check(object);
    }
    check(&control_plane_node("cp1"));
    let names: BTreeSet<String> = objects.iter().map(Object::describe).collect();
    assert_eq!(names.len(), objects.len(), "an object is listed twice");
    for want in [
        "ClusterRoleBinding kubeadm:cluster-admins",
        "ClusterRoleBinding kubeadm:node-autoapprove-certificate-rotation",
        "ClusterRoleBinding kubeadm:node-autoapprove-bootstrap",
        "ClusterRoleBinding kubeadm:kubelet-bootstrap",
        "ClusterRoleBinding kubeadm:get-nodes",
        "ClusterRole kubeadm:get-nodes",
        "Role kube-public/kubeadm:bootstrap-signer-clusterinfo",
        "RoleBinding kube-public/kubeadm:bootstrap-signer-clusterinfo",
        "ConfigMap kube-public/cluster-info",
        "ConfigMap kube-system/kubeadm-config",
        "Role kube-system/kubeadm:nodes-kubeadm-config",
        "ConfigMap kube-system/kubelet-config",
        "RoleBinding kube-system/kubeadm:kubelet-config",
        "ServiceAccount kube-system/kube-proxy",
        "ClusterRoleBinding kubeadm:node-proxier",
        "ConfigMap kube-system/kube-proxy",
        "DaemonSet kube-system/kube-proxy",
        "ClusterRole system:coredns",
        "ClusterRoleBinding system:coredns",
        "ConfigMap kube-system/coredns",
        "Deployment kube-system/coredns",
        "Service kube-system/kube-dns",
        "PodDisruptionBudget kube-system/coredns",
    ] {
        assert!(names.contains(want), "missing {want}; have {names:?}");
    }
    // RBAC before the objects that rely on it; add-ons last.
    let position = |d: &str| objects.iter().position(|o| o.describe() == d).unwrap();
    assert!(position("ClusterRoleBinding kubeadm:cluster-admins") < position("DaemonSet kube-system/kube-proxy"));
}

#[test]
fn plan_values_reach_the_objects() {
    let (plan, _dir, pki) = example();
    let objects = cluster_objects(&plan, &pki);
    let admins = find(&objects, "ClusterRoleBinding", "kubeadm:cluster-admins");
    assert_eq!(admins["roleRef"]["name"], "cluster-admin");
    assert_eq!(admins["subjects"][0]["name"], "kubeadm:cluster-admins");
    assert_eq!(find(&objects, "Service", "kube-dns")["spec"]["clusterIP"], "10.96.0.10");
    let proxy = find(&objects, "ConfigMap", "kube-proxy");
    let kubeconfig = proxy["data"]["kubeconfig.conf"].as_str().unwrap();
    assert!(kubeconfig.contains(&format!("server: {}", plan.endpoint_url())), "{kubeconfig}");
    assert!(proxy["data"]["config.conf"].as_str().unwrap().contains("clusterCIDR: 10.244.0.0/16"));
    let ds = find(&objects, "DaemonSet", "kube-proxy");
    assert_eq!(ds["spec"]["template"]["spec"]["containers"][0]["image"], "registry.k8s.io/kube-proxy:v1.31.4");
    let dns = find(&objects, "Deployment", "coredns");
    assert_eq!(dns["spec"]["replicas"], 2);
    assert_eq!(dns["spec"]["template"]["spec"]["containers"][0]["image"], "registry.k8s.io/coredns/coredns:v1.11.3");
    let corefile = find(&objects, "ConfigMap", "coredns")["data"]["Corefile"].as_str().unwrap();
    assert!(corefile.contains("kubernetes cluster.local in-addr.arpa ip6.arpa {"), "{corefile}");

    let info = find(&objects, "ConfigMap", "cluster-info")["data"]["kubeconfig"].as_str().unwrap();
    let info: Value = serde_saphyr::from_str(info).unwrap();
    assert_eq!(info["clusters"][0]["cluster"]["server"], plan.endpoint_url());
    assert!(info["users"].is_null(), "cluster-info must carry no credentials");
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(info["clusters"][0]["cluster"]["certificate-authority-data"].as_str().unwrap())
        .unwrap();
    assert_eq!(ca, pki.ca_cert_pem());

    let config = find(&objects, "ConfigMap", "kubeadm-config")["data"]["ClusterConfiguration"].as_str().unwrap();
    let config: Value = serde_saphyr::from_str(config).unwrap();
    assert_eq!(config["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(config["kubernetesVersion"], "v1.31.4");
    assert_eq!(config["controlPlaneEndpoint"], "198.18.0.10:8443");
    assert_eq!(config["networking"]["serviceSubnet"], "10.96.0.0/12");
    assert_eq!(config["encryptionAlgorithm"], "ECDSA-P256");
    assert_eq!(config["certificateValidityPeriod"], "8760h0m0s");
    let kubelet = find(&objects, "ConfigMap", "kubelet-config")["data"]["kubelet"].as_str().unwrap();
    let kubelet: Value = serde_saphyr::from_str(kubelet).unwrap();
    assert_eq!(kubelet["kind"], "KubeletConfiguration");
    assert_eq!(kubelet["clusterDNS"][0], "10.96.0.10");
}

/// The objects kubeadm's own templates make for the same version, as YAML documents.
fn kubeadm_documents(file: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kubeadm").join(file);
    std::fs::read_to_string(&path)
        .unwrap()
        .split("\n---\n")
        .map(|doc| serde_saphyr::from_str::<Value>(doc).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

#[test]
fn the_add_ons_are_kubeadms_for_the_same_version() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/example.yaml");
    let text =
        std::fs::read_to_string(path).unwrap().replace("v1.31.4", "v1.34.2").replace("etcd: {version: 3.5.16-0}", "");
    let dir = tempfile::tempdir().unwrap();
    let plan = kubeha::inventory::parse(&text, dir.path()).unwrap();
    kubeha::pki::generate(&plan, dir.path()).unwrap();
    let pki = kubeha::pki::load(&plan, dir.path()).unwrap();
    let ours = cluster_objects(&plan, &pki);
    let mut compared = 0;
    for file in ["coredns-1.34.yaml", "kube-proxy-daemonset.yaml"] {
        for theirs in kubeadm_documents(file) {
            let (kind, name) = (theirs["kind"].as_str().unwrap(), theirs["metadata"]["name"].as_str().unwrap());
            assert_eq!(find(&ours, kind, name), &theirs, "{kind} {name} differs from kubeadm's");
            compared += 1;
        }
    }
    assert_eq!(compared, 7);
}
