//! One kubeha run at a time per state directory: two runs writing the same PKI, or the same
//! hosts from one machine, would race.
//!
//! The state directory and its `.lock` are checked like every other path in it
//! ([`crate::pki::state_dir`]): a linked `.lock` would make kubeha create the link's target.

use std::path::{Path, PathBuf};

use crate::pki::{StateDirError, state_dir};

use nix::fcntl::{Flock, FlockArg};

/// Held for as long as the run; released when dropped (or when the process ends, however).
#[derive(Debug)]
pub struct StateLock {
    _file: Flock<std::fs::File>,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another kubeha run is using the state directory {} (it holds {}); wait for it to finish", dir.display(), lock.display())]
    Busy { dir: PathBuf, lock: PathBuf },
    #[error("cannot lock the state directory {}", dir.display())]
    Io { dir: PathBuf, source: std::io::Error },
    #[error(transparent)]
    StateDir(#[from] StateDirError),
}

/// Takes the state directory's lock (creating the directory, 0700, if needed) without waiting.
pub fn lock(state_dir: &Path) -> Result<StateLock, LockError> {
    let io = |source| LockError::Io { dir: state_dir.to_path_buf(), source };
    state_dir::prepare(state_dir)?;
    let path = state_dir.join(".lock");
    let file = state_dir::open_or_create(&path, 0o600)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(file) => Ok(StateLock { _file: file }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Busy { dir: state_dir.to_path_buf(), lock: path }),
        Err((_, errno)) => Err(io(std::io::Error::from(errno))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_run_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = super::lock(&state).unwrap();
        let err = super::lock(&state).unwrap_err();
        assert!(err.to_string().starts_with("another kubeha run is using the state directory"), "{err}");
        drop(first);
        super::lock(&state).unwrap();
    }

    #[test]
    fn a_linked_lock_file_is_refused_and_its_target_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let target = dir.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, state.join(".lock")).unwrap();
        let err = super::lock(&state).unwrap_err();
        assert!(matches!(err, super::LockError::StateDir(super::StateDirError::Symlink { .. })), "{err}");
        assert!(!target.exists());
    }
}
