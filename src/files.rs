//! Files as they will exist on a host: the unit that rendering produces and transport writes.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

/// One file at its final absolute path on a host, with the mode it must have there.
/// Files are always owned by root (uid 0, gid 0) on the host.
#[derive(Clone, PartialEq, Eq)]
pub struct File {
    pub path: PathBuf,
    pub mode: u32,
    pub content: Vec<u8>,
}

impl File {
    pub fn new(path: impl Into<PathBuf>, mode: u32, content: impl Into<Vec<u8>>) -> Self {
        File { path: path.into(), mode, content: content.into() }
    }

    /// Hex SHA-256 of the content: how kubeha compares a file with what a host has.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(&self.content))
    }
}

/// Contents may be private keys: wiped from memory when the file is dropped.
impl Drop for File {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.content.zeroize();
    }
}

/// Never prints file contents: they may be private keys.
impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("mode", &format_args!("{:04o}", self.mode))
            .field("bytes", &self.content.len())
            .finish()
    }
}
