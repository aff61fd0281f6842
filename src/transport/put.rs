//! kubeha's atomic file write protocol: one POSIX `sh` script that installs a batch of files
//! (one or many) from one stdin stream, and the one function that turns what that script
//! reported into a result. [`Remote::put`](super::Remote::put) sends a batch of one,
//! [`Remote::put_all`](super::Remote::put_all) a larger one; both go through here, so they
//! give the same guarantees and the same errors.
//!
//! The contents travel on stdin one after the other and `head -c SIZE` cuts them apart. That
//! needs a `head` that reads exactly SIZE bytes from a pipe: GNU coreutils' does, BusyBox's
//! reads ahead a buffer at a time and would swallow the start of the next file. The script
//! checks this first, on a pipe of its own, and stops with [`HEAD_READS_AHEAD`] before touching
//! anything; without that check such a host would fail every batch with checksum mismatches
//! that do not say why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{DamagedFile, stderr_text};
use super::{Output, TransportError, shell};
use crate::files::File;

/// Exit status of the put script when a file did not arrive with its expected SHA-256.
pub const CHECKSUM_MISMATCH: u32 = 3;

/// Exit status of the put script when the host's `head -c N` reads more than N bytes of a pipe.
pub const HEAD_READS_AHEAD: u32 = 4;

/// Exit status of the put script when a directory on the way to a target is a symbolic link.
pub const SYMLINKED_DIRECTORY: u32 = 5;

/// What kubeha says about a host whose `head -c` reads ahead.
pub const HEAD_READS_AHEAD_MESSAGE: &str = "head -c reads past N bytes: kubeha needs GNU coreutils (GNU `head -c N` \
     stops after exactly N bytes of a pipe; BusyBox head reads ahead, which would mix up the files of a batch)";

/// How the script reports one file that did not arrive intact (one stderr line each):
/// `kubeha-put: damaged file <index>: received <bytes> of <size> bytes (<target>)`.
const DAMAGED_PREFIX: &str = "kubeha-put: damaged file ";

