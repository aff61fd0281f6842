//! kube-apiserver, kube-controller-manager and kube-scheduler as kubeadm 1.31–1.36 writes them
//! (`getAPIServerCommand`, `getControllerManagerCommand`, `getSchedulerCommand` and the probes
//! of `GetStaticPodSpecs`).
//!
//! The flags are the same across these releases. The scheduler's probe paths follow the
//! version table ([`SchedulerProbes`]); the named probe port of 1.34+ is added for every
//! kubeadm pod in one place (`render::host_files`).

use super::context::HostContext;
use super::pod::{Flags, HostPathVolume, Probe, Scheme, StaticPod};
use crate::host::layout::{
    CA_CERT, CONTROLLER_MANAGER_CONF, CONTROLLER_MANAGER_PORT, ETCD_PKI_DIR, OPTIONAL_CA_DIRS, PKI_DIR, SCHEDULER_CONF,
    SCHEDULER_PORT, SYSTEM_CA_CERTS,
};
use crate::version::SchedulerProbes;

/// The annotation kubeadm reads to find each apiserver's own endpoint.
const ADVERTISE_ENDPOINT_ANNOTATION: &str = "kubeadm.kubernetes.io/kube-apiserver.advertise-address.endpoint";

/// kube-controller-manager and kube-scheduler serve only on loopback, as kubeadm configures them.
const LOCAL_BIND: &str = "127.0.0.1";

/// The host's system CA bundle, which kubeadm mounts so the components can reach TLS services
/// outside the cluster (cloud APIs, webhooks, OIDC): `/etc/ssl/certs` always, and whichever of
/// kubeadm's other locations the host has (RHEL's `/etc/pki`, Debian's `/etc/ca-certificates`
/// and `/usr/{local/,}share/ca-certificates`). Until preflight has looked, Debian's set.
fn ca_bundle_volumes(ctx: &HostContext) -> Vec<HostPathVolume> {
    let present = |dir: &str| match &ctx.host.node.ca_dirs {
        Some(found) => found.iter().any(|d| d == dir),
        None => dir != "/etc/pki",
    };
    let mut volumes = vec![HostPathVolume::dir("ca-certs", SYSTEM_CA_CERTS, true)];
    volumes.extend(
        OPTIONAL_CA_DIRS.iter().filter(|(_, dir)| present(dir)).map(|(name, dir)| HostPathVolume::dir(name, dir, true)),
    );
    volumes
}

fn pki(name: &str) -> String {
    format!("{PKI_DIR}/{name}")
}

/// How long a stopping apiserver keeps serving while failing `/readyz`: longer than haproxy
/// takes to mark a server down (two failed checks, 2 s then 1 s apart, each up to 2 s).
pub const SHUTDOWN_DELAY: &str = "6s";

pub fn apiserver(ctx: &HostContext) -> StaticPod {
    let plan = ctx.plan;
    let address = ctx.address().to_string();
    let port = plan.api_server_bind_port;
    let mut f = Flags::default();
    f.set("advertise-address", address.clone())
        .set("allow-privileged", "true")
        .set("authorization-mode", "Node,RBAC")
        .set("client-ca-file", CA_CERT)
        .set("enable-admission-plugins", "NodeRestriction")
        .set("enable-bootstrap-token-auth", "true")
        .set("etcd-cafile", format!("{ETCD_PKI_DIR}/ca.crt"))
        .set("etcd-certfile", pki("apiserver-etcd-client.crt"))
        .set("etcd-keyfile", pki("apiserver-etcd-client.key"))
        // Not kubeadm's (its own member only): every member, its own first, so that restarting
        // the host's etcd (a renewed certificate, an upgrade) does not fail the apiserver.
        .set("etcd-servers", ctx.etcd_servers())
        .set("kubelet-client-certificate", pki("apiserver-kubelet-client.crt"))
        .set("kubelet-client-key", pki("apiserver-kubelet-client.key"))
        .set("kubelet-preferred-address-types", "InternalIP,ExternalIP,Hostname")
        .set("proxy-client-cert-file", pki("front-proxy-client.crt"))
        .set("proxy-client-key-file", pki("front-proxy-client.key"))
        .set("requestheader-allowed-names", "front-proxy-client")
        .set("requestheader-client-ca-file", pki("front-proxy-ca.crt"))
        .set("requestheader-extra-headers-prefix", "X-Remote-Extra-")
        .set("requestheader-group-headers", "X-Remote-Group")
        .set("requestheader-username-headers", "X-Remote-User")
        .set("secure-port", port.to_string())
        .set("service-account-issuer", format!("https://kubernetes.default.svc.{}", plan.networking.dns_domain))
        .set("service-account-key-file", pki("sa.pub"))
        .set("service-account-signing-key-file", pki("sa.key"))
        .set("service-cluster-ip-range", plan.networking.service_subnet.to_string())
        // Not kubeadm's: on SIGTERM the apiserver fails /readyz but keeps serving this long, so
        // the load balancers (haproxy checks /readyz) send new connections elsewhere before it
        // stops listening, and a restart drops no request.
        .set("shutdown-delay-duration", SHUTDOWN_DELAY)
        .set("tls-cert-file", pki("apiserver.crt"))
        .set("tls-private-key-file", pki("apiserver.key"));
    let mut pod = StaticPod::new("kube-apiserver", ctx.kubernetes_image("kube-apiserver"), f.command("kube-apiserver"))
        .annotate(ADVERTISE_ENDPOINT_ANNOTATION, ctx.apiserver_endpoint())
        .requests("250m", None)
        .mount(ca_bundle_volumes(ctx))
        .mount([HostPathVolume::dir("k8s-certs", PKI_DIR, true)]);
    pod.liveness_probe = Some(Probe::liveness(&address, "/livez", port, Scheme::Https));
    pod.readiness_probe = Some(Probe::readiness(&address, "/readyz", port, Scheme::Https));
    pod.startup_probe = Some(Probe::startup(&address, "/livez", port, Scheme::Https));
    pod
}

