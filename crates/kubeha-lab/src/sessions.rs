//! A host's SSH sessions as processes: the sshd listener, one sshd process per connection and the
//! commands below them. Tests of SSH clients kill or freeze the per-connection processes, as a
//! crashed sshd, a dropped connection or a hung host would, while the listener keeps running.

use nix::sys::signal::Signal;

use super::process::{ProcRef, descendants};
use super::{Lab, LabError};

/// Command names of sshd's per-connection processes (`sshd-session` from OpenSSH 9.8 on).
const SESSION_NAMES: [&str; 2] = ["sshd", "sshd-session"];

impl Lab {
    /// The host's listening sshd, if it runs.
    pub fn sshd(&self, host: &str) -> Result<Option<ProcRef>, LabError> {
        Ok(self.node_status(host)?.and_then(|s| s.sshd).filter(ProcRef::alive))
    }

    /// Every process below the host's sshd listener: the per-connection sshd processes and the
    /// commands they run (none when sshd is stopped).
    pub fn ssh_processes(&self, host: &str) -> Result<Vec<ProcRef>, LabError> {
        Ok(self.sshd(host)?.map(|s| descendants(s.pid)).unwrap_or_default())
    }

    /// Kills (SIGKILL) the per-connection sshd processes of a host: every open connection drops
    /// at once, the listener keeps running, and the commands those sessions ran see their pipes
    /// close (what is left of them goes with the host). Returns how many were killed.
    pub fn kill_ssh_sessions(&self, host: &str) -> Result<usize, LabError> {
        self.signal_sessions(host, Signal::SIGKILL)
    }

    /// Stops (SIGSTOP) the per-connection sshd processes of a host: the host stops answering on
    /// its connections without closing anything, as a hung machine or a silent network would.
    /// New connections still work. Returns how many were stopped.
    pub fn freeze_ssh_sessions(&self, host: &str) -> Result<usize, LabError> {
        self.signal_sessions(host, Signal::SIGSTOP)
    }

    fn signal_sessions(&self, host: &str, signal: Signal) -> Result<usize, LabError> {
        let sessions = self.ssh_processes(host)?.into_iter().filter(|p| {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", p.pid)).unwrap_or_default();
            SESSION_NAMES.contains(&comm.trim())
        });
        Ok(sessions.filter(|p| p.signal(signal)).count())
    }
}
