//! hostPath volumes as the kubelet sets them up, for containers that run on the host itself.
//!
//! Every volume's `type` is checked (or its path created) before the pod starts, as the kubelet
//! does; a failed check keeps the pod from starting with the kubelet's own event text. Where a
//! container mounts a host path at the *same* path, writable, the process simply sees the host's
//! file and no mount is needed. Otherwise the container gets a private mount namespace with the
//! host path bind-mounted at `mountPath` (read-only where asked), which needs the mount point to
//! exist on the host. `*OrCreate` types create paths only inside the host's private directories:
//! everything else is the machine's own filesystem, which the lab never changes.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::manifest::{Container, PodSpec};
use crate::hostfs::is_private;

/// One bind mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// What setting up a pod's volumes gave: the binds its container needs and notes for the log.
#[derive(Debug, Default)]
pub struct Volumes {
    pub binds: Vec<Bind>,
    pub notes: Vec<String>,
}

/// Checks and creates the pod's hostPath volumes and plans the container's mounts. `Err` is the
/// event text explaining why the pod cannot start.
pub fn set_up(spec: &PodSpec, container: &Container) -> Result<Volumes, String> {
    let mut out = Volumes::default();
    for v in &spec.volumes {
        let Some(hp) = &v.host_path else {
            return Err(format!("volume {:?}: the lab kubelet supports hostPath volumes only", v.name));
        };
        let fail = |why: String| format!("MountVolume.SetUp failed for volume {:?} : {why}", v.name);
        let path = Path::new(&hp.path);
        if !path.is_absolute() {
            return Err(fail(format!("hostPath {} is not absolute", hp.path)));
        }
        check_type(path, hp.kind.as_deref().unwrap_or(""), &mut out.notes).map_err(fail)?;
    }
    for m in &container.volume_mounts {
        let Some(hp) = spec.volumes.iter().find(|v| v.name == m.name).and_then(|v| v.host_path.as_ref()) else {
            return Err(format!("container {:?}: volumeMount {:?} names no volume", container.name, m.name));
        };
        if m.sub_path.is_some() {
            return Err(format!("volumeMount {:?}: subPath is not supported by the lab kubelet", m.name));
        }
        let (source, target) = (PathBuf::from(&hp.path), PathBuf::from(&m.mount_path));
        if source == target && !m.read_only {
            continue;
        }
        let Ok(meta) = std::fs::metadata(&source) else {
            return Err(format!(
                "MountVolume.SetUp failed for volume {:?} : hostPath {} does not exist",
                m.name,
                source.display()
            ));
        };
        match std::fs::metadata(&target) {
            Ok(t) if t.is_dir() == meta.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "mount point {} for volume {:?} is a {} but {} is not",
                    target.display(),
                    m.name,
                    if meta.is_dir() { "file" } else { "directory" },
                    source.display()
                ));
            }
            Err(_) => {
                return Err(format!(
                    "mount point {} for volume {:?} does not exist on this lab host: the lab runs containers on \
                     the host's filesystem, so mountPath must exist there (or equal hostPath)",
                    target.display(),
                    m.name
                ));
            }
        }
        out.binds.push(Bind { source, target, read_only: m.read_only });
    }
    // Parents before children, so a nested mount is not hidden by its parent's.
    out.binds.sort_by_key(|b| b.target.components().count());
    Ok(out)
}

/// The kubelet's hostPath type check (`pkg/volume/hostpath`), creating `*OrCreate` paths.
fn check_type(path: &Path, kind: &str, notes: &mut Vec<String>) -> Result<(), String> {
    let meta = std::fs::metadata(path);
    let shown = path.display();
    let is = |want: &str, ok: bool| {
        if ok { Ok(()) } else { Err(format!("hostPath type check failed: {shown} is not a {want}")) }
    };
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" | "FileOrCreate" if meta.is_err() => {
            if !is_private(path) {
                notes.push(format!(
                    "hostPath {shown} ({kind}) not created: it is outside the lab host's private directories"
                ));
                return Ok(());
            }
            let made = if kind == "DirectoryOrCreate" {
                std::fs::create_dir_all(path)
            } else {
                std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))
                    .and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(path).map(drop))
            };
            made.map_err(|e| format!("cannot create {shown}: {e}"))
        }
        "DirectoryOrCreate" | "Directory" => is("directory", meta.is_ok_and(|m| m.is_dir())),
        "FileOrCreate" | "File" => is("file", meta.is_ok_and(|m| m.is_file())),
        "Socket" => is("socket", meta.is_ok_and(|m| m.file_type().is_socket())),
        "CharDevice" => is("character device", meta.is_ok_and(|m| m.file_type().is_char_device())),
        "BlockDevice" => is("block device", meta.is_ok_and(|m| m.file_type().is_block_device())),
        other => Err(format!("hostPath type {other:?} is not a known type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::manifest::parse;

    fn pod(volumes: &str, mounts: &str) -> super::super::manifest::Manifest {
        let text = format!(
            "metadata: {{name: p}}\nspec:\n  containers: [{{name: c, command: [sleep], volumeMounts: [{mounts}]}}]\n  volumes: [{volumes}]\n"
        );
        parse(&text).unwrap()
    }

    #[test]
    fn type_checks_fail_like_the_kubelet() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.conf");
        let m = pod(&format!("{{name: cfg, hostPath: {{path: {}, type: File}}}}", missing.display()), "");
        let e = set_up(&m.spec, &m.spec.containers[0]).unwrap_err();
        assert_eq!(
            e,
            format!(
                "MountVolume.SetUp failed for volume \"cfg\" : hostPath type check failed: {} is not a file",
                missing.display()
            )
        );
        std::fs::write(&missing, "x").unwrap();
        assert!(set_up(&m.spec, &m.spec.containers[0]).is_ok());
        let m = pod(&format!("{{name: d, hostPath: {{path: {}, type: Directory}}}}", missing.display()), "");
        assert!(set_up(&m.spec, &m.spec.containers[0]).unwrap_err().contains("is not a directory"));
    }

    #[test]
    fn only_private_paths_are_created() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("new");
        let m = pod(&format!("{{name: d, hostPath: {{path: {}, type: DirectoryOrCreate}}}}", outside.display()), "");
        let v = set_up(&m.spec, &m.spec.containers[0]).unwrap();
        assert!(!outside.exists());
        assert!(v.notes[0].contains("not created"), "{:?}", v.notes);
    }

    #[test]
    fn mounts_at_other_paths_need_binds_and_mount_points() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        let vol = format!("{{name: d, hostPath: {{path: {}}}}}", src.display());
        let same = pod(&vol, &format!("{{name: d, mountPath: {}}}", src.display()));
        assert!(set_up(&same.spec, &same.spec.containers[0]).unwrap().binds.is_empty());
        let ro = pod(&vol, &format!("{{name: d, mountPath: {}, readOnly: true}}", src.display()));
        assert_eq!(set_up(&ro.spec, &ro.spec.containers[0]).unwrap().binds.len(), 1);
        let tgt = dir.path().join("tgt");
        let other = pod(&vol, &format!("{{name: d, mountPath: {}}}", tgt.display()));
        let e = set_up(&other.spec, &other.spec.containers[0]).unwrap_err();
        assert!(e.contains("mount point") && e.contains("does not exist"), "{e}");
        std::fs::create_dir(&tgt).unwrap();
        let b = set_up(&other.spec, &other.spec.containers[0]).unwrap().binds;
        assert_eq!(b, [Bind { source: src, target: tgt, read_only: false }]);
    }
}
