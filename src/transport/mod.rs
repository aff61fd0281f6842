//! Remote hosts: running commands and writing files over SSH.
//!
//! Everything kubeha does on a host goes through the small [`Remote`] trait: run a command as
//! root with some bytes on stdin, or open a TCP connection from the host. Atomic file writes and
//! file checksums are built on `exec` here, once, so every implementation (SSH, the in-memory
//! test host) behaves the same. File contents always travel on stdin, never in a command line.
//!
//! (Interface stub: the implementation replaces the bodies marked `todo!`.)

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::files::File;

/// What a remote command did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    pub status: u32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A byte stream to a TCP port, opened by a remote host (an SSH `direct-tcpip` channel).
pub trait TunnelStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> TunnelStream for T {}
pub type Tunnel = Box<dyn TunnelStream>;

/// A file as a host has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub sha256: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("{host}: {message}")]
    Todo { host: String, message: String },
    #[error("{host}: {what} timed out after {}", humantime::format_duration(*after))]
    Timeout { host: String, what: String, after: Duration },
}

/// One host kubeha works on.
pub trait Remote: Send + Sync {
    /// The host's inventory name, for messages.
    fn host(&self) -> &str;

    /// Runs a POSIX `sh` command line as root (through `sudo -n` where the inventory says so),
    /// with `stdin` as its standard input. A non-zero exit status is not an error here.
    fn exec(&self, command: &str, stdin: &[u8]) -> impl Future<Output = Result<Output, TransportError>> + Send;

    /// Opens a TCP connection from the host to `address:port` (e.g. `127.0.0.1:2379`).
    fn open_tcp(&self, address: &str, port: u16) -> impl Future<Output = Result<Tunnel, TransportError>> + Send;

    /// Writes `file` atomically: a dot-named temporary file in the target directory, checked
    /// against the expected SHA-256, fsynced, chmod/chown root, then renamed into place.
    fn put(&self, file: &File) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move {
            let _ = file;
            todo!()
        }
    }

    /// The state of each path (`None` where it does not exist), in the order given.
    fn file_states(
        &self,
        paths: &[PathBuf],
    ) -> impl Future<Output = Result<Vec<Option<FileState>>, TransportError>> + Send {
        async move {
            let _ = paths;
            todo!()
        }
    }
}
