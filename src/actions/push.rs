//! Bringing a host's files in line with what was rendered, writing only what differs.
//!
//! One remote command reads the state of every target path; only files whose content, mode or
//! owner differ are written, each atomically. So a re-run on a converged host writes nothing and
//! restarts nothing, and a run cut short leaves every file either old or new, never partial.

use std::path::{Path, PathBuf};

use super::facts::MARKER_PATH;
use crate::files::File;
use crate::transport::{FileState, Remote, TransportError};

/// What a push did (or, in a dry run, would do) on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Paths written (or to be written), in write order.
    pub written: Vec<PathBuf>,
    pub unchanged: usize,
}

impl PushReport {
    pub fn summary(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would write" } else { "wrote" };
        match self.written.len() {
            0 => format!("up to date ({} files unchanged)", self.unchanged),
            n => format!("{verb} {n} file{}, {} unchanged", if n == 1 { "" } else { "s" }, self.unchanged),
        }
    }
}

/// Where a file goes in the write order: the marker first, so a host cut off mid-run is still
/// recognised as this cluster's on the re-run; static-pod manifests last, because the kubelet
/// starts a pod as soon as its manifest appears and the pod needs every other file.
fn rank(path: &Path) -> u8 {
    if path == Path::new(MARKER_PATH) {
        0
    } else if path.starts_with("/etc/kubernetes/manifests") {
        2
    } else {
        1
    }
}

/// The files whose state on the host differs from `files`, in write order.
pub fn changes<'a>(files: &'a [File], states: &[Option<FileState>]) -> Vec<&'a File> {
    let mut out: Vec<&File> = files
        .iter()
        .zip(states)
        .filter(|(file, state)| match state {
            Some(s) => s.sha256 != file.sha256() || s.mode != file.mode || s.uid != 0 || s.gid != 0,
            None => true,
        })
        .map(|(file, _)| file)
        .collect();
    out.sort_by(|a, b| (rank(&a.path), &a.path).cmp(&(rank(&b.path), &b.path)));
    out
}

/// Writes what differs on `remote`; `on_write` hears each path just before it is written.
pub async fn push<R: Remote>(
    remote: &R,
    files: &[File],
    dry_run: bool,
    on_write: impl Fn(usize, usize, &Path),
) -> Result<PushReport, TransportError> {
    let paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    let states = remote.file_states(&paths).await?;
    let todo = changes(files, &states);
    let report =
        PushReport { written: todo.iter().map(|f| f.path.clone()).collect(), unchanged: files.len() - todo.len() };
    if dry_run {
        return Ok(report);
    }
    for (i, file) in todo.iter().enumerate() {
        on_write(i + 1, todo.len(), &file.path);
        remote.put(file).await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(f: &File) -> Option<FileState> {
        Some(FileState { sha256: f.sha256(), mode: f.mode, uid: 0, gid: 0 })
    }

    #[test]
    fn only_differences_are_written_marker_first_manifests_last() {
        let files = vec![
            File::new("/etc/kubernetes/admin.conf", 0o600, "a"),
            File::new("/etc/kubernetes/kubeha/cluster.yaml", 0o644, "m"),
            File::new("/etc/kubernetes/manifests/etcd.yaml", 0o600, "e"),
            File::new("/etc/kubernetes/pki/ca.crt", 0o644, "c"),
            File::new("/var/lib/kubelet/config.yaml", 0o644, "k"),
        ];
        let mut states: Vec<Option<FileState>> = files.iter().map(state).collect();
        assert!(changes(&files, &states).is_empty());

        states[0].as_mut().unwrap().mode = 0o644; // admin.conf readable by others
        states[1] = None; // marker missing
        states[2].as_mut().unwrap().sha256 = "old".into(); // manifest changed
        states[3].as_mut().unwrap().uid = 1000; // wrong owner
        let order: Vec<&str> = changes(&files, &states).iter().map(|f| f.path.to_str().unwrap()).collect();
        assert_eq!(
            order,
            [
                "/etc/kubernetes/kubeha/cluster.yaml",
                "/etc/kubernetes/admin.conf",
                "/etc/kubernetes/pki/ca.crt",
                "/etc/kubernetes/manifests/etcd.yaml"
            ]
        );
    }

    #[test]
    fn summaries_read_well() {
        let r = PushReport { written: vec![PathBuf::from("/a")], unchanged: 3 };
        assert_eq!(r.summary(false), "wrote 1 file, 3 unchanged");
        assert_eq!(r.summary(true), "would write 1 file, 3 unchanged");
        assert_eq!(PushReport { written: vec![], unchanged: 9 }.summary(false), "up to date (9 files unchanged)");
    }
}
