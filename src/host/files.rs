//! Bringing a host's files in line with what was rendered, writing only what differs.
//!
//! [`prepare`] reads the state of every target path in one remote command and works out what
//! to write and what to remove; [`HostPush::apply`] does it. Only files whose content, mode or
//! owner differ are written, each atomically, so a re-run on a converged host writes nothing and
//! restarts nothing, and a run cut short leaves every file either old or new, never partial.
//! Files kubeha wrote before (the host marker lists them) and no longer renders are removed,
//! so switching the load balancer off, say, really stops keepalived.

use std::path::{Path, PathBuf};

use crate::files::File;
use crate::transport::shell::quote;
use crate::transport::{FileState, Remote, TransportError};

use super::layout::MANIFESTS_DIR as MANIFESTS;

/// What a push did (or, in a dry run, would do) on one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PushReport {
    /// Paths written (or to be written), in write order.
    pub written: Vec<PathBuf>,
    /// Paths removed (or to be removed): kubeha's files it no longer renders.
    pub removed: Vec<PathBuf>,
    pub unchanged: usize,
}

impl PushReport {
    pub fn is_empty(&self) -> bool {
        self.written.is_empty() && self.removed.is_empty()
    }

    pub fn summary(&self, dry_run: bool) -> String {
        if self.is_empty() {
            return format!("up to date ({} files unchanged)", self.unchanged);
        }
        let (write, remove) = if dry_run { ("would write", "would remove") } else { ("wrote", "removed") };
        let mut parts = Vec::new();
        if !self.written.is_empty() {
            parts.push(format!("{write} {}", count(self.written.len())));
        }
        if !self.removed.is_empty() {
            parts.push(format!("{remove} {}", count(self.removed.len())));
        }
        parts.push(format!("{} unchanged", self.unchanged));
        parts.join(", ")
    }
}

fn count(n: usize) -> String {
    format!("{n} file{}", if n == 1 { "" } else { "s" })
}

/// Where a file goes in the write order: the marker first, so a host cut off mid-run is still
/// recognised as this cluster's on the re-run; static-pod manifests last, because the kubelet
/// starts a pod as soon as its manifest appears and the pod needs every other file.
fn rank(path: &Path) -> u8 {
    if path == Path::new(crate::marker::PATH) {
        0
    } else if path.starts_with(MANIFESTS) {
        2
    } else {
        1
    }
}

/// Whether the host's copy (if any) differs from `file` in content, mode or owner.
fn differs(file: &File, state: &Option<FileState>) -> bool {
    match state {
        Some(s) => s.sha256 != file.sha256() || s.mode != file.mode || s.uid != 0 || s.gid != 0,
        None => true,
    }
}

/// The files whose state on the host differs from `files`, in write order.
pub fn changes<'a>(files: &'a [File], states: &[Option<FileState>]) -> Vec<&'a File> {
    let mut out: Vec<&File> =
        files.iter().zip(states).filter(|(file, state)| differs(file, state)).map(|(file, _)| file).collect();
    out.sort_by(|a, b| (rank(&a.path), &a.path).cmp(&(rank(&b.path), &b.path)));
    out
}

/// What one host needs, worked out before anything is written.
#[derive(Debug)]
pub struct HostPush<'f> {
    /// Files to write, in write order.
    pub changes: Vec<&'f File>,
    /// Files to remove, manifests first (their pods stop before their configs go).
    pub retired: Vec<PathBuf>,
    pub unchanged: usize,
    /// Manifests of running static pods that are replaced or removed: those pods restart or
    /// stop.
    pub restarting: Vec<PathBuf>,
    /// Manifests the host has and keeps as they are: those pods keep running.
    pub kept: Vec<PathBuf>,
}

