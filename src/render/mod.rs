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
mod inputs;
mod kubelet;
mod load_balancer;
mod pod;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

pub use crate::host::layout::CLUSTER_MARKER;
pub use context::initial_cluster;
pub use inputs::{INPUTS_HASH_ANNOTATION, stamp_restart};

use crate::files::File;
use crate::host::layout::{MANIFEST_MODE, manifest};
use crate::plan::{Host, Plan};
use context::HostContext;
use engine::Engine;

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

/// The KubeletConfiguration every node of `plan` shares (the `kubelet-config` ConfigMap's).
pub fn kubelet_config(plan: &Plan) -> Result<String, RenderError> {
    kubelet::text(plan, &crate::plan::NodeSettings::default(), &Engine::new()?)
}

/// Cluster secrets that configuration files embed (not certificates).
pub struct Secrets<'a> {
    pub vrrp_password: &'a str,
    /// Keys the manifests' inputs hash (see [`INPUTS_HASH_ANNOTATION`]): configs hold the VRRP
    /// password, and an unkeyed hash of them, readable by anyone who can read pods, would let
    /// it be guessed offline.
    pub hash_key: &'a [u8],
}

/// Static-pod manifests and component configs per host name, each list sorted by path. The
/// manifests' inputs hashes cover these configs only; [`render`] adds the certificates.
pub fn host_configs(plan: &Plan, secrets: &Secrets) -> Result<BTreeMap<String, Vec<File>>, RenderError> {
    let engine = Engine::new()?;
    let mut out = BTreeMap::new();
    for host in &plan.hosts {
        out.insert(host.name.clone(), host_files(plan, host, secrets, Vec::new(), &engine)?);
    }
    Ok(out)
}

