//! Remote hosts: running commands and writing files over SSH.
//!
//! Everything kubeha does on a host goes through the small [`Remote`] trait: run a command as
//! root with some bytes on stdin, or open a TCP connection from the host. Atomic file writes,
//! file checksums and temp-file cleanup are built on `exec` here, once (the write protocol in
//! [`put`], the other scripts in [`shell`]), so every implementation behaves the same. File
//! contents always travel on stdin, never in a command line.
//!
//! Implementations: [`SshHost`] (russh; see `docs/ssh.md`) and [`MemoryRemote`] (an in-memory
//! host for fast tests of code built on the trait).

mod auth;
mod error;
pub mod known_hosts;
mod memory;
pub mod put;
pub mod shell;
mod ssh;

use std::borrow::Borrow;
use std::future::Future;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::files::File;

pub use auth::{Credentials, PassphraseFn, PassphrasePrompt, TerminalGuard};
pub use error::{ACCEPT_NEW_HINT, DamagedFile, PresentedKey, TransportError};
pub use memory::{Call, MemoryFile, MemoryRemote, TcpHandler};
pub use ssh::{SshHost, SshOptions};

/// What a remote command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    /// stdout as text (lossy UTF-8).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (lossy UTF-8).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A byte stream to a TCP port, opened by a remote host (an SSH `direct-tcpip` channel).
pub trait TunnelStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> TunnelStream for T {}
pub type Tunnel = Box<dyn TunnelStream>;

/// A file as a host has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    /// Lowercase hex; empty for a symbolic link (see [`FileState::symlink`]).
    pub sha256: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl FileState {
    /// A symbolic link at the path: never followed, so its "content" matches no file and a
    /// write replaces the link itself (the rename in [`put`](mod@put) does not follow it).
    pub fn symlink(uid: u32, gid: u32) -> FileState {
        FileState { sha256: String::new(), mode: 0o777, uid, gid }
    }

    /// Whether this is a symbolic link rather than a regular file.
    pub fn is_symlink(&self) -> bool {
        self.sha256.is_empty()
    }
}

/// One host kubeha works on.
pub trait Remote: Send + Sync {
    /// The host's inventory name, for messages.
    fn host(&self) -> &str;

    /// How the connection authenticated (a key file, the agent…), for reports.
    fn login(&self) -> &str {
        ""
    }

    /// Runs a POSIX `sh` command line as root (through `sudo -n` where the inventory says so),
    /// with `stdin` as its standard input. A non-zero exit status is not an error here.
    /// A leading `# label` comment line names the command in errors and timeouts.
    fn exec(&self, command: &str, stdin: &[u8]) -> impl Future<Output = Result<Output, TransportError>> + Send;

    /// Opens a TCP connection from the host to `address:port` (e.g. `127.0.0.1:2379`).
    fn open_tcp(&self, address: &str, port: u16) -> impl Future<Output = Result<Tunnel, TransportError>> + Send;

    /// Like [`exec`](Remote::exec), but a non-zero exit status is an error naming the host, the
    /// step (see [`shell::step_label`]), the status and the command's stderr.
    fn run(&self, command: &str, stdin: &[u8]) -> impl Future<Output = Result<Output, TransportError>> + Send {
        async move {
            let out = self.exec(command, stdin).await?;
            if out.status != 0 {
                return Err(TransportError::CommandFailed {
                    host: self.host().to_string(),
                    step: shell::step_label(command),
                    status: out.status,
                    stderr: error::stderr_text(&out.stderr),
                });
            }
            Ok(out)
        }
    }

    /// Writes `file` atomically: a dot-named temporary file in the target directory, checked
    /// against the expected SHA-256, chown root, chmod, fsynced, then renamed into place (parent
    /// directories are created 0755). On any failure the temporary file is removed and the
    /// target is untouched. The same protocol as [`put_all`](Remote::put_all), for a batch of one.
    fn put(&self, file: &File) -> impl Future<Output = Result<(), TransportError>> + Send {
        self.put_all(std::slice::from_ref(file))
    }

