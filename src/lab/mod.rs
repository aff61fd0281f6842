//! The local lab: hosts made of network namespaces on a bridge, each with its own sshd and a
//! kubelet stand-in inside its own mount namespace.
//!
//! (Interface stub: the implementation replaces the bodies.)

pub mod standin;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    #[error("{0}")]
    Todo(String),
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Short name (letters and digits, at most 6): namespaces, links and the bridge derive from it.
    pub name: String,
    pub control_planes: usize,
    pub workers: usize,
    /// Hosts get 198.18.<subnet>.0/24: control planes .11.., workers .101.., the VIP .10.
    pub subnet: u8,
    /// Where the lab keeps its files (sshd configs, keys, per-host filesystems, inventory).
    pub dir: PathBuf,
    /// Written into the inventory.
    pub kubernetes_version: String,
    /// Written into the inventory; by default the installed etcd's version.
    pub etcd_version: Option<String>,
}

/// One lab host.
#[derive(Debug, Clone)]
pub struct LabHost {
    pub name: String,
    pub address: Ipv4Addr,
    pub control_plane: bool,
}

/// A static pod as the kubelet stand-in runs it.
#[derive(Debug, Clone)]
pub struct PodStatus {
    /// The manifest file name without `.yaml`.
    pub name: String,
    pub running: bool,
    pub pid: Option<u32>,
    /// Times the pod was started again (after its process exited or its manifest changed).
    pub restarts: u32,
    pub manifest_sha256: String,
}

/// A running lab.
pub struct Lab {}

impl Lab {
    pub fn up(_spec: LabSpec) -> Result<Lab, LabError> {
        Err(LabError::Todo("lab".into()))
    }
    /// Attaches to a lab created earlier (from its state file in `dir`).
    pub fn open(_dir: &Path) -> Result<Lab, LabError> {
        Err(LabError::Todo("lab".into()))
    }
    /// Stops every process the lab started (by PID) and removes its namespaces and links.
    pub fn down(self) -> Result<(), LabError> {
        Err(LabError::Todo("lab".into()))
    }
    pub fn inventory_path(&self) -> PathBuf {
        todo!()
    }
    pub fn hosts(&self) -> &[LabHost] {
        todo!()
    }
    pub fn vip(&self) -> Ipv4Addr {
        todo!()
    }
}
