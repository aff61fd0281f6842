//! What can go wrong talking to a host, each case with the host (and file, user or step) it
//! concerns and what the operator can do about it.
//!
//! Messages never carry file contents or key material: a failed upload names the path, a failed
//! command names a short step label and shows the command's own stderr.

use std::path::PathBuf;
use std::time::Duration;

/// How the operator makes kubeha record a host key it has not seen before.
pub const ACCEPT_NEW_HINT: &str = "run kubeha with --accept-new-host-keys to record it";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("{host}: {what} timed out after {}", humantime::format_duration(*after))]
    Timeout { host: String, what: String, after: Duration },

    #[error("{host}: cannot connect to {address}: {source}")]
    Connect {
        host: String,
        address: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{host}: cannot resolve {name}: {source}")]
    Resolve {
        host: String,
        name: String,
        #[source]
        source: std::io::Error,
    },

    /// A jump host on the way to `host` failed; `source` names the hop (`jump host <name>`).
    #[error("{host}: {}", hop_text(hop, source))]
    Jump { host: String, hop: String, source: Box<TransportError> },

    #[error("{host}: SSH connection to {address} failed: {source}")]
    Handshake {
        host: String,
        address: String,
        #[source]
        source: Box<russh::Error>,
    },

    #[error(
        "{host}: the host key of {} is not known ({} key {}, not in {}); verify that fingerprint out of \
         band (e.g. `ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub` on the host's console), then record it \
         with `{}`, or {ACCEPT_NEW_HINT}",
        key.address, key.algorithm, key.fingerprint, key.file.display(), key.key_file_kind(), key.keyscan_command()
    )]
    UnknownHostKey { host: String, key: Box<PresentedKey> },

    #[error(
        "{host}: HOST KEY CHANGED: {} presented {} key {}, which does not match the key(s) recorded in {} \
         at line(s) {}; someone may be intercepting the connection. If the host was reinstalled, verify the \
         new key out of band, remove the old entry (`ssh-keygen -R {} -f {}`) and record the new one",
        key.address, key.algorithm, key.fingerprint, key.file.display(), join_lines(lines),
        key.known_hosts_name, key.file.display()
    )]
    HostKeyChanged { host: String, key: Box<PresentedKey>, lines: Vec<usize> },

    #[error(
        "{host}: the host key {} of {} is marked @revoked in {} line {line}",
        key.fingerprint, key.address, key.file.display()
    )]
    HostKeyRevoked { host: String, key: Box<PresentedKey>, line: usize },

    #[error("{host}: {address} presented an SSH host certificate; kubeha checks plain host keys only")]
    HostCertificate { host: String, address: String },

    #[error("known hosts file {}: {source}", file.display())]
    KnownHosts {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{host}: SSH authentication as {user}@{address} failed; tried: {}. Check that one of these public keys \
         is in {user}'s authorized_keys on the host",
        if tried.is_empty() { "no key".to_string() } else { tried.join("; ") }
    )]
    AuthFailed { host: String, user: String, address: String, tried: Vec<String> },

    #[error("identity file {}: {reason}", path.display())]
    IdentityFile { path: PathBuf, reason: String },

    #[error(
        "identity file {} is protected by a passphrase and there is no terminal to ask for it: load it into \
         ssh-agent (`eval $(ssh-agent)`, `ssh-add {}`) and run kubeha again with SSH_AUTH_SOCK set",
        path.display(), path.display()
    )]
    PassphraseNeeded { path: PathBuf },

    #[error("identity file {}: wrong passphrase (asked {attempts} time(s))", path.display())]
    WrongPassphrase { path: PathBuf, attempts: u32 },

    #[error(
        "{host}: sudo asks {user} for a password; kubeha needs passwordless sudo (a sudoers rule like \
         `{user} ALL=(ALL) NOPASSWD: ALL`), or log in as root"
    )]
    SudoPasswordRequired { host: String, user: String },

    #[error("{host}: {user} cannot run commands as root with `sudo -n` (exit status {status}): {stderr}")]
    SudoFailed { host: String, user: String, status: u32, stderr: String },

    #[error("{host}: {step} failed with exit status {status}{}", stderr_suffix(stderr))]
    CommandFailed { host: String, step: String, status: u32, stderr: String },

    #[error("{host}: {step} was killed by signal {signal}{}", stderr_suffix(stderr))]
    CommandKilled { host: String, step: String, signal: String, stderr: String },

    /// Files of one upload whose SHA-256 on the host differed from what kubeha sent; no file
    /// of that upload was installed.
    #[error("{host}: {}; nothing was installed", damaged_text(files))]
    ChecksumMismatch { host: String, files: Vec<DamagedFile> },

    /// The host lacks something kubeha relies on (see "What the host needs" in docs/ssh.md).
    #[error("{host}: {reason}")]
    HostUnsupported { host: String, reason: String },

    #[error("{host}: the remote side refused to run {step} (exec request denied)")]
    ExecRefused { host: String, step: String },

    #[error("{host}: connection lost during {what}{}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    Disconnected { host: String, what: String, reason: Option<String> },

    #[error("{host}: {what}: {source}")]
    Channel {
        host: String,
        what: String,
        #[source]
        source: Box<russh::Error>,
    },

    #[error(
        "{host}: the SSH server refuses TCP forwarding to {target} (administratively prohibited: \
         `AllowTcpForwarding no` or a `permitopen` restriction in sshd_config or authorized_keys); kubeha needs it \
         to reach etcd and the apiserver on the host"
    )]
    ForwardingRefused { host: String, target: String },

    #[error("{host}: the host could not connect to {target} ({reason}); is the service listening there?")]
    TargetUnreachable { host: String, target: String, reason: String },

    #[error("{host}: {path:?} is not an absolute path with a file name")]
    InvalidPath { host: String, path: PathBuf },

    #[error("{host}: {} exists but is not a regular file", path.display())]
    NotAFile { host: String, path: PathBuf },

    #[error("{host}: unexpected output from {step}: {detail}")]
    BadOutput { host: String, step: String, detail: String },
}

