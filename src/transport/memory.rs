//! An in-memory [`Remote`] for fast tests of code built on the trait (phases, planners).
//!
//! It keeps a fake filesystem that `put`, `file_states` and `remove_stale_temp_files` act on
//! with the same rules as the real scripts (absolute paths, parent directories created, files
//! owned by root with the given mode, regular files only), and records every call in order.
//! `exec` answers from a handler the test installs (by default: status 0, no output);
//! `open_tcp` connects to in-memory services the test registers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::{FileState, Output, Remote, TransportError, Tunnel, put, shell};
use crate::files::File;

/// Answers an `exec(command, stdin)`.
pub type ExecHandler = dyn Fn(&str, &[u8]) -> Output + Send + Sync;
/// Serves one connection made with `open_tcp`.
pub type TcpHandler = dyn Fn(tokio::io::DuplexStream) + Send + Sync;

/// One call made on a [`MemoryRemote`].
#[derive(Clone, PartialEq, Eq)]
pub enum Call {
    Exec { command: String, stdin: Vec<u8> },
    Put { path: PathBuf, mode: u32, sha256: String },
    FileStates { paths: Vec<PathBuf> },
    RemoveStaleTempFiles { dirs: Vec<PathBuf> },
    OpenTcp { address: String, port: u16 },
}

/// Shows stdin's length only: it may be secret.
impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::Exec { command, stdin } => {
                f.debug_struct("Exec").field("command", command).field("stdin_bytes", &stdin.len()).finish()
            }
            Call::Put { path, mode, sha256 } => f
                .debug_struct("Put")
                .field("path", path)
                .field("mode", &format_args!("{mode:04o}"))
                .field("sha256", sha256)
                .finish(),
            Call::FileStates { paths } => f.debug_struct("FileStates").field("paths", paths).finish(),
            Call::RemoveStaleTempFiles { dirs } => f.debug_struct("RemoveStaleTempFiles").field("dirs", dirs).finish(),
            Call::OpenTcp { address, port } => {
                f.debug_struct("OpenTcp").field("address", address).field("port", port).finish()
            }
        }
    }
}

/// A file in the fake filesystem.
#[derive(Clone, PartialEq, Eq)]
pub struct MemoryFile {
    pub content: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Debug for MemoryFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryFile")
            .field("bytes", &self.content.len())
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish()
    }
}

#[derive(Default)]
struct State {
    files: BTreeMap<PathBuf, MemoryFile>,
    dirs: BTreeSet<PathBuf>,
    /// Symbolic links, by path, with what they point at (never followed).
    links: BTreeMap<PathBuf, PathBuf>,
    calls: Vec<Call>,
    failing_puts: BTreeSet<PathBuf>,
    exec: Option<Arc<ExecHandler>>,
    services: HashMap<(String, u16), Arc<TcpHandler>>,
}

/// An in-memory host.
pub struct MemoryRemote {
    name: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRemote").field("name", &self.name).finish_non_exhaustive()
    }
}

impl MemoryRemote {
    pub fn new(name: impl Into<String>) -> MemoryRemote {
        MemoryRemote { name: name.into(), state: Mutex::new(State::default()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Places a file as if the host already had it (parent directories included).
    pub fn insert_file(&self, path: impl Into<PathBuf>, mode: u32, uid: u32, gid: u32, content: impl Into<Vec<u8>>) {
        let path = path.into();
        let mut state = self.state();
        add_parents(&mut state.dirs, &path);
        state.files.insert(path, MemoryFile { content: content.into(), mode, uid, gid });
    }

    /// Creates a directory (and its parents).
    pub fn insert_dir(&self, path: impl Into<PathBuf>) {
        let path = path.into();
        let mut state = self.state();
        add_parents(&mut state.dirs, &path);
        state.dirs.insert(path);
    }

    /// Places a symbolic link at `path` (parents created). Like the real scripts, kubeha's
    /// operations never follow it: `file_states` reports it as a link, a put replaces it, and a
    /// put into a directory below it is refused.
    pub fn insert_symlink(&self, path: impl Into<PathBuf>, target: impl Into<PathBuf>) {
        let path = path.into();
        let mut state = self.state();
        add_parents(&mut state.dirs, &path);
        state.files.remove(&path);
        state.dirs.remove(&path);
        state.links.insert(path, target.into());
    }

    /// Removes the file at `path`, if any.
    pub fn remove_file(&self, path: impl AsRef<Path>) -> Option<MemoryFile> {
        self.state().files.remove(path.as_ref())
    }

    /// Whether `path` is a symbolic link.
    pub fn is_symlink(&self, path: impl AsRef<Path>) -> bool {
        self.state().links.contains_key(path.as_ref())
    }

    /// The file at `path`, if any.
    pub fn file(&self, path: impl AsRef<Path>) -> Option<MemoryFile> {
        self.state().files.get(path.as_ref()).cloned()
    }

    /// Every file path, sorted.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.state().files.keys().cloned().collect()
    }

    /// Whether `path` is a directory.
    pub fn is_dir(&self, path: impl AsRef<Path>) -> bool {
        self.state().dirs.contains(path.as_ref())
    }

    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The calls made so far, clearing the record.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state().calls)
    }

