//! The kubelet's files on every host: `/var/lib/kubelet/config.yaml` (the KubeletConfiguration)
//! and `/var/lib/kubelet/kubeadm-flags.env` (its per-node flags, as kubeadm writes them).
//!
//! The configuration holds the settings kubeadm writes that change behaviour: the static-pod
//! directory, x509 client authentication against the cluster CA with webhook authentication
//! and authorization, the cluster DNS address (tenth address of the service subnet), the systemd
//! cgroup driver and certificate rotation; per node, the container runtime's endpoint (the
//! socket preflight found, else containerd's) and systemd-resolved's resolv.conf where that runs.
//! Fields kubeadm writes as zero values (meaning "use the default") are left out.
//!
//! The flags give the node its identity: `--hostname-override` with the inventory name (the
//! name in its certificate, which the Node authorizer checks, whatever the machine's hostname),
//! `--node-ip` with the inventory address, the pause image where kubeadm still sets it, and the
//! control-plane taint at registration.

use serde::Serialize;

use super::RenderError;
use super::context::HostContext;
use super::engine::Engine;
use crate::files::File;
use crate::host::layout::{CA_CERT, KUBELET_CONFIG, KUBELET_FLAGS_ENV, MANIFESTS_DIR};
use crate::plan::{NodeSettings, Plan};

/// containerd's socket, where kubeadm's default CRI socket points.
const RUNTIME_ENDPOINT: &str = "unix:///var/run/containerd/containerd.sock";

/// The taint kubeadm gives control planes, applied by their kubelets when they register.
const CONTROL_PLANE_TAINT: &str = "node-role.kubernetes.io/control-plane:NoSchedule";

#[derive(Serialize)]
struct KubeletConfig<'a> {
    ca_file: &'static str,
    cluster_dns: String,
    cluster_domain: &'a str,
    runtime_endpoint: &'a str,
    resolv_conf: Option<&'a str>,
    static_pod_path: &'static str,
}

/// The host's kubelet configuration and flags.
pub fn files(ctx: &HostContext, engine: &Engine) -> Result<Vec<File>, RenderError> {
    let node = &ctx.host.node;
    let config = text(ctx.plan, node, engine)?;
    Ok(vec![File::new(KUBELET_CONFIG, 0o644, config), File::new(KUBELET_FLAGS_ENV, 0o644, flags(ctx))])
}

/// The KubeletConfiguration for a node with `node`'s settings; with the defaults, what the
/// `kubelet-config` ConfigMap holds.
pub fn text(plan: &Plan, node: &NodeSettings, engine: &Engine) -> Result<String, RenderError> {
    let net = &plan.networking;
    engine.render(
        "kubelet-config.yaml",
        &KubeletConfig {
            ca_file: CA_CERT,
            cluster_dns: plan.cluster_dns_ip().to_string(),
            cluster_domain: &net.dns_domain,
            runtime_endpoint: node.cri_socket.as_deref().unwrap_or(RUNTIME_ENDPOINT),
            resolv_conf: node.resolv_conf.as_deref(),
            static_pod_path: MANIFESTS_DIR,
        },
    )
}

/// `kubeadm-flags.env`: `KUBELET_KUBEADM_ARGS="…"`, as kubeadm formats it.
fn flags(ctx: &HostContext) -> String {
    let host = ctx.host;
    let mut args = vec![format!("--hostname-override={}", host.name), format!("--node-ip={}", host.address)];
    // kubeadm stops setting the sandbox image in 1.35 (the runtime's own setting is used).
    if ctx.plan.kubernetes_version.minor < 35 {
        args.push(format!("--pod-infra-container-image={}", ctx.plan.pause_image()));
    }
    if ctx.is_control_plane() && ctx.plan.control_plane_taint {
        args.push(format!("--register-with-taints={CONTROL_PLANE_TAINT}"));
    }
    format!("KUBELET_KUBEADM_ARGS={:?}\n", args.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_settings_reach_the_kubelet_and_control_planes_register_tainted() {
        let mut plan =
            crate::inventory::parse(include_str!("../../inventories/example.yaml"), std::path::Path::new("/")).unwrap();
        plan.hosts[3].node = NodeSettings {
            cri_socket: Some("unix:///var/run/crio/crio.sock".into()),
            resolv_conf: Some("/run/systemd/resolve/resolv.conf".into()),
            ca_dirs: None,
            etcd_initial: None,
        };
        let engine = Engine::new().unwrap();
        let worker = files(&HostContext::new(&plan, &plan.hosts[3]), &engine).unwrap();
        let config = String::from_utf8(worker[0].content.clone()).unwrap();
        assert!(config.contains("containerRuntimeEndpoint: unix:///var/run/crio/crio.sock\n"), "{config}");
        assert!(config.contains("resolvConf: /run/systemd/resolve/resolv.conf\n"), "{config}");
        let flags = String::from_utf8(worker[1].content.clone()).unwrap();
        assert!(!flags.contains("register-with-taints"), "{flags}");
        let cp = files(&HostContext::new(&plan, &plan.hosts[0]), &engine).unwrap();
        let config = String::from_utf8(cp[0].content.clone()).unwrap();
        assert!(config.contains("containerd.sock") && !config.contains("resolvConf"), "{config}");
        let flags = String::from_utf8(cp[1].content.clone()).unwrap();
        assert_eq!(
            flags,
            "KUBELET_KUBEADM_ARGS=\"--hostname-override=cp1 --node-ip=198.18.0.11 \
             --pod-infra-container-image=registry.k8s.io/pause:3.10 \
             --register-with-taints=node-role.kubernetes.io/control-plane:NoSchedule\"\n"
        );
    }
}
