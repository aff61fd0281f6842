//! What kubeadm does differently per Kubernetes minor: one row per minor kubeha supports.
//!
//! Every version-dependent choice in the rendered files (image tags, probe paths, the probe
//! port, etcd's flag names) reads this table, so supporting a new minor is one new row and its
//! tests. The rows follow `docs/manifests.md`, which keeps the sources; image tags are what
//! `kubeadm config images list` of the released binaries prints, so some change within a minor.
//!
//! kubeadm picks its etcd by the Kubernetes version; the etcd flags kubeha writes also depend on
//! the etcd the inventory actually runs (see [`EtcdFlagNames`]).

use super::{EtcdVersion, KubeVersion};

/// What kubeadm writes for one Kubernetes minor.
#[derive(Debug, PartialEq, Eq)]
pub struct KubeadmRelease {
    pub minor: u32,
    /// Default etcd image tags as `(first patch, tag)`, oldest first.
    etcd: &'static [(u32, &'static str)],
    /// CoreDNS image tags as `(first patch, tag)`, oldest first.
    coredns: &'static [(u32, &'static str)],
    /// The pause (sandbox) image tag.
    pub pause: &'static str,
    pub scheduler_probes: SchedulerProbes,
    /// From 1.34 every control-plane container declares a `probe-port` and its probes use the
    /// name (kubernetes#132776).
    pub named_probe_port: bool,
    pub etcd_flags: EtcdFlagNames,
}

/// Which health endpoints kube-scheduler's probes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerProbes {
    /// Liveness and startup on `/healthz`, no readiness probe.
    Healthz,
    /// Liveness and startup on `/livez`, readiness on `/readyz` (kubeadm 1.32, kubernetes#126945).
    LivezReadyz,
}

/// How kubeadm names etcd's initial corruption check and watch progress interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdFlagNames {
    /// `--experimental-initial-corrupt-check` and `--experimental-watch-progress-notify-interval`
    /// whatever the etcd: etcd 3.6 still accepts them (deprecated), 3.4 and 3.5 know no others.
    Experimental,
    /// `--feature-gates=InitialCorruptCheck=true` and `--watch-progress-notify-interval` for
    /// etcd 3.6 and newer, the experimental names before (kubernetes#132838). kubeadm 1.36 drops
    /// the experimental names because it no longer pairs Kubernetes with etcd below 3.6; kubeha
    /// keeps them for such an etcd, which refuses the new names at start-up.
    FollowEtcd,
}

/// The supported minors, oldest first. Tags from kubeadm's released binaries (minikube's
/// `constants_kubeadm_images.go`, generated with `kubeadm config images list`).
pub const RELEASES: [KubeadmRelease; 6] = [
    KubeadmRelease {
        minor: 31,
        etcd: &[(0, "3.5.15-0"), (14, "3.5.24-0")],
        coredns: &[(0, "v1.11.1"), (1, "v1.11.3")],
        pause: "3.10",
        scheduler_probes: SchedulerProbes::Healthz,
        named_probe_port: false,
        etcd_flags: EtcdFlagNames::Experimental,
    },
    KubeadmRelease {
        minor: 32,
        etcd: &[(0, "3.5.16-0"), (10, "3.5.24-0")],
        coredns: &[(0, "v1.11.3")],
        pause: "3.10",
        scheduler_probes: SchedulerProbes::LivezReadyz,
        named_probe_port: false,
        etcd_flags: EtcdFlagNames::Experimental,
    },
    KubeadmRelease {
        minor: 33,
        etcd: &[(0, "3.5.21-0"), (6, "3.5.24-0")],
        coredns: &[(0, "v1.12.0")],
        pause: "3.10",
        scheduler_probes: SchedulerProbes::LivezReadyz,
        named_probe_port: false,
        etcd_flags: EtcdFlagNames::Experimental,
    },
    KubeadmRelease {
        minor: 34,
        etcd: &[(0, "3.6.4-0"), (2, "3.6.5-0")],
        coredns: &[(0, "v1.12.1")],
        pause: "3.10.1",
        scheduler_probes: SchedulerProbes::LivezReadyz,
        named_probe_port: true,
        etcd_flags: EtcdFlagNames::FollowEtcd,
    },
    KubeadmRelease {
        minor: 35,
        etcd: &[(0, "3.6.6-0")],
        coredns: &[(0, "v1.13.1")],
        pause: "3.10.1",
        scheduler_probes: SchedulerProbes::LivezReadyz,
        named_probe_port: true,
        etcd_flags: EtcdFlagNames::FollowEtcd,
    },
    KubeadmRelease {
        minor: 36,
        etcd: &[(0, "3.6.8-0")],
        coredns: &[(0, "v1.14.2")],
        pause: "3.10.2",
        scheduler_probes: SchedulerProbes::LivezReadyz,
        named_probe_port: true,
        etcd_flags: EtcdFlagNames::FollowEtcd,
    },
];

/// The oldest supported release.
pub const OLDEST: &KubeadmRelease = &RELEASES[0];
/// The newest supported release.
pub const NEWEST: &KubeadmRelease = &RELEASES[RELEASES.len() - 1];

/// A Kubernetes version with no row in the table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{version} is not supported: kubeha renders Kubernetes v1.{}.x to v1.{}.x \
     (--allow-unsupported-version renders it with v1.{}'s rules)",
    OLDEST.minor, NEWEST.minor, self.nearest().minor
)]
pub struct UnsupportedVersion {
    pub version: KubeVersion,
}

