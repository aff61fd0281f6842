//! What a host's supervisor reports (`<dir>/hosts/<host>/status.json`): its sshd and its static
//! pods. The supervisor rewrites the file atomically whenever something changes; [`super::Lab`]
//! reads it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::LabError;
use super::process::ProcRef;

/// A static pod as the kubelet stand-in runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    /// The manifest file name without `.yaml`.
    pub name: String,
    pub running: bool,
    pub pid: Option<u32>,
    /// Times the pod was started again (after its process exited or its manifest changed).
    pub restarts: u32,
    /// SHA-256 (hex) of the manifest file the pod was last started from (or is waiting to start).
    pub manifest_sha256: String,
    /// When the current (or last) process started.
    pub started_at: Option<SystemTime>,
    /// How the last process ended (`exit status 1`, `signal SIGKILL`), if one ended.
    pub last_exit: Option<String>,
    /// Why the pod is not running, as the kubelet would report it in an event
    /// (`hostPath type check failed: ...`, `Back-off restarting failed container`).
    pub message: Option<String>,
}

/// A host's supervisor and what it runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub host: String,
    pub supervisor: Option<ProcRef>,
    /// The listening sshd, once it accepts connections.
    pub sshd: Option<ProcRef>,
    /// The supervisor is shutting down (or has).
    pub stopping: bool,
    pub pods: Vec<PodStatus>,
}

impl NodeStatus {
    pub fn path(host_dir: &Path) -> PathBuf {
        host_dir.join("status.json")
    }

    /// The last status the supervisor wrote, if it wrote one.
    pub fn load(host_dir: &Path) -> Result<Option<NodeStatus>, LabError> {
        let path = NodeStatus::path(host_dir);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map(Some).map_err(|e| LabError::State { path, message: e.to_string() })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LabError::Io { path, source }),
        }
    }

    pub fn save(&self, host_dir: &Path) -> Result<(), LabError> {
        let text = serde_json::to_string_pretty(self).expect("node status serializes");
        super::state::write_file(&NodeStatus::path(host_dir), text.as_bytes(), 0o644)
    }
}