    /// Writes several files with one remote command (see [`put`](mod@put)), each atomically as
    /// [`put`](Remote::put) does; none is renamed into place unless all arrived intact. A
    /// [`TransportError::ChecksumMismatch`] names every file that did not, with the bytes the
    /// host received.
    fn put_all<F: Borrow<File> + Sync>(&self, files: &[F]) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move {
            let files: Vec<&File> = files.iter().map(Borrow::borrow).collect();
            if files.is_empty() {
                return Ok(());
            }
            if let Some(path) = put::invalid_path(&files) {
                return Err(TransportError::InvalidPath { host: self.host().to_string(), path });
            }
            let temps: Option<Vec<String>> =
                files.iter().map(|f| f.path.file_name().and_then(|n| n.to_str()).map(shell::temp_name)).collect();
            let script = temps.and_then(|temps| put::script(&files, &temps)).ok_or_else(|| {
                TransportError::InvalidPath { host: self.host().to_string(), path: files[0].path.clone() }
            })?;
            // The contents one after the other; a batch of one is sent without a copy.
            let joined: Vec<u8>;
            let stdin = match files.as_slice() {
                [file] => file.content.as_slice(),
                _ => {
                    joined = files.iter().flat_map(|f| f.content.iter().copied()).collect();
                    joined.as_slice()
                }
            };
            let out = self.exec(&script, stdin).await?;
            put::outcome(self.host(), &files, &out)
        }
    }

    /// The state of each path (`None` where it does not exist), in the order given, from one
    /// remote command. A symbolic link is reported as one ([`FileState::symlink`]), never followed;
    /// any other path that exists but is not a regular file is an error.
    fn file_states(
        &self,
        paths: &[PathBuf],
    ) -> impl Future<Output = Result<Vec<Option<FileState>>, TransportError>> + Send {
        async move {
            if paths.is_empty() {
                return Ok(Vec::new());
            }
            let script = shell::file_states_script(paths).ok_or_else(|| invalid_path(self.host(), paths))?;
            let out = self.run(&script, b"").await?;
            shell::file_states_of(self.host(), &shell::step_label(&script), paths, &out)
        }
    }

    /// [`remove_stale_temp_files`](Remote::remove_stale_temp_files) in `dirs`, then
    /// [`file_states`](Remote::file_states) of `paths`, with one remote command: what every
    /// write to a host starts with.
    fn file_states_after_cleanup(
        &self,
        dirs: &[PathBuf],
        paths: &[PathBuf],
    ) -> impl Future<Output = Result<Vec<Option<FileState>>, TransportError>> + Send {
        async move {
            if dirs.is_empty() || paths.is_empty() {
                self.remove_stale_temp_files(dirs).await?;
                return self.file_states(paths).await;
            }
            let clean = shell::clean_temp_script(dirs).ok_or_else(|| invalid_path(self.host(), dirs))?;
            let states = shell::file_states_script(paths).ok_or_else(|| invalid_path(self.host(), paths))?;
            let (header, body) = states.split_once('\n').unwrap_or((states.as_str(), ""));
            let script = format!("{header}, after removing stale temporary files\n{{\n{clean}}} >/dev/null\n{body}");
            let out = self.run(&script, b"").await?;
            shell::file_states_of(self.host(), &shell::step_label(&script), paths, &out)
        }
    }

    /// Removes kubeha's temporary files (`.kubeha-*.tmp`) that an interrupted run left in `dirs`
    /// (missing directories are fine); returns the paths removed.
    fn remove_stale_temp_files(
        &self,
        dirs: &[PathBuf],
    ) -> impl Future<Output = Result<Vec<PathBuf>, TransportError>> + Send {
        async move {
            if dirs.is_empty() {
                return Ok(Vec::new());
            }
            let script = shell::clean_temp_script(dirs).ok_or_else(|| invalid_path(self.host(), dirs))?;
            let out = self.run(&script, b"").await?;
            Ok(shell::parse_removed(&out.stdout))
        }
    }
}

/// A shared host is still that host: sessions hand out the same connection to several phases.
impl<R: Remote> Remote for std::sync::Arc<R> {
    fn host(&self) -> &str {
        (**self).host()
    }

    fn login(&self) -> &str {
        (**self).login()
    }

    fn exec(&self, command: &str, stdin: &[u8]) -> impl Future<Output = Result<Output, TransportError>> + Send {
        (**self).exec(command, stdin)
    }

    fn open_tcp(&self, address: &str, port: u16) -> impl Future<Output = Result<Tunnel, TransportError>> + Send {
        (**self).open_tcp(address, port)
    }

    fn put_all<F: Borrow<File> + Sync>(&self, files: &[F]) -> impl Future<Output = Result<(), TransportError>> + Send {
        (**self).put_all(files)
    }

    fn file_states(
        &self,
        paths: &[PathBuf],
    ) -> impl Future<Output = Result<Vec<Option<FileState>>, TransportError>> + Send {
        (**self).file_states(paths)
    }

    fn remove_stale_temp_files(
        &self,
        dirs: &[PathBuf],
    ) -> impl Future<Output = Result<Vec<PathBuf>, TransportError>> + Send {
        (**self).remove_stale_temp_files(dirs)
    }

    fn file_states_after_cleanup(
        &self,
        dirs: &[PathBuf],
        paths: &[PathBuf],
    ) -> impl Future<Output = Result<Vec<Option<FileState>>, TransportError>> + Send {
        (**self).file_states_after_cleanup(dirs, paths)
    }
}

/// The error for the first of `paths` that a script cannot name (relative or not UTF-8).
fn invalid_path(host: &str, paths: &[PathBuf]) -> TransportError {
    let path = paths.iter().find(|p| !p.is_absolute() || p.to_str().is_none()).cloned().unwrap_or_default();
    TransportError::InvalidPath { host: host.to_string(), path }
}
