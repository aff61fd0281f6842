//! Trust in the state directory: it holds the cluster's CA keys, so whoever can write in it can
//! swap the PKI that `render` and `init` push to every host.
//!
//! kubeha therefore uses a path in it only when the current user owns it, nobody else may write
//! it, and it is not a symbolic link: links are never followed (files are opened with
//! `O_NOFOLLOW`, directories are checked with `lstat` before use), because a link lets its owner
//! redirect kubeha's writes and `chmod`s anywhere the operator can write. Paths above the state
//! directory are the operator's business (a home directory reached through a link is common).
//! Every refusal says why and how to fix it; the CLI maps them to exit code 2 (bad input,
//! nothing changed).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why kubeha will not use (a path in) a state directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateDirError {
    #[error(
        "{} is a symbolic link (to {target}); kubeha never follows links in the state directory, which holds the \
         cluster's CA keys: point --state-dir at the real directory, or replace the link with what it points to",
        path.display()
    )]
    Symlink { path: PathBuf, target: String },

    #[error(
        "{} is owned by {owner}, not by you ({me}), who could swap the cluster's PKI in it: `chown -R {me} {}` if \
         it is yours, or use a state directory of your own (--state-dir)",
        path.display(),
        path.display()
    )]
    ForeignOwner { path: PathBuf, owner: String, me: String },

    #[error(
        "{} is writable by other users (mode {mode:04o}), who could swap the cluster's PKI: `chmod {fix} {}` \
         if its content is yours, or start from a new state directory",
        path.display(),
        path.display()
    )]
    Writable { path: PathBuf, mode: u32, fix: &'static str },

    #[error("{} is not a {expected}; move it away or use another --state-dir", path.display())]
    WrongType { path: PathBuf, expected: &'static str },

    #[error(
        "the state directory {} holds the PKI of cluster {recorded:?} (see {}), not of this inventory's cluster \
         {inventory:?}: use that cluster's own state directory (--state-dir), or pass --force-state-dir to make \
         it {inventory:?}'s",
        dir.display(),
        record.display()
    )]
    OtherCluster { dir: PathBuf, record: PathBuf, recorded: String, inventory: String },

    #[error(
        "the cluster CA in {} ({found}) is not the one recorded in {} ({recorded}): restore the CA from a backup, \
         or, if it was replaced on purpose, pass --force-state-dir to record the new one",
        ca.display(),
        record.display()
    )]
    CaChanged { ca: PathBuf, record: PathBuf, recorded: String, found: String },

    #[error("{} is not a kubeha cluster record ({detail}); restore it, or pass --force-state-dir to rewrite it", path.display())]
    BadRecord { path: PathBuf, detail: String },

    #[error("cannot check {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateDirError + '_ {
    move |source| StateDirError::Io { path: path.to_path_buf(), source }
}

/// The current user's id and name, for messages.
fn me() -> (u32, String) {
    let uid = nix::unistd::geteuid();
    (uid.as_raw(), user_name(uid.as_raw()))
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}

/// Refuses `meta` (of `path`, not followed) unless the current user owns it, nobody else may
/// write it, and it is a `expected` (directory or regular file).
fn judge(path: &Path, meta: &std::fs::Metadata, dir: bool) -> Result<(), StateDirError> {
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_or_else(|_| "?".to_string(), |t| t.display().to_string());
        return Err(StateDirError::Symlink { path: path.to_path_buf(), target });
    }
    let right_type = if dir { meta.is_dir() } else { meta.is_file() };
    if !right_type {
        let expected = if dir { "directory" } else { "regular file" };
        return Err(StateDirError::WrongType { path: path.to_path_buf(), expected });
    }
    let (uid, name) = me();
    if meta.uid() != uid {
        return Err(StateDirError::ForeignOwner { path: path.to_path_buf(), owner: user_name(meta.uid()), me: name });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        let fix = if dir { "700" } else { "go-w" };
        return Err(StateDirError::Writable { path: path.to_path_buf(), mode, fix });
    }
    Ok(())
}