impl UnsupportedVersion {
    /// The row used when the operator insists: the newest for a newer version, the oldest for
    /// an older one (as kubeadm falls back to the nearest minor it knows for etcd).
    pub fn nearest(&self) -> &'static KubeadmRelease {
        if (self.version.major, self.version.minor) > (1, NEWEST.minor) { NEWEST } else { OLDEST }
    }

    /// What to tell the operator when rendering it anyway.
    pub fn warning(&self) -> String {
        format!(
            "Kubernetes {} is not one kubeha supports (v1.{} to v1.{}): rendering it with kubeadm \
             v1.{}'s rules because of --allow-unsupported-version; check the manifests before use",
            self.version,
            OLDEST.minor,
            NEWEST.minor,
            self.nearest().minor
        )
    }
}

impl KubeadmRelease {
    /// The row for `version`'s minor.
    pub fn exact(version: KubeVersion) -> Result<&'static KubeadmRelease, UnsupportedVersion> {
        RELEASES.iter().find(|r| version.major == 1 && r.minor == version.minor).ok_or(UnsupportedVersion { version })
    }

    /// The row for `version`'s minor, or the nearest one for an unsupported version.
    pub fn nearest(version: KubeVersion) -> &'static KubeadmRelease {
        Self::exact(version).unwrap_or_else(|e| e.nearest())
    }

    /// kubeadm's default etcd image tags as `(first patch, tag)`, oldest first.
    pub fn etcd_tags(&self) -> &'static [(u32, &'static str)] {
        self.etcd
    }

    /// The CoreDNS image tags as `(first patch, tag)`, oldest first.
    pub fn coredns_tags(&self) -> &'static [(u32, &'static str)] {
        self.coredns
    }

    /// The etcd kubeadm pairs with `version` (its `SupportedEtcdVersion`, as released).
    pub fn default_etcd(&self, version: KubeVersion) -> EtcdVersion {
        self.pick(self.etcd, version).parse().expect("built-in etcd versions parse")
    }

    /// The CoreDNS image tag kubeadm deploys for `version`.
    pub fn coredns_tag(&self, version: KubeVersion) -> &'static str {
        self.pick(self.coredns, version)
    }

    /// `<repository>/coredns/coredns:<tag>`: kubeadm keeps CoreDNS one path level down.
    pub fn coredns_image(&self, repository: &str, version: KubeVersion) -> String {
        format!("{repository}/coredns/coredns:{}", self.coredns_tag(version))
    }

    /// `<repository>/pause:<tag>`, the sandbox image of every pod.
    pub fn pause_image(&self, repository: &str) -> String {
        format!("{repository}/pause:{}", self.pause)
    }

    /// The tag for `version` from `(first patch, tag)` entries. A version of another minor (one
    /// rendered with this row's rules) gets the newest entry if it is newer, the oldest if older.
    fn pick(&self, entries: &'static [(u32, &'static str)], version: KubeVersion) -> &'static str {
        let wanted = (version.major, version.minor, version.patch);
        entries.iter().rev().find(|(patch, _)| (1, self.minor, *patch) <= wanted).unwrap_or(&entries[0]).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubeVersion {
        KubeVersion::parse_any(s).unwrap()
    }

    #[test]
    fn rows_are_consecutive_minors_with_ordered_entries() {
        for pair in RELEASES.windows(2) {
            assert_eq!(pair[0].minor + 1, pair[1].minor);
        }
        for r in &RELEASES {
            for entries in [r.etcd, r.coredns] {
                assert_eq!(entries[0].0, 0, "v1.{}: the first entry covers .0", r.minor);
                assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "v1.{}", r.minor);
            }
            assert!(r.etcd.iter().all(|(_, tag)| tag.parse::<EtcdVersion>().is_ok()), "v1.{}", r.minor);
        }
    }

    #[test]
    fn tags_follow_the_patch_release() {
        let r = KubeadmRelease::exact(v("v1.31.0")).unwrap();
        assert_eq!(r.coredns_tag(v("v1.31.0")), "v1.11.1");
        assert_eq!(r.coredns_tag(v("v1.31.4")), "v1.11.3");
        assert_eq!(r.default_etcd(v("v1.31.13")).tag, "3.5.15-0");
        assert_eq!(r.default_etcd(v("v1.31.14")).tag, "3.5.24-0");
        assert_eq!(r.default_etcd(v("v1.31.99")).tag, "3.5.24-0");
        let r = KubeadmRelease::exact(v("v1.34.1")).unwrap();
        assert_eq!(
            (r.default_etcd(v("v1.34.1")).tag.as_str(), r.default_etcd(v("v1.34.2")).tag.as_str()),
            ("3.6.4-0", "3.6.5-0")
        );
        assert_eq!(r.coredns_image("registry.k8s.io", v("v1.34.1")), "registry.k8s.io/coredns/coredns:v1.12.1");
        assert_eq!(r.pause_image("registry.local:5000/k8s"), "registry.local:5000/k8s/pause:3.10.1");
    }

    #[test]
    fn unsupported_versions_fall_back_to_the_nearest_row() {
        let newer = KubeadmRelease::exact(v("v1.37.0")).unwrap_err();
        assert_eq!(newer.nearest().minor, 36);
        assert!(
            newer.to_string().starts_with("v1.37.0 is not supported: kubeha renders Kubernetes v1.31.x to v1.36.x")
        );
        assert!(newer.warning().contains("v1.36's rules"), "{}", newer.warning());
        assert_eq!(KubeadmRelease::nearest(v("v1.37.2")).default_etcd(v("v1.37.2")).tag, "3.6.8-0");
        assert_eq!(KubeadmRelease::nearest(v("v2.0.0")).minor, 36);
        let older = KubeadmRelease::nearest(v("v1.30.9"));
        assert_eq!((older.minor, older.default_etcd(v("v1.30.9")).tag.as_str()), (31, "3.5.15-0"));
        assert_eq!(older.coredns_tag(v("v1.30.9")), "v1.11.1");
    }
}
