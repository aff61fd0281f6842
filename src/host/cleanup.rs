//! Taking kubeha's files off a host (`remove-node`, `reset`): static-pod manifests first, so
//! the kubelet stops the pods, then certificates, keys, kubeconfigs and configs, then kubeha's
//! own directory (backups) and the host marker last, so a run cut short is still recognised
//! as this cluster's and finishes when repeated. The etcd data directory goes only when asked.
//!
//! Only paths in kubeha's directories are ever removed ([`crate::marker::is_managed`]),
//! whatever a marker lists.

use std::path::PathBuf;

use super::layout::{BACKUP_DIR, CLUSTER_MARKER, ETCD_DATA_DIR, MANIFESTS_DIR};
use crate::transport::shell::quote;
use crate::transport::{Remote, TransportError};

/// What a cleanup removes on one host, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Static-pod manifests: removed first.
    pub manifests: Vec<PathBuf>,
    /// Every other file kubeha wrote.
    pub files: Vec<PathBuf>,
    /// kubeha's backups directory and the marker, last.
    pub marker: bool,
    /// The etcd data directory's contents.
    pub etcd_data: bool,
}

impl Cleanup {
    /// Everything a marker lists (only kubeha's paths), the marker itself, and the etcd data
    /// directory if `etcd_data`.
    pub fn everything(listed: &[PathBuf], etcd_data: bool) -> Cleanup {
        let managed = listed.iter().filter(|p| crate::marker::is_managed(p)).cloned();
        let (manifests, files) = managed.partition(|p| p.starts_with(MANIFESTS_DIR));
        Cleanup { manifests, files, marker: true, etcd_data }
    }

    /// Only the manifests among `listed` (the host's pods stop; its files stay).
    pub fn pods(listed: &[PathBuf]) -> Cleanup {
        let manifests = listed.iter().filter(|p| crate::marker::is_managed(p) && p.starts_with(MANIFESTS_DIR)).cloned();
        Cleanup { manifests: manifests.collect(), ..Cleanup::default() }
    }

    /// Each path to remove, in order, for listing (a directory ends in `/`).
    pub fn paths(&self) -> Vec<String> {
        let mut out: Vec<String> = self.manifests.iter().chain(&self.files).map(|p| p.display().to_string()).collect();
        if self.marker {
            out.push(format!("{BACKUP_DIR}/"));
            out.push(CLUSTER_MARKER.to_string());
        }
        if self.etcd_data {
            out.push(format!("{ETCD_DATA_DIR}/ (its contents)"));
        }
        out
    }

    /// The removal script (one remote command; nothing secret in it).
    pub fn script(&self) -> String {
        let list = |paths: &[PathBuf]| paths.iter().map(|p| quote(&p.to_string_lossy())).collect::<Vec<_>>().join(" ");
        let mut script = String::from("# removing kubeha's files\nset -e\n");
        if !self.manifests.is_empty() {
            script.push_str(&format!("rm -f -- {}\nsync\n", list(&self.manifests)));
        }
        if !self.files.is_empty() {
            script.push_str(&format!("rm -f -- {}\n", list(&self.files)));
        }
        if self.etcd_data {
            // The contents, not the directory: it may be a mount point.
            script.push_str(&format!("find {} -mindepth 1 -maxdepth 1 -exec rm -rf -- {{}} +\n", quote(ETCD_DATA_DIR)));
        }
        if self.marker {
            script.push_str(&format!("rm -rf -- {}\nsync\nrm -f -- {}\n", quote(BACKUP_DIR), quote(CLUSTER_MARKER)));
        }
        script.push_str("sync\n");
        script
    }

    pub fn is_empty(&self) -> bool {
        self.manifests.is_empty() && self.files.is_empty() && !self.marker && !self.etcd_data
    }

    /// Runs the removal on `remote`.
    pub async fn run<R: Remote>(&self, remote: &R) -> Result<(), TransportError> {
        if self.is_empty() {
            return Ok(());
        }
        remote.run(&self.script(), b"").await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_go_first_the_marker_last_and_only_kubehas_paths() {
        let listed: Vec<PathBuf> = [
            "/etc/kubernetes/pki/ca.crt",
            "/etc/kubernetes/manifests/etcd.yaml",
            "/etc/passwd",
            "/var/lib/kubelet/config.yaml",
        ]
        .map(PathBuf::from)
        .to_vec();
        let all = Cleanup::everything(&listed, false);
        assert_eq!(all.manifests, [PathBuf::from("/etc/kubernetes/manifests/etcd.yaml")]);
        assert!(!all.files.contains(&PathBuf::from("/etc/passwd")));
        let script = all.script();
        let at = |s: &str| script.find(s).unwrap_or_else(|| panic!("{s} not in {script}"));
        assert!(at("manifests/etcd.yaml") < at("pki/ca.crt"));
        assert!(at("pki/ca.crt") < at("cluster.yaml"));
        assert!(!script.contains("/var/lib/etcd"), "{script}");
        let wipe = Cleanup::everything(&listed, true).script();
        assert!(wipe.contains("/var/lib/etcd") && wipe.contains(" -mindepth 1 -maxdepth 1 -exec rm -rf"), "{wipe}");
        assert_eq!(Cleanup::pods(&listed).paths(), ["/etc/kubernetes/manifests/etcd.yaml"]);
    }
}
