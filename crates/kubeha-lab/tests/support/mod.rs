//! What every lab test binary shares: the root check that lets a normal user's `cargo test` pass
//! by skipping the tests that need namespaces, and where the `kubeha` binary is.

#![allow(dead_code)]

pub mod cluster;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether the calling test can run: it needs root for network and mount namespaces. When not
/// root, says so on stderr (past the test harness's capture, so a plain `cargo test` shows it)
/// and returns false; the test then returns early and passes.
///
/// As root it also takes, for the rest of the process, a lock named after the test binary: its
/// labs have fixed names and subnets, so the same tests run from another checkout at the same
/// time wait for this run instead of tearing its labs down.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        hold_binary_lock();
        return true;
    }
    // The test harness names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or("this test");
    let _ = writeln!(std::io::stderr(), "skipping {test}: needs root (network namespaces)");
    false
}

/// The `kubeha` binary to test: `$KUBEHA_BIN` (`scripts/test` sets it), else `kubeha` beside
/// `kubeha-lab` in the workspace's target directory (built by `cargo build --workspace --bins`
/// or any `cargo test --workspace`). Fails the test with advice when it is not there.
pub fn kubeha_bin() -> PathBuf {
    let (path, from) = match std::env::var_os("KUBEHA_BIN") {
        Some(p) => (PathBuf::from(p), "KUBEHA_BIN"),
        None => (Path::new(env!("CARGO_BIN_EXE_kubeha-lab")).with_file_name("kubeha"), "the target directory"),
    };
    assert!(
        path.is_file(),
        "no kubeha binary at {} (from {from}): build it with `cargo build --workspace --bins`, or set KUBEHA_BIN \
         to a built kubeha",
        path.display()
    );
    path
}

/// Blocks until no other process runs this test binary's labs, then holds the lock until exit.
fn hold_binary_lock() {
    use std::sync::OnceLock;
    static HELD: OnceLock<Option<nix::fcntl::Flock<std::fs::File>>> = OnceLock::new();
    HELD.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        // `e2e-0123abcd` → `e2e`: the same tests from any checkout share one lock.
        let stem = exe.file_stem()?.to_string_lossy().into_owned();
        let name = stem.rsplit_once('-').map_or(stem.as_str(), |(n, _)| n).to_string();
        let path = std::env::temp_dir().join(format!("kubeha-lab-tests-{name}.lock"));
        let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).ok()?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).ok()
    });
}
