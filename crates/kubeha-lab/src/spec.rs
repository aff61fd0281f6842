//! What a lab is made of: the spec an operator or test gives, and every name and address derived
//! from it.
//!
//! All kernel object names derive from the lab name so that two labs with different names and
//! subnets can run side by side. Interface names are limited to 15 characters by the kernel:
//! with lab names of at most 6 characters and host names of at most 4 (`cp89`, `w154`), the
//! longest veth name is `kh-` + 6 + `-` + 4 = 14.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LabError;
use super::ssh_setup::SshSetup;

/// The Kubernetes version written into the inventory unless the spec says otherwise.
pub const DEFAULT_KUBERNETES_VERSION: &str = "v1.31.4";
/// Control planes take `.11` upwards, so at most `.99`.
pub const MAX_CONTROL_PLANES: usize = 89;
/// Workers take `.101` upwards, so at most `.254`.
pub const MAX_WORKERS: usize = 154;

/// Who the written inventory logs in as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabUser {
    /// `ssh: {user: root}`.
    #[default]
    Root,
    /// `ssh: {user: ops, sudo: true}`: a non-root user with passwordless sudo on every host.
    Ops,
}

impl LabUser {
    pub fn name(self) -> &'static str {
        match self {
            LabUser::Root => "root",
            LabUser::Ops => "ops",
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct LabSpec {
    /// Short name (a lowercase letter, then at most 5 lowercase letters or digits): namespaces,
    /// links and the bridge derive from it.
    pub name: String,
    pub control_planes: usize,
    pub workers: usize,
    /// Hosts get 198.18.<subnet>.0/24: control planes .11.., workers .101.., the VIP .10, the
    /// bridge .1.
    pub subnet: u8,
    /// Where the lab keeps its files (sshd configs, keys, per-host filesystems, inventory).
    pub dir: PathBuf,
    /// Written into the inventory.
    pub kubernetes_version: String,
    /// Written into the inventory; by default the installed etcd's version.
    pub etcd_version: Option<String>,
    /// The SSH user the inventory names.
    pub user: LabUser,
    /// The `kubeha-lab` binary that runs each host's supervisor and the component stand-ins.
    /// By default the running executable (right for the `kubeha-lab` CLI; tests pass
    /// `env!("CARGO_BIN_EXE_kubeha-lab")`).
    pub exe: Option<PathBuf>,
    /// SSH logins beyond the inventory's (none by default; tests of SSH clients add some).
    pub ssh: SshSetup,
}

impl LabSpec {
    /// Three control planes, one worker, Kubernetes v1.31.4, root, in `/tmp/kubeha-lab/<name>`.
    pub fn new(name: &str, subnet: u8) -> LabSpec {
        LabSpec {
            name: name.to_string(),
            control_planes: 3,
            workers: 1,
            subnet,
            dir: default_dir(name),
            kubernetes_version: DEFAULT_KUBERNETES_VERSION.to_string(),
            etcd_version: None,
            user: LabUser::Root,
            exe: None,
            ssh: SshSetup::default(),
        }
    }

    /// Rejects specs that would give invalid or colliding names, addresses or versions.
    pub fn check(&self) -> Result<(), LabError> {
        let bad = |field: &str, message: String| Err(LabError::Spec { field: field.to_string(), message });
        if let Err(message) = check_name(&self.name) {
            return bad("name", message);
        }
        if self.control_planes == 0 || self.control_planes > MAX_CONTROL_PLANES {
            return bad("control_planes", format!("{} is not from 1 to {MAX_CONTROL_PLANES}", self.control_planes));
        }
        if self.workers > MAX_WORKERS {
            return bad("workers", format!("{} is more than {MAX_WORKERS}", self.workers));
        }
        if let Err(e) = self.kubernetes_version.parse::<kubeha::version::KubeVersion>() {
            return bad("kubernetes_version", e);
        }
        if let Some(v) = &self.etcd_version
            && let Err(e) = v.parse::<kubeha::version::EtcdVersion>()
        {
            return bad("etcd_version", e);
        }
        if !self.dir.is_absolute() {
            return bad("dir", format!("{} must be an absolute path", self.dir.display()));
        }
        // The hosts' private mounts would hide the lab's own files from its supervisors.
        for hidden in super::hostfs::PRIVATE_DIRS {
            if self.dir.starts_with(hidden) {
                return bad("dir", format!("{} is under {hidden}, which every lab host replaces", self.dir.display()));
            }
        }
        self.ssh.check(&self.hosts())
    }

    /// The hosts this spec makes, control planes first.
    pub fn hosts(&self) -> Vec<super::LabHost> {
        let cps = (1..=self.control_planes).map(|i| super::LabHost {
            name: format!("cp{i}"),
            address: host_address(self.subnet, 10 + i as u8),
            ssh_port: self.ssh.port(&format!("cp{i}")),
            control_plane: true,
        });
        let workers = (1..=self.workers).map(|i| super::LabHost {
            name: format!("w{i}"),
            address: host_address(self.subnet, 100 + i as u8),
            ssh_port: self.ssh.port(&format!("w{i}")),
            control_plane: false,
        });
        cps.chain(workers).collect()
    }
}

/// `/tmp/kubeha-lab/<name>`.
pub fn default_dir(name: &str) -> PathBuf {
    Path::new("/tmp/kubeha-lab").join(name)
}

fn check_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let ok = name.len() <= 6
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    ok.then_some(()).ok_or_else(|| {
        format!("{name:?} must be 1-6 lowercase letters or digits starting with a letter (interface names are short)")
    })
}

/// 198.18.<subnet>.<last>.
pub fn host_address(subnet: u8, last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, subnet, last)
}

