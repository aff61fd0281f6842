//! Each host's real OpenSSH server: its own host key, configuration and command log.
//!
//! sshd does not log the command lines it runs, even at `LogLevel DEBUG3`. To let tests prove
//! that secrets never travel in a command line, every host's sshd has a `ForceCommand` wrapper
//! that appends the original command (`$SSH_ORIGINAL_COMMAND`, NUL-terminated, since a command
//! line may hold newlines but never a NUL) to the host's command log and then runs it with the
//! user's shell, as sshd itself would. `ForceCommand` applies to sessions only, so `direct-tcpip`
//! forwarding is untouched; the SFTP subsystem is the `sftp-server` program, which the wrapper
//! runs like any command.

use std::path::{Path, PathBuf};

use super::LabError;
use super::hostfs::LAB_RUN_DIR;
use super::process::run;
use super::state::{HostState, State};

/// The client key the inventory names (`<dir>/id_ed25519`).
pub fn identity_file(dir: &Path) -> PathBuf {
    dir.join("id_ed25519")
}

/// The known_hosts file the inventory names, with every host's key.
pub fn known_hosts_file(dir: &Path) -> PathBuf {
    dir.join("known_hosts")
}

pub fn host_key(host_dir: &Path) -> PathBuf {
    host_dir.join("ssh_host_ed25519_key")
}

pub fn config_file(host_dir: &Path) -> PathBuf {
    host_dir.join("sshd_config")
}

pub fn log_file(host_dir: &Path) -> PathBuf {
    host_dir.join("sshd.log")
}

/// The command log as the machine sees it.
pub fn command_log(host_dir: &Path) -> PathBuf {
    host_dir.join("run/kubeha-lab/commands.log")
}

/// Makes an ed25519 key pair without a passphrase (private key 0600).
pub fn keygen(path: &Path, comment: &str) -> Result<(), LabError> {
    for p in [path.to_path_buf(), path.with_extension("pub")] {
        let _ = std::fs::remove_file(p);
    }
    let path = path.to_string_lossy();
    run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", &path]).map(drop)
}

/// The `ForceCommand` wrapper installed at `/run/kubeha-lab/logged-command` on every host.
pub fn command_wrapper() -> String {
    format!(
        r#"#!/bin/sh
# kubeha-lab: sshd's ForceCommand on this lab host. Records each command line the host receives
# (NUL-terminated) in {LAB_RUN_DIR}/commands.log, then runs it with the user's shell as sshd would.
if [ -z "${{SSH_ORIGINAL_COMMAND+set}}" ]; then
    exec "${{SHELL:-/bin/sh}}" -l
fi
printf '%s\0' "$SSH_ORIGINAL_COMMAND" >> {LAB_RUN_DIR}/commands.log
exec "${{SHELL:-/bin/sh}}" -c "$SSH_ORIGINAL_COMMAND"
"#
    )
}

/// The sshd configuration of one host.
pub fn config(state: &State, host: &HostState) -> String {
    let dir = state.host_dir(&host.name);
    format!(
        "# kubeha-lab: sshd of lab host {name} ({address}).\n\
         ListenAddress {address}\n\
         Port 22\n\
         HostKey {key}\n\
         PidFile /run/sshd.pid\n\
         AuthorizedKeysFile {LAB_RUN_DIR}/authorized_keys\n\
         StrictModes no\n\
         UsePAM no\n\
         PermitRootLogin prohibit-password\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PrintMotd no\n\
         AllowTcpForwarding yes\n\
         MaxStartups 100:30:300\n\
         MaxSessions 100\n\
         LogLevel VERBOSE\n\
         Subsystem sftp /usr/lib/openssh/sftp-server\n\
         ForceCommand {LAB_RUN_DIR}/logged-command\n",
        name = host.name,
        address = host.address,
        key = host_key(&dir).display(),
    )
}

/// A known_hosts text with every host's public key under its address.
pub fn known_hosts(state: &State) -> Result<String, LabError> {
    let mut out = String::new();
    for h in &state.hosts {
        let path = host_key(&state.host_dir(&h.name)).with_extension("pub");
        let text = std::fs::read_to_string(&path).map_err(|source| LabError::Io { path: path.clone(), source })?;
        let mut words = text.split_whitespace();
        let (Some(kind), Some(key)) = (words.next(), words.next()) else {
            return Err(LabError::State { path, message: "not an OpenSSH public key".into() });
        };
        out.push_str(&format!("{} {kind} {key}\n", h.address));
    }
    Ok(out)
}

/// The command lines recorded in a command log, in order.
pub fn parse_command_log(bytes: &[u8]) -> Vec<String> {
    bytes.split(|b| *b == 0).filter(|c| !c.is_empty()).map(|c| String::from_utf8_lossy(c).into_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_records_and_runs_command_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("commands.log");
        let script = command_wrapper().replace(&format!("{LAB_RUN_DIR}/commands.log"), &log.to_string_lossy());
        let wrapper = dir.path().join("wrapper");
        std::fs::write(&wrapper, script).unwrap();
        let command = "printf '%s\\n' \"two\nlines\"; echo $((1+2))";
        let out = std::process::Command::new("sh")
            .arg(&wrapper)
            .env("SSH_ORIGINAL_COMMAND", command)
            .env("SHELL", "/bin/sh")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "two\nlines\n3\n");
        std::process::Command::new("sh").arg(&wrapper).env("SSH_ORIGINAL_COMMAND", "true").status().unwrap();
        let recorded = parse_command_log(&std::fs::read(&log).unwrap());
        assert_eq!(recorded, [command, "true"]);
    }
}
