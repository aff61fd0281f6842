//! Writing results to stdout: a reader that stops early (`kubeha validate -o json | head -1`)
//! ends the output quietly instead of failing the command.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once stdout's reader has gone: later output is dropped.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stdout as is. A closed pipe is not an error: the command's exit code is
/// still its own.
pub fn print(text: &str) -> std::io::Result<()> {
    if CLOSED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => {
            CLOSED.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Writes `line` and a newline to stdout (see [`print`]).
pub fn println(line: impl std::fmt::Display) -> std::io::Result<()> {
    print(&format!("{line}\n"))
}
