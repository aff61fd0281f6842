//! Processes the lab started: identified by PID *and* start time, so a recycled PID is never
//! signalled; plus small helpers to run the system tools the lab drives (`ip`, `ssh-keygen`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::LabError;

/// A process as the lab recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRef {
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot): tells a recycled PID apart.
    pub start_ticks: u64,
}

impl ProcRef {
    /// The running process `pid`, if there is one.
    pub fn of(pid: u32) -> Option<ProcRef> {
        let (start_ticks, _, _) = stat(pid)?;
        Some(ProcRef { pid, start_ticks })
    }

    /// Whether this very process still runs (a zombie does not count).
    pub fn alive(&self) -> bool {
        matches!(stat(self.pid), Some((t, state, _)) if t == self.start_ticks && state != 'Z' && state != 'X')
    }

    /// Sends `signal` if this process still runs; returns whether it was sent.
    pub fn signal(&self, signal: Signal) -> bool {
        self.alive() && kill(Pid::from_raw(self.pid as i32), signal).is_ok()
    }

    /// Signals the process group this process leads, if it still runs.
    pub fn signal_group(&self, signal: Signal) -> bool {
        self.alive() && killpg(Pid::from_raw(self.pid as i32), signal).is_ok()
    }
}

/// (start time, state, parent PID) from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u64, char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state, ppid))
}

/// Every live process below `root` (children, grandchildren, ...), deepest last.
pub fn descendants(root: u32) -> Vec<ProcRef> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    for entry in entries.flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
            && let Some((_, state, ppid)) = stat(pid)
            && state != 'Z'
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            if let Some(r) = ProcRef::of(c) {
                out.push(r);
            }
            queue.push(c);
        }
    }
    out
}

/// TERMs `procs`, waits up to `grace` for them to go, then KILLs the rest. `reap` is called while
/// waiting, so a caller can collect the exit status of its own children (a zombie counts as gone).
pub fn terminate(procs: &[ProcRef], grace: Duration, mut reap: impl FnMut()) {
    for p in procs {
        p.signal(Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && procs.iter().any(ProcRef::alive) {
        reap();
        std::thread::sleep(Duration::from_millis(50));
    }
    for p in procs {
        p.signal(Signal::SIGKILL);
    }
    reap();
}

/// A system program by absolute path, on PATH, or in `/usr/sbin` or `/sbin` (which a non-login
/// root shell may leave off PATH).
pub fn find_program(name: &str) -> Option<PathBuf> {
    if name.starts_with('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A `Command` for a system program (see [`find_program`]).
pub fn command(program: &str) -> Command {
    Command::new(find_program(program).unwrap_or_else(|| PathBuf::from(program)))
}

/// Runs a program to completion, capturing its output.
pub fn output<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<Output, LabError> {
    command(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn { program: program.to_string(), source })
}

/// Runs a program and fails unless it exits 0; returns its stdout.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Result<String, LabError> {
    let out = output(program, args)?;
    check(program, args, out)
}

/// Like [`run`], with `stdin` fed to the program.
pub fn run_with_stdin<S: AsRef<OsStr>>(program: &str, args: &[S], stdin: &str) -> Result<String, LabError> {
    use std::io::Write;
    let mut child = command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn { program: program.to_string(), source })?;
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let written = pipe.write_all(stdin.as_bytes());
    drop(pipe);
    let out = child.wait_with_output().map_err(|source| LabError::Spawn { program: program.to_string(), source })?;
    written.map_err(|source| LabError::Spawn { program: program.to_string(), source })?;
    check(program, args, out)
}

fn check<S: AsRef<OsStr>>(program: &str, args: &[S], out: Output) -> Result<String, LabError> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let command = std::iter::once(program.to_string())
        .chain(args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    Err(LabError::Command {
        command,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_refs_tell_processes_apart() {
        let me = ProcRef::of(std::process::id()).unwrap();
        assert!(me.alive());
        let recycled = ProcRef { start_ticks: me.start_ticks + 1, ..me };
        assert!(!recycled.alive());
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let r = ProcRef::of(child.id()).unwrap();
        assert!(descendants(std::process::id()).contains(&r));
        terminate(&[r], Duration::from_secs(2), || {
            let _ = child.try_wait();
        });
        let _ = child.wait();
        assert!(!r.alive());
    }

    #[test]
    fn failing_commands_say_what_failed() {
        let e = run("sh", &["-c", "echo oops >&2; exit 3"]).unwrap_err().to_string();
        assert!(e.contains("sh -c") && e.contains("oops") && e.contains('3'), "{e}");
        assert_eq!(run_with_stdin("cat", &[] as &[&str], "hi").unwrap(), "hi");
    }
}
