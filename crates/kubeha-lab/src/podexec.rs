//! `kubeha-lab pod-exec`: how a lab host starts its processes (pods and sshd).
//!
//! With mounts, the program runs in a private mount namespace with its hostPath volumes
//! bind-mounted where the manifest mounts them (see `kubelet::volumes`). Either way it starts with
//! a clean signal mask: the supervisor blocks the signals it reads from a signalfd, and a process
//! it spawned directly would inherit that mask (and ignore SIGTERM). It replaces itself with the
//! program (same PID), so the supervisor tracks and signals the real process.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

/// One mount: `source` on the host at `target` in the container.
#[derive(Debug, Clone)]
pub struct PodMount {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

/// Makes the mounts and execs `program`; returns only on failure, with the reason.
pub fn exec(mounts: &[PodMount], program: &OsString, args: &[OsString]) -> String {
    if let Err(e) = nix::sys::signal::SigSet::empty().thread_set_mask() {
        return format!("cannot reset the signal mask: {e}");
    }
    if mounts.is_empty() {
        let e = std::process::Command::new(program).args(args).exec();
        return format!("cannot run {}: {e}", program.to_string_lossy());
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWNS) {
        return format!("cannot make a private mount namespace: {e}");
    }
    if let Err(e) = mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>) {
        return format!("cannot make mounts private: {e}");
    }
    for m in mounts {
        let (src, dst) = (&m.source, &m.target);
        if let Err(e) = mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>) {
            return format!("cannot bind {} on {}: {e}", src.display(), dst.display());
        }
        if m.read_only {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
            if let Err(e) = mount(None::<&str>, dst, None::<&str>, flags, None::<&str>) {
                return format!("cannot make {} read-only: {e}", dst.display());
            }
        }
    }
    let e = std::process::Command::new(program).args(args).exec();
    format!("cannot run {}: {e}", program.to_string_lossy())
}

/// Parses `[--bind SRC DST | --bind-ro SRC DST]... -- PROGRAM ARGS...` (the order of mounts is
/// kept: parents come before the mounts nested in them).
pub fn parse_args(args: Vec<OsString>) -> Result<(Vec<PodMount>, OsString, Vec<OsString>), String> {
    let mut it = args.into_iter();
    let mut mounts = Vec::new();
    loop {
        let Some(flag) = it.next() else { return Err("missing `-- PROGRAM`".into()) };
        let read_only = match flag.to_str() {
            Some("--") => break,
            Some("--bind") => false,
            Some("--bind-ro") => true,
            _ => return Err(format!("unexpected argument {}", flag.to_string_lossy())),
        };
        let (Some(source), Some(target)) = (it.next(), it.next()) else {
            return Err(format!("{} needs SOURCE and TARGET", flag.to_string_lossy()));
        };
        mounts.push(PodMount { source: source.into(), target: target.into(), read_only });
    }
    let program = it.next().ok_or("missing PROGRAM after --")?;
    Ok((mounts, program, it.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_keep_mount_order() {
        let args = ["--bind", "/a", "/b", "--bind-ro", "/c", "/b/c", "--", "sh", "-c", "true"];
        let (mounts, program, rest) = parse_args(args.iter().map(OsString::from).collect()).unwrap();
        assert_eq!(mounts.len(), 2);
        assert!(!mounts[0].read_only && mounts[1].read_only);
        assert_eq!(mounts[1].target, PathBuf::from("/b/c"));
        assert_eq!(program, "sh");
        assert_eq!(rest, ["-c", "true"]);
        assert!(parse_args(vec!["--bind".into(), "/a".into()]).is_err());
        assert!(parse_args(vec!["--".into()]).is_err());
    }
}
