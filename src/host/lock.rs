//! A lock on a host, so two kubeha runs (two operators, or two state directories) never write
//! the same hosts at once. The state directory's own lock only covers runs that share it.
//!
//! The lock is a small text file, [`layout::HOST_LOCK`], naming its holder (user@machine, pid,
//! command), since when it is held and until when the holder may need it. It is created with
//! `set -C` (an exclusive create), so of two runs racing for a host exactly one gets it. A lock
//! past its `until`, or one whose holder is a process of this machine that no longer runs, is
//! stale and may be taken over; `--force-lock` takes over any. Taking over is a compare and
//! swap: it replaces only the lock that was read. Releasing removes the file only if it still
//! carries this run's token.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::layout;
use crate::transport::shell::quote;
use crate::transport::{Remote, TransportError};

/// Who holds a host's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// `user@machine` of the run.
    pub who: String,
    pub pid: u32,
    /// The command line, e.g. `kubeha init`.
    pub command: String,
    /// When it was taken and until when it may be held, in seconds since the Unix epoch.
    pub since: u64,
    pub until: u64,
    /// Random, per run: the release removes only this run's lock.
    pub token: String,
}

impl Holder {
    /// A holder for this process: `who` and `command` as given, a lock valid for `ttl`.
    pub fn new(who: impl Into<String>, command: impl Into<String>, ttl: Duration) -> Holder {
        let since = now();
        let mut random = [0u8; 16];
        let _ = getrandom::fill(&mut random);
        Holder {
            who: who.into(),
            pid: std::process::id(),
            command: command.into(),
            since,
            until: since + ttl.as_secs().max(1),
            token: hex::encode(random),
        }
    }

    /// The lock file's text: one `key: value` per line, control characters replaced.
    pub fn to_text(&self) -> String {
        let clean = |s: &str| s.replace(|c: char| c.is_control(), "?");
        format!(
            "who: {}\npid: {}\ncommand: {}\nsince: {}\nuntil: {}\ntoken: {}\n",
            clean(&self.who),
            self.pid,
            clean(&self.command),
            self.since,
            self.until,
            self.token
        )
    }

    /// Reads a lock file's text; `None` if it is not one.
    pub fn parse(text: &str) -> Option<Holder> {
        let field = |key: &str| {
            text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(": ")).map(|v| v.trim().to_string())
        };
        Some(Holder {
            who: field("who")?,
            pid: field("pid")?.parse().ok()?,
            command: field("command")?,
            since: field("since")?.parse().ok()?,
            until: field("until")?.parse().ok()?,
            token: field("token")?,
        })
    }

    /// Whether this lock may be taken over without `--force-lock`: it is past its `until`, or
    /// its holder ran on `machine` (this one) as a process that has ended.
    pub fn is_stale(&self, now: u64, machine: &str, alive: impl Fn(u32) -> bool) -> bool {
        now > self.until || (self.who.rsplit_once('@').is_some_and(|(_, m)| m == machine) && !alive(self.pid))
    }

    /// "ops@laptop (pid 4242, `kubeha init`) since 2026-01-01 10:00:00 UTC, until ..."
    pub fn describe(&self) -> String {
        format!(
            "{} (pid {}, `{}`) since {}, until {}",
            self.who,
            self.pid,
            self.command,
            utc(self.since),
            utc(self.until)
        )
    }
}

fn utc(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What trying to lock a host came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// This run holds the lock now.
    Taken,
    /// Someone else does (what the lock file says, or its raw text if it cannot be read).
    Held(Result<Holder, String>),
}

/// Exit status of the lock scripts when the lock is held by someone else.
const HELD: u32 = 3;

/// Creates the lock with this run's holder, unless one exists (then its text is returned).
pub async fn try_take<R: Remote>(remote: &R, holder: &Holder) -> Result<Attempt, TransportError> {
    try_take_then(remote, holder, None).await.map(|(attempt, _)| attempt)
}

