//! The remote side of kubeha's file operations: POSIX `sh` scripts (plus coreutils `sha256sum`,
//! `stat`) built here once and run through [`Remote::exec`](super::Remote::exec), and the
//! quoting, wrapping and naming helpers every script uses. The atomic write script has its own
//! module, [`put`](super::put).
//!
//! Scripts carry paths, modes and checksums, never contents: file bytes travel on the channel's
//! stdin. Every script starts with a `# kubeha <step>` comment line; [`step_label`] turns it into
//! the short label that errors and timeouts name.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of kubeha's temporary files: dot-named, so the kubelet ignores them in the manifests
/// directory.
pub const TEMP_PREFIX: &str = ".kubeha-";
/// Suffix of kubeha's temporary files.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Quotes `s` for POSIX `sh`: one single-quoted word that the shell passes on unchanged.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Exit status of coreutils `timeout` when the time limit ended the command.
pub const TIMEOUT_STATUS: u32 = 124;

/// The command line sent to the SSH server: `command` run by `sh`, through `sudo -n` for a
/// non-root user with `sudo: true`, under coreutils `timeout` when a limit is given. The remote
/// `timeout` ends the command's whole process group (SIGTERM, then SIGKILL 5 s later): a command
/// that outlives its limit, or whose connection is lost, does not keep running on the host.
///
/// sshd hands the line to the user's login shell, which may be fish, tcsh or anything else: the
/// line holds only words every shell passes on unchanged. The script travels base64-encoded in
/// one single-quoted word (`sh -c 'eval "$(printf %s B64 | base64 -d)"'`: no newline, `\`, `'`
/// or `!` for fish or csh to interpret) and the step's label follows as `sh`'s `$0`, reduced to
/// characters that need no quoting, so logs and `ps` still say what runs. stdin stays the
/// command's own: only the decoder reads the pipe it is given. [`unwrap`] gives the script back.
pub fn wrap(command: &str, sudo: bool, limit: Option<Duration>) -> String {
    use base64::Engine;
    let mut line = String::new();
    if sudo {
        line.push_str("sudo -n -- ");
    }
    if let Some(limit) = limit {
        line.push_str(&format!("timeout -k 5 {:.3} ", limit.as_secs_f64().max(0.001)));
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(command);
    line.push_str(&format!("sh -c '{EVAL_START}{encoded}{EVAL_END}' '{}'", plain_label(command)));
    line
}

/// The command line and stdin for a script that reads no input of its own: the script travels on
/// stdin to `sh -s` (no decoder to start, so each command costs one program less), wrapped in a
/// `{ ... } </dev/null` group that `sh` reads whole before running it, so nothing in the script
/// can read the rest of its own text. The line (`[sudo -n --] [timeout -k 5 N] sh -s`) holds only
/// words every login shell passes on unchanged. In `ps` the step's label is not shown: the script
/// is not on the command line.
pub fn wrap_stdin(command: &str, sudo: bool, limit: Option<Duration>) -> (String, Vec<u8>) {
    let mut line = String::new();
    if sudo {
        line.push_str("sudo -n -- ");
    }
    if let Some(limit) = limit {
        line.push_str(&format!("timeout -k 5 {:.3} ", limit.as_secs_f64().max(0.001)));
    }
    line.push_str("sh -s");
    (line, format!("{{\n{command}\n}} </dev/null\n").into_bytes())
}

const EVAL_START: &str = "eval \"$(printf %s ";
const EVAL_END: &str = " | base64 -d)\"";

/// The script inside a command line made by [`wrap`], or `None` if `line` is not one.
pub fn unwrap(line: &str) -> Option<String> {
    use base64::Engine;
    let (_, rest) = line.split_once(&format!("sh -c '{EVAL_START}"))?;
    let (encoded, _) = rest.split_once(EVAL_END)?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// The step label as `$0` of the remote `sh`: letters, digits and `._/:,=+@-` kept, every other
/// character (spaces included) turned into `_`, so every shell passes it on as one word.
fn plain_label(command: &str) -> String {
    let label = step_label(command);
    let label = label.strip_prefix("command ").unwrap_or(&label);
    let plain: String =
        label.chars().map(|c| if c.is_ascii_alphanumeric() || "._/:,=+@-".contains(c) { c } else { '_' }).collect();
    plain.trim_matches('_').chars().take(100).collect::<String>()
}

/// The short name of a command for messages: the text of a leading `# ` comment line, or else
/// the start of its first line.
pub fn step_label(command: &str) -> String {
    let first = command.trim_start().lines().next().unwrap_or("");
    if let Some(label) = first.strip_prefix("# ") {
        return truncate(label.trim(), 120);
    }
    format!("command `{}`", truncate(first.trim(), 60))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// A path as script text: absolute and valid UTF-8, or `None`.
pub(crate) fn path_text(path: &Path) -> Option<&str> {
    if !path.is_absolute() {
        return None;
    }
    path.to_str()
}

/// The temporary file name used while writing `name`: `.kubeha-<name>.<16 hex>.tmp`, random so
/// two runs never share one.
pub fn temp_name(name: &str) -> String {
    let mut random = [0u8; 8];
    // getrandom only fails when the OS has no entropy source at all; fall back to the time.
    if getrandom::fill(&mut random).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        random = (nanos as u64).to_le_bytes();
    }
    // Keep the whole name under the usual 255-byte limit.
    format!("{TEMP_PREFIX}{}.{}{TEMP_SUFFIX}", truncate(name, 200).trim_end_matches('…'), hex::encode(random))
}

/// The script that prints one line per path, in order: `F <sha256> <octal mode> <uid> <gid>` for
/// a regular file, `L <uid> <gid>` for a symbolic link (never followed: what it points at is not
/// the file kubeha wrote, and a write replaces the link itself), `N` where nothing exists, `O`
/// for anything else, `E` if a file could not be read. Missing paths are not errors.
///
/// One `sha256sum` and one `stat` serve every regular file (a host's control-plane files are
/// dozens: a process each would cost more than everything else the script does), their lines
/// matched by position, never by name; if either fails (a file could not be read), each file is
/// asked again on its own so the one that failed is reported.
pub fn file_states_script(paths: &[PathBuf]) -> Option<String> {
    let mut words = Vec::with_capacity(paths.len());
    for path in paths {
        words.push(quote(path_text(path)?));
    }
    Some(format!(
        r#"# kubeha file-states ({n} paths)
set --
i=0
for p in {words}; do
  i=$((i+1))
  if [ -L "$p" ]; then
    if m=$(stat -c '%u %g' -- "$p"); then r="L $m"; else r=E; fi
  elif [ -f "$p" ]; then r=F; set -- "$@" "$p"
  elif [ -e "$p" ]; then r=O
  else r=N
  fi
  eval "r$i=\$r"
done
sums=; modes=; all=
if [ $# -gt 0 ] && sums=$(sha256sum -- "$@" 2>/dev/null) && modes=$(stat -c '%a %u %g' -- "$@" 2>/dev/null); then all=1; fi
i=0
{{
for p in {words}; do
  i=$((i+1)); eval "r=\$r$i"
  if [ "$r" != F ]; then printf '%s\n' "$r"; continue; fi
  if [ -n "$all" ]; then
    IFS= read -r s <&3; IFS= read -r m <&4; s=${{s#\\}}
    printf 'F %s %s\n' "${{s%% *}}" "$m"
  elif s=$(sha256sum < "$p") && m=$(stat -c '%a %u %g' -- "$p"); then printf 'F %s %s\n' "${{s%% *}}" "$m"
  else printf 'E\n'
  fi
done
}} 3<<KUBEHA_SUMS 4<<KUBEHA_MODES
$sums
KUBEHA_SUMS
$modes
KUBEHA_MODES
"#,
        n = paths.len(),
        words = words.join(" "),
    ))
}

/// The states [`file_states_script`]'s output `out` gives `paths` on `host`.
pub(crate) fn file_states_of(
    host: &str,
    step: &str,
    paths: &[PathBuf],
    out: &super::Output,
) -> Result<Vec<Option<super::FileState>>, super::TransportError> {
    use super::{FileState, TransportError};
    let lines = parse_file_states(&out.stdout, paths.len()).map_err(|detail| TransportError::BadOutput {
        host: host.to_string(),
        step: step.to_string(),
        detail,
    })?;
    lines
        .into_iter()
        .zip(paths)
        .map(|(line, path)| match line {
            StateLine::File { sha256, mode, uid, gid } => Ok(Some(FileState { sha256, mode, uid, gid })),
            StateLine::Symlink { uid, gid } => Ok(Some(FileState::symlink(uid, gid))),
            StateLine::Missing => Ok(None),
            StateLine::NotAFile => Err(TransportError::NotAFile { host: host.to_string(), path: path.clone() }),
            StateLine::Unreadable => Err(TransportError::CommandFailed {
                host: host.to_string(),
                step: format!("reading {}", path.display()),
                status: 1,
                stderr: super::error::stderr_text(&out.stderr),
            }),
        })
        .collect()
}

/// One path's line from [`file_states_script`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateLine {
    File { sha256: String, mode: u32, uid: u32, gid: u32 },
    Symlink { uid: u32, gid: u32 },
    Missing,
    NotAFile,
    Unreadable,
}

/// Parses the output of [`file_states_script`]; `Err` says what was wrong with it.
pub fn parse_file_states(stdout: &[u8], expected: usize) -> Result<Vec<StateLine>, String> {
    let text = std::str::from_utf8(stdout).map_err(|_| "output is not UTF-8".to_string())?;
    let mut states = Vec::with_capacity(expected);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let state = match fields.as_slice() {
            ["N"] => StateLine::Missing,
            ["O"] => StateLine::NotAFile,
            ["E"] => StateLine::Unreadable,
            ["L", uid, gid] => StateLine::Symlink {
                uid: uid.parse().map_err(|_| format!("bad uid in {line:?}"))?,
                gid: gid.parse().map_err(|_| format!("bad gid in {line:?}"))?,
            },
            ["F", sha, mode, uid, gid] if sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) => {
                StateLine::File {
                    sha256: sha.to_ascii_lowercase(),
                    mode: u32::from_str_radix(mode, 8).map_err(|_| format!("bad mode in {line:?}"))?,
                    uid: uid.parse().map_err(|_| format!("bad uid in {line:?}"))?,
                    gid: gid.parse().map_err(|_| format!("bad gid in {line:?}"))?,
                }
            }
            _ => return Err(format!("unexpected line {line:?}")),
        };
        states.push(state);
    }
    if states.len() != expected {
        return Err(format!("{} lines for {expected} paths", states.len()));
    }
    Ok(states)
}

/// The script that removes kubeha's temporary files (`.kubeha-*.tmp`, regular files only) left
/// in `dirs` by an interrupted run, printing each removed path followed by a NUL byte.
pub fn clean_temp_script(dirs: &[PathBuf]) -> Option<String> {
    let mut words = Vec::with_capacity(dirs.len());
    for dir in dirs {
        words.push(quote(path_text(dir)?));
    }
    Some(format!(
        "# kubeha remove stale temporary files
for d in {words}; do
  for f in \"$d\"/{TEMP_PREFIX}*{TEMP_SUFFIX}; do
    if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then rm -f -- \"$f\" && printf '%s\\000' \"$f\"; fi
  done
done
",
        words = words.join(" "),
    ))
}

/// Splits the NUL-terminated paths printed by [`clean_temp_script`].
pub fn parse_removed(stdout: &[u8]) -> Vec<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    stdout.split(|&b| b == 0).filter(|p| !p.is_empty()).map(|p| PathBuf::from(std::ffi::OsStr::from_bytes(p))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::process::{Command, Stdio};

    /// Runs `script` with the local `sh`, returning (status, stdout, stderr).
    fn sh(script: &str, stdin: &[u8]) -> (i32, Vec<u8>, String) {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    }

    #[test]
    fn quoting_survives_the_shell() {
        for s in ["plain", "it's", "'", "''", "a b\tc\nd", "$(touch /nonexistent/x) `id` $HOME \\ \" ; |", "", "ü"] {
            let (status, out, _) = sh(&format!("printf %s {}", quote(s)), b"");
            assert_eq!(status, 0);
            assert_eq!(String::from_utf8(out).unwrap(), s);
        }
    }

    #[test]
    fn wrapped_command_runs_in_sh() {
        let inner = "# kubeha it's a test\nprintf '%s|' \"$0\" it\\'s; cat";
        let (status, out, _) = sh(&wrap(inner, false, None), b"stdin");
        assert_eq!(status, 0);
        assert_eq!(String::from_utf8(out).unwrap(), "kubeha_it_s_a_test|it's|stdin");
        let (status, out, _) = sh(&wrap(inner, false, Some(Duration::from_secs(5))), b"stdin");
        assert_eq!((status, String::from_utf8(out).unwrap().as_str()), (0, "kubeha_it_s_a_test|it's|stdin"));
        assert_eq!(wrap("true", true, None), "sudo -n -- sh -c 'eval \"$(printf %s dHJ1ZQ== | base64 -d)\"' 'true'");
        assert!(wrap("true", false, Some(Duration::from_millis(1500))).starts_with("timeout -k 5 1.500 sh -c 'eval "));
        assert_eq!(unwrap(&wrap(inner, true, Some(Duration::from_secs(1)))).as_deref(), Some(inner));
        assert_eq!(unwrap("sh -c 'true'"), None);
        let started = std::time::Instant::now();
        let (status, _, _) = sh(&wrap("sleep 5 & sleep 6", false, Some(Duration::from_millis(200))), b"");
        assert_eq!(status as u32, TIMEOUT_STATUS);
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    /// The command line holds only what every login shell passes on unchanged: run by fish,
    /// tcsh, csh, bash and zsh where installed, it does exactly what `sh` does with the script.
    #[test]
    fn wrapped_commands_survive_every_login_shell() {
        let script = "# kubeha odd one\nset -u\nx='it'\\''s $HOME `id` \\ \"q\" ! %'\nprintf '%s|%s|' \"$x\" \"$0\"\ncat <<EOF\nline $x\nEOF\nhead -c 3; echo; cat";
        let line = wrap(script, false, Some(Duration::from_secs(10)));
        for c in ['\n', '\\', '!', '$', '`', '"'] {
            let outside: String = line.split('\'').step_by(2).collect();
            assert!(!outside.contains(c), "{c:?} outside quotes in {line}");
        }
        assert!(!line.contains('\n') && !line.contains('\\') && !line.contains('!'), "{line}");
        let (status, want, err) = sh(&line, b"abcdef");
        assert_eq!(status, 0, "{err}");
        assert!(String::from_utf8_lossy(&want).starts_with("it's $HOME `id` \\ \"q\" ! %|kubeha_odd_one|line it"));
        let tried = in_login_shells(&["fish", "tcsh", "csh", "bash", "zsh"], &line, b"abcdef", |shell, out| {
            assert_eq!(out.status.code(), Some(0), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(out.stdout, want, "{shell}");
        });
        eprintln!("checked {tried} other shells");
    }

    /// Runs `line` as sshd would hand it to each of `shells` that is installed (`SHELL -c LINE`),
    /// with `input` on stdin, and checks the output; returns how many shells it tried.
    fn in_login_shells(
        shells: &[&str],
        line: &str,
        input: &[u8],
        check: impl Fn(&str, &std::process::Output),
    ) -> usize {
        let mut tried = 0;
        for shell in shells {
            let Some(path) = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(shell)).find(|p| p.is_file()) else {
                continue;
            };
            tried += 1;
            let mut child = Command::new(&path)
                .arg("-c")
                .arg(line)
                .env("HOME", std::env::temp_dir())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            check(shell, &child.wait_with_output().unwrap());
        }
        tried
    }

    #[test]
    fn scripts_on_stdin_survive_every_login_shell_and_cannot_read_themselves() {
        // A script that tries to read its input (it must see none, not the rest of itself),
        // with quotes, a here-document and an exit status.
        let script = "# kubeha odd one\nset -u\nx='it'\\''s $HOME `id` \\ \"q\" ! %'\nprintf '%s|' \"$x\"\n\
                      cat <<EOF\nline $x\nEOF\nrest=$(cat); printf '[%s]' \"$rest\"\nexit 7";
        let (line, input) = wrap_stdin(script, false, Some(Duration::from_secs(10)));
        assert_eq!(line, "timeout -k 5 10.000 sh -s");
        let want = "it's $HOME `id` \\ \"q\" ! %|line it's $HOME `id` \\ \"q\" ! %\n[]";
        let shells = ["sh", "fish", "tcsh", "csh", "bash", "zsh"];
        let tried = in_login_shells(&shells, &line, &input, |shell, out| {
            assert_eq!(out.status.code(), Some(7), "{shell}: {}", String::from_utf8_lossy(&out.stderr));
            assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{shell}");
        });
        assert!(tried >= 2, "sh and bash at least");
    }

    #[test]
    fn labels_come_from_the_leading_comment() {
        assert_eq!(step_label("# kubeha put /etc/x\nset -u"), "kubeha put /etc/x");
        assert_eq!(step_label("systemctl restart kubelet"), "command `systemctl restart kubelet`");
        assert!(step_label(&"y".repeat(500)).len() < 80);
    }

    #[test]
    fn temp_names_are_dot_files_and_differ() {
        let a = temp_name("etcd.yaml");
        let b = temp_name("etcd.yaml");
        assert!(a.starts_with(".kubeha-etcd.yaml.") && a.ends_with(".tmp"), "{a}");
        assert_ne!(a, b);
        assert!(temp_name(&"n".repeat(300)).len() < 255);
    }

    #[test]
    fn scripts_need_absolute_paths() {
        assert!(file_states_script(&["etc/x".into()]).is_none());
        assert!(clean_temp_script(&["etc".into()]).is_none());
    }

    /// The file-states script against the local filesystem (sha256sum and stat are coreutils).
    #[test]
    fn file_states_script_reports_each_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("it's a file");
        std::fs::write(&file, b"hello\n").unwrap();
        // A symbolic link is reported as one, whether it points at a file, at nothing, or at a
        // file with the very content kubeha would write: "unchanged" is never decided through it.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        // sha256sum escapes this name (its output line starts with a backslash).
        let odd = dir.path().join("back\\slash\nnewline");
        std::fs::write(&odd, b"").unwrap();
        let paths = vec![file.clone(), dir.path().join("missing"), dir.path().to_path_buf(), link, dangling, odd];
        let (status, out, err) = sh(&wrap(&file_states_script(&paths).unwrap(), false, None), b"");
        assert_eq!(status, 0, "{err}");
        let states = parse_file_states(&out, 6).unwrap();
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_string();
        assert!(matches!(&states[5], StateLine::File { sha256, .. } if *sha256 == empty), "{:?}", states[5]);
        let me = std::fs::symlink_metadata(dir.path().join("link")).unwrap();
        assert_eq!(states[3], StateLine::Symlink { uid: me.uid(), gid: me.gid() });
        assert_eq!(states[4], StateLine::Symlink { uid: me.uid(), gid: me.gid() });
        let meta = std::fs::metadata(&file).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            states[0],
            StateLine::File {
                sha256: "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03".into(),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            }
        );
        assert_eq!(states[1], StateLine::Missing);
        assert_eq!(states[2], StateLine::NotAFile);
        assert!(parse_file_states(&out, 5).is_err());
        assert!(parse_file_states(b"L x 0\n", 1).is_err());
        assert!(parse_file_states(b"F abc 644 0 0\n", 1).is_err());
    }

    #[test]
    fn clean_script_removes_only_kubeha_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".kubeha-etcd.yaml.0011223344556677.tmp");
        let keep = [dir.path().join("etcd.yaml"), dir.path().join(".other.tmp"), dir.path().join("kubeha-x.tmp")];
        std::fs::write(&stale, b"x").unwrap();
        for k in &keep {
            std::fs::write(k, b"x").unwrap();
        }
        let dirs = vec![dir.path().to_path_buf(), dir.path().join("absent")];
        let (status, out, err) = sh(&clean_temp_script(&dirs).unwrap(), b"");
        assert_eq!(status, 0, "{err}");
        assert_eq!(parse_removed(&out), vec![stale.clone()]);
        assert!(!stale.exists());
        assert!(keep.iter().all(|k| k.exists()));
    }
}
