//! The parts of a static pod manifest the lab kubelet acts on. Unknown fields are ignored, as the
//! kubelet's decoder ignores fields it does not run (probes, resources, security contexts).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: Metadata,
    pub spec: PodSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metadata {
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub containers: Vec<Container>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    #[serde(default)]
    pub restart_policy: Option<String>,
    #[serde(default)]
    pub termination_grace_period_seconds: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
    #[serde(default)]
    pub working_dir: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub value_from: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub sub_path: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    #[serde(default)]
    pub host_path: Option<HostPath>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HostPath {
    pub path: String,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// Parses a manifest (YAML or JSON) and checks what the lab needs to run it.
pub fn parse(text: &str) -> Result<Manifest, String> {
    let m: Manifest = serde_saphyr::from_str(text).map_err(|e| format!("invalid manifest: {e}"))?;
    if let Some(kind) = m.kind.as_deref()
        && kind != "Pod"
    {
        return Err(format!("invalid manifest: kind {kind:?} is not Pod"));
    }
    if m.api_version.as_deref().is_some_and(|v| v != "v1") {
        return Err(format!("invalid manifest: apiVersion {:?} is not v1", m.api_version.unwrap_or_default()));
    }
    if m.metadata.name.as_deref().is_none_or(str::is_empty) {
        return Err("invalid manifest: metadata.name is required".into());
    }
    match m.spec.containers.len() {
        1 => {}
        0 => return Err("invalid manifest: spec.containers is empty".into()),
        n => return Err(format!("the lab kubelet runs pods of one container; this one has {n}")),
    }
    let c = &m.spec.containers[0];
    if c.command.is_empty() {
        return Err(format!(
            "container {:?} has no command: the lab runs programs on the host and cannot know the image's entrypoint",
            c.name
        ));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_kubeadm_style_manifest() {
        let text = r#"
apiVersion: v1
kind: Pod
metadata: {name: etcd, namespace: kube-system, labels: {component: etcd}}
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  containers:
  - name: etcd
    image: registry.k8s.io/etcd:3.5.15-0
    command: [etcd, --data-dir=/var/lib/etcd]
    env: [{name: A, value: "1"}]
    livenessProbe: {httpGet: {host: 127.0.0.1, path: /health, port: 2381}}
    volumeMounts:
    - {name: etcd-data, mountPath: /var/lib/etcd}
    - {name: certs, mountPath: /etc/kubernetes/pki/etcd, readOnly: true}
  volumes:
  - {name: etcd-data, hostPath: {path: /var/lib/etcd, type: DirectoryOrCreate}}
  - name: certs
    hostPath: {path: /etc/kubernetes/pki/etcd}
"#;
        let m = parse(text).unwrap();
        let c = &m.spec.containers[0];
        assert_eq!(c.command, ["etcd", "--data-dir=/var/lib/etcd"]);
        assert!(c.volume_mounts[1].read_only);
        assert_eq!(m.spec.volumes[0].host_path.as_ref().unwrap().kind.as_deref(), Some("DirectoryOrCreate"));
        assert_eq!(m.spec.volumes[1].host_path.as_ref().unwrap().kind, None);
    }

    #[test]
    fn rejects_what_it_cannot_run() {
        for (text, why) in [
            ("spec: {containers: []}", "metadata.name"),
            ("metadata: {name: x}\nspec: {containers: []}", "empty"),
            ("metadata: {name: x}\nspec: {containers: [{name: c, image: i}]}", "no command"),
            ("kind: Deployment\nmetadata: {name: x}\nspec: {containers: [{name: c, command: [a]}]}", "not Pod"),
            ("metadata: {name: x}\nspec: {containers: [{name: c, command: [a]}, {name: d, command: [b]}]}", "one"),
            ("{{", "invalid"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