impl TransportError {
    /// The host the error is about; `None` for local problems (an identity file, known_hosts).
    pub fn host(&self) -> Option<&str> {
        use TransportError::*;
        match self {
            Timeout { host, .. }
            | Connect { host, .. }
            | Resolve { host, .. }
            | Jump { host, .. }
            | Handshake { host, .. }
            | UnknownHostKey { host, .. }
            | HostKeyChanged { host, .. }
            | HostKeyRevoked { host, .. }
            | HostCertificate { host, .. }
            | AuthFailed { host, .. }
            | SudoPasswordRequired { host, .. }
            | SudoFailed { host, .. }
            | CommandFailed { host, .. }
            | CommandKilled { host, .. }
            | ChecksumMismatch { host, .. }
            | HostUnsupported { host, .. }
            | ExecRefused { host, .. }
            | Disconnected { host, .. }
            | Channel { host, .. }
            | ForwardingRefused { host, .. }
            | TargetUnreachable { host, .. }
            | InvalidPath { host, .. }
            | NotAFile { host, .. }
            | BadOutput { host, .. } => Some(host),
            KnownHosts { .. } | IdentityFile { .. } | PassphraseNeeded { .. } | WrongPassphrase { .. } => None,
        }
    }

    /// Whether the connection to the host is gone (asking again on it cannot help).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, TransportError::Disconnected { .. } | TransportError::Channel { .. })
    }
}

/// A host key as a server presented it, and the known_hosts file it was checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey {
    /// `address:port` connected to (IPv6 in brackets).
    pub address: String,
    /// The host's name in known_hosts: the address, or `[address]:port` for ports other than 22.
    pub known_hosts_name: String,
    /// e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// `SHA256:...`, as `ssh-keygen -lf` prints it.
    pub fingerprint: String,
    pub file: PathBuf,
}

impl PresentedKey {
    /// The part of OpenSSH's host key file name for this kind of key (`ed25519`, `ecdsa`, `rsa`).
    pub fn key_file_kind(&self) -> &'static str {
        match self.algorithm.as_str() {
            "ssh-ed25519" => "ed25519",
            a if a.starts_with("ecdsa-") => "ecdsa",
            a if a.starts_with("ssh-rsa") || a.starts_with("rsa-") => "rsa",
            _ => "*",
        }
    }

    /// The `ssh-keyscan` command line that records this host's keys in the known_hosts file.
    pub fn keyscan_command(&self) -> String {
        let (ip, port) = match self.address.rsplit_once(':') {
            Some((ip, port)) => (ip.trim_start_matches('[').trim_end_matches(']'), port),
            None => (self.address.as_str(), "22"),
        };
        format!("ssh-keyscan -p {port} {ip} >> {}", self.file.display())
    }
}

/// A file that did not arrive intact on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    /// The target path on the host.
    pub path: PathBuf,
    /// How many bytes the host received (`None` if it could not tell).
    pub received: Option<u64>,
    /// How many bytes kubeha sent.
    pub expected: u64,
}

impl std::fmt::Display for DamagedFile {
    /// `received R of E bytes`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.received {
            Some(n) => write!(f, "received {n} of {} bytes", self.expected),
            None => write!(f, "received an unknown number of {} bytes", self.expected),
        }
    }
}

/// `PATH did not arrive intact (received R of E bytes, sha256 mismatch)` for one file; for
/// several, their count and then each (at most ten) with its byte counts.
fn damaged_text(files: &[DamagedFile]) -> String {
    const SHOWN: usize = 10;
    match files {
        [file] => format!("{} did not arrive intact ({file}, sha256 mismatch)", file.path.display()),
        _ => {
            let mut list =
                files.iter().take(SHOWN).map(|f| format!("{} ({f})", f.path.display())).collect::<Vec<_>>().join(", ");
            if files.len() > SHOWN {
                list.push_str(&format!(" and {} more", files.len() - SHOWN));
            }
            format!("{} files did not arrive intact (sha256 mismatch): {list}", files.len())
        }
    }
}

