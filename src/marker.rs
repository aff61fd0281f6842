//! The host marker, `/etc/kubernetes/kubeha/cluster.yaml`: written first on every host kubeha
//! sets up, read back by preflight to tell this cluster's hosts from fresh ones and from other
//! clusters', and to know what kubeha wrote there last time.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the marker lives on every host.
pub const PATH: &str = crate::host::layout::CLUSTER_MARKER;

/// What the marker records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostMarker {
    pub cluster: String,
    /// The cluster CA's discovery hash: tells two clusters of the same name apart.
    #[serde(rename = "clusterID")]
    pub cluster_id: String,
    pub host: String,
    pub role: String,
    /// The control planes (etcd members) of the cluster when a control plane's marker was
    /// written; workers' markers leave it empty (earlier versions wrote it there too).
    #[serde(default)]
    pub control_planes: Vec<String>,
    /// Every file kubeha manages on this host, so a later run can remove those it no longer
    /// renders.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// A control plane's etcd `--initial-cluster` and `--initial-cluster-state` as it first
    /// started (markers of earlier versions have none).
    #[serde(default)]
    pub etcd_initial_cluster: Option<String>,
    #[serde(default)]
    pub etcd_initial_cluster_state: Option<String>,
}

impl HostMarker {
    /// Parses a marker; `None` when the text is not one (a foreign or damaged file).
    pub fn parse(text: &str) -> Option<HostMarker> {
        serde_saphyr::from_str(text).ok()
    }
}

/// The directories kubeha writes in. A file listed in a marker is only ever removed when it is
/// under one of these, whatever the marker says.
pub const MANAGED_DIRS: [&str; 2] = [crate::host::layout::KUBERNETES_DIR, crate::host::layout::KUBELET_DIR];

/// Whether kubeha may remove `path` when it no longer renders it.
pub fn is_managed(path: &std::path::Path) -> bool {
    path.is_absolute()
        && path.components().all(|c| matches!(c, std::path::Component::RootDir | std::path::Component::Normal(_)))
        && MANAGED_DIRS.iter().any(|dir| path.starts_with(dir) && path != std::path::Path::new(dir))
        && path != std::path::Path::new(PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_render_writes_and_rejects_other_text() {
        let text = "apiVersion: kubeha/v1alpha1\nkind: HostMarker\ncluster: \"lab\"\nclusterID: \"sha256:00\"\n\
                    host: \"cp1\"\nrole: \"control-plane\"\ncontrolPlanes:\n  - \"cp1\"\nfiles:\n  - \"/etc/kubernetes/admin.conf\"\n\
                    kubehaVersion: \"0.1.0\"\n";
        let m = HostMarker::parse(text).unwrap();
        assert_eq!(m.cluster_id, "sha256:00");
        assert_eq!(m.control_planes, ["cp1"]);
        assert_eq!(m.files, [PathBuf::from("/etc/kubernetes/admin.conf")]);
        assert!(HostMarker::parse("just text").is_none());
        // Markers of earlier versions, without the lists, still parse.
        let old = "cluster: lab\nclusterID: sha256:00\nhost: cp1\nrole: worker\n";
        assert!(HostMarker::parse(old).unwrap().files.is_empty());
    }

    #[test]
    fn only_files_in_kubehas_directories_may_be_removed() {
        assert!(is_managed(std::path::Path::new("/etc/kubernetes/manifests/keepalived.yaml")));
        assert!(is_managed(std::path::Path::new("/var/lib/kubelet/config.yaml")));
        for path in ["/etc/passwd", "/etc/kubernetes", "/etc/kubernetes/../passwd", "etc/kubernetes/x", PATH] {
            assert!(!is_managed(std::path::Path::new(path)), "{path}");
        }
    }
}
