//! The cluster PKI in the local state directory: kubeadm-compatible certificates, keys and
//! kubeconfigs, generated once and reused.
//!
//! (Interface stub: the implementation replaces the bodies.)

use std::path::{Path, PathBuf};

use crate::files::File;
use crate::plan::{Host, Plan};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("{0}")]
    Todo(String),
}

/// `$XDG_STATE_HOME/kubeha/<cluster>`, else `~/.local/state/kubeha/<cluster>`.
pub fn default_state_dir(cluster: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from).filter(|p| p.is_absolute()).unwrap_or_else(|| {
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root")).join(".local/state")
    });
    base.join("kubeha").join(cluster)
}

/// What `generate` did, file by file (paths relative to the state directory).
#[derive(Debug, Default)]
pub struct GenerateReport {
    pub created: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
}

/// Creates whatever is missing under `state_dir`; never replaces a valid existing file.
pub fn generate(_plan: &Plan, _state_dir: &Path) -> Result<GenerateReport, PkiError> {
    Err(PkiError::Todo("pki::generate".into()))
}

/// A client certificate and key in PEM, for kubeha's own TLS connections.
pub struct ClientIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// Everything in the state directory, loaded and checked against the plan.
pub struct Pki {}

/// Loads the complete PKI; fails when anything the plan needs is missing or invalid.
pub fn load(_plan: &Plan, _state_dir: &Path) -> Result<Pki, PkiError> {
    Err(PkiError::Todo("pki::load".into()))
}

impl Pki {
    /// The certificates, keys and kubeconfigs `host` receives, at their paths on the host.
    pub fn host_files(&self, _host: &Host) -> Vec<File> {
        todo!()
    }
    /// The cluster CA certificate (PEM).
    pub fn ca_cert_pem(&self) -> &[u8] {
        todo!()
    }
    /// The etcd CA certificate (PEM).
    pub fn etcd_ca_cert_pem(&self) -> &[u8] {
        todo!()
    }
    /// The `etcd/healthcheck-client` identity kubeha uses to query etcd.
    pub fn etcd_healthcheck_client(&self) -> ClientIdentity {
        todo!()
    }
    /// `admin.conf` in the state directory.
    pub fn admin_kubeconfig_path(&self) -> PathBuf {
        todo!()
    }
    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo (kubeadm's discovery hash).
    pub fn cluster_id(&self) -> String {
        todo!()
    }
    /// The VRRP authentication password shared by every keepalived of this cluster.
    pub fn vrrp_password(&self) -> &str {
        todo!()
    }
}