/// `host`'s configs and manifests beside `given` files (its certificates and keys), sorted by
/// path; each manifest carries the hash of the files its pod mounts.
fn host_files(
    plan: &Plan,
    host: &Host,
    secrets: &Secrets,
    given: Vec<File>,
    engine: &Engine,
) -> Result<Vec<File>, RenderError> {
    let ctx = HostContext::new(plan, host);
    let mut files = given;
    files.extend(kubelet::files(&ctx, engine)?);
    let mut pods = Vec::new();
    if ctx.is_control_plane() {
        let kubeadm_pods = [
            etcd::manifest(&ctx),
            control_plane::apiserver(&ctx),
            control_plane::controller_manager(&ctx),
            control_plane::scheduler(&ctx),
        ];
        // kubeadm's own pods only: haproxy and keepalived are kubeha's and keep numeric ports.
        let named = plan.kubeadm_release().named_probe_port;
        pods.extend(kubeadm_pods.map(|pod| if named { pod.with_named_probe_port() } else { pod }));
        let (configs, lb_pods) = load_balancer::files(&ctx, secrets.vrrp_password, engine)?;
        files.extend(configs);
        pods.extend(lb_pods);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut manifests = Vec::new();
    for pod in pods {
        let pod = inputs::annotate(pod, &files, secrets.hash_key);
        manifests.push(File::new(manifest(&pod.name), MANIFEST_MODE, engine.render("static-pod.yaml", &pod)?));
    }
    files.extend(manifests);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

#[derive(Serialize)]
struct Marker<'a> {
    cluster: &'a str,
    cluster_id: &'a str,
    host: &'a str,
    role: String,
    control_planes: Vec<&'a str>,
    files: Vec<String>,
    etcd_initial: Option<crate::plan::EtcdInitial>,
    kubeha_version: &'static str,
}

/// `/etc/kubernetes/kubeha/cluster.yaml`: which cluster (name and CA hash) `host` belongs to.
/// The marker for `host`, listing `files` (the host's other files) as kubeha's.
fn marker(plan: &Plan, host: &Host, cluster_id: &str, files: &[File], engine: &Engine) -> Result<File, RenderError> {
    let text = engine.render(
        "cluster-marker.yaml",
        &Marker {
            cluster: &plan.name,
            cluster_id,
            host: &host.name,
            role: host.role.to_string(),
            // Only a control plane's marker names the members: a worker's files then never
            // depend on them, so a membership change leaves every worker alone.
            control_planes: match host.role {
                crate::plan::Role::ControlPlane => plan.control_planes().map(|h| h.name.as_str()).collect(),
                crate::plan::Role::Worker => Vec::new(),
            },
            files: files.iter().map(|f| f.path.display().to_string()).collect(),
            etcd_initial: (host.role == crate::plan::Role::ControlPlane)
                .then(|| etcd::initial(&HostContext::new(plan, host))),
            kubeha_version: env!("CARGO_PKG_VERSION"),
        },
    )?;
    Ok(File::new(CLUSTER_MARKER, 0o644, text))
}

/// Every file each host receives: its PKI files, the rendered configs and the host marker,
/// sorted by path, per host name.
pub fn render(plan: &Plan, pki: &crate::pki::Pki) -> Result<BTreeMap<String, Vec<File>>, RenderError> {
    let hash_key = pki.config_hash_key();
    let secrets = Secrets { vrrp_password: pki.vrrp_password(), hash_key: &hash_key };
    let engine = Engine::new()?;
    let cluster_id = pki.cluster_id();
    let mut configs = BTreeMap::new();
    for host in &plan.hosts {
        let mut files = host_files(plan, host, &secrets, pki.host_files(host), &engine)?;
        let marker = marker(plan, host, &cluster_id, &files, &engine)?;
        files.push(marker);
        files.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(pair) = files.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(RenderError::DuplicatePath { host: host.name.clone(), path: pair[0].path.clone() });
        }
        configs.insert(host.name.clone(), files);
    }
    Ok(configs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_names_the_cluster_and_host() {
        let text = "apiVersion: kubeha/v1alpha1\nkind: Cluster\nmetadata: {name: lab}\nspec:\n  \
                    kubernetesVersion: v1.31.4\n  loadBalancer: {type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}\n  \
                    ssh: {user: root, identityFile: /root/.ssh/id_ed25519}\n  hosts:\n    \
                    - {name: cp1, address: 198.18.0.11, role: control-plane}\n";
        let plan = crate::inventory::parse(text, std::path::Path::new(".")).unwrap();
        let file = marker(&plan, &plan.hosts[0], "sha256:00ff", &[], &Engine::new().unwrap()).unwrap();
        assert_eq!((file.path.to_str(), file.mode), (Some(CLUSTER_MARKER), 0o644));
        let value: serde_json::Value = serde_saphyr::from_str(std::str::from_utf8(&file.content).unwrap()).unwrap();
        assert_eq!(value["cluster"], "lab");
        assert_eq!(value["clusterID"], "sha256:00ff");
        assert_eq!(value["host"], "cp1");
        assert_eq!(value["role"], "control-plane");
        assert_eq!(value["kubehaVersion"], env!("CARGO_PKG_VERSION"));
    }
    /// What lets `join-node` and `remove-node` work on the control planes and named hosts
    /// only: a worker's files do not depend on the control planes (nor on other workers), and a
    /// control plane's do not depend on the workers.
    #[test]
    fn workers_and_control_planes_files_do_not_depend_on_each_other() {
        let text = include_str!("../../inventories/example.yaml");
        let more = text.replace(
            "    - {name: w1,",
            "    - {name: cp4, address: 198.18.0.14, role: control-plane}\n    \
             - {name: cp5, address: 198.18.0.15, role: control-plane}\n    \
             - {name: w2, address: 198.18.0.22, role: worker}\n    - {name: w1,",
        );
        let state = tempfile::tempdir().unwrap();
        let full = crate::inventory::parse(&more, std::path::Path::new("/")).unwrap();
        crate::pki::generate(&full, state.path()).unwrap();
        let pki = crate::pki::load(&full, state.path()).unwrap();
        let render_of = |keep: &dyn Fn(&Host) -> bool| render(&full.with_hosts(keep), &pki).unwrap();
        let all = render_of(&|_| true);
        let three = render_of(&|h| !["cp4", "cp5", "w2"].contains(&h.name.as_str()));
        assert_eq!(all["w1"], three["w1"], "a worker's files changed with the control planes and workers");
        let cps_only = render_of(&|h| h.role == crate::plan::Role::ControlPlane);
        for cp in ["cp1", "cp5"] {
            assert_eq!(all[cp], cps_only[cp], "{cp}'s files changed with the workers");
        }
        assert_ne!(all["cp1"], three["cp1"], "the control planes' files name the members");
    }

    /// Preflight checks the directories of `layout::WRITTEN_DIRS`: every file kubeha renders goes
    /// into one of them.
    #[test]
    fn every_file_goes_into_a_checked_directory() {
        let plan =
            crate::inventory::parse(include_str!("../../inventories/example.yaml"), std::path::Path::new("/")).unwrap();
        let state = tempfile::tempdir().unwrap();
        crate::pki::generate(&plan, state.path()).unwrap();
        let files = render(&plan, &crate::pki::load(&plan, state.path()).unwrap()).unwrap();
        for file in files.values().flatten() {
            let dir = file.path.parent().unwrap().to_str().unwrap();
            assert!(crate::host::layout::WRITTEN_DIRS.contains(&dir), "{} is not checked", file.path.display());
        }
    }
}
