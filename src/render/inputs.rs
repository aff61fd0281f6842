//! Telling the kubelet a static pod's inputs changed.
//!
//! The kubelet restarts a static pod when its manifest changes, and only then: a certificate or
//! config file replaced under a running pod goes unnoticed by the pod (a single-file hostPath
//! mount even keeps the old inode). So every manifest carries [`INPUTS_HASH_ANNOTATION`], a hash
//! of every file kubeha writes that the pod mounts; a changed certificate changes the manifests
//! of exactly the pods that mount it. [`stamp_restart`] restarts a pod when nothing it uses
//! changed.

use std::path::Path;

use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::pod::StaticPod;
use crate::files::File;
use crate::host::layout::RELOADED_IN_PLACE;

/// The annotation holding the SHA-256 of the files a pod mounts.
pub const INPUTS_HASH_ANNOTATION: &str = "kubeha.io/config-hash";

/// The annotation a forced restart sets (any new value restarts the pod).
pub const RESTART_ANNOTATION: &str = "kubeha.io/restart";

/// HMAC-SHA-256 under `key` over the paths and contents of `files`, hex: changes whenever any
/// of them does, and tells nothing about them to whoever does not hold the key.
pub fn config_hash(key: &[u8], files: &[&File]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    for f in files {
        mac.update(f.path.as_os_str().as_encoded_bytes());
        mac.update(&[0]);
        mac.update(&Sha256::digest(&f.content));
    }
    hex::encode(mac.finalize().into_bytes())
}

/// The files among `host_files` that `pod` mounts (a mounted file, or anything under a mounted
/// directory), in the order given, but those its program reloads in place
/// ([`RELOADED_IN_PLACE`]): a change to them must not restart the pod.
pub fn mounted_by<'f>(pod: &StaticPod, host_files: &'f [File]) -> Vec<&'f File> {
    let reloaded = |f: &File| RELOADED_IN_PLACE.iter().any(|(path, _)| f.path == Path::new(path));
    host_files
        .iter()
        .filter(|f| !reloaded(f) && pod.volumes.iter().any(|v| f.path.starts_with(Path::new(&v.path))))
        .collect()
}

/// Annotates `pod` with the keyed hash of the files it mounts.
pub fn annotate(pod: StaticPod, host_files: &[File], key: &[u8]) -> StaticPod {
    let hash = config_hash(key, &mounted_by(&pod, host_files));
    pod.annotate(INPUTS_HASH_ANNOTATION, hash)
}

/// `manifest` with a restart stamp: an annotation that, given a new `stamp`, makes the kubelet
/// restart the pod. kubeha's manifests always have an annotations block (the inputs hash), so
/// the stamp goes in as one more line of it, keeping the keys sorted.
pub fn stamp_restart(manifest: &File, stamp: &str) -> File {
    let text = String::from_utf8_lossy(&manifest.content);
    let line = format!("    {RESTART_ANNOTATION}: {}", serde_json::Value::String(stamp.to_string()));
    let old = format!("    {RESTART_ANNOTATION}:");
    let mut lines: Vec<String> = text.lines().filter(|l| !l.starts_with(&old)).map(str::to_string).collect();
    let Some(start) = lines.iter().position(|l| l == "  annotations:") else {
        return manifest.clone();
    };
    let end = lines[start + 1..].iter().position(|l| !l.starts_with("    ")).map_or(lines.len(), |n| start + 1 + n);
    let at = (start + 1..end).find(|&i| lines[i] > line).unwrap_or(end);
    lines.insert(at, line);
    let mut content = lines.join("\n");
    if text.ends_with('\n') {
        content.push('\n');
    }
    File::new(manifest.path.clone(), manifest.mode, content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::pod::HostPathVolume;

    #[test]
    fn config_hash_depends_on_path_and_content() {
        let a = File::new("/a", 0o644, "x");
        let b = File::new("/b", 0o644, "x");
        let a2 = File::new("/a", 0o644, "y");
        assert_ne!(config_hash(b"k", &[&a]), config_hash(b"k", &[&b]));
        assert_ne!(config_hash(b"k", &[&a]), config_hash(b"k", &[&a2]));
        assert_eq!(config_hash(b"k", &[&a]), config_hash(b"k", &[&File::new("/a", 0o600, "x")]));
        // Without the key, the hash of a config cannot be recomputed from a guessed content.
        assert_ne!(config_hash(b"k", &[&a]), config_hash(b"other key", &[&a]));
    }

    #[test]
    fn a_pod_hashes_exactly_the_files_it_mounts() {
        let pod = StaticPod::new("etcd", "img".into(), vec!["etcd".into()]).mount([HostPathVolume::dir(
            "certs",
            "/etc/kubernetes/pki/etcd",
            true,
        )]);
        let files = vec![
            File::new("/etc/kubernetes/pki/ca.crt", 0o644, "ca"),
            File::new("/etc/kubernetes/pki/etcd/server.crt", 0o644, "s"),
            File::new("/etc/kubernetes/pki/etcd-other/x", 0o644, "not under the mount"),
        ];
        let mounted: Vec<&Path> = mounted_by(&pod, &files).iter().map(|f| f.path.as_path()).collect();
        assert_eq!(mounted, [Path::new("/etc/kubernetes/pki/etcd/server.crt")]);
        let before = annotate(pod.clone(), &files, b"k").annotations[INPUTS_HASH_ANNOTATION].clone();
        let mut renewed = files.clone();
        renewed[1] = File::new("/etc/kubernetes/pki/etcd/server.crt", 0o644, "renewed");
        assert_ne!(annotate(pod.clone(), &renewed, b"k").annotations[INPUTS_HASH_ANNOTATION], before);
        renewed[0] = File::new("/etc/kubernetes/pki/ca.crt", 0o644, "unmounted change");
        renewed[1] = files[1].clone();
        assert_eq!(annotate(pod, &renewed, b"k").annotations[INPUTS_HASH_ANNOTATION], before);
    }

    #[test]
    fn a_restart_stamp_is_one_sorted_annotation_line() {
        let manifest = File::new(
            "/etc/kubernetes/manifests/etcd.yaml",
            0o600,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n    a.io/x: \"1\"\n    kubeha.io/config-hash: \"ab\"\n  labels:\n    component: etcd\n",
        );
        let once = stamp_restart(&manifest, "2026-11-30T12:00:00Z");
        let text = String::from_utf8(once.content.clone()).unwrap();
        assert_eq!(
            text,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  annotations:\n    a.io/x: \"1\"\n    kubeha.io/config-hash: \"ab\"\n    \
             kubeha.io/restart: \"2026-11-30T12:00:00Z\"\n  labels:\n    component: etcd\n"
        );
        let again = stamp_restart(&once, "later");
        let text = String::from_utf8(again.content.clone()).unwrap();
        assert_eq!(text.matches("kubeha.io/restart").count(), 1);
        assert!(text.contains("kubeha.io/restart: \"later\"\n  labels:"));
        assert_eq!(once.mode, 0o600);
    }
}