/// Checks the directory `path` without following it; `false` when it does not exist.
pub fn check_dir(path: &Path) -> Result<bool, StateDirError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => judge(path, &meta, true).map(|()| true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io(path)(e)),
    }
}

/// Creates the directory `path` (0700) unless it exists, then checks it. With `parents`, missing
/// directories above it are created too (0700), but not checked.
pub fn make_dir(path: &Path, parents: bool) -> Result<(), StateDirError> {
    if parents && let Some(parent) = path.parent() {
        DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(io(parent))?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => return Err(io(path)(e)),
        _ => {}
    }
    if check_dir(path)? { Ok(()) } else { Err(io(path)(ErrorKind::NotFound.into())) }
}

/// Creates (if needed) and checks the state directory itself.
pub fn prepare(dir: &Path) -> Result<(), StateDirError> {
    make_dir(dir, true)
}

/// `O_NOFOLLOW`, and `O_NONBLOCK` so that a FIFO planted at a file's path cannot hang the open
/// (it is then refused as not a regular file).
const OPEN_FLAGS: i32 = nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK;

/// Opens the regular file `path` for reading without following a link, and checks it; `None`
/// when it does not exist.
pub fn open_file(path: &Path) -> Result<Option<File>, StateDirError> {
    open_checked(path, OpenOptions::new().read(true).custom_flags(OPEN_FLAGS))
}

/// Opens (creating it with `mode` if missing) the regular file `path` for writing without
/// following a link, and checks it.
pub fn open_or_create(path: &Path, mode: u32) -> Result<File, StateDirError> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(false).mode(mode).custom_flags(OPEN_FLAGS);
    open_checked(path, &options)?.ok_or_else(|| io(path)(ErrorKind::NotFound.into()))
}

fn open_checked(path: &Path, options: &OpenOptions) -> Result<Option<File>, StateDirError> {
    let file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        // O_NOFOLLOW met a link; lstat it to say where it points.
        Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
            let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
            judge(path, &meta, false)?;
            return Err(io(path)(e));
        }
        Err(e) => return Err(io(path)(e)),
    };
    let meta = file.metadata().map_err(io(path))?;
    judge(path, &meta, false)?;
    Ok(Some(file))
}

/// Opens the existing file or directory `path` without following a link, to change its mode
/// through the descriptor (never through a path a link could redirect).
pub fn open_for_chmod(path: &Path) -> Result<File, StateDirError> {
    OpenOptions::new().read(true).custom_flags(OPEN_FLAGS).open(path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn links_writable_paths_and_wrong_types_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        prepare(&real).unwrap();
        assert_eq!(std::fs::metadata(&real).unwrap().permissions().mode() & 0o777, 0o700);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = prepare(&link).unwrap_err();
        assert!(matches!(err, StateDirError::Symlink { .. }), "{err}");
        assert!(err.to_string().contains(&format!("(to {})", real.display())), "{err}");

        chmod(&real, 0o770);
        let err = check_dir(&real).unwrap_err();
        assert!(err.to_string().contains("mode 0770") && err.to_string().contains("chmod 700"), "{err}");
        chmod(&real, 0o755);
        assert!(check_dir(&real).unwrap(), "readable is not writable");

        let file = real.join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(check_dir(&file), Err(StateDirError::WrongType { .. })));
        chmod(&file, 0o666);
        assert!(matches!(open_file(&file), Err(StateDirError::Writable { fix: "go-w", .. })));
        chmod(&file, 0o644);
        assert!(open_file(&file).unwrap().is_some());
        assert!(open_file(&real.join("absent")).unwrap().is_none());
        std::os::unix::fs::symlink(&file, real.join("l")).unwrap();
        assert!(matches!(open_file(&real.join("l")), Err(StateDirError::Symlink { .. })));
        assert!(matches!(open_or_create(&real.join("l"), 0o600), Err(StateDirError::Symlink { .. })));
        nix::unistd::mkfifo(&real.join("fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(open_file(&real.join("fifo")), Err(StateDirError::WrongType { .. })));
    }
}
