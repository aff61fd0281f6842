//! `/var/lib/kubelet/config.yaml`, the KubeletConfiguration every host receives.
//!
//! The settings are those kubeadm writes that change behaviour: the static-pod directory,
//! x509 client authentication against the cluster CA with webhook authentication and
//! authorization, the cluster DNS address (tenth address of the service subnet), the systemd
//! cgroup driver and certificate rotation. Fields kubeadm writes as zero values (meaning "use
//! the default") are left out. kubeha has no `kubeadm-flags.env`, so the container runtime
//! endpoint is set here: containerd's default socket.

use serde::Serialize;

use super::RenderError;
use super::context::{HostContext, cluster_dns_ip};
use super::engine::Engine;
use crate::files::File;
use crate::host::layout::{CA_CERT, KUBELET_CONFIG, MANIFESTS_DIR};

/// containerd's socket, where kubeadm's default CRI socket points.
const RUNTIME_ENDPOINT: &str = "unix:///var/run/containerd/containerd.sock";

#[derive(Serialize)]
struct KubeletConfig<'a> {
    ca_file: &'static str,
    cluster_dns: String,
    cluster_domain: &'a str,
    runtime_endpoint: &'static str,
    static_pod_path: &'static str,
}

pub fn config(ctx: &HostContext, engine: &Engine) -> Result<File, RenderError> {
    let net = &ctx.plan.networking;
    let text = engine.render(
        "kubelet-config.yaml",
        &KubeletConfig {
            ca_file: CA_CERT,
            cluster_dns: cluster_dns_ip(&net.service_subnet).to_string(),
            cluster_domain: &net.dns_domain,
            runtime_endpoint: RUNTIME_ENDPOINT,
            static_pod_path: MANIFESTS_DIR,
        },
    )?;
    Ok(File::new(KUBELET_CONFIG, 0o644, text))
}
