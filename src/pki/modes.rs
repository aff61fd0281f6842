//! Who may read the state directory: private files (keys, kubeconfigs, the VRRP password) are
//! 0600 and directories 0700.
//!
//! kubeha creates them so, but an operator may copy a key in with `cp` (0644 under the usual
//! umask) or `chmod` a directory. `generate` restricts such a file or directory when it finds
//! it and reports the change; the content is never touched, so a key stays byte-identical.
//! `load` writes nothing, so it refuses a private file open to other users instead, as ssh
//! refuses an unprotected private key. A mode is "open" when it gives the group or others any
//! access; a stricter mode than 0600 (0400, say) is left as it is.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::store::{DIR_MODE, Store};
use super::{PkiError, Renewal};

/// Whether `mode` gives the group or others any access.
pub(crate) fn too_open(mode: u32) -> bool {
    mode & 0o077 != 0
}

/// The reason reported for a restricted file or directory.
pub(crate) fn restricted(was: u32, now: u32) -> String {
    format!("mode was {was:04o}; now {now:04o}")
}

/// Restricts to 0700 every existing directory that holds one of `files` (paths relative to the
/// state directory), up to the state directory itself (reported as `.`), if it is open to
/// other users. Sorted by path.
pub(crate) fn restrict_dirs<'a>(
    store: &Store,
    files: impl IntoIterator<Item = &'a Path>,
) -> Result<Vec<Renewal>, PkiError> {
    let dirs: BTreeSet<&Path> = files.into_iter().flat_map(|file| file.ancestors().skip(1)).collect();
    let mut out = Vec::new();
    for dir in dirs {
        let Some(mode) = store.dir_mode(dir)? else { continue };
        if too_open(mode) {
            store.set_mode(dir, DIR_MODE)?;
            let shown = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir.to_path_buf() };
            out.push(Renewal { path: shown, reason: restricted(mode, DIR_MODE) });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn open_modes() {
        for open in [0o644, 0o640, 0o604, 0o601, 0o666, 0o755, 0o711] {
            assert!(too_open(open), "{open:o}");
        }
        for private in [0o600, 0o400, 0o700, 0o000] {
            assert!(!too_open(private), "{private:o}");
        }
        assert_eq!(restricted(0o644, 0o600), "mode was 0644; now 0600");
    }

    #[test]
    fn only_open_directories_of_the_files_are_restricted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("state");
        for d in ["pki/etcd", "nodes/cp1/pki", "other"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        let mode = |d: &str, m: u32| std::fs::set_permissions(root.join(d), PermissionsExt::from_mode(m)).unwrap();
        let mode_of = |d: &str| std::fs::metadata(root.join(d)).unwrap().permissions().mode() & 0o7777;
        for d in ["pki", "nodes", "nodes/cp1/pki"] {
            mode(d, 0o700);
        }
        mode("", 0o755);
        mode("pki/etcd", 0o750);
        mode("nodes/cp1", 0o500);
        mode("other", 0o777);
        let store = Store::new(&root);
        let files = [Path::new("pki/etcd/ca.key"), Path::new("pki/ca.key"), Path::new("nodes/cp1/pki/x.key")];
        let fixed = restrict_dirs(&store, files).unwrap();
        let shown: Vec<(String, String)> =
            fixed.iter().map(|r| (r.path.to_string_lossy().into_owned(), r.reason.clone())).collect();
        assert_eq!(
            shown,
            [
                (".".to_string(), "mode was 0755; now 0700".to_string()),
                ("pki/etcd".to_string(), "mode was 0750; now 0700".to_string())
            ]
        );
        assert_eq!(
            ["", "pki", "pki/etcd", "nodes/cp1", "other"].map(mode_of),
            [0o700, 0o700, 0o700, 0o500, 0o777],
            "stricter modes and directories of no file of the plan are left alone"
        );
    }
}