    /// Answers `exec` with `handler` from now on.
    pub fn on_exec(&self, handler: impl Fn(&str, &[u8]) -> Output + Send + Sync + 'static) {
        self.state().exec = Some(Arc::new(handler));
    }

    /// Makes every later `put` of `path` fail as a remote error would.
    pub fn fail_puts_of(&self, path: impl Into<PathBuf>) {
        self.state().failing_puts.insert(path.into());
    }

    /// Serves `open_tcp(address, port)` with `handler`, called with the host's end of each
    /// connection; it is called synchronously, so it should spawn a task for async work.
    pub fn listen_tcp(
        &self,
        address: &str,
        port: u16,
        handler: impl Fn(tokio::io::DuplexStream) + Send + Sync + 'static,
    ) {
        self.state().services.insert((address.to_string(), port), Arc::new(handler));
    }

    fn invalid(&self, path: &Path) -> TransportError {
        TransportError::InvalidPath { host: self.name.clone(), path: path.to_path_buf() }
    }
}

fn add_parents(dirs: &mut BTreeSet<PathBuf>, path: &Path) {
    for ancestor in path.ancestors().skip(1) {
        if !ancestor.as_os_str().is_empty() {
            dirs.insert(ancestor.to_path_buf());
        }
    }
}

impl Remote for MemoryRemote {
    fn host(&self) -> &str {
        &self.name
    }

    async fn exec(&self, command: &str, stdin: &[u8]) -> Result<Output, TransportError> {
        let handler = {
            let mut state = self.state();
            state.calls.push(Call::Exec { command: command.to_string(), stdin: stdin.to_vec() });
            state.exec.clone()
        };
        Ok(handler.map(|h| h(command, stdin)).unwrap_or_default())
    }

    async fn open_tcp(&self, address: &str, port: u16) -> Result<Tunnel, TransportError> {
        let service = {
            let mut state = self.state();
            state.calls.push(Call::OpenTcp { address: address.to_string(), port });
            state.services.get(&(address.to_string(), port)).cloned()
        };
        let Some(service) = service else {
            return Err(TransportError::TargetUnreachable {
                host: self.name.clone(),
                target: format!("{address}:{port}"),
                reason: "connect failed".into(),
            });
        };
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        service(theirs);
        Ok(Box::new(ours))
    }

    async fn put(&self, file: &File) -> Result<(), TransportError> {
        self.put_all(std::slice::from_ref(file)).await
    }

