//! The flags each stand-in accepts: every flag kubeadm 1.29–1.32 writes into the component's
//! static pod, plus the common ones operators add through `extraArgs`.
//!
//! A data table, deliberately: a flag missing here makes the stand-in reject a manifest the real
//! binary would accept, so additions are one line. Flags removed from the real components before
//! 1.29 (`--insecure-port`, `--address`, `--port`, `--kubelet-https`, ...) are absent on purpose:
//! the real binaries refuse them too. `File` flags name input files that must exist and be
//! readable before the component starts.

/// How a flag's value is parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `--x` alone means true; `--x=false` is the only way to say false.
    Bool,
    Int,
    /// A Go duration (`15s`, `1m30s`).
    Duration,
    /// Free text (strings, lists, maps).
    Str,
    /// A path to an input file that must be readable.
    File,
}

/// One known flag.
#[derive(Debug, Clone, Copy)]
pub struct FlagSpec {
    pub name: &'static str,
    pub kind: FlagKind,
    pub default: &'static str,
}

use FlagKind::{Bool, Duration as Dur, File, Int, Str};

const fn f(name: &'static str, kind: FlagKind, default: &'static str) -> FlagSpec {
    FlagSpec { name, kind, default }
}

/// The flags of `component`, or None for a component without a stand-in.
pub fn for_component(component: &str) -> Option<&'static [FlagSpec]> {
    match component {
        "kube-apiserver" => Some(APISERVER),
        "kube-controller-manager" => Some(CONTROLLER_MANAGER),
        "kube-scheduler" => Some(SCHEDULER),
        _ => None,
    }
}

/// Flags every Kubernetes component has (logging, feature gates, profiling).
macro_rules! common {
    () => {
        [
            f("v", Int, "0"),
            f("vmodule", Str, ""),
            f("feature-gates", Str, ""),
            f("logging-format", Str, "text"),
            f("log-flush-frequency", Dur, "5s"),
            f("log-json-info-buffer-size", Str, "0"),
            f("log-json-split-stream", Bool, "false"),
            f("log-text-info-buffer-size", Str, "0"),
            f("log-text-split-stream", Bool, "false"),
            f("profiling", Bool, "true"),
            f("contention-profiling", Bool, "false"),
            f("version", Bool, "false"),
            f("show-hidden-metrics-for-version", Str, ""),
            f("allow-metric-labels", Str, ""),
            f("allow-metric-labels-manifest", File, ""),
            f("disabled-metrics", Str, ""),
            f("permit-port-sharing", Bool, "false"),
            f("permit-address-sharing", Bool, "false"),
            f("tls-cert-file", File, ""),
            f("tls-private-key-file", File, ""),
            f("tls-cipher-suites", Str, ""),
            f("tls-min-version", Str, ""),
            f("tls-sni-cert-key", Str, ""),
            f("http2-max-streams-per-connection", Int, "0"),
            f("cert-dir", Str, ""),
            f("client-ca-file", File, ""),
            f("requestheader-client-ca-file", File, ""),
            f("requestheader-allowed-names", Str, ""),
            f("requestheader-username-headers", Str, "x-remote-user"),
            f("requestheader-group-headers", Str, "x-remote-group"),
            f("requestheader-extra-headers-prefix", Str, "x-remote-extra-"),
            f("requestheader-uid-headers", Str, ""),
        ]
    };
}

/// Flags of the components that authenticate through the apiserver (controller-manager and
/// scheduler): kubeconfigs, delegated authn/z, leader election, client tuning.
macro_rules! delegated {
    ($port:literal) => {
        [
            f("bind-address", Str, "0.0.0.0"),
            f("secure-port", Int, $port),
            f("kubeconfig", File, ""),
            f("master", Str, ""),
            f("authentication-kubeconfig", File, ""),
            f("authorization-kubeconfig", File, ""),
            f("authentication-skip-lookup", Bool, "false"),
            f("authentication-tolerate-lookup-failure", Bool, "false"),
            f("authentication-token-webhook-cache-ttl", Dur, "10s"),
            f("authorization-always-allow-paths", Str, "/healthz,/readyz,/livez"),
            f("authorization-webhook-cache-authorized-ttl", Dur, "10s"),
            f("authorization-webhook-cache-unauthorized-ttl", Dur, "10s"),
            f("leader-elect", Bool, "true"),
            f("leader-elect-lease-duration", Dur, "15s"),
            f("leader-elect-renew-deadline", Dur, "10s"),
            f("leader-elect-retry-period", Dur, "2s"),
            f("leader-elect-resource-lock", Str, "leases"),
            f("leader-elect-resource-name", Str, ""),
            f("leader-elect-resource-namespace", Str, "kube-system"),
            f("kube-api-qps", Str, "50"),
            f("kube-api-burst", Int, "100"),
            f("kube-api-content-type", Str, "application/vnd.kubernetes.protobuf"),
        ]
    };
}