/// The script that installs `files` atomically from one stdin stream holding their contents in
/// order, or `None` if the batch is empty, `temps` does not hold one file name per file, or a
/// path is not absolute UTF-8 with a file name. `temps[i]` is the temporary file name (see
/// [`shell::temp_name`]) for `files[i]`, created in the same directory.
///
/// Order: check that `head -c` stops where it is told; refuse ([`SYMLINKED_DIRECTORY`]) if any
/// directory on the way to a target is a symbolic link; create the parent directories (0755)
/// where one is missing;
/// under `umask 077` (root only, from the first byte) and `set -C` (a temporary file must be
/// new: never written through a link planted at its name) cut the stream into one temporary
/// file per file with `head -c SIZE`; check every temporary file's SHA-256 (one `sha256sum` for all,
/// matched by position, so no file name is ever parsed) and, if any differs, report each
/// damaged file with the bytes it received and stop: nothing is renamed unless all arrived
/// intact. Then chown root, chmod, fsync them, rename each over its target (`mv -T`: never into a
/// directory of that name; a symbolic link at the target is replaced, not followed) and fsync
/// the directories. An EXIT trap removes the temporary files on
/// every failure; HUP/INT/PIPE/TERM exit through it.
pub fn script(files: &[&File], temps: &[String]) -> Option<String> {
    if files.is_empty() || files.len() != temps.len() {
        return None;
    }
    let mut vars = String::new();
    let mut temp_words = Vec::with_capacity(files.len());
    let mut dirs: Vec<&str> = Vec::new();
    let mut reads = String::new();
    let mut checks = String::new();
    let mut modes: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut moves = String::new();
    for (i, (file, temp)) in files.iter().zip(temps).enumerate() {
        let target = shell::path_text(&file.path)?;
        let dir = file.path.parent().and_then(shell::path_text)?;
        file.path.file_name()?;
        if temp.is_empty() || temp.contains('/') {
            return None;
        }
        let temp_path = Path::new(dir).join(temp);
        vars.push_str(&format!("t{i}={}\nf{i}={}\n", shell::quote(temp_path.to_str()?), shell::quote(target)));
        temp_words.push(format!("\"$t{i}\""));
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
        let size = file.content.len();
        reads.push_str(&format!("head -c {size} > \"$t{i}\" || fail 11 \"cannot write $t{i}\"\n"));
        checks
            .push_str(&format!("l=; IFS= read -r l; check {i} \"$t{i}\" \"$f{i}\" {size} {} \"$l\"\n", file.sha256()));
        modes.entry(file.mode & 0o7777).or_default().push(format!("\"$t{i}\""));
        moves.push_str(&format!("mv -f -T -- \"$t{i}\" \"$f{i}\" || fail 16 \"cannot rename $t{i} to $f{i}\"\n"));
    }
    let label = match files {
        [file] => file.path.to_str()?.replace(|c: char| c.is_control(), "?"),
        _ => format!("{} files", files.len()),
    };
    let temps = temp_words.join(" ");
    // Every directory on the way to a target, `/` excepted: a symbolic link among them would
    // send the write somewhere else.
    let mut ancestors: Vec<&str> = Vec::new();
    for dir in &dirs {
        for a in Path::new(dir).ancestors().filter_map(|a| a.to_str()).filter(|a| *a != "/") {
            if !ancestors.contains(&a) {
                ancestors.push(a);
            }
        }
    }
    ancestors.sort_unstable();
    let ancestors = ancestors.iter().map(|d| shell::quote(d)).collect::<Vec<_>>().join(" ");
    let dirs = dirs.iter().map(|d| shell::quote(d)).collect::<Vec<_>>().join(" ");
    let chmods: String = modes
        .iter()
        .map(|(mode, ts)| format!("chmod {mode:04o} -- {} || fail 14 \"cannot chmod\"\n", ts.join(" ")))
        .collect();
    // `check INDEX TEMP TARGET SIZE SHA256 LINE`: LINE is the file's line of `sha256sum` output,
    // which starts with a backslash when the name needed escaping; the sum follows.
    Some(format!(
        r#"# kubeha put {label}
set -u
{vars}trap 'rm -f -- {temps}' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM
fail() {{ s=$1; shift; echo "kubeha-put: $*" >&2; exit "$s"; }}
ahead=$(printf 'kubeha\n' | {{ head -c 4 > /dev/null || exit 1; r=; IFS= read -r r; printf %s "$r"; }}) || fail 18 "cannot run head -c"
[ "$ahead" = ha ] || fail {ahead_status} {ahead_message}
for d in {ancestors}; do
  [ -L "$d" ] && fail {link_status} "$d is a symbolic link: kubeha writes only into real directories"
done
for d in {dirs}; do
  [ -d "$d" ] || {{ (umask 022 && mkdir -p -- {dirs}) || fail 10 "cannot create directories"; break; }}
done
umask 077
set -C
{reads}sums=$(sha256sum -- {temps}) || fail 12 "cannot checksum the temporary files"
bad=0
check() {{
  h=${{6#\\}}
  [ "${{h%% *}}" = "$5" ] && return 0
  n=$(wc -c < "$2") || n='?'
  echo "{DAMAGED_PREFIX}$1: received $n of $4 bytes ($3)" >&2
  bad=1
}}
{{
{checks}}} <<EOF
$sums
EOF
[ "$bad" = 0 ] || fail {mismatch} "sha256 mismatch (stream cut short?); nothing was installed"
chown 0:0 -- {temps} || fail 13 "cannot chown to root"
{chmods}sync -- {temps} || fail 15 "cannot fsync"
{moves}sync -- {dirs} || fail 17 "cannot fsync directories"
"#,
        ahead_status = HEAD_READS_AHEAD,
        ahead_message = shell::quote(HEAD_READS_AHEAD_MESSAGE),
        mismatch = CHECKSUM_MISMATCH,
        link_status = SYMLINKED_DIRECTORY,
    ))
}

/// The files that [`script`] reported as damaged, as (index into the batch, bytes received);
/// the count is `None` if the script could not measure it.
pub fn parse_damaged(stderr: &[u8]) -> Vec<(usize, Option<u64>)> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|line| {
            let (index, rest) = line.strip_prefix(DAMAGED_PREFIX)?.split_once(": received ")?;
            let received = rest.split_whitespace().next().and_then(|n| n.parse().ok());
            Some((index.parse().ok()?, received))
        })
        .collect()
}