    /// Like the real one: paths are checked before anything is sent; every file of the batch is
    /// recorded as sent, and a file set to fail ([`fail_puts_of`](MemoryRemote::fail_puts_of))
    /// or a parent that is a file stops the whole batch before any is written; then the files
    /// are renamed into place in order, so a target that is a directory fails there, after the
    /// files before it.
    async fn put_all<F: std::borrow::Borrow<File> + Sync>(&self, files: &[F]) -> Result<(), TransportError> {
        let files: Vec<&File> = files.iter().map(|f| f.borrow()).collect();
        if files.is_empty() {
            return Ok(());
        }
        if let Some(path) = put::invalid_path(&files) {
            return Err(self.invalid(&path));
        }
        let mut state = self.state();
        for file in &files {
            state.calls.push(Call::Put { path: file.path.clone(), mode: file.mode, sha256: file.sha256() });
        }
        let failed = |status: u32, stderr: String| TransportError::CommandFailed {
            host: self.name.clone(),
            step: put::writing(&files),
            status,
            stderr,
        };
        if let Some(file) = files.iter().find(|f| state.failing_puts.contains(&f.path)) {
            return Err(failed(1, format!("kubeha-put: simulated failure writing {}", file.path.display())));
        }
        let linked = files.iter().find_map(|f| f.path.ancestors().skip(1).find(|a| state.links.contains_key(*a)));
        if let Some(link) = linked {
            return Err(failed(
                put::SYMLINKED_DIRECTORY,
                format!("kubeha-put: {} is a symbolic link: kubeha writes only into real directories", link.display()),
            ));
        }
        let parent_file = files.iter().find_map(|f| f.path.ancestors().skip(1).find(|a| state.files.contains_key(*a)));
        if let Some(parent) = parent_file {
            return Err(failed(10, format!("kubeha-put: cannot create directories ({} is a file)", parent.display())));
        }
        for file in &files {
            if state.dirs.contains(&file.path) {
                return Err(failed(16, format!("kubeha-put: cannot rename over directory {}", file.path.display())));
            }
            add_parents(&mut state.dirs, &file.path);
            state.links.remove(&file.path);
            let content = MemoryFile { content: file.content.clone(), mode: file.mode & 0o7777, uid: 0, gid: 0 };
            state.files.insert(file.path.clone(), content);
        }
        Ok(())
    }

    async fn file_states(&self, paths: &[PathBuf]) -> Result<Vec<Option<FileState>>, TransportError> {
        let mut state = self.state();
        state.calls.push(Call::FileStates { paths: paths.to_vec() });
        paths
            .iter()
            .map(|path| {
                if !path.is_absolute() {
                    return Err(self.invalid(path));
                }
                if state.dirs.contains(path) {
                    return Err(TransportError::NotAFile { host: self.name.clone(), path: path.clone() });
                }
                if state.links.contains_key(path) {
                    return Ok(Some(FileState::symlink(0, 0)));
                }
                Ok(state.files.get(path).map(|f| FileState {
                    sha256: hex::encode(Sha256::digest(&f.content)),
                    mode: f.mode,
                    uid: f.uid,
                    gid: f.gid,
                }))
            })
            .collect()
    }

    async fn file_states_after_cleanup(
        &self,
        dirs: &[PathBuf],
        paths: &[PathBuf],
    ) -> Result<Vec<Option<FileState>>, TransportError> {
        self.remove_stale_temp_files(dirs).await?;
        self.file_states(paths).await
    }

