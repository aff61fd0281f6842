//! The state directory on the local disk: reads that tell "missing" from "unreadable", atomic
//! writes, and the modes of private files and directories.
//!
//! A write goes to a dot-prefixed temporary file in the same directory, created with its final
//! mode (so a key is 0600 from its first byte, never world-readable even briefly), is fsynced,
//! and then renamed over the target. The temporary name carries random bytes: a run that was
//! killed leaves its temporary file behind, and a later run (possibly with the same process id,
//! as in a container) must never trip over it. Directories are created 0700 and fsynced once at
//! the end of a run ([`Store::sync_dirs`]) rather than after every rename, except where the
//! order of two files must survive a power loss ([`Store::sync_dir_of`]).
//!
//! Every path is checked before use ([`super::state_dir`]): each directory from the root down
//! once per run, each file as it is opened, never following a link.

use std::collections::BTreeSet;
use std::fs::{OpenOptions, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::PkiError;
use super::state_dir;

/// Mode of directories in the state directory.
pub(crate) const DIR_MODE: u32 = 0o700;

pub(crate) struct Store {
    root: PathBuf,
    /// Directories that received a rename in this run and must be fsynced.
    touched: Mutex<BTreeSet<PathBuf>>,
    /// Directories checked (and created where missing) in this run.
    checked: Mutex<BTreeSet<PathBuf>>,
}

impl Store {
    /// A store rooted at `root`; nothing is touched until the first write.
    pub(crate) fn new(root: &Path) -> Self {
        Store { root: root.to_path_buf(), touched: Mutex::default(), checked: Mutex::default() }
    }

    /// Creates the root directory (0700) if it does not exist, and checks it.
    pub(crate) fn create_root(&self) -> Result<(), PkiError> {
        self.dir(&self.root.clone(), true).map(drop)
    }

    /// Creates directory `rel` and its parents (0700) where missing, and checks them.
    pub(crate) fn create_dir(&self, rel: &Path) -> Result<(), PkiError> {
        self.dir(&self.path(rel), true).map(drop)
    }

    /// Checks the root directory if it exists; whether it does.
    pub(crate) fn check_root(&self) -> Result<bool, PkiError> {
        self.dir(&self.root.clone(), false)
    }

    /// The state directory itself.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// The absolute path of `rel`.
    pub(crate) fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// The content of `rel`, or `None` if it does not exist.
    pub(crate) fn read(&self, rel: &Path) -> Result<Option<Vec<u8>>, PkiError> {
        Ok(self.read_with_mode(rel)?.map(|(content, _)| content))
    }

    /// The content of `rel` and its permission bits, or `None` if it does not exist.
    pub(crate) fn read_with_mode(&self, rel: &Path) -> Result<Option<(Vec<u8>, u32)>, PkiError> {
        let path = self.path(rel);
        if !self.dir(path.parent().expect("state files live in a directory"), false)? {
            return Ok(None);
        }
        let Some(mut file) = state_dir::open_file(&path)? else { return Ok(None) };
        let result = (|| {
            let mode = file.metadata()?.permissions().mode() & 0o7777;
            let mut content = Vec::new();
            file.read_to_end(&mut content)?;
            Ok((content, mode))
        })();
        result.map(Some).map_err(|source| PkiError::Read { path, source })
    }

    /// The permission bits of directory `rel` (`""` is the root), or `None` if it does not exist.
    pub(crate) fn dir_mode(&self, rel: &Path) -> Result<Option<u32>, PkiError> {
        let path = self.path(rel);
        // A file is not a directory; a link is refused below, like any linked directory.
        if let Ok(meta) = std::fs::symlink_metadata(&path)
            && !meta.is_dir()
            && !meta.file_type().is_symlink()
        {
            return Ok(None);
        }
        if !self.dir(&path, false)? {
            return Ok(None);
        }
        let meta = std::fs::symlink_metadata(&path).map_err(|source| PkiError::Read { path, source })?;
        Ok(Some(meta.permissions().mode() & 0o7777))
    }

    /// Sets the permission bits of the existing file or directory `rel` to `mode`; the content
    /// is not touched.
    pub(crate) fn set_mode(&self, rel: &Path, mode: u32) -> Result<(), PkiError> {
        let path = self.path(rel);
        let file = state_dir::open_for_chmod(&path)?;
        file.set_permissions(Permissions::from_mode(mode)).map_err(|source| PkiError::Write { path, source })
    }

    /// Replaces `rel` atomically with `content`, created with `mode`.
    pub(crate) fn write(&self, rel: &Path, content: &[u8], mode: u32) -> Result<(), PkiError> {
        let path = self.path(rel);
        let dir = path.parent().expect("state files live in a directory").to_path_buf();
        self.dir(&dir, true)?;
        let name = path.file_name().expect("state files have a name").to_string_lossy();
        let tmp = dir.join(format!(".{name}.tmp.{}.{}", std::process::id(), random_suffix()));
        let fail = |source| PkiError::Write { path: path.clone(), source };
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&tmp)?;
            // The umask may have removed bits from `mode`; certificates must still be 0644.
            file.set_permissions(Permissions::from_mode(mode))?;
            file.write_all(content)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(e));
        }
        self.touched.lock().expect("no panics while locked").insert(dir);
        Ok(())
    }

    /// Makes the renames into the directory of `rel` durable now: a new key must be on disk
    /// before its certificate, or a power loss could leave the certificate without its key,
    /// which kubeha refuses.
    pub(crate) fn sync_dir_of(&self, rel: &Path) -> Result<(), PkiError> {
        let path = self.path(rel);
        let dir = path.parent().expect("state files live in a directory");
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| PkiError::Write { path: dir.to_path_buf(), source })
    }

    /// Makes every rename of this run durable.
    pub(crate) fn sync_dirs(&self) -> Result<(), PkiError> {
        let dirs: Vec<PathBuf> =
            std::mem::take(&mut *self.touched.lock().expect("no panics while locked")).into_iter().collect();
        let synced = super::parallel::map(&dirs, |dir| {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| PkiError::Write { path: dir.clone(), source })
        });
        synced.into_iter().collect()
    }

    /// Checks every directory from the root down to `dir` (creating missing ones, 0700, when
    /// `create`); whether `dir` exists. Each directory is checked once per run.
    fn dir(&self, dir: &Path, create: bool) -> Result<bool, PkiError> {
        let rel = dir.strip_prefix(&self.root).expect("state directories live under the root");
        let mut checked = self.checked.lock().expect("no panics while locked");
        let mut current = self.root.clone();
        let chain = std::iter::once(None).chain(rel.components().map(Some));
        for component in chain {
            if let Some(c) = component {
                current.push(c);
            }
            if checked.contains(&current) {
                continue;
            }
            if !state_dir::check_dir(&current)? {
                if !create {
                    return Ok(false);
                }
                state_dir::make_dir(&current, current == self.root)?;
            }
            checked.insert(current.clone());
        }
        Ok(true)
    }
}

