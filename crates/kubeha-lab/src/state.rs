//! The lab state file (`<dir>/lab.json`): what a lab consists of and which of its parts exist.
//!
//! `up` writes it before creating anything and again after each step, so `down` (in this process
//! or a later `kubeha-lab down`) removes exactly what was made, even after a crash half-way.
//! Each host's supervisor reads its own settings from it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LabError;
use super::process::ProcRef;
use super::spec::LabUser;
use super::ssh_setup::SshSetup;

/// The file name of the state file inside the lab directory.
pub const STATE_FILE: &str = "lab.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub subnet: u8,
    pub dir: PathBuf,
    /// The `kubeha-lab` binary supervisors and stand-ins run from.
    pub exe: PathBuf,
    pub kubernetes_version: String,
    pub etcd_version: String,
    pub user: LabUser,
    /// Logins beyond the inventory's (absent from state files of older labs).
    #[serde(default)]
    pub ssh: SshSetup,
    pub bridge: String,
    pub bridge_created: bool,
    pub hosts: Vec<HostState>,
    /// Mount points on the machine that did not exist before this lab made them.
    pub created_dirs: Vec<PathBuf>,
    /// The namespaces `up` ran in (`/proc/self/ns/{mnt,uts,net}` links): a supervisor refuses to
    /// mount or set a hostname while it is still in one of them.
    pub machine_namespaces: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostState {
    pub name: String,
    pub address: Ipv4Addr,
    #[serde(default = "default_ssh_port")]
    pub ssh_port: u16,
    pub control_plane: bool,
    pub netns: String,
    pub veth: String,
    /// The namespace and veth pair exist.
    pub net_created: bool,
    pub supervisor: Option<ProcRef>,
}

fn default_ssh_port() -> u16 {
    22
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    pub fn load(dir: &Path) -> Result<State, LabError> {
        let path = State::path(dir);
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LabError::NotFound { dir: dir.to_path_buf() },
            _ => LabError::Io { path: path.clone(), source: e },
        })?;
        serde_json::from_str(&text).map_err(|e| LabError::State { path, message: e.to_string() })
    }

    pub fn save(&self) -> Result<(), LabError> {
        let text = serde_json::to_string_pretty(self).expect("lab state serializes");
        write_file(&State::path(&self.dir), text.as_bytes(), 0o600)
    }

    pub fn host(&self, name: &str) -> Result<&HostState, LabError> {
        self.hosts.iter().find(|h| h.name == name).ok_or_else(|| LabError::NoSuchHost {
            host: name.to_string(),
            known: self.hosts.iter().map(|h| h.name.clone()).collect::<Vec<_>>().join(", "),
        })
    }

    /// `<dir>/hosts/<host>`: everything the lab keeps for one host.
    pub fn host_dir(&self, host: &str) -> PathBuf {
        host_dir(&self.dir, host)
    }
}

/// The links of this process's mount, UTS and network namespaces.
pub fn namespaces() -> Vec<String> {
    ["mnt", "uts", "net"]
        .iter()
        .filter_map(|ns| std::fs::read_link(format!("/proc/self/ns/{ns}")).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect()
}

pub fn host_dir(dir: &Path, host: &str) -> PathBuf {
    dir.join("hosts").join(host)
}

/// Writes a file atomically (a dot-named temporary file renamed into place) with `mode`.
pub fn write_file(path: &Path, content: &[u8], mode: u32) -> Result<(), LabError> {
    let io = |source| LabError::Io { path: path.to_path_buf(), source };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let mut f =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(io)?;
    f.write_all(content).map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)
}

/// Creates a directory (and missing parents) and sets its mode.
pub fn make_dir(path: &Path, mode: u32) -> Result<(), LabError> {
    let io = |source| LabError::Io { path: path.to_path_buf(), source };
    std::fs::create_dir_all(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)
}