/// [`try_take`], and once the lock is taken, `then` (a read-only script that reads no input) in
/// the same remote command: what a run does first on a host it has just locked, without a
/// second round trip. Its output comes back with [`Attempt::Taken`].
pub async fn try_take_then<R: Remote>(
    remote: &R,
    holder: &Holder,
    then: Option<&str>,
) -> Result<(Attempt, Option<crate::transport::Output>), TransportError> {
    let on_taken = then.map(|s| format!("(\n{s}\n) </dev/null\n")).unwrap_or_default();
    let script = format!(
        "# kubeha taking the host lock\n\
         set -u\n\
         d={dir}; f={file}\n\
         for p in {parent} \"$d\"; do [ -L \"$p\" ] && {{ echo \"$p is a symbolic link\" >&2; exit 5; }}; done\n\
         (umask 022 && mkdir -p -- \"$d\") || exit 10\n\
         umask 022\n\
         t=$(cat) || exit 11\n\
         if (set -C; printf '%s\\n' \"$t\" > \"$f\") 2>/dev/null; then\n{on_taken}exit 0\nfi\n\
         [ -f \"$f\" ] && [ ! -L \"$f\" ] || {{ echo \"$f is not a regular file\" >&2; exit 12; }}\n\
         cat -- \"$f\"; exit {HELD}\n",
        dir = quote(layout::KUBEHA_DIR),
        file = quote(layout::HOST_LOCK),
        parent = quote(layout::KUBERNETES_DIR),
    );
    let (attempt, out) = attempt(remote, &script, holder).await?;
    let then = (attempt == Attempt::Taken && then.is_some()).then_some(out);
    Ok((attempt, then))
}

/// Replaces the lock whose text was `old` with this run's holder; if the lock changed since it
/// was read (another run took it over first), that one is returned as held.
pub async fn take_over<R: Remote>(remote: &R, holder: &Holder, old: &str) -> Result<Attempt, TransportError> {
    use sha2::Digest;
    let expected = hex::encode(sha2::Sha256::digest(format!("{}\n", old.trim_end_matches('\n'))));
    let script = format!(
        "# kubeha taking over the host lock\n\
         set -u\n\
         f={file}; n={temp}\n\
         t=$(cat) || exit 11\n\
         s=$(sha256sum < \"$f\") || exit 12\n\
         [ \"${{s%% *}}\" = {expected} ] || {{ cat -- \"$f\"; exit {HELD}; }}\n\
         umask 022\n\
         (set -C; printf '%s\\n' \"$t\" > \"$n\") || exit 13\n\
         mv -f -T -- \"$n\" \"$f\" || {{ rm -f -- \"$n\"; exit 14; }}\n",
        file = quote(layout::HOST_LOCK),
        temp = quote(&format!("{}/{}", layout::KUBEHA_DIR, crate::transport::shell::temp_name("lock"))),
    );
    attempt(remote, &script, holder).await.map(|(attempt, _)| attempt)
}

async fn attempt<R: Remote>(
    remote: &R,
    script: &str,
    holder: &Holder,
) -> Result<(Attempt, crate::transport::Output), TransportError> {
    let text = holder.to_text();
    let out = remote.exec(script, text.trim_end().as_bytes()).await?;
    match out.status {
        0 => Ok((Attempt::Taken, out)),
        HELD => {
            let text = out.stdout_text();
            Ok((Attempt::Held(Holder::parse(&text).ok_or(text)), out))
        }
        status => Err(TransportError::CommandFailed {
            host: remote.host().to_string(),
            step: crate::transport::shell::step_label(script),
            status,
            stderr: out.stderr_text(),
        }),
    }
}

