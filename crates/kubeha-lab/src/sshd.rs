//! Each host's real OpenSSH server: its own host key, configuration and command log.
//!
//! sshd does not log the command lines it runs, even at `LogLevel DEBUG3`. To let tests prove
//! that secrets never travel in a command line, every host's sshd has a `ForceCommand` wrapper
//! that appends the original command (`$SSH_ORIGINAL_COMMAND`, NUL-terminated, since a command
//! line may hold newlines but never a NUL) to the host's command log and then runs it with the
//! user's shell, as sshd itself would. `ForceCommand` applies to sessions only, so `direct-tcpip`
//! forwarding is untouched; the SFTP subsystem is the `sftp-server` program, which the wrapper
//! runs like any command. A lab may turn the wrapper off, add users' keys, ports, host keys and
//! settings ([`SshSetup`](crate::SshSetup)).

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

/// The host's ed25519 private key (`.pub` beside it).
pub fn host_key(host_dir: &Path) -> PathBuf {
    host_key_of(host_dir, "ed25519")
}

/// The host's private key of type `kind` (`ed25519`, `ecdsa`, `rsa`).
pub fn host_key_of(host_dir: &Path, kind: &str) -> PathBuf {
    host_dir.join(format!("ssh_host_{kind}_key"))
}

/// The key types a host has: ed25519, then its extra ones.
pub fn host_key_types(state: &State, host: &str) -> Vec<&'static str> {
    let extra = state.ssh.host_keys.get(host).map(Vec::as_slice).unwrap_or_default();
    std::iter::once("ed25519").chain(extra.iter().map(|k| k.name())).collect()
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
    keygen_of(path, "ed25519", comment)
}

/// Makes a key pair of type `kind` (`ed25519`, `ecdsa` on P-256, `rsa` of 3072 bits) without a
/// passphrase.
pub fn keygen_of(path: &Path, kind: &str, comment: &str) -> Result<(), LabError> {
    for p in [path.to_path_buf(), path.with_extension("pub")] {
        let _ = std::fs::remove_file(p);
    }
    let path = path.to_string_lossy();
    let bits = match kind {
        "ecdsa" => "256",
        "rsa" => "3072",
        _ => "0",
    };
    let mut args = vec!["-q", "-t", kind, "-N", "", "-C", comment, "-f", &path];
    if bits != "0" {
        args.extend(["-b", bits]);
    }
    run("ssh-keygen", &args).map(drop)
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

/// The sshd configuration of one host: the lab's [`SshSetup::settings`](crate::SshSetup) first (the
/// first value of a keyword wins), then the lab's own, then its `Match` blocks.
pub fn config(state: &State, host: &HostState) -> String {
    let dir = state.host_dir(&host.name);
    let mut out = format!("# kubeha-lab: sshd of lab host {} ({}).\n", host.name, host.address);
    for line in &state.ssh.settings {
        out.push_str(&format!("{line}\n"));
    }
    out.push_str(&format!("Port {}\nListenAddress {}\n", host.ssh_port, host.address));
    for kind in host_key_types(state, &host.name) {
        out.push_str(&format!("HostKey {}\n", host_key_of(&dir, kind).display()));
    }
    out.push_str(&format!(
        "PidFile /run/sshd.pid\n\
         AuthorizedKeysFile {LAB_RUN_DIR}/authorized_keys {LAB_RUN_DIR}/authorized_keys.d/%u\n\
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
         Subsystem sftp /usr/lib/openssh/sftp-server\n"
    ));
    if state.ssh.record_commands {
        out.push_str(&format!("ForceCommand {LAB_RUN_DIR}/logged-command\n"));
    }
    for line in &state.ssh.matches {
        out.push_str(&format!("{line}\n"));
    }
    out
}

/// A known_hosts text with every host key of every host under its address (`[address]:port`
/// where the port is not 22).
pub fn known_hosts(state: &State) -> Result<String, LabError> {
    let mut out = String::new();
    for h in &state.hosts {
        let name = match h.ssh_port {
            22 => h.address.to_string(),
            port => format!("[{}]:{port}", h.address),
        };
        for kind in host_key_types(state, &h.name) {
            let path = host_key_of(&state.host_dir(&h.name), kind).with_extension("pub");
            let text = std::fs::read_to_string(&path).map_err(|source| LabError::Io { path: path.clone(), source })?;
            let mut words = text.split_whitespace();
            let (Some(kind), Some(key)) = (words.next(), words.next()) else {
                return Err(LabError::State { path, message: "not an OpenSSH public key".into() });
            };
            out.push_str(&format!("{name} {kind} {key}\n"));
        }
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