/// A hop's error: it starts with the hop's label, or is a local problem (a key file) that does
/// not, and then gets it.
fn hop_text(hop: &str, source: &TransportError) -> String {
    if source.host().is_some() { source.to_string() } else { format!("{hop}: {source}") }
}

fn join_lines(lines: &[usize]) -> String {
    lines.iter().map(|l| l.to_string()).collect::<Vec<_>>().join(", ")
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() { String::new() } else { format!(": {stderr}") }
}

/// A command's stderr as it goes into an error: lossy UTF-8, trimmed, at most the last 2000
/// bytes (the end of a log usually says what went wrong).
pub(crate) fn stderr_text(stderr: &[u8]) -> String {
    const MAX: usize = 2000;
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut start = text.len() - MAX;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &text[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_stderr_keeps_its_end() {
        let mut long = "x".repeat(5000);
        long.push_str("the real reason");
        let text = stderr_text(long.as_bytes());
        assert!(text.ends_with("the real reason"));
        assert!(text.len() < 2100);
    }

    #[test]
    fn checksum_mismatch_names_each_file_with_its_byte_counts() {
        let damaged = |i: u64, received| DamagedFile { path: format!("/etc/f{i}").into(), received, expected: 100 };
        let one = TransportError::ChecksumMismatch { host: "cp1".into(), files: vec![damaged(0, Some(40))] };
        assert_eq!(
            one.to_string(),
            "cp1: /etc/f0 did not arrive intact (received 40 of 100 bytes, sha256 mismatch); nothing was installed"
        );
        let two =
            TransportError::ChecksumMismatch { host: "cp1".into(), files: vec![damaged(1, Some(0)), damaged(2, None)] };
        assert_eq!(
            two.to_string(),
            "cp1: 2 files did not arrive intact (sha256 mismatch): /etc/f1 (received 0 of 100 bytes), \
             /etc/f2 (received an unknown number of 100 bytes); nothing was installed"
        );
        let many = (0..12).map(|i| damaged(i, Some(0))).collect();
        let text = TransportError::ChecksumMismatch { host: "cp1".into(), files: many }.to_string();
        assert!(text.contains("/etc/f9 (received 0 of 100 bytes) and 2 more; nothing was installed"), "{text}");
        assert!(!text.contains("/etc/f10"), "{text}");
    }

    #[test]
    fn a_hop_error_names_the_host_and_the_hop() {
        let refused = TransportError::Connect {
            host: "jump host bastion".into(),
            address: "10.0.0.5:22".into(),
            source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        };
        let e = TransportError::Jump { host: "cp1".into(), hop: "jump host bastion".into(), source: Box::new(refused) };
        assert_eq!(e.to_string(), "cp1: jump host bastion: cannot connect to 10.0.0.5:22: connection refused");
        assert_eq!(e.host(), Some("cp1"));
        // A local problem (a key file) has no host of its own: the hop is added.
        let key = TransportError::IdentityFile { path: "/k".into(), reason: "missing".into() };
        let e = TransportError::Jump { host: "cp1".into(), hop: "jump host bastion".into(), source: Box::new(key) };
        assert_eq!(e.to_string(), "cp1: jump host bastion: identity file /k: missing");
        let dns = TransportError::Resolve {
            host: "cp1".into(),
            name: "cp1.invalid".into(),
            source: std::io::Error::other("no such name"),
        };
        assert_eq!(dns.to_string(), "cp1: cannot resolve cp1.invalid: no such name");
    }

    #[test]
    fn changed_key_names_file_and_lines() {
        let key = Box::new(PresentedKey {
            address: "[2001:db8::1]:2222".into(),
            known_hosts_name: "[2001:db8::1]:2222".into(),
            algorithm: "ecdsa-sha2-nistp256".into(),
            fingerprint: "SHA256:abc".into(),
            file: "/home/op/.ssh/known_hosts".into(),
        });
        let e = TransportError::HostKeyChanged { host: "cp1".into(), key: key.clone(), lines: vec![3, 7] };
        let text = e.to_string();
        assert!(text.contains("/home/op/.ssh/known_hosts at line(s) 3, 7"), "{text}");
        assert!(text.starts_with("cp1: HOST KEY CHANGED"), "{text}");
        assert!(text.contains("ssh-keygen -R [2001:db8::1]:2222 -f /home/op/.ssh/known_hosts"), "{text}");
        let text = TransportError::UnknownHostKey { host: "cp1".into(), key }.to_string();
        assert!(text.contains("ssh-keyscan -p 2222 2001:db8::1 >> /home/op/.ssh/known_hosts"), "{text}");
        assert!(text.contains("ssh_host_ecdsa_key.pub"), "{text}");
    }
}