/// 16 random hex digits for a temporary file name.
fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftover_temporary_files_of_a_killed_run_do_not_block_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        std::fs::create_dir(dir.path().join("pki")).unwrap();
        // What a killed run with this very process id would have left, whatever its counter.
        for n in 0..64 {
            std::fs::write(dir.path().join(format!("pki/.ca.key.tmp.{}.{n}", std::process::id())), "old").unwrap();
        }
        store.write(Path::new("pki/ca.key"), b"new", 0o600).unwrap();
        store.write(Path::new("pki/ca.key"), b"newer", 0o600).unwrap();
        store.sync_dir_of(Path::new("pki/ca.key")).unwrap();
        assert_eq!(store.read_with_mode(Path::new("pki/ca.key")).unwrap(), Some((b"newer".to_vec(), 0o600)));
        let left = std::fs::read_dir(dir.path().join("pki")).unwrap().count();
        assert_eq!(left, 64 + 1, "only the leftovers and the file itself");
    }

    #[test]
    fn modes_are_read_and_set_without_touching_content() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        std::fs::write(dir.path().join("k"), "key").unwrap();
        store.set_mode(Path::new("k"), 0o644).unwrap();
        assert_eq!(store.read_with_mode(Path::new("k")).unwrap(), Some((b"key".to_vec(), 0o644)));
        store.set_mode(Path::new("k"), 0o600).unwrap();
        assert_eq!(store.read_with_mode(Path::new("k")).unwrap(), Some((b"key".to_vec(), 0o600)));
        assert_eq!(store.read_with_mode(Path::new("absent")).unwrap(), None);
        store.set_mode(Path::new(""), 0o755).unwrap();
        assert_eq!(store.dir_mode(Path::new("")).unwrap(), Some(0o755));
        assert_eq!(store.dir_mode(Path::new("k")).unwrap(), None, "a file is not a directory");
        assert_eq!(store.dir_mode(Path::new("absent")).unwrap(), None);
    }
}
