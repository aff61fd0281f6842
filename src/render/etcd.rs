//! The stacked etcd member on each control plane, with kubeadm's flags for the etcd release.
//!
//! kubeadm's flags are the same for every release except two: the initial corruption check and
//! the watch progress interval, which etcd 3.6 renamed (deprecating the `--experimental-*`
//! names; 3.7 removes them). Which names kubeadm writes depends on the Kubernetes minor
//! ([`EtcdFlagNames`]); which names an etcd accepts depends on its release, and the release
//! wins, so a member never receives a flag it rejects at start-up. `init` creates its members
//! together (`--initial-cluster` lists them all, state `new`); a member `join-node` adds starts
//! with state `existing` and the member list etcd had when it was added. Either is recorded in
//! the host marker and kept: etcd reads these flags only on a member's first start.

use super::context::{HostContext, initial_cluster};
use super::pod::{Flags, HostPathVolume, Probe, Scheme, StaticPod};
use crate::host::layout::{ETCD_DATA_DIR, ETCD_METRICS_PORT, ETCD_PKI_DIR};
use crate::plan::EtcdInitial;
use crate::version::{EtcdFlagNames, EtcdVersion};

/// The annotation kubeadm reads to find each member's client URL.
const ADVERTISE_CLIENT_URLS_ANNOTATION: &str = "kubeadm.kubernetes.io/etcd.advertise-client-urls";

/// The corruption check and watch progress flags for `etcd` under kubeadm's `names`.
fn renamed_flags(names: EtcdFlagNames, etcd: &EtcdVersion) -> Vec<(&'static str, &'static str)> {
    if names == EtcdFlagNames::FollowEtcd && etcd.has_v36_flags() {
        return vec![("feature-gates", "InitialCorruptCheck=true"), ("watch-progress-notify-interval", "5s")];
    }
    let mut flags = vec![("experimental-initial-corrupt-check", "true")];
    // etcd before 3.4.11 has no watch progress interval at all.
    if (etcd.major, etcd.minor, etcd.patch) >= (3, 4, 11) {
        flags.push(("experimental-watch-progress-notify-interval", "5s"));
    }
    flags
}

/// The etcd static pod for `ctx`'s host.
pub fn manifest(ctx: &HostContext) -> StaticPod {
    let version = &ctx.plan.etcd_version;
    let probe_host = ctx.loopback().to_string();
    let mut pod = StaticPod::new("etcd", ctx.etcd_image(), command(ctx))
        .annotate(ADVERTISE_CLIENT_URLS_ANNOTATION, ctx.etcd_client_url())
        .requests("100m", Some("100Mi"))
        .mount([
            HostPathVolume::dir("etcd-certs", ETCD_PKI_DIR, false),
            HostPathVolume::dir("etcd-data", ETCD_DATA_DIR, false),
        ]);
    if version.has_livez() {
        // kubeadm 1.31+: /livez does not depend on a leader, so a cluster without quorum does
        // not get its members restarted in a loop; /readyz gates start-up and readiness.
        pod.liveness_probe = Some(Probe::liveness(&probe_host, "/livez", ETCD_METRICS_PORT, Scheme::Http));
        pod.readiness_probe = Some(Probe::readiness(&probe_host, "/readyz", ETCD_METRICS_PORT, Scheme::Http));
        pod.startup_probe = Some(Probe::startup(&probe_host, "/readyz", ETCD_METRICS_PORT, Scheme::Http));
    } else {
        // Older kubeadm, for etcd without /livez: query parameters older etcd ignores.
        let live = "/health?exclude=NOSPACE&serializable=true";
        pod.liveness_probe = Some(Probe::liveness(&probe_host, live, ETCD_METRICS_PORT, Scheme::Http));
        pod.startup_probe =
            Some(Probe::startup(&probe_host, "/health?serializable=false", ETCD_METRICS_PORT, Scheme::Http));
    }
    pod
}

/// How the member on `ctx`'s host first starts: as its marker recorded it, else with every
/// planned member as a new cluster.
pub fn initial(ctx: &HostContext) -> EtcdInitial {
    ctx.host
        .node
        .etcd_initial
        .clone()
        .unwrap_or_else(|| EtcdInitial { cluster: initial_cluster(ctx.plan), state: "new".to_string() })
}

fn command(ctx: &HostContext) -> Vec<String> {
    let initial = initial(ctx);
    let ca = format!("{ETCD_PKI_DIR}/ca.crt");
    let mut f = Flags::default();
    f.set("name", &ctx.host.name)
        .set("advertise-client-urls", ctx.etcd_client_url())
        .set("listen-client-urls", format!("{},{}", ctx.etcd_local_client_url(), ctx.etcd_client_url()))
        .set("listen-peer-urls", ctx.etcd_peer_url())
        .set("initial-advertise-peer-urls", ctx.etcd_peer_url())
        .set("initial-cluster", initial.cluster)
        .set("initial-cluster-state", initial.state)
        .set("data-dir", ETCD_DATA_DIR)
        .set("cert-file", format!("{ETCD_PKI_DIR}/server.crt"))
        .set("key-file", format!("{ETCD_PKI_DIR}/server.key"))
        .set("trusted-ca-file", ca.clone())
        .set("client-cert-auth", "true")
        .set("peer-cert-file", format!("{ETCD_PKI_DIR}/peer.crt"))
        .set("peer-key-file", format!("{ETCD_PKI_DIR}/peer.key"))
        .set("peer-trusted-ca-file", ca)
        .set("peer-client-cert-auth", "true")
        .set("snapshot-count", "10000")
        .set("listen-metrics-urls", ctx.etcd_metrics_url());
    for (name, value) in renamed_flags(ctx.plan.kubeadm_release().etcd_flags, &ctx.plan.etcd_version) {
        f.set(name, value);
    }
    f.command("etcd")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(flags: EtcdFlagNames, tag: &str) -> Vec<&'static str> {
        renamed_flags(flags, &tag.parse().unwrap()).into_iter().map(|(name, _)| name).collect()
    }

    #[test]
    fn renamed_flags_follow_kubeadm_and_the_release() {
        use EtcdFlagNames::{Experimental, FollowEtcd};
        let experimental = ["experimental-initial-corrupt-check", "experimental-watch-progress-notify-interval"];
        assert_eq!(names(FollowEtcd, "3.4.10"), ["experimental-initial-corrupt-check"]);
        assert_eq!(names(FollowEtcd, "3.4.23"), experimental);
        assert_eq!(names(FollowEtcd, "3.5.24-0"), experimental);
        assert_eq!(names(FollowEtcd, "3.6.0"), ["feature-gates", "watch-progress-notify-interval"]);
        // kubeadm before 1.34 keeps the experimental names, which etcd 3.6 still accepts.
        assert_eq!(names(Experimental, "3.6.5-0"), experimental);
        assert_eq!(names(Experimental, "3.4.23"), experimental);
    }
}