    async fn remove_stale_temp_files(&self, dirs: &[PathBuf]) -> Result<Vec<PathBuf>, TransportError> {
        let mut state = self.state();
        state.calls.push(Call::RemoveStaleTempFiles { dirs: dirs.to_vec() });
        if let Some(bad) = dirs.iter().find(|d| !d.is_absolute()) {
            return Err(self.invalid(bad));
        }
        let stale: Vec<PathBuf> = state
            .files
            .keys()
            .filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                p.parent().is_some_and(|parent| dirs.iter().any(|d| d == parent))
                    && name.starts_with(shell::TEMP_PREFIX)
                    && name.ends_with(shell::TEMP_SUFFIX)
            })
            .cloned()
            .collect();
        for path in &stale {
            state.files.remove(path);
        }
        Ok(stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn put_then_states_and_records() {
        let host = MemoryRemote::new("cp1");
        host.insert_file("/etc/kubernetes/old.conf", 0o644, 1000, 1000, "old");
        let file = File::new("/etc/kubernetes/pki/ca.key", 0o600, "secret");
        host.put(&file).await.unwrap();
        assert!(host.is_dir("/etc/kubernetes/pki"));
        let states = host
            .file_states(&["/etc/kubernetes/pki/ca.key".into(), "/missing".into(), "/etc/kubernetes/old.conf".into()])
            .await
            .unwrap();
        assert_eq!(states[0], Some(FileState { sha256: file.sha256(), mode: 0o600, uid: 0, gid: 0 }));
        assert_eq!(states[1], None);
        assert_eq!(states[2].as_ref().unwrap().uid, 1000);
        let err = host.file_states(&["/etc/kubernetes".into()]).await.unwrap_err();
        assert!(matches!(err, TransportError::NotAFile { .. }));
        let calls = host.take_calls();
        assert!(matches!(&calls[0], Call::Put { path, mode: 0o600, .. } if path == &file.path));
        assert!(!format!("{calls:?}").contains("secret"));
        assert!(host.calls().is_empty());
    }

    #[tokio::test]
    async fn exec_handler_and_failures() {
        let host = MemoryRemote::new("cp1");
        host.on_exec(|command, stdin| Output {
            status: if command.contains("fail") { 2 } else { 0 },
            stdout: stdin.to_vec(),
            stderr: b"boom".to_vec(),
        });
        assert_eq!(host.exec("cat", b"in").await.unwrap().stdout, b"in");
        let err = host.run("# step one\nfail", b"").await.unwrap_err().to_string();
        assert_eq!(err, "cp1: step one failed with exit status 2: boom");
        host.fail_puts_of("/etc/x");
        assert!(host.put(&File::new("/etc/x", 0o644, "")).await.is_err());
        assert!(host.file("/etc/x").is_none());
        assert!(host.put(&File::new("relative", 0o644, "")).await.is_err());
    }

    #[tokio::test]
    async fn put_all_checks_the_whole_batch_before_writing_any() {
        let host = MemoryRemote::new("cp1");
        host.insert_file("/etc/kubernetes/pki/ca.crt", 0o644, 0, 0, "old");
        host.insert_file("/etc/kubernetes/admin.conf", 0o600, 0, 0, "old");
        let batch = |last: &str| {
            vec![
                File::new("/etc/kubernetes/pki/ca.crt", 0o644, "new"),
                File::new("/etc/kubernetes/pki/etcd/ca.crt", 0o644, "new"),
                File::new(last, 0o600, "new"),
            ]
        };
        host.fail_puts_of("/etc/kubernetes/failing.conf");
        // A file set to fail, a relative path, a parent that is a file: nothing is written.
        for last in ["/etc/kubernetes/failing.conf", "relative.conf", "/etc/kubernetes/admin.conf/x"] {
            let err = host.put_all(&batch(last)).await.unwrap_err();
            assert_eq!(host.file("/etc/kubernetes/pki/ca.crt").unwrap().content, b"old", "{last}: {err}");
            assert!(host.file("/etc/kubernetes/pki/etcd/ca.crt").is_none(), "{last}: {err}");
            assert!(!host.is_dir("/etc/kubernetes/pki/etcd"), "{last}: {err}");
        }
        let calls = host.take_calls();
        assert_eq!(calls.len(), 6, "the relative path is refused before anything is sent: {calls:?}");
        // A directory where a file should go: renamed in order, so the files before it are in.
        host.insert_dir("/etc/kubernetes/manifests");
        let err = host.put_all(&batch("/etc/kubernetes/manifests")).await.unwrap_err();
        assert!(err.to_string().contains("cannot rename over directory"), "{err}");
        assert_eq!(host.file("/etc/kubernetes/pki/etcd/ca.crt").unwrap().content, b"new");
        host.put_all(&batch("/etc/kubernetes/admin.conf")).await.unwrap();
        assert_eq!(host.file("/etc/kubernetes/admin.conf").unwrap().content, b"new");
        assert!(host.put_all::<File>(&[]).await.is_ok());
    }

    #[tokio::test]
    async fn stale_temp_files_and_tcp() {
        let host = MemoryRemote::new("cp1");
        host.insert_file("/etc/kubernetes/manifests/.kubeha-etcd.yaml.00.tmp", 0o600, 0, 0, "x");
        host.insert_file("/etc/kubernetes/manifests/etcd.yaml", 0o600, 0, 0, "x");
        let removed = host.remove_stale_temp_files(&["/etc/kubernetes/manifests".into()]).await.unwrap();
        assert_eq!(removed, vec![PathBuf::from("/etc/kubernetes/manifests/.kubeha-etcd.yaml.00.tmp")]);
        assert_eq!(host.paths(), vec![PathBuf::from("/etc/kubernetes/manifests/etcd.yaml")]);

        host.listen_tcp("127.0.0.1", 2379, |mut stream| {
            tokio::spawn(async move {
                let mut buf = [0u8; 4];
                stream.read_exact(&mut buf).await.unwrap();
                stream.write_all(&buf).await.unwrap();
            });
        });
        let mut tunnel = host.open_tcp("127.0.0.1", 2379).await.unwrap();
        tunnel.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tunnel.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
        assert!(host.open_tcp("127.0.0.1", 6443).await.is_err());
    }
}