impl<'f> HostPush<'f> {
    /// Every file written, nothing compared: for a host with nothing of kubeha's and no static
    /// pod running.
    pub fn everything(files: &'f [File]) -> HostPush<'f> {
        let changes = changes(files, &vec![None; files.len()]);
        HostPush { changes, retired: Vec::new(), unchanged: 0, restarting: Vec::new(), kept: Vec::new() }
    }

    /// Whether a running static pod will restart or stop.
    pub fn restarts_pods(&self) -> bool {
        !self.restarting.is_empty()
    }

    /// The static pods that restart or stop, and how to see it (pods kubeha does not know are
    /// left out).
    pub fn watched_pods(&self, plan: &crate::plan::Plan) -> Vec<super::pods::Watched> {
        self.restarting
            .iter()
            .filter_map(|path| {
                let pod = path.file_stem()?.to_str()?;
                let probe = super::pods::probe(plan, pod)?;
                let stops = self.retired.contains(path);
                Some(super::pods::Watched { pod: pod.to_string(), probe, stops })
            })
            .collect()
    }

    /// The names of the static pods that restart or stop.
    pub fn restarting_pods(&self) -> Vec<&str> {
        self.restarting.iter().filter_map(|p| p.file_stem()?.to_str()).collect()
    }

    /// Leaves running pods alone: their manifests are neither replaced nor removed.
    pub fn keep_pods_running(&mut self) {
        let restarting = std::mem::take(&mut self.restarting);
        let kept = |p: &Path| restarting.iter().any(|r| r == p);
        let before = self.changes.len();
        self.changes.retain(|f| !kept(&f.path));
        self.unchanged += before - self.changes.len();
        self.retired.retain(|p| !kept(p));
        self.kept.extend(restarting);
    }

    pub fn report(&self) -> PushReport {
        PushReport {
            written: self.changes.iter().map(|f| f.path.clone()).collect(),
            removed: self.retired.clone(),
            unchanged: self.unchanged,
        }
    }

    /// Copies every file this push replaces or removes, where the host has it, to `dir` under
    /// its own path (`<dir>/etc/kubernetes/pki/apiserver.crt`), mode and owner kept, in one
    /// remote command; `dir` is made 0700. Nothing to copy sends nothing.
    pub async fn back_up<R: Remote>(&self, remote: &R, dir: &Path) -> Result<(), TransportError> {
        let paths: Vec<&Path> =
            self.changes.iter().map(|f| f.path.as_path()).chain(self.retired.iter().map(PathBuf::as_path)).collect();
        if paths.is_empty() {
            return Ok(());
        }
        remote.run(&backup_script(dir, &paths), b"").await?;
        Ok(())
    }

    /// Removes the retired files, then writes the changes in one remote command: nothing is
    /// renamed into place before every file arrived intact, and the renames go in write order
    /// (the marker first, manifests last), so the kubelet never sees a manifest before the files
    /// its pod needs. Removal comes first: until the new marker is written, the old one still
    /// lists what a cut short run has yet to remove.
    pub async fn apply<R: Remote>(
        &self,
        remote: &R,
        on_write: impl Fn(usize, usize, &Path),
    ) -> Result<(), TransportError> {
        if !self.retired.is_empty() {
            remote.run(&remove_script(&self.retired), b"").await?;
        }
        for (i, file) in self.changes.iter().enumerate() {
            on_write(i + 1, self.changes.len(), &file.path);
        }
        remote.put_all(&self.changes).await
    }
}

/// Compares `files` with what the host has; `previous` is what the host marker says kubeha
/// wrote there last time (empty on a fresh host). With `clean`, first removes the temporary
/// files an interrupted run left in the files' directories (before anything is written: the
/// writes make temporary files of their own there), in the same remote command.
pub async fn prepare<'f, R: Remote>(
    remote: &R,
    files: &'f [File],
    previous: &[PathBuf],
    clean: bool,
) -> Result<HostPush<'f>, TransportError> {
    let candidates: Vec<PathBuf> = previous
        .iter()
        .filter(|p| crate::marker::is_managed(p) && !files.iter().any(|f| &f.path == *p))
        .cloned()
        .collect();
    let mut paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    paths.extend(candidates.iter().cloned());
    let mut states = if clean {
        let mut dirs: Vec<PathBuf> = files.iter().filter_map(|f| f.path.parent().map(Path::to_path_buf)).collect();
        dirs.sort();
        dirs.dedup();
        remote.file_states_after_cleanup(&dirs, &paths).await?
    } else {
        remote.file_states(&paths).await?
    };
    let retired_states = states.split_off(files.len());
    let changes = changes(files, &states);
    let mut retired: Vec<PathBuf> =
        candidates.into_iter().zip(retired_states).filter(|(_, s)| s.is_some()).map(|(p, _)| p).collect();
    retired.sort_by_key(|p| (!p.starts_with(MANIFESTS), p.clone()));
    let mut restarting: Vec<PathBuf> = files
        .iter()
        .zip(&states)
        .filter(|(f, s)| f.path.starts_with(MANIFESTS) && s.is_some() && differs(f, s))
        .map(|(f, _)| f.path.clone())
        .collect();
    restarting.extend(retired.iter().filter(|p| p.starts_with(MANIFESTS)).cloned());
    let kept = files
        .iter()
        .zip(&states)
        .filter(|(f, s)| f.path.starts_with(MANIFESTS) && s.is_some() && !differs(f, s))
        .map(|(f, _)| f.path.clone())
        .collect();
    Ok(HostPush { unchanged: files.len() - changes.len(), changes, retired, restarting, kept })
}