/// The bridge every host of lab `name` hangs off.
pub fn bridge_name(name: &str) -> String {
    format!("kh-{name}")
}

/// The root-namespace end of a host's veth pair (the host's end is `eth0`).
pub fn veth_name(name: &str, host: &str) -> String {
    format!("kh-{name}-{host}")
}

/// The named network namespace of a host (`ip netns`).
pub fn netns_name(name: &str, host: &str) -> String {
    format!("kubeha-{name}-{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_interface_limit() {
        let mut spec = LabSpec::new("abcdef", 7);
        spec.control_planes = MAX_CONTROL_PLANES;
        spec.workers = MAX_WORKERS;
        spec.check().unwrap();
        let hosts = spec.hosts();
        assert_eq!(hosts.len(), MAX_CONTROL_PLANES + MAX_WORKERS);
        for h in &hosts {
            assert!(veth_name(&spec.name, &h.name).len() <= 15, "{}", h.name);
        }
        assert_eq!(hosts[0].address, Ipv4Addr::new(198, 18, 7, 11));
        assert_eq!(hosts.last().unwrap().address, Ipv4Addr::new(198, 18, 7, 254));
        assert_eq!(hosts[MAX_CONTROL_PLANES - 1].address, Ipv4Addr::new(198, 18, 7, 99));
    }

    #[test]
    fn bad_specs_are_rejected() {
        for name in ["", "1ab", "abcdefg", "a-b", "Ab"] {
            assert!(LabSpec::new(name, 1).check().is_err(), "{name}");
        }
        let mut s = LabSpec::new("t1", 1);
        s.control_planes = 0;
        assert!(s.check().is_err());
        let mut s = LabSpec::new("t1", 1);
        s.kubernetes_version = "1.31".into();
        assert!(s.check().is_err());
        let mut s = LabSpec::new("t1", 1);
        s.dir = "/run/lab".into();
        assert!(s.check().is_err());
        let mut s = LabSpec::new("t1", 1);
        s.dir = "relative".into();
        assert!(s.check().is_err());
    }
}