/// Removes the lock if it is still this run's.
pub async fn release<R: Remote>(remote: &R, holder: &Holder) -> Result<(), TransportError> {
    let script = format!(
        "# kubeha releasing the host lock\n\
         f={file}\n\
         if [ -f \"$f\" ] && grep -qx {line} \"$f\"; then rm -f -- \"$f\"; fi\n",
        file = quote(layout::HOST_LOCK),
        line = quote(&format!("token: {}", holder.token)),
    );
    remote.run(&script, b"").await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::MemoryRemote;

    #[test]
    fn holders_round_trip_and_go_stale() {
        let h = Holder::new("ops@laptop", "kubeha init\nx", Duration::from_secs(60));
        let text = h.to_text();
        assert!(text.contains("command: kubeha init?x\n"), "{text}");
        let back = Holder::parse(&text).unwrap();
        assert_eq!((back.who.as_str(), back.pid, back.until - back.since), ("ops@laptop", h.pid, 60));
        assert!(Holder::parse("garbage").is_none());
        let alive = |_| true;
        assert!(!back.is_stale(back.since + 10, "elsewhere", alive));
        assert!(back.is_stale(back.until + 1, "elsewhere", alive));
        // A run of this machine that has ended is stale at once; one of another machine is not.
        assert!(back.is_stale(back.since, "laptop", |_| false));
        assert!(!back.is_stale(back.since, "desktop", |_| false));
        assert!(back.describe().starts_with(&format!("ops@laptop (pid {}, `kubeha init?x`) since 20", h.pid)));
    }

    /// The scripts under a local `sh`, on paths in a temporary directory: an exclusive create, a
    /// compare-and-swap takeover, and a release that leaves another run's lock alone.
    #[tokio::test]
    async fn the_scripts_lock_take_over_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap().to_string();
        let host = LocalSh { root: root.clone() };
        let a = Holder::new("a@one", "kubeha init", Duration::from_secs(60));
        let b = Holder::new("b@two", "kubeha init", Duration::from_secs(60));
        assert_eq!(try_take(&host, &a).await.unwrap(), Attempt::Taken);
        let Attempt::Held(Ok(held)) = try_take(&host, &b).await.unwrap() else { panic!() };
        assert_eq!(held, a);
        // b may not take over a lock that changed since it was read.
        assert!(matches!(take_over(&host, &b, "who: other").await.unwrap(), Attempt::Held(Ok(h)) if h == a));
        assert_eq!(take_over(&host, &b, &a.to_text()).await.unwrap(), Attempt::Taken);
        release(&host, &a).await.unwrap();
        let lock = format!("{root}{}", layout::HOST_LOCK);
        assert_eq!(Holder::parse(&std::fs::read_to_string(&lock).unwrap()), Some(b.clone()));
        release(&host, &b).await.unwrap();
        assert!(!std::path::Path::new(&lock).exists());
        let leftovers: Vec<_> = std::fs::read_dir(format!("{root}{}", layout::KUBEHA_DIR)).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    /// A script to run once the lock is taken runs in the same command, reads no input (the
    /// holder's text is the lock script's), and only when the lock was taken.
    #[tokio::test]
    async fn a_look_runs_only_once_the_lock_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let host = LocalSh { root: dir.path().to_str().unwrap().to_string() };
        let a = Holder::new("a@one", "kubeha init", Duration::from_secs(60));
        let look = "# looking\necho looked; cat; echo \"input: $?\"";
        let (attempt, out) = try_take_then(&host, &a, Some(look)).await.unwrap();
        assert_eq!(attempt, Attempt::Taken);
        assert_eq!(out.unwrap().stdout_text(), "looked\ninput: 0\n");
        let b = Holder::new("b@two", "kubeha init", Duration::from_secs(60));
        let (attempt, out) = try_take_then(&host, &b, Some(look)).await.unwrap();
        assert!(matches!(attempt, Attempt::Held(Ok(h)) if h == a));
        assert!(out.is_none(), "a look at a host another run holds");
        release(&host, &a).await.unwrap();
        assert_eq!(try_take_then(&host, &b, None).await.unwrap(), (Attempt::Taken, None));
    }

    #[tokio::test]
    async fn held_and_failed_on_the_memory_host() {
        let host = MemoryRemote::new("cp1");
        let a = Holder::new("a@one", "kubeha init", Duration::from_secs(60));
        host.on_exec(move |_, _| crate::transport::Output { status: HELD, stdout: a.to_text().into(), stderr: vec![] });
        let b = Holder::new("b@two", "kubeha init", Duration::from_secs(60));
        assert!(matches!(try_take(&host, &b).await.unwrap(), Attempt::Held(Ok(h)) if h.who == "a@one"));
    }

    /// Runs scripts with the local `sh`, the layout's paths moved under `root`.
    struct LocalSh {
        root: String,
    }

    impl Remote for LocalSh {
        fn host(&self) -> &str {
            "local"
        }

        async fn exec(&self, command: &str, stdin: &[u8]) -> Result<crate::transport::Output, TransportError> {
            use std::io::Write;
            let command = command.replace("'/etc/", &format!("'{}/etc/", self.root));
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(crate::transport::shell::wrap(&command, false, None))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(stdin).unwrap();
            let out = child.wait_with_output().unwrap();
            Ok(crate::transport::Output {
                status: out.status.code().unwrap_or(255) as u32,
                stdout: out.stdout,
                stderr: out.stderr,
            })
        }

        async fn open_tcp(&self, _: &str, _: u16) -> Result<crate::transport::Tunnel, TransportError> {
            unimplemented!()
        }
    }
}
