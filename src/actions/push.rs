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
    // Files of one rank go up in one remote command (each still written atomically); a rank
    // starts only when the one before it is complete, which keeps the marker first and the
    // manifests last.
    let mut written = 0;
    for group in todo.chunk_by(|a, b| rank(&a.path) == rank(&b.path)) {
        for file in group {
            written += 1;
            on_write(written, todo.len(), &file.path);
        }
        remote.put_all(group).await?;
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

    #[tokio::test]
    async fn a_push_writes_differences_in_order_and_a_second_push_nothing() {
        use crate::transport::{Call, MemoryRemote};
        let host = MemoryRemote::new("cp1");
        host.insert_file("/etc/kubernetes/pki/ca.crt", 0o644, 0, 0, "c");
        let files = vec![
            File::new("/etc/kubernetes/manifests/etcd.yaml", 0o600, "e"),
            File::new("/etc/kubernetes/pki/ca.crt", 0o644, "c"),
            File::new("/etc/kubernetes/pki/ca.key", 0o600, "k"),
            File::new("/etc/kubernetes/kubeha/cluster.yaml", 0o644, "m"),
        ];
        let report = push(&host, &files, false, |_, _, _| {}).await.unwrap();
        assert_eq!(report.unchanged, 1);
        let puts: Vec<String> = host
            .take_calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Put { path, .. } => Some(path.display().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            puts,
            [
                "/etc/kubernetes/kubeha/cluster.yaml",
                "/etc/kubernetes/pki/ca.key",
                "/etc/kubernetes/manifests/etcd.yaml"
            ]
        );
        assert_eq!(host.file("/etc/kubernetes/pki/ca.key").unwrap().mode, 0o600);

        let again = push(&host, &files, false, |_, _, _| {}).await.unwrap();
        assert!(again.written.is_empty());
        assert!(
            host.take_calls().iter().all(|c| matches!(c, Call::FileStates { .. })),
            "a converged host was written to"
        );

        // A dry run reports and writes nothing.
        let changed = vec![File::new("/etc/kubernetes/pki/ca.crt", 0o644, "new")];
        let dry = push(&host, &changed, true, |_, _, _| {}).await.unwrap();
        assert_eq!(dry.written, [PathBuf::from("/etc/kubernetes/pki/ca.crt")]);
        assert_eq!(host.file("/etc/kubernetes/pki/ca.crt").unwrap().content, b"c");
    }

    #[test]
    fn summaries_read_well() {
        let r = PushReport { written: vec![PathBuf::from("/a")], unchanged: 3 };
        assert_eq!(r.summary(false), "wrote 1 file, 3 unchanged");
        assert_eq!(r.summary(true), "would write 1 file, 3 unchanged");
        assert_eq!(PushReport { written: vec![], unchanged: 9 }.summary(false), "up to date (9 files unchanged)");
    }
}
