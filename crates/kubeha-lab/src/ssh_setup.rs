//! How lab hosts take SSH logins beyond what the written inventory needs: more users, more
//! authorized keys, other ports, more host key types and sshd settings.
//!
//! A lab made for kubeha needs none of it (root and `ops` log in with the lab's own key on port
//! 22). Tests of SSH clients do: kubeha's transport tests use it for a user whose sudo asks for a
//! password, keys of every type, a host on another port with two host keys, a user without TCP
//! forwarding and sshd's own debug log. Everything here is decided at `up` and kept in the state
//! file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::hostfs::OPS_USER;
use super::{LabError, LabHost};

/// What a user added by the lab may do with sudo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sudo {
    /// No sudo rule.
    None,
    /// `ALL=(ALL:ALL) ALL`: sudo asks for a password (the user has none, so `sudo -n` fails).
    Password,
    /// `ALL=(ALL:ALL) NOPASSWD: ALL`, as `ops` has.
    NoPassword,
}

/// A user every host has besides root and `ops` (home in the host's private `/home`, login
/// shell `/bin/sh`, no password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraUser {
    pub name: String,
    pub sudo: Sudo,
}

/// A host key type besides the ed25519 key every host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostKeyType {
    /// ECDSA on P-256.
    Ecdsa,
    /// RSA, 3072 bits.
    Rsa,
}

impl HostKeyType {
    /// The `ssh-keygen -t` name, also used in the key file's name (`ssh_host_<name>_key`).
    pub fn name(self) -> &'static str {
        match self {
            HostKeyType::Ecdsa => "ecdsa",
            HostKeyType::Rsa => "rsa",
        }
    }
}

/// SSH logins beyond the defaults; `SshSetup::default()` adds nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SshSetup {
    /// Users every host has besides root and `ops`.
    pub users: Vec<ExtraUser>,
    /// Public keys (`authorized_keys` lines) a user accepts besides the lab's own key, which every
    /// user accepts; by user name.
    pub authorized_keys: BTreeMap<String, Vec<String>>,
    /// The port of a host's sshd, by host name; 22 for the others. The inventory names it.
    pub ports: BTreeMap<String, u16>,
    /// Host key types a host has besides ed25519, by host name.
    pub host_keys: BTreeMap<String, Vec<HostKeyType>>,
    /// `sshd_config` lines put before the lab's own. They win over them, since sshd keeps the
    /// first value it reads for most keywords (`LogLevel DEBUG3`, `MaxSessions 10`).
    pub settings: Vec<String>,
    /// `sshd_config` lines put at the end, for `Match` blocks.
    pub matches: Vec<String>,
    /// Whether sshd runs every command through the wrapper that records it in the host's command
    /// log ([`super::Lab::ssh_command_log`]); on by default. While on, sshd's own log names the
    /// wrapper instead of the commands.
    pub record_commands: bool,
}

impl Default for SshSetup {
    fn default() -> Self {
        SshSetup {
            users: Vec::new(),
            authorized_keys: BTreeMap::new(),
            ports: BTreeMap::new(),
            host_keys: BTreeMap::new(),
            settings: Vec::new(),
            matches: Vec::new(),
            record_commands: true,
        }
    }
}

impl SshSetup {
    /// The port of `host`'s sshd.
    pub fn port(&self, host: &str) -> u16 {
        self.ports.get(host).copied().unwrap_or(22)
    }

    /// Rejects names of hosts and users the lab does not have, port 0, and lines that would
    /// break the sshd configuration.
    pub fn check(&self, hosts: &[LabHost]) -> Result<(), LabError> {
        let bad = |field: &str, message: String| Err(LabError::Spec { field: format!("ssh.{field}"), message });
        let known = |host: &String| hosts.iter().any(|h| &h.name == host);
        for user in &self.users {
            if let Err(message) = check_user_name(&user.name) {
                return bad("users", message);
            }
        }
        for (i, user) in self.users.iter().enumerate() {
            if self.users[..i].iter().any(|u| u.name == user.name) {
                return bad("users", format!("{:?} is listed twice", user.name));
            }
        }
        for (user, keys) in &self.authorized_keys {
            if user != "root" && user != OPS_USER && !self.users.iter().any(|u| &u.name == user) {
                return bad("authorized_keys", format!("no user {user:?} (root, {OPS_USER} or one of ssh.users)"));
            }
            if keys.iter().any(|k| k.contains('\n') || k.trim().is_empty()) {
                return bad("authorized_keys", format!("{user}: a key must be one non-empty line"));
            }
        }
        for (host, port) in &self.ports {
            if !known(host) {
                return bad("ports", format!("no host {host:?} in this lab"));
            }
            if *port == 0 {
                return bad("ports", format!("{host}: port 0"));
            }
        }
        if let Some(host) = self.host_keys.keys().find(|h| !known(h)) {
            return bad("host_keys", format!("no host {host:?} in this lab"));
        }
        if let Some(line) = self.settings.iter().chain(&self.matches).find(|l| l.contains('\n')) {
            return bad("settings", format!("{line:?}: one sshd_config line per entry"));
        }
        Ok(())
    }
}

/// What `useradd` accepts, kept simple: a lowercase letter, then lowercase letters, digits, `-`
/// or `_`, at most 32 characters; not root or `ops`.
fn check_user_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let ok = name.len() <= 32
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(format!("{name:?} is not a user name (a lowercase letter, then letters, digits, - or _)"));
    }
    if name == "root" || name == OPS_USER {
        return Err(format!("{name:?} exists on every lab host already"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LabSpec;

    #[test]
    fn names_must_exist_and_fit() {
        let hosts = LabSpec::new("t1", 1).hosts();
        let mut s = SshSetup::default();
        s.users.push(ExtraUser { name: "ops2".into(), sudo: Sudo::Password });
        s.authorized_keys.insert("ops2".into(), vec!["ssh-ed25519 AAAA x".into()]);
        s.ports.insert("cp2".into(), 2222);
        s.host_keys.insert("cp2".into(), vec![HostKeyType::Ecdsa]);
        s.check(&hosts).unwrap();
        assert_eq!((s.port("cp1"), s.port("cp2")), (22, 2222));

        let refused = |f: &dyn Fn(&mut SshSetup)| {
            let mut s = s.clone();
            f(&mut s);
            s.check(&hosts).unwrap_err().to_string()
        };
        assert!(refused(&|s| s.users.push(ExtraUser { name: "ops".into(), sudo: Sudo::None })).contains("ops"));
        assert!(refused(&|s| s.users.push(s.users[0].clone())).contains("twice"));
        assert!(refused(&|s| s.users[0].name = "Ops2".into()).contains("not a user name"));
        let e = refused(&|s| {
            s.authorized_keys.insert("nobody".into(), vec![]);
        });
        assert!(e.contains("no user"), "{e}");
        let e = refused(&|s| {
            s.authorized_keys.insert("root".into(), vec!["a\nb".into()]);
        });
        assert!(e.contains("one non-empty line"), "{e}");
        let e = refused(&|s| {
            s.ports.insert("w9".into(), 22);
        });
        assert!(e.contains("no host"), "{e}");
        let e = refused(&|s| {
            s.ports.insert("cp1".into(), 0);
        });
        assert!(e.contains("port 0"), "{e}");
        let e = refused(&|s| {
            s.host_keys.insert("cp9".into(), vec![]);
        });
        assert!(e.contains("no host"), "{e}");
        assert!(refused(&|s| s.settings.push("LogLevel DEBUG3\nForceCommand x".into())).contains("one sshd_config"));
    }
}