/// What running [`script`] for `files` on `host` came to: `Ok` for exit status 0, otherwise the
/// error that says what went wrong. The only place that reads the script's exit status.
pub fn outcome(host: &str, files: &[&File], out: &Output) -> Result<(), TransportError> {
    match out.status {
        0 => return Ok(()),
        CHECKSUM_MISMATCH => {
            let damaged: Vec<DamagedFile> = parse_damaged(&out.stderr)
                .into_iter()
                .filter_map(|(i, received)| {
                    let file = files.get(i)?;
                    Some(DamagedFile { path: file.path.clone(), received, expected: file.content.len() as u64 })
                })
                .collect();
            // A mismatch always names its files; if it does not, show the raw stderr below.
            if !damaged.is_empty() {
                return Err(TransportError::ChecksumMismatch { host: host.to_string(), files: damaged });
            }
        }
        HEAD_READS_AHEAD => {
            return Err(TransportError::HostUnsupported {
                host: host.to_string(),
                reason: HEAD_READS_AHEAD_MESSAGE.to_string(),
            });
        }
        _ => {}
    }
    Err(TransportError::CommandFailed {
        host: host.to_string(),
        step: writing(files),
        status: out.status,
        stderr: stderr_text(&out.stderr),
    })
}

/// The step name of a failed write: "writing PATH, PATH, ..." (at most 5 paths).
pub(super) fn writing(files: &[&File]) -> String {
    const SHOWN: usize = 5;
    let mut text = files.iter().take(SHOWN).map(|f| f.path.display().to_string()).collect::<Vec<_>>().join(", ");
    if files.len() > SHOWN {
        text.push_str(&format!(" and {} more", files.len() - SHOWN));
    }
    format!("writing {text}")
}

