//! Every file each host receives, rendered from the plan with tera templates.
//!
//! [`host_configs`] produces what the plan alone decides (static-pod manifests, load-balancer
//! configs, the kubelet configuration); [`render`] adds the PKI's certificates, keys and
//! kubeconfigs and the host marker, giving the complete set of files per host. Output is
//! deterministic: the same plan and PKI give byte-identical files, sorted by path, so renders
//! can be compared and snapshot-tested.
//!
//! Layout: `context` derives per-host addresses and URLs, `control_plane`, `etcd`,
//! `load_balancer` and `kubelet` choose what each component gets, `pod` and `engine` turn that
//! into text through the templates in `templates/`.

mod context;
mod control_plane;
mod engine;
mod etcd;
mod kubelet;
mod layout;
mod load_balancer;
mod pod;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

pub use layout::CLUSTER_MARKER;
pub use load_balancer::CONFIG_HASH_ANNOTATION;

use crate::files::File;
use crate::plan::{LoadBalancer, Plan};
use context::HostContext;
use engine::Engine;
use layout::{MANIFEST_MODE, manifest};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// An embedded template failed: a bug in kubeha, not in the inventory.
    #[error("internal error in template {name} (please report it): {source}")]
    Template { name: &'static str, source: tera::Error },
    #[error("the cluster's VRRP password cannot be written to keepalived.conf: {0}")]
    VrrpPassword(String),
    #[error(
        "{count} control planes are more than keepalived can rank with distinct VRRP priorities; \
         use an external load balancer (loadBalancer.type: external)"
    )]
    TooManyControlPlanes { count: usize },
    #[error("host {host}: two files for {}; the PKI and the rendered configs overlap", path.display())]
    DuplicatePath { host: String, path: PathBuf },
}

/// Cluster secrets that configuration files embed (not certificates).
pub struct Secrets<'a> {
    pub vrrp_password: &'a str,
}

/// Static-pod manifests and component configs per host name, each list sorted by path.
pub fn host_configs(plan: &Plan, secrets: &Secrets) -> Result<BTreeMap<String, Vec<File>>, RenderError> {
    let engine = Engine::new()?;
    let mut out = BTreeMap::new();
    for host in &plan.hosts {
        let ctx = HostContext::new(plan, host);
        let mut files = vec![kubelet::config(&ctx, &engine)?];
        if ctx.is_control_plane() {
            files.extend(control_plane_files(&ctx, secrets, &engine)?);
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        out.insert(host.name.clone(), files);
    }
    Ok(out)
}

fn control_plane_files(ctx: &HostContext, secrets: &Secrets, engine: &Engine) -> Result<Vec<File>, RenderError> {
    let pods = [
        etcd::manifest(ctx),
        control_plane::apiserver(ctx),
        control_plane::controller_manager(ctx),
        control_plane::scheduler(ctx),
    ];
    let mut files = Vec::new();
    for pod in &pods {
        files.push(File::new(manifest(&pod.name), MANIFEST_MODE, engine.render("static-pod.yaml", pod)?));
    }
    if let LoadBalancer::KeepalivedHaproxy { vip, interface, virtual_router_id, haproxy_image, keepalived_image } =
        &ctx.plan.load_balancer
    {
        let vip = load_balancer::Vip {
            address: *vip,
            interface,
            virtual_router_id: *virtual_router_id,
            haproxy_image,
            keepalived_image,
        };
        files.extend(load_balancer::files(ctx, &vip, secrets.vrrp_password, engine)?);
    }
    Ok(files)
}

#[derive(Serialize)]
struct Marker<'a> {
    cluster: &'a str,
    cluster_id: &'a str,
    host: &'a str,
    role: String,
    kubeha_version: &'static str,
}

/// Every file each host receives: its PKI files, the rendered configs and the host marker,
/// sorted by path, per host name.
pub fn render(plan: &Plan, pki: &crate::pki::Pki) -> Result<BTreeMap<String, Vec<File>>, RenderError> {
    let mut configs = host_configs(plan, &Secrets { vrrp_password: pki.vrrp_password() })?;
    let engine = Engine::new()?;
    let cluster_id = pki.cluster_id();
    for host in &plan.hosts {
        let marker = engine.render(
            "cluster-marker.yaml",
            &Marker {
                cluster: &plan.name,
                cluster_id: &cluster_id,
                host: &host.name,
                role: host.role.to_string(),
                kubeha_version: env!("CARGO_PKG_VERSION"),
            },
        )?;
        let mut files = pki.host_files(host);
        files.append(configs.get_mut(&host.name).expect("host_configs covers every host"));
        files.push(File::new(CLUSTER_MARKER, 0o644, marker));
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(pair) = files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(RenderError::DuplicatePath { host: host.name.clone(), path: pair[0].path.clone() });
        }
        configs.insert(host.name.clone(), files);
    }
    Ok(configs)
}
