//! Versions of the components kubeha renders for.
//!
//! Flags and certificate subjects change between Kubernetes and etcd releases, so the plan keeps
//! parsed versions rather than strings and every version-dependent choice asks them; what
//! kubeadm does per Kubernetes minor is the table in `version/table.rs`.

mod table;

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

pub use table::{EtcdFlagNames, KubeadmRelease, NEWEST, OLDEST, RELEASES, SchedulerProbes, UnsupportedVersion};

/// The Kubernetes minor versions whose kubeadm manifests kubeha reproduces (the table's rows).
pub const SUPPORTED_KUBERNETES_MINORS: std::ops::RangeInclusive<u32> = OLDEST.minor..=NEWEST.minor;

/// A Kubernetes release such as `v1.31.4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KubeVersion {
    /// Parses any `vMAJOR.MINOR.PATCH`, supported or not; [`KubeadmRelease::exact`] says
    /// whether kubeha knows it. For inventories that may name a version outside the table.
    pub fn parse_any(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix('v')
            .ok_or_else(|| format!("{s:?} is not a version like v1.31.4 (the leading 'v' is required)"))?;
        let [major, minor, patch] = parse_triple(rest).ok_or_else(|| format!("{s:?} is not a version like v1.31.4"))?;
        Ok(KubeVersion { major, minor, patch })
    }
}

/// A supported version only: the error of an unsupported one names the supported range.
impl FromStr for KubeVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let version = Self::parse_any(s)?;
        KubeadmRelease::exact(version).map_err(|e| e.to_string())?;
        Ok(version)
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl Serialize for KubeVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An etcd release as kubeadm tags its image: `3.5.16-0` (the `-N` image revision is optional).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    /// The image tag exactly as the operator wrote it.
    pub tag: String,
}

impl EtcdVersion {
    /// etcd 3.5.11 added `/livez` and `/readyz`, which kubeadm 1.31+ probes; older etcd only
    /// has `/health`.
    pub fn has_livez(&self) -> bool {
        (self.major, self.minor, self.patch) >= (3, 5, 11)
    }

    /// etcd 3.6 renamed the `--experimental-*` flags kubeadm uses; 3.4 and 3.5 share one set.
    pub fn has_v36_flags(&self) -> bool {
        (self.major, self.minor) >= (3, 6)
    }
}

impl FromStr for EtcdVersion {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not an etcd version like 3.5.16-0");
        let (semver, revision) = match s.split_once('-') {
            Some((v, r)) => (v, Some(r)),
            None => (s, None),
        };
        if let Some(r) = revision
            && (r.is_empty() || !r.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        let [major, minor, patch] = parse_triple(semver).ok_or_else(bad)?;
        if major != 3 || !(4..=6).contains(&minor) {
            return Err(format!("etcd {s} is not supported: kubeha runs etcd 3.4 to 3.6"));
        }
        Ok(EtcdVersion { major, minor, patch, tag: s.to_string() })
    }
}

impl fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag)
    }
}

impl Serialize for EtcdVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The etcd kubeadm pairs with a Kubernetes release (its `SupportedEtcdVersion` table, as
/// released); an unsupported version gets the nearest supported minor's.
pub fn default_etcd_version(kubernetes: KubeVersion) -> EtcdVersion {
    KubeadmRelease::nearest(kubernetes).default_etcd(kubernetes)
}

/// Parses `1.2.3` with no leading zeros, signs or extra parts.
fn parse_triple(s: &str) -> Option<[u32; 3]> {
    let mut out = [0u32; 3];
    let mut parts = s.split('.');
    for slot in &mut out {
        let p = parts.next()?;
        let valid = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'));
        if !valid {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_versions() {
        let v: KubeVersion = "v1.31.4".parse().unwrap();
        assert_eq!((v.major, v.minor, v.patch), (1, 31, 4));
        assert_eq!(v.to_string(), "v1.31.4");
        for bad in
            ["1.31.4", "v1.31", "v1.31.4.1", "v1.031.4", "v1.31.x", "v1.99.0", "v2.0.0", "v1.30.9", "v1.37.0", ""]
        {
            assert!(bad.parse::<KubeVersion>().is_err(), "{bad} accepted");
        }
        for minor in SUPPORTED_KUBERNETES_MINORS {
            assert!(format!("v1.{minor}.0").parse::<KubeVersion>().is_ok(), "v1.{minor}");
        }
        // Unsupported but well-formed versions parse for `--allow-unsupported-version`.
        assert_eq!(KubeVersion::parse_any("v1.37.0").unwrap().minor, 37);
        assert!(KubeVersion::parse_any("1.37.0").is_err());
    }

    #[test]
    fn etcd_versions() {
        let v: EtcdVersion = "3.5.16-0".parse().unwrap();
        assert_eq!((v.minor, v.patch, v.tag.as_str()), (5, 16, "3.5.16-0"));
        assert!(!v.has_v36_flags());
        assert!("3.6.0".parse::<EtcdVersion>().unwrap().has_v36_flags());
        assert!("3.4.23".parse::<EtcdVersion>().is_ok());
        for bad in ["3.5", "v3.5.16", "3.5.16-", "3.5.16-a", "2.3.8", "3.7.0"] {
            assert!(bad.parse::<EtcdVersion>().is_err(), "{bad} accepted");
        }
    }
}