/// The first file whose path [`script`] cannot use (not absolute, no file name, not UTF-8).
pub fn invalid_path(files: &[&File]) -> Option<PathBuf> {
    files
        .iter()
        .find(|f| !f.path.is_absolute() || f.path.file_name().is_none() || f.path.to_str().is_none())
        .map(|f| f.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Runs `script` with the local `sh` (PATH prefixed with `path_dir` if given), returning
    /// (status, stderr).
    fn sh(script: &str, stdin: &[u8], path_dir: Option<&Path>) -> (u32, String) {
        let mut command = Command::new("sh");
        // As the host runs it: wrapped, decoded and evaluated by `sh`.
        command
            .arg("-c")
            .arg(shell::wrap(script, false, None))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(dir) = path_dir {
            command.env("PATH", format!("{}:{}", dir.display(), std::env::var("PATH").unwrap_or_default()));
        }
        let mut child = command.spawn().unwrap();
        // The script may stop before reading all of stdin.
        let _ = child.stdin.take().unwrap().write_all(stdin);
        let out = child.wait_with_output().unwrap();
        (out.status.code().unwrap_or(-1) as u32, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn batch(dir: &Path) -> Vec<File> {
        vec![
            File::new(dir.join("pki/ca.crt"), 0o644, "certificate\n"),
            File::new(dir.join("empty"), 0o644, ""),
            File::new(dir.join("manifests/it's big.yaml"), 0o600, vec![b'x'; 20_000]),
            File::new(dir.join("manifests/etcd.yaml"), 0o600, "etcd\n"),
        ]
    }

    fn temps(files: &[&File]) -> Vec<String> {
        files.iter().map(|f| shell::temp_name(f.path.file_name().unwrap().to_str().unwrap())).collect()
    }

    /// Names of kubeha temporary files anywhere under `dir`.
    fn leftovers(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                found.extend(leftovers(&entry.path()));
            } else if entry.file_name().to_string_lossy().starts_with(shell::TEMP_PREFIX) {
                found.push(entry.path());
            }
        }
        found
    }

    #[test]
    fn scripts_carry_no_content_and_need_usable_paths() {
        let secret = "-----BEGIN PRIVATE KEY-----\nMIIsecret\n";
        let file = File::new("/etc/kubernetes/pki/ca.key", 0o600, secret);
        let other = File::new("/etc/kubernetes/pki/ca.crt", 0o644, "c");
        let script = script(&[&file, &other], &temps(&[&file, &other])).unwrap();
        assert!(!script.contains("MIIsecret"));
        assert!(script.contains(&file.sha256()) && script.contains(&other.sha256()));
        assert!(script.contains("chmod 0600") && script.contains("chmod 0644"));
        assert!(script.starts_with("# kubeha put 2 files\n"));
        let one = super::script(&[&file], &temps(&[&file])).unwrap();
        assert!(one.starts_with("# kubeha put /etc/kubernetes/pki/ca.key\n"));
        // A control character in a path cannot end the label line and start a command.
        let odd = File::new("/etc/x\ntouch /tmp/owned", 0o600, "");
        let odd_script = super::script(&[&odd], &["t".into()]).unwrap();
        assert!(odd_script.starts_with("# kubeha put /etc/x?touch /tmp/owned\n"));
        for bad in ["relative/ca.key", "/"] {
            let f = File::new(bad, 0o600, "");
            assert!(super::script(&[&file, &f], &["a".into(), "b".into()]).is_none(), "{bad}");
            assert_eq!(invalid_path(&[&file, &f]), Some(PathBuf::from(bad)));
        }
        assert!(super::script(&[&file], &["a/b".into()]).is_none());
        assert!(super::script(&[&file], &[]).is_none());
        assert!(super::script(&[], &[]).is_none());
        assert_eq!(invalid_path(&[&file, &other]), None);
    }

    /// A stream cut short, run by the local `sh` (the check comes before any chown, so this
    /// needs no root): every damaged file is named with what arrived, nothing is renamed and no
    /// temporary file stays.
    #[test]
    fn a_short_stream_names_each_damaged_file_and_installs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = batch(dir.path());
        let refs: Vec<&File> = files.iter().collect();
        let stream: Vec<u8> = files.iter().flat_map(|f| f.content.clone()).collect();
        let script = script(&refs, &temps(&refs)).unwrap();
        // All of the first two files and 5,000 bytes of the third.
        let (status, stderr) = sh(&script, &stream[..12 + 5_000], None);
        assert_eq!(status, CHECKSUM_MISMATCH, "{stderr}");
        assert_eq!(parse_damaged(stderr.as_bytes()), vec![(2, Some(5_000)), (3, Some(0))], "{stderr}");
        assert!(stderr.contains("received 5000 of 20000 bytes ("), "{stderr}");
        assert!(stderr.contains("it's big.yaml)"), "{stderr}");
        assert!(files.iter().all(|f| !f.path.exists()));
        assert_eq!(leftovers(dir.path()), Vec::<PathBuf>::new());

        let host = "cp1";
        let out = Output { status, stdout: Vec::new(), stderr: stderr.into_bytes() };
        let err = outcome(host, &refs, &out).unwrap_err();
        let TransportError::ChecksumMismatch { files: damaged, .. } = &err else { panic!("{err:?}") };
        assert_eq!(damaged.len(), 2);
        assert_eq!((&damaged[0].path, damaged[0].received, damaged[0].expected), (&files[2].path, Some(5_000), 20_000));
        assert_eq!((&damaged[1].path, damaged[1].received, damaged[1].expected), (&files[3].path, Some(0), 5));
        let text = err.to_string();
        assert!(text.starts_with("cp1: 2 files did not arrive intact"), "{text}");
        assert!(text.contains(&format!("{} (received 5000 of 20000 bytes)", files[2].path.display())), "{text}");
        assert!(text.contains(&format!("{} (received 0 of 5 bytes)", files[3].path.display())), "{text}");
        assert!(!text.contains(&files[0].path.display().to_string()), "{text}");
    }

    /// A `head` that reads ahead (as BusyBox's does) is refused before anything is created.
    #[test]
    fn a_head_that_reads_ahead_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // A stand-in for a buffered head: one big read of the pipe, then the real head on that.
        let real = which("head").expect("head on PATH");
        let fake = bin.join("head");
        let text = format!(
            "#!/bin/sh\nb=$(mktemp) || exit 1\ndd bs=65536 count=1 of=\"$b\" 2>/dev/null\n{} \"$@\" < \"$b\"\ns=$?\nrm -f \"$b\"\nexit $s\n",
            real.display()
        );
        std::fs::write(&fake, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let target = dir.path().join("new/etcd.yaml");
        let file = File::new(&target, 0o600, "etcd\n");
        let script = script(&[&file], &temps(&[&file])).unwrap();
        let (status, stderr) = sh(&script, &file.content, Some(&bin));
        assert_eq!(status, HEAD_READS_AHEAD, "{stderr}");
        assert!(stderr.contains("head -c reads past N bytes: kubeha needs GNU coreutils"), "{stderr}");
        assert!(!target.parent().unwrap().exists(), "a directory was created");
        let out = Output { status, stdout: Vec::new(), stderr: stderr.into_bytes() };
        let err = outcome("cp1", &[&file], &out).unwrap_err();
        assert!(matches!(err, TransportError::HostUnsupported { .. }), "{err:?}");
        assert!(err.to_string().starts_with("cp1: head -c reads past N bytes: kubeha needs GNU coreutils"), "{err}");

        // The same with BusyBox itself where it is installed.
        if let Some(busybox) = which("busybox") {
            std::fs::write(&fake, format!("#!/bin/sh\nexec {} head \"$@\"\n", busybox.display())).unwrap();
            let (status, stderr) = sh(&script, &file.content, Some(&bin));
            assert_eq!(status, HEAD_READS_AHEAD, "busybox head: {stderr}");
        }
    }

    /// Symbolic links, run by the local `sh` (`chown` stubbed so this needs no root): a link at a
    /// target is replaced by the file, its own target untouched; a directory on the way that is
    /// a link is refused before anything is created; a link planted at a temporary file's name is
    /// not written through.
    #[test]
    fn symbolic_links_are_replaced_never_followed() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("chown"), "#!/bin/sh\nexit 0\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("chown"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let victim = outside.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();

        // A link at the target: replaced by a regular file.
        let etc = dir.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        symlink(&victim, etc.join("admin.conf")).unwrap();
        let file = File::new(etc.join("admin.conf"), 0o600, "secret\n");
        let (status, stderr) = sh(&script(&[&file], &temps(&[&file])).unwrap(), &file.content, Some(&bin));
        assert_eq!(status, 0, "{stderr}");
        let meta = std::fs::symlink_metadata(&file.path).unwrap();
        assert!(meta.file_type().is_file(), "the link was not replaced");
        assert_eq!(std::fs::read(&file.path).unwrap(), file.content);
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

        // A link among the directories: refused, nothing created at either end.
        symlink(&outside, etc.join("pki")).unwrap();
        let files = [File::new(etc.join("pki/etcd/ca.key"), 0o600, "key\n"), File::new(etc.join("ok"), 0o600, "x")];
        let refs: Vec<&File> = files.iter().collect();
        let stream: Vec<u8> = files.iter().flat_map(|f| f.content.clone()).collect();
        let (status, stderr) = sh(&script(&refs, &temps(&refs)).unwrap(), &stream, Some(&bin));
        assert_eq!(status, SYMLINKED_DIRECTORY, "{stderr}");
        assert!(stderr.contains("/etc/pki is a symbolic link"), "{stderr}");
        assert!(!outside.join("etcd").exists() && !etc.join("ok").exists());
        let err =
            outcome("cp1", &refs, &Output { status, stdout: Vec::new(), stderr: stderr.into_bytes() }).unwrap_err();
        assert!(err.to_string().contains("is a symbolic link: kubeha writes only into real directories"), "{err}");

        // A link planted at the temporary file's name: the write fails, the link's target stays.
        let file = File::new(etc.join("kubelet.conf"), 0o600, "new\n");
        let temp = temps(&[&file]);
        symlink(&victim, etc.join(&temp[0])).unwrap();
        let (status, stderr) = sh(&script(&[&file], &temp).unwrap(), &file.content, Some(&bin));
        assert_ne!(status, 0, "{stderr}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!file.path.exists());
    }

    fn which(program: &str) -> Option<PathBuf> {
        std::env::var("PATH").unwrap_or_default().split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
    }

    #[test]
    fn other_failures_name_the_files_and_keep_stderr() {
        let a = File::new("/etc/a", 0o600, "a");
        let b = File::new("/etc/b", 0o600, "b");
        let out =
            Output { status: 16, stdout: Vec::new(), stderr: b"kubeha-put: cannot rename x to /etc/b\n".to_vec() };
        let text = outcome("cp1", &[&a, &b], &out).unwrap_err().to_string();
        assert_eq!(
            text,
            "cp1: writing /etc/a, /etc/b failed with exit status 16: kubeha-put: cannot rename x to /etc/b"
        );
        // A mismatch that names no file falls back to the raw stderr.
        let out = Output { status: CHECKSUM_MISMATCH, stdout: Vec::new(), stderr: b"garbled".to_vec() };
        let err = outcome("cp1", &[&a], &out).unwrap_err();
        assert!(matches!(err, TransportError::CommandFailed { status: 3, .. }), "{err:?}");
        assert!(outcome("cp1", &[&a], &Output::default()).is_ok());
        let many: Vec<File> = (0..8).map(|i| File::new(format!("/etc/f{i}"), 0o600, "")).collect();
        let refs: Vec<&File> = many.iter().collect();
        assert_eq!(writing(&refs), "writing /etc/f0, /etc/f1, /etc/f2, /etc/f3, /etc/f4 and 3 more");
    }
}
