//! Which component and version a stand-in impersonates, from the container image it was started
//! for (`KUBEHA_LAB_IMAGE`, e.g. `registry.k8s.io/kube-apiserver:v1.31.4`).
//!
//! The image is the only place a static pod says its version, and clients depend on it: the
//! machine's `kubectl` picks its own version from the apiserver's `/version`. An image that does
//! not contain the program the pod's `command:` runs would fail to start in a real container, so
//! the stand-in refuses it too.

use super::checks::StartupError;

/// The environment variable the lab's kubelet stand-in sets to the container's image.
pub const IMAGE_ENV: &str = "KUBEHA_LAB_IMAGE";

/// A Kubernetes release as `/version` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeVersion {
    pub major: u32,
    pub minor: u32,
    /// The image tag, e.g. `v1.31.4`.
    pub git_version: String,
}

impl KubeVersion {
    /// Reads the image from the environment and checks it is `component`'s.
    pub fn from_env(component: &str) -> Result<KubeVersion, StartupError> {
        let image = std::env::var(IMAGE_ENV).map_err(|_| {
            StartupError(format!(
                "{IMAGE_ENV} is not set: the stand-in needs the container image (e.g. \
                 registry.k8s.io/{component}:v1.31.4) to know which version it is"
            ))
        })?;
        KubeVersion::from_image(component, &image)
    }

    /// Parses `registry/.../<component>:vMAJOR.MINOR.PATCH[-suffix]`.
    pub fn from_image(component: &str, image: &str) -> Result<KubeVersion, StartupError> {
        let last = image.rsplit('/').next().unwrap_or(image);
        if last.contains('@') {
            return Err(StartupError(format!(
                "image {image:?} is pinned by digest: the stand-in needs a version tag to know which version it is"
            )));
        }
        let (name, tag) = last
            .split_once(':')
            .ok_or_else(|| StartupError(format!("image {image:?} has no tag: expected {component}:vX.Y.Z")))?;
        if name != component {
            return Err(StartupError(format!(
                "exec: \"{component}\": executable file not found in $PATH (image {image:?} is not a {component} image)"
            )));
        }
        let bad = || StartupError(format!("image {image:?}: tag {tag:?} is not a Kubernetes version vX.Y.Z"));
        let numbers = tag.strip_prefix('v').ok_or_else(bad)?;
        let core = numbers.split(['-', '+']).next().unwrap_or_default();
        let parts: Vec<u32> = core.split('.').map(|p| p.parse::<u32>()).collect::<Result<_, _>>().map_err(|_| bad())?;
        let [major, minor, _patch] = parts[..] else {
            return Err(bad());
        };
        Ok(KubeVersion { major, minor, git_version: tag.to_string() })
    }

    /// The `/version` document. Build details the stand-in cannot know (commit, build date, Go
    /// version) are left empty.
    pub fn document(&self) -> serde_json::Value {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        serde_json::json!({
            "major": self.major.to_string(),
            "minor": self.minor.to_string(),
            "gitVersion": self.git_version,
            "gitCommit": "",
            "gitTreeState": "",
            "buildDate": "",
            "goVersion": "",
            "compiler": "gc",
            "platform": format!("linux/{arch}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_version_from_tag() {
        let v = KubeVersion::from_image("kube-apiserver", "registry.k8s.io/kube-apiserver:v1.31.4").unwrap();
        assert_eq!((v.major, v.minor, v.git_version.as_str()), (1, 31, "v1.31.4"));
        let v = KubeVersion::from_image("kube-scheduler", "reg.example:5000/k8s/kube-scheduler:v1.29.0-rc.1").unwrap();
        assert_eq!((v.major, v.minor), (1, 29));
        assert_eq!(v.document()["minor"], "29");
    }

    #[test]
    fn refuses_other_images_and_untagged() {
        assert!(KubeVersion::from_image("kube-apiserver", "registry.k8s.io/kube-scheduler:v1.31.4").is_err());
        assert!(KubeVersion::from_image("kube-apiserver", "registry.k8s.io/kube-apiserver").is_err());
        assert!(KubeVersion::from_image("kube-apiserver", "registry.k8s.io/kube-apiserver:latest").is_err());
        assert!(KubeVersion::from_image("kube-apiserver", "registry.k8s.io/kube-apiserver@sha256:00").is_err());
    }
}