pub fn controller_manager(ctx: &HostContext) -> StaticPod {
    let net = &ctx.plan.networking;
    let mut f = Flags::default();
    f.set("authentication-kubeconfig", CONTROLLER_MANAGER_CONF)
        .set("authorization-kubeconfig", CONTROLLER_MANAGER_CONF)
        .set("bind-address", LOCAL_BIND)
        .set("client-ca-file", CA_CERT)
        .set("cluster-name", ctx.plan.name.clone())
        .set("cluster-signing-cert-file", CA_CERT)
        .set("cluster-signing-key-file", pki("ca.key"))
        .set("controllers", "*,bootstrapsigner,tokencleaner")
        .set("kubeconfig", CONTROLLER_MANAGER_CONF)
        .set("leader-elect", "true")
        .set("requestheader-client-ca-file", pki("front-proxy-ca.crt"))
        .set("root-ca-file", CA_CERT)
        .set("service-account-private-key-file", pki("sa.key"))
        .set("use-service-account-credentials", "true");
    // Node CIDR allocation only makes sense with a pod network to carve up (kubeadm likewise).
    if let Some(pods) = net.pod_subnet {
        f.set("allocate-node-cidrs", "true")
            .set("cluster-cidr", pods.to_string())
            .set("service-cluster-ip-range", net.service_subnet.to_string());
    }
    let name = "kube-controller-manager";
    let mut pod = StaticPod::new(name, ctx.kubernetes_image(name), f.command(name))
        .requests("200m", None)
        .mount(ca_bundle_volumes(ctx))
        .mount([
            HostPathVolume::dir("flexvolume-dir", "/usr/libexec/kubernetes/kubelet-plugins/volume/exec", false),
            HostPathVolume::dir("k8s-certs", PKI_DIR, true),
            HostPathVolume::file_or_create("kubeconfig", CONTROLLER_MANAGER_CONF, true),
        ]);
    pod.liveness_probe = Some(Probe::liveness(LOCAL_BIND, "/healthz", CONTROLLER_MANAGER_PORT, Scheme::Https));
    pod.startup_probe = Some(Probe::startup(LOCAL_BIND, "/healthz", CONTROLLER_MANAGER_PORT, Scheme::Https));
    pod
}

pub fn scheduler(ctx: &HostContext) -> StaticPod {
    let mut f = Flags::default();
    f.set("authentication-kubeconfig", SCHEDULER_CONF)
        .set("authorization-kubeconfig", SCHEDULER_CONF)
        .set("bind-address", LOCAL_BIND)
        .set("kubeconfig", SCHEDULER_CONF)
        .set("leader-elect", "true");
    let name = "kube-scheduler";
    let mut pod = StaticPod::new(name, ctx.kubernetes_image(name), f.command(name))
        .requests("100m", None)
        .mount([HostPathVolume::file_or_create("kubeconfig", SCHEDULER_CONF, true)]);
    match ctx.plan.kubeadm_release().scheduler_probes {
        // /healthz is deprecated for the scheduler; readiness now gates its traffic too.
        SchedulerProbes::LivezReadyz => {
            pod.liveness_probe = Some(Probe::liveness(LOCAL_BIND, "/livez", SCHEDULER_PORT, Scheme::Https));
            pod.readiness_probe = Some(Probe::readiness(LOCAL_BIND, "/readyz", SCHEDULER_PORT, Scheme::Https));
            pod.startup_probe = Some(Probe::startup(LOCAL_BIND, "/livez", SCHEDULER_PORT, Scheme::Https));
        }
        SchedulerProbes::Healthz => {
            pod.liveness_probe = Some(Probe::liveness(LOCAL_BIND, "/healthz", SCHEDULER_PORT, Scheme::Https));
            pod.startup_probe = Some(Probe::startup(LOCAL_BIND, "/healthz", SCHEDULER_PORT, Scheme::Https));
        }
    }
    pod
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_bundle_mounts_follow_what_the_host_has() {
        let mut plan =
            crate::inventory::parse(include_str!("../../inventories/example.yaml"), std::path::Path::new("/")).unwrap();
        let paths = |plan: &crate::plan::Plan| -> Vec<String> {
            ca_bundle_volumes(&HostContext::new(plan, &plan.hosts[0])).into_iter().map(|v| v.path).collect()
        };
        assert_eq!(
            paths(&plan),
            [
                "/etc/ssl/certs",
                "/etc/ca-certificates",
                "/usr/local/share/ca-certificates",
                "/usr/share/ca-certificates"
            ]
        );
        plan.hosts[0].node.ca_dirs = Some(vec!["/etc/pki".into()]);
        assert_eq!(paths(&plan), ["/etc/ssl/certs", "/etc/pki"], "a RHEL-family host");
    }
}
