//! The stacked etcd member on each control plane, with kubeadm's flags for the etcd release.
//!
//! kubeadm 1.29–1.32 writes the same flags for etcd 3.5; etcd 3.4 accepts them as well (it has
//! the same `--experimental-*` names), and etcd 3.6 renamed two of them. Flags whose name or
//! existence depends on the release live in one table, so a release never receives a flag it
//! rejects at start-up. Every member is listed in `--initial-cluster` with state `new`: all
//! members of a kubeha cluster are created together.

use super::context::{HostContext, initial_cluster};
use super::pod::{Flags, HostPathVolume, Probe, Scheme, StaticPod};
use crate::host::layout::{ETCD_DATA_DIR, ETCD_METRICS_PORT, ETCD_PKI_DIR};
use crate::version::EtcdVersion;

/// The annotation kubeadm reads to find each member's client URL.
const ADVERTISE_CLIENT_URLS_ANNOTATION: &str = "kubeadm.kubernetes.io/etcd.advertise-client-urls";

/// A flag that only some etcd releases accept.
struct VersionedFlag {
    name: &'static str,
    value: &'static str,
    /// First release that accepts it.
    since: (u32, u32, u32),
    /// First release that rejects it again, if any.
    until: Option<(u32, u32, u32)>,
}

/// kubeadm's release-dependent etcd flags. etcd 3.6 replaced the first pair with a feature
/// gate and an unprefixed flag; `--experimental-watch-progress-notify-interval` first appeared
/// in 3.4.11.
const VERSIONED_FLAGS: [VersionedFlag; 4] = [
    VersionedFlag {
        name: "experimental-initial-corrupt-check",
        value: "true",
        since: (3, 4, 0),
        until: Some((3, 6, 0)),
    },
    VersionedFlag { name: "feature-gates", value: "InitialCorruptCheck=true", since: (3, 6, 0), until: None },
    VersionedFlag {
        name: "experimental-watch-progress-notify-interval",
        value: "5s",
        since: (3, 4, 11),
        until: Some((3, 6, 0)),
    },
    VersionedFlag { name: "watch-progress-notify-interval", value: "5s", since: (3, 6, 0), until: None },
];

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

fn command(ctx: &HostContext) -> Vec<String> {
    let ca = format!("{ETCD_PKI_DIR}/ca.crt");
    let mut f = Flags::default();
    f.set("name", &ctx.host.name)
        .set("advertise-client-urls", ctx.etcd_client_url())
        .set("listen-client-urls", format!("{},{}", ctx.etcd_local_client_url(), ctx.etcd_client_url()))
        .set("listen-peer-urls", ctx.etcd_peer_url())
        .set("initial-advertise-peer-urls", ctx.etcd_peer_url())
        .set("initial-cluster", initial_cluster(ctx.plan))
        .set("initial-cluster-state", "new")
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
    for flag in versioned_flags(&ctx.plan.etcd_version) {
        f.set(flag.name, flag.value);
    }
    f.command("etcd")
}

fn versioned_flags(v: &EtcdVersion) -> impl Iterator<Item = &'static VersionedFlag> {
    let release = (v.major, v.minor, v.patch);
    VERSIONED_FLAGS.iter().filter(move |f| release >= f.since && f.until.is_none_or(|until| release < until))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tag: &str) -> Vec<&'static str> {
        versioned_flags(&tag.parse().unwrap()).map(|f| f.name).collect()
    }

    #[test]
    fn versioned_flags_follow_the_release() {
        assert_eq!(names("3.4.10"), ["experimental-initial-corrupt-check"]);
        assert_eq!(
            names("3.4.23"),
            ["experimental-initial-corrupt-check", "experimental-watch-progress-notify-interval"]
        );
        assert_eq!(names("3.5.16-0"), names("3.4.23"));
        assert_eq!(names("3.6.0"), ["feature-gates", "watch-progress-notify-interval"]);
    }
}