/// Copies each of `paths` that exists to `dir` + its path (`cp -p`: mode, owner, times), then
/// syncs, so the backup is on disk before anything is replaced.
pub fn backup_script(dir: &Path, paths: &[&Path]) -> String {
    let dir = dir.to_string_lossy();
    let mut script = format!(
        "# backing up {} to {dir}\nset -e\numask 077\nmkdir -p {q}\nchmod 700 {q}\n",
        count(paths.len()),
        q = quote(&dir)
    );
    for path in paths {
        let (from, to) = (path.to_string_lossy(), format!("{dir}{}", path.display()));
        let parent = Path::new(&to).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        script.push_str(&format!(
            "if [ -f {from} ]; then mkdir -p {parent}; cp -p -- {from} {to}; fi\n",
            from = quote(&from),
            parent = quote(&parent),
            to = quote(&to)
        ));
    }
    script.push_str(&format!("sync -- {}\n", quote(&dir)));
    script
}

fn remove_script(paths: &[PathBuf]) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| quote(&p.to_string_lossy())).collect();
    let mut dirs: Vec<String> = paths.iter().filter_map(|p| p.parent()).map(|d| quote(&d.to_string_lossy())).collect();
    dirs.dedup();
    format!(
        "# removing {} kubeha no longer renders\nset -e\nrm -f -- {}\nsync -- {}\n",
        count(paths.len()),
        quoted.join(" "),
        dirs.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Call, MemoryRemote};

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

    /// A symbolic link at a target path is never taken for the file, even when what it points
    /// at has the right content: it is replaced by the file. A link on the way to a target
    /// stops the write.
    #[tokio::test]
    async fn a_symlink_at_a_target_is_replaced_and_one_above_it_is_refused() {
        let host = MemoryRemote::new("cp1");
        let files = vec![File::new("/etc/kubernetes/admin.conf", 0o600, "a")];
        host.insert_file("/tmp/evil/admin.conf", 0o600, 0, 0, "a");
        host.insert_symlink("/etc/kubernetes/admin.conf", "/tmp/evil/admin.conf");
        let push = prepare(&host, &files, &[], false).await.unwrap();
        assert_eq!(push.report().written, [PathBuf::from("/etc/kubernetes/admin.conf")]);
        push.apply(&host, |_, _, _| {}).await.unwrap();
        assert!(!host.is_symlink("/etc/kubernetes/admin.conf"));
        assert_eq!(host.file("/etc/kubernetes/admin.conf").unwrap().content, b"a");
        assert!(prepare(&host, &files, &[], false).await.unwrap().report().is_empty());

        host.insert_symlink("/etc/kubernetes/pki", "/tmp/evil");
        let files = vec![File::new("/etc/kubernetes/pki/ca.key", 0o600, "k")];
        let push = prepare(&host, &files, &[], false).await.unwrap();
        let err = push.apply(&host, |_, _, _| {}).await.unwrap_err();
        assert!(err.to_string().contains("/etc/kubernetes/pki is a symbolic link"), "{err}");
        assert!(host.file("/tmp/evil/ca.key").is_none() && host.file("/etc/kubernetes/pki/ca.key").is_none());
    }

    fn puts(host: &MemoryRemote) -> Vec<String> {
        host.take_calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Put { path, .. } => Some(path.display().to_string()),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_push_writes_differences_in_order_and_a_second_push_nothing() {
        let host = MemoryRemote::new("cp1");
        host.insert_file("/etc/kubernetes/pki/ca.crt", 0o644, 0, 0, "c");
        let files = vec![
            File::new("/etc/kubernetes/manifests/etcd.yaml", 0o600, "e"),
            File::new("/etc/kubernetes/pki/ca.crt", 0o644, "c"),
            File::new("/etc/kubernetes/pki/ca.key", 0o600, "k"),
            File::new("/etc/kubernetes/kubeha/cluster.yaml", 0o644, "m"),
        ];
        let push = prepare(&host, &files, &[], false).await.unwrap();
        assert_eq!(push.unchanged, 1);
        assert!(!push.restarts_pods(), "a manifest written for the first time restarts nothing");
        push.apply(&host, |_, _, _| {}).await.unwrap();
        assert_eq!(
            puts(&host),
            [
                "/etc/kubernetes/kubeha/cluster.yaml",
                "/etc/kubernetes/pki/ca.key",
                "/etc/kubernetes/manifests/etcd.yaml"
            ]
        );
        assert_eq!(host.file("/etc/kubernetes/pki/ca.key").unwrap().mode, 0o600);

        let again = prepare(&host, &files, &[], false).await.unwrap();
        assert!(again.report().is_empty());
        again.apply(&host, |_, _, _| {}).await.unwrap();
        assert!(
            host.take_calls().iter().all(|c| matches!(c, Call::FileStates { .. })),
            "a converged host was written to"
        );

        let changed = vec![File::new("/etc/kubernetes/manifests/etcd.yaml", 0o600, "e2")];
        assert!(
            prepare(&host, &changed, &[], false).await.unwrap().restarts_pods(),
            "a replaced manifest restarts its pod"
        );
    }

    #[tokio::test]
    async fn files_no_longer_rendered_are_retired_manifests_first_and_only_in_kubehas_directories() {
        let host = MemoryRemote::new("cp1");
        for path in [
            "/etc/kubernetes/keepalived/keepalived.conf",
            "/etc/kubernetes/manifests/keepalived.yaml",
            "/etc/kubernetes/manifests/etcd.yaml",
            "/etc/passwd",
        ] {
            host.insert_file(path, 0o600, 0, 0, "x");
        }
        let files = vec![File::new("/etc/kubernetes/manifests/etcd.yaml", 0o600, "x")];
        let previous: Vec<PathBuf> = [
            "/etc/kubernetes/keepalived/keepalived.conf",
            "/etc/kubernetes/manifests/keepalived.yaml",
            "/etc/kubernetes/manifests/etcd.yaml",
            "/etc/kubernetes/manifests/gone-already.yaml",
            "/etc/passwd",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let push = prepare(&host, &files, &previous, false).await.unwrap();
        assert_eq!(
            push.retired,
            [
                PathBuf::from("/etc/kubernetes/manifests/keepalived.yaml"),
                PathBuf::from("/etc/kubernetes/keepalived/keepalived.conf")
            ]
        );
        assert!(push.restarts_pods(), "removing a manifest stops its pod");
        assert_eq!(push.restarting_pods(), ["keepalived"]);
        assert!(push.changes.is_empty());
        assert_eq!(push.report().summary(true), "would remove 2 files, 1 unchanged");
        let script = remove_script(&push.retired);
        assert!(script.starts_with("# removing 2 files"));
        assert!(script.contains(
            "rm -f -- '/etc/kubernetes/manifests/keepalived.yaml' '/etc/kubernetes/keepalived/keepalived.conf'"
        ));
    }

    #[test]
    fn the_backup_script_copies_what_exists_under_its_own_path() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc/it's");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("a.crt"), "old").unwrap();
        std::fs::set_permissions(etc.join("a.crt"), std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        let dir = root.path().join("backup/2026-11-30T12-00-00Z");
        let (a, missing) = (etc.join("a.crt"), etc.join("missing.crt"));
        let script = backup_script(&dir, &[a.as_path(), missing.as_path()]);
        assert!(script.starts_with("# backing up 2 files to "), "{script}");
        let out = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let copy = Path::new(&format!("{}{}", dir.display(), a.display())).to_path_buf();
        assert_eq!(std::fs::read_to_string(&copy).unwrap(), "old");
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&copy).unwrap().mode() & 0o777, 0o640);
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert!(!Path::new(&format!("{}{}", dir.display(), missing.display())).exists());
    }

    #[test]
    fn summaries_read_well() {
        let r = PushReport { written: vec![PathBuf::from("/a")], removed: vec![], unchanged: 3 };
        assert_eq!(r.summary(false), "wrote 1 file, 3 unchanged");
        assert_eq!(r.summary(true), "would write 1 file, 3 unchanged");
        let none = PushReport { unchanged: 9, ..PushReport::default() };
        assert_eq!(none.summary(false), "up to date (9 files unchanged)");
    }
}
