//! The inventory a lab writes (`<dir>/inventory.yaml`): a kubeha cluster over the lab's hosts,
//! ready for `kubeha validate` and everything after it.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use super::LabError;
use super::spec::LabUser;
use super::sshd::{identity_file, known_hosts_file};
use super::state::State;

/// `<dir>/inventory.yaml`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("inventory.yaml")
}

/// The etcd version of the `etcd` on PATH (`etcd --version` prints `etcd Version: 3.4.23`).
pub fn installed_etcd_version() -> Result<String, LabError> {
    let out = super::process::run("etcd", &["--version"])?;
    out.lines().find_map(|l| l.strip_prefix("etcd Version:")).map(|v| v.trim().to_string()).ok_or_else(|| {
        LabError::Command {
            command: "etcd --version".into(),
            status: "exit status: 0".into(),
            stderr: format!("no \"etcd Version:\" line in {out:?}"),
        }
    })
}

/// The inventory text for a lab.
pub fn render(state: &State) -> String {
    let vip = super::spec::host_address(state.subnet, 10);
    let ssh_user = match state.user {
        LabUser::Root => "user: root".to_string(),
        LabUser::Ops => format!("user: {}, sudo: true", LabUser::Ops.name()),
    };
    let control_planes = state.hosts.iter().filter(|h| h.control_plane).count();
    let even = if control_planes % 2 == 0 { ", allowEvenMemberCount: true" } else { "" };
    let mut out = format!(
        "# Written by kubeha-lab for lab {name} ({dir}).\n\
         apiVersion: kubeha/v1alpha1\n\
         kind: Cluster\n\
         metadata: {{name: {name}}}\n\
         spec:\n\
         \x20 kubernetesVersion: {k8s}\n\
         \x20 controlPlaneEndpoint: {vip}:8443\n\
         \x20 loadBalancer: {{type: keepalived-haproxy, vip: {vip}, interface: eth0}}\n\
         \x20 networking: {{podSubnet: 10.244.0.0/16, serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}}\n\
         \x20 etcd: {{version: \"{etcd}\"{even}}}\n\
         \x20 certificates: {{keyAlgorithm: ecdsa-p256}}\n\
         \x20 ssh: {{{ssh_user}, port: 22, identityFile: {id}, knownHostsFile: {kh}}}\n\
         \x20 hosts:\n",
        name = state.name,
        dir = state.dir.display(),
        k8s = state.kubernetes_version,
        etcd = state.etcd_version,
        id = identity_file(&state.dir).display(),
        kh = known_hosts_file(&state.dir).display(),
    );
    for h in &state.hosts {
        let role = if h.control_plane { "control-plane" } else { "worker" };
        let ssh = match h.ssh_port {
            22 => String::new(),
            port => format!(", ssh: {{port: {port}}}"),
        };
        let _ = writeln!(out, "    - {{name: {}, address: {}, role: {role}{ssh}}}", h.name, h.address);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::LabSpec;

    fn state(spec: &LabSpec) -> State {
        State {
            name: spec.name.clone(),
            subnet: spec.subnet,
            dir: spec.dir.clone(),
            exe: "/bin/true".into(),
            kubernetes_version: spec.kubernetes_version.clone(),
            etcd_version: "3.4.23".into(),
            user: spec.user,
            ssh: spec.ssh.clone(),
            bridge: String::new(),
            bridge_created: false,
            hosts: spec
                .hosts()
                .into_iter()
                .map(|h| crate::state::HostState {
                    name: h.name,
                    address: h.address,
                    ssh_port: h.ssh_port,
                    control_plane: h.control_plane,
                    netns: String::new(),
                    veth: String::new(),
                    net_created: false,
                    supervisor: None,
                })
                .collect(),
            created_dirs: Vec::new(),
            machine_namespaces: Vec::new(),
        }
    }

    #[test]
    fn the_inventory_is_valid() {
        for (cps, workers, user) in [(3, 1, LabUser::Root), (2, 0, LabUser::Ops), (1, 5, LabUser::Ops)] {
            let mut spec = LabSpec::new("t1", 4);
            (spec.control_planes, spec.workers, spec.user) = (cps, workers, user);
            spec.ssh.ports.insert("cp1".into(), 2222);
            let text = render(&state(&spec));
            let plan = kubeha::inventory::parse(&text, Path::new("/")).unwrap_or_else(|e| panic!("{e:?}\n{text}"));
            assert_eq!(plan.hosts.len(), cps + workers);
            assert_eq!(plan.etcd_version.tag, "3.4.23");
            assert_eq!(plan.endpoint_url(), "https://198.18.4.10:8443");
            assert_eq!(plan.hosts[0].ssh.user, user.name());
            assert_eq!(plan.hosts[0].ssh.sudo, user == LabUser::Ops);
            assert_eq!(plan.hosts[0].ssh.identity_file, spec.dir.join("id_ed25519"));
            assert_eq!(plan.hosts[0].ssh.port, 2222);
            assert!(plan.hosts[1..].iter().all(|h| h.ssh.port == 22));
        }
    }
}
