//! What every lab test binary shares: the root check that lets a normal user's `cargo test` pass
//! by skipping the tests that need namespaces, and where the `kubeha` binary is.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// Whether the calling test can run: it needs root for network and mount namespaces. When not
/// root, says so on stderr (past the test harness's capture, so a plain `cargo test` shows it)
/// and returns false; the test then returns early and passes.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
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
