//! A throw-away copy of the state directory for dry runs.

use std::path::{Path, PathBuf};

/// A throw-away copy of the state directory, so a dry run can show the render without
/// creating or renewing anything in the real one. The copy of an existing state directory (CA
/// keys included) lives inside it, under the same 0700 protection, so a dry run cut short
/// leaves no keys anywhere else; a fresh cluster's scratch PKI (keys no cluster uses) goes to
/// the system's temporary directory.
pub struct Scratch {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Prefix of scratch directories inside a state directory (skipped when copying it).
const SCRATCH_PREFIX: &str = ".dry-run-";

impl Scratch {
    pub fn of(state_dir: &Path) -> std::io::Result<Scratch> {
        let builder = tempfile::Builder::new().prefix(SCRATCH_PREFIX).to_owned();
        let dir = if state_dir.is_dir() { builder.tempdir_in(state_dir)? } else { builder.tempdir()? };
        let path = dir.path().join("state");
        if state_dir.is_dir() {
            copy_tree(state_dir, &path)?;
        }
        Ok(Scratch { path, _dir: dir })
    }

    /// Where the copy is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().mode(0o700).create(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) || entry.file_name() == ".lock" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}
