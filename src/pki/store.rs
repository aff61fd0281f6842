//! The state directory on the local disk: reads that tell "missing" from "unreadable", and
//! atomic writes.
//!
//! A write goes to a dot-prefixed temporary file in the same directory, created with its final
//! mode (so a key is 0600 from its first byte, never world-readable even briefly), is fsynced,
//! and then renamed over the target. Directories are created 0700 and fsynced once at the end
//! of a run ([`Store::sync_dirs`]) rather than after every rename.

use std::collections::BTreeSet;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::PkiError;

/// Mode of directories in the state directory.
pub(crate) const DIR_MODE: u32 = 0o700;

pub(crate) struct Store {
    root: PathBuf,
    /// Directories that received a rename in this run and must be fsynced.
    touched: Mutex<BTreeSet<PathBuf>>,
    /// Directories known to exist with mode 0700.
    made: Mutex<BTreeSet<PathBuf>>,
}

impl Store {
    /// A store rooted at `root`; nothing is touched until the first write.
    pub(crate) fn new(root: &Path) -> Self {
        Store { root: root.to_path_buf(), touched: Mutex::default(), made: Mutex::default() }
    }

    /// Creates the root directory (0700) if needed and restricts it to 0700 if it exists.
    pub(crate) fn create_root(&self) -> Result<(), PkiError> {
        self.make_dir(&self.root.clone())?;
        std::fs::set_permissions(&self.root, Permissions::from_mode(DIR_MODE))
            .map_err(|source| PkiError::Write { path: self.root.clone(), source })
    }

    /// The absolute path of `rel`.
    pub(crate) fn path(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    /// The content of `rel`, or `None` if it does not exist.
    pub(crate) fn read(&self, rel: &Path) -> Result<Option<Vec<u8>>, PkiError> {
        let path = self.path(rel);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(source) => Err(PkiError::Read { path, source }),
        }
    }

    /// Replaces `rel` atomically with `content`, created with `mode`.
    pub(crate) fn write(&self, rel: &Path, content: &[u8], mode: u32) -> Result<(), PkiError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let path = self.path(rel);
        let dir = path.parent().expect("state files live in a directory").to_path_buf();
        self.make_dir(&dir)?;
        let name = path.file_name().expect("state files have a name").to_string_lossy();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
        let fail = |source| PkiError::Write { path: path.clone(), source };
        let result = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
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

    fn make_dir(&self, dir: &Path) -> Result<(), PkiError> {
        let mut made = self.made.lock().expect("no panics while locked");
        if made.contains(dir) {
            return Ok(());
        }
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|source| PkiError::Write { path: dir.to_path_buf(), source })?;
        made.insert(dir.to_path_buf());
        Ok(())
    }
}