const fn concat<const A: usize, const B: usize, const C: usize, const N: usize>(
    a: [FlagSpec; A],
    b: [FlagSpec; B],
    c: [FlagSpec; C],
) -> [FlagSpec; N] {
    assert!(A + B + C == N);
    let mut out = [f("", Str, ""); N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < A + B {
        out[i] = b[i - A];
        i += 1;
    }
    while i < N {
        out[i] = c[i - A - B];
        i += 1;
    }
    out
}

const APISERVER_OWN: [FlagSpec; 98] = [
    // kubeadm's manifest
    f("advertise-address", Str, ""),
    f("allow-privileged", Bool, "false"),
    f("authorization-mode", Str, ""),
    f("enable-admission-plugins", Str, ""),
    f("enable-bootstrap-token-auth", Bool, "false"),
    f("etcd-cafile", File, ""),
    f("etcd-certfile", File, ""),
    f("etcd-keyfile", File, ""),
    f("etcd-servers", Str, ""),
    f("kubelet-client-certificate", File, ""),
    f("kubelet-client-key", File, ""),
    f("kubelet-preferred-address-types", Str, "Hostname,InternalDNS,InternalIP,ExternalDNS,ExternalIP"),
    f("proxy-client-cert-file", File, ""),
    f("proxy-client-key-file", File, ""),
    f("secure-port", Int, "6443"),
    f("service-account-issuer", Str, ""),
    f("service-account-key-file", File, ""),
    f("service-account-signing-key-file", File, ""),
    f("service-cluster-ip-range", Str, ""),
    // serving and networking
    f("bind-address", Str, "0.0.0.0"),
    f("external-hostname", Str, ""),
    f("cors-allowed-origins", Str, ""),
    f("strict-transport-security-directives", Str, ""),
    f("service-node-port-range", Str, "30000-32767"),
    f("endpoint-reconciler-type", Str, "lease"),
    f("apiserver-count", Int, "1"),
    f("livez-grace-period", Dur, "0s"),
    f("shutdown-delay-duration", Dur, "0s"),
    f("shutdown-send-retry-after", Bool, "false"),
    f("shutdown-watch-termination-grace-period", Dur, "0s"),
    f("goaway-chance", Str, "0"),
    f("max-requests-inflight", Int, "400"),
    f("max-mutating-requests-inflight", Int, "200"),
    f("request-timeout", Dur, "1m0s"),
    f("min-request-timeout", Int, "1800"),
    f("enable-priority-and-fairness", Bool, "true"),
    f("egress-selector-config-file", File, ""),
    f("tracing-config-file", File, ""),
    f("runtime-config", Str, ""),
    f("event-ttl", Dur, "1h0m0s"),
    f("default-not-ready-toleration-seconds", Int, "300"),
    f("default-unreachable-toleration-seconds", Int, "300"),
    f("enable-aggregator-routing", Bool, "false"),
    f("aggregator-reject-forwarding-redirect", Bool, "true"),
    f("enable-logs-handler", Bool, "true"),
    f("debug-socket-path", Str, ""),
    f("cloud-provider", Str, ""),
    f("cloud-config", File, ""),
    // admission
    f("disable-admission-plugins", Str, ""),
    f("admission-control-config-file", File, ""),
    // authentication
    f("anonymous-auth", Bool, "true"),
    f("authentication-config", File, ""),
    f("authentication-token-webhook-config-file", File, ""),
    f("authentication-token-webhook-cache-ttl", Dur, "2m0s"),
    f("authentication-token-webhook-version", Str, "v1beta1"),
    f("token-auth-file", File, ""),
    f("api-audiences", Str, ""),
    f("oidc-issuer-url", Str, ""),
    f("oidc-client-id", Str, ""),
    f("oidc-ca-file", File, ""),
    f("oidc-username-claim", Str, "sub"),
    f("oidc-username-prefix", Str, ""),
    f("oidc-groups-claim", Str, ""),
    f("oidc-groups-prefix", Str, ""),
    f("oidc-required-claim", Str, ""),
    f("oidc-signing-algs", Str, "RS256"),
    f("service-account-lookup", Bool, "true"),
    f("service-account-extend-token-expiration", Bool, "true"),
    f("service-account-max-token-expiration", Dur, "0s"),
    f("service-account-jwks-uri", Str, ""),
    // authorization
    f("authorization-config", File, ""),
    f("authorization-policy-file", File, ""),
    f("authorization-webhook-config-file", File, ""),
    f("authorization-webhook-cache-authorized-ttl", Dur, "5m0s"),
    f("authorization-webhook-cache-unauthorized-ttl", Dur, "30s"),
    f("authorization-webhook-version", Str, "v1beta1"),
    // kubelet connection
    f("kubelet-certificate-authority", File, ""),
    f("kubelet-port", Int, "10250"),
    f("kubelet-timeout", Dur, "5s"),
    // etcd and storage
    f("etcd-prefix", Str, "/registry"),
    f("etcd-servers-overrides", Str, ""),
    f("etcd-compaction-interval", Dur, "5m0s"),
    f("etcd-count-metric-poll-period", Dur, "1m0s"),
    f("etcd-db-metric-poll-interval", Dur, "30s"),
    f("etcd-healthcheck-timeout", Dur, "2s"),
    f("etcd-readycheck-timeout", Dur, "2s"),
    f("storage-backend", Str, ""),
    f("storage-media-type", Str, "application/vnd.kubernetes.protobuf"),
    f("encryption-provider-config", File, ""),
    f("encryption-provider-config-automatic-reload", Bool, "false"),
    f("watch-cache", Bool, "true"),
    f("watch-cache-sizes", Str, ""),
    f("delete-collection-workers", Int, "1"),
    f("enable-garbage-collector", Bool, "true"),
    // audit
    f("audit-policy-file", File, ""),
    f("audit-log-path", Str, ""),
    f("audit-log-maxage", Int, "0"),
    f("audit-webhook-config-file", File, ""),
];

const APISERVER_ARR: [FlagSpec; 130] = concat(common!(), APISERVER_OWN, []);
static APISERVER: &[FlagSpec] = &APISERVER_ARR;

const CONTROLLER_MANAGER_OWN: [FlagSpec; 35] = [
    f("root-ca-file", File, ""),
    f("service-account-private-key-file", File, ""),
    f("cluster-signing-cert-file", File, ""),
    f("cluster-signing-key-file", File, ""),
    f("cluster-signing-duration", Dur, "8760h0m0s"),
    f("cluster-signing-kubelet-serving-cert-file", File, ""),
    f("cluster-signing-kubelet-serving-key-file", File, ""),
    f("cluster-signing-kubelet-client-cert-file", File, ""),
    f("cluster-signing-kubelet-client-key-file", File, ""),
    f("cluster-signing-kube-apiserver-client-cert-file", File, ""),
    f("cluster-signing-kube-apiserver-client-key-file", File, ""),
    f("cluster-signing-legacy-unknown-cert-file", File, ""),
    f("cluster-signing-legacy-unknown-key-file", File, ""),
    f("use-service-account-credentials", Bool, "false"),
    f("controllers", Str, "*"),
    f("allocate-node-cidrs", Bool, "false"),
    f("cluster-cidr", Str, ""),
    f("node-cidr-mask-size", Int, "0"),
    f("node-cidr-mask-size-ipv4", Int, "0"),
    f("node-cidr-mask-size-ipv6", Int, "0"),
    f("service-cluster-ip-range", Str, ""),
    f("cluster-name", Str, "kubernetes"),
    f("configure-cloud-routes", Bool, "true"),
    f("cloud-provider", Str, ""),
    f("cloud-config", File, ""),
    f("node-monitor-grace-period", Dur, "40s"),
    f("node-monitor-period", Dur, "5s"),
    f("terminated-pod-gc-threshold", Int, "12500"),
    f("concurrent-deployment-syncs", Int, "5"),
    f("concurrent-replicaset-syncs", Int, "5"),
    f("concurrent-service-syncs", Int, "1"),
    f("concurrent-statefulset-syncs", Int, "5"),
    f("horizontal-pod-autoscaler-sync-period", Dur, "15s"),
    f("flex-volume-plugin-dir", Str, "/usr/libexec/kubernetes/kubelet-plugins/volume/exec/"),
    f("pv-recycler-pod-template-filepath-nfs", File, ""),
];

const CONTROLLER_MANAGER_ARR: [FlagSpec; 89] = concat(common!(), delegated!("10257"), CONTROLLER_MANAGER_OWN);
static CONTROLLER_MANAGER: &[FlagSpec] = &CONTROLLER_MANAGER_ARR;

const SCHEDULER_OWN: [FlagSpec; 3] =
    [f("config", File, ""), f("write-config-to", Str, ""), f("pod-max-in-unschedulable-pods-duration", Dur, "5m0s")];

const SCHEDULER_ARR: [FlagSpec; 57] = concat(common!(), delegated!("10259"), SCHEDULER_OWN);
static SCHEDULER: &[FlagSpec] = &SCHEDULER_ARR;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_component() {
        for component in ["kube-apiserver", "kube-controller-manager", "kube-scheduler"] {
            let specs = for_component(component).unwrap();
            let mut names: Vec<_> = specs.iter().map(|s| s.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len(), "{component} has a duplicate flag");
            assert!(names.iter().all(|n| !n.is_empty()));
        }
    }

    #[test]
    fn removed_flags_are_unknown() {
        let api = for_component("kube-apiserver").unwrap();
        for removed in ["insecure-port", "insecure-bind-address", "kubelet-https", "port", "address"] {
            assert!(api.iter().all(|s| s.name != removed), "{removed}");
        }
    }
}
