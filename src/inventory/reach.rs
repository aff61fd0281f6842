//! How each host is reached: the inventory's `ssh` fields over the operator's SSH configuration
//! over the defaults, and the jump hosts on the way.
//!
//! Precedence, as for `ssh` (command-line options before the configuration file): a field set
//! in the host's `ssh` block, else in `spec.ssh`, else what the SSH configuration says for the
//! name dialled (`ssh.host`, else the address), else kubeha's default. `ssh.host` itself is
//! looked up in the configuration like the name typed after `ssh`, so an alias's `HostName`
//! applies to it.

use std::path::{Path, PathBuf};

use super::fields::{Object, Problems};
use crate::plan::{Jump, Ssh};
use crate::ssh_config::{self, JumpSpec, SshConfig};

/// The longest chain of jump hosts, counting those a jump host's own `ProxyJump` adds.
pub const MAX_JUMPS: usize = 8;

/// Which SSH configuration file applies when the inventory does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SshConfigChoice {
    /// Only the one `spec.ssh.configFile` names (the library's default, so tests never read
    /// the operator's home).
    #[default]
    NoDefault,
    /// `~/.ssh/config` when it exists (the command line's default, as for `ssh` and k0sctl).
    UserDefault,
    /// This file (`--ssh-config`), which must exist; it also overrides `spec.ssh.configFile`.
    File(PathBuf),
    /// None at all (`--ssh-config none`).
    Off,
}

/// `ssh` fields as one block sets them (`None`: not set there).
#[derive(Debug, Clone, Default)]
pub struct SshFields {
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    pub known_hosts_file: Option<PathBuf>,
    /// The value and the field path it was set at.
    pub sudo: Option<(bool, String)>,
    pub host: Option<String>,
    /// The raw `proxyJump` value and its field path.
    pub proxy_jump: Option<(String, String)>,
}

impl SshFields {
    /// `self` (a host's block) over `spec` (the cluster's); `sudo` comes from the host's block
    /// when it has one, so a host that sets `user: ops` gets sudo unless it says otherwise.
    pub fn over(&self, spec: &SshFields, host_block: bool) -> SshFields {
        SshFields {
            user: self.user.clone().or_else(|| spec.user.clone()),
            port: self.port.or(spec.port),
            identity_file: self.identity_file.clone().or_else(|| spec.identity_file.clone()),
            known_hosts_file: self.known_hosts_file.clone().or_else(|| spec.known_hosts_file.clone()),
            sudo: if host_block { self.sudo.clone() } else { spec.sudo.clone() },
            host: self.host.clone().or_else(|| spec.host.clone()),
            proxy_jump: self.proxy_jump.clone().or_else(|| spec.proxy_jump.clone()),
        }
    }
}

/// Reads one `ssh` block's fields, reporting each bad one.
pub fn read_fields(ssh: &mut Object, base: &Path, home: &Path, p: &mut Problems) -> Option<SshFields> {
    let mut out = SshFields::default();
    let mut ok = true;
    if let Some(user) = ssh.string("user", p) {
        ok &= super::spec::check(&ssh.child("user"), super::spec::user_name(&user), p);
        out.user = Some(user);
    }
    match ssh.integer("port", 1..=65535, p) {
        Some(port) => out.port = Some(port as u16),
        None => ok &= ssh.field("port").is_none(),
    }
    for (key, slot) in [("identityFile", &mut out.identity_file), ("knownHostsFile", &mut out.known_hosts_file)] {
        if let Some(text) = ssh.string(key, p) {
            if text.trim().is_empty() {
                p.push(ssh.child(key), "must not be empty");
                ok = false;
            } else {
                *slot = Some(super::spec::expand_path(&text, home, base));
            }
        }
    }
    match ssh.bool("sudo", p) {
        Some(sudo) => out.sudo = Some((sudo, ssh.child("sudo"))),
        None => ok &= ssh.field("sudo").is_none(),
    }
    if let Some(host) = ssh.string("host", p) {
        match ssh_host(&host) {
            Ok(()) => out.host = Some(host.to_ascii_lowercase()),
            Err(e) => {
                p.push(ssh.child("host"), e);
                ok = false;
            }
        }
    }
    if let Some(jump) = ssh.string("proxyJump", p) {
        match ssh_config::parse_jumps(&jump) {
            Ok(_) => out.proxy_jump = Some((jump, ssh.child("proxyJump"))),
            Err(e) => {
                p.push(ssh.child("proxyJump"), e);
                ok = false;
            }
        }
    } else {
        ok &= ssh.field("proxyJump").is_none();
    }
    ok.then_some(out)
}

/// `ssh.host`: a DNS name, an SSH configuration alias or an IP address (no port: that is
/// `ssh.port`).
fn ssh_host(text: &str) -> Result<(), String> {
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !text.is_empty()
        && text.len() <= 253
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !text.starts_with(['-', '.']);
    ok.then_some(()).ok_or_else(|| {
        format!("{text:?} is not a host name, SSH configuration alias or IP address (the port goes in ssh.port)")
    })
}

/// Reads `spec.ssh.configFile` (or what the command line chose): the SSH configuration, or
/// `None` when there is none to read. A file that cannot be read is a problem at `path`.
pub fn load_config(
    field: Option<(String, String)>,
    choice: &SshConfigChoice,
    base: &Path,
    home: &Path,
    p: &mut Problems,
) -> Option<SshConfig> {
    let (file, path, must_exist) = match (choice, field) {
        (SshConfigChoice::File(file), _) => (file.clone(), "--ssh-config".to_string(), true),
        (SshConfigChoice::Off, _) => return None,
        (_, Some((text, _))) if text == "none" => return None,
        (_, Some((text, path))) => (super::spec::expand_path(&text, home, base), path, true),
        (SshConfigChoice::UserDefault, None) => (home.join(".ssh/config"), String::new(), false),
        (SshConfigChoice::NoDefault, None) => return None,
    };
    if !must_exist && !file.exists() {
        return None;
    }
    match SshConfig::load(&file, home) {
        Ok(config) => Some(config),
        Err(e) => {
            let at = if path.is_empty() { "spec.ssh".to_string() } else { path };
            p.push(at, e.to_string());
            None
        }
    }
}

/// A host's final SSH settings from its merged fields, the configuration and the defaults.
/// `target` is the host's address as text (dialled when `ssh.host` is not set); `spec` holds the
/// cluster-wide fields, the defaults of jump hosts beneath their own configuration.
pub fn resolve(
    fields: &SshFields,
    spec: &SshFields,
    target: &str,
    config: Option<&SshConfig>,
    at: &str,
    home: &Path,
    p: &mut Problems,
) -> Option<Ssh> {
    let name = fields.host.clone().unwrap_or_else(|| target.to_string());
    let found = lookup(config, &name, at, p)?;
    let user = fields.user.clone().or(found.user).unwrap_or_else(|| "root".into());
    let sudo = match &fields.sudo {
        Some((false, path)) if user != "root" => {
            push_once(
                p,
                path.clone(),
                format!(
                    "user {user:?} is not root, so kubeha needs passwordless sudo to write /etc/kubernetes: remove \
                     sudo: false or log in as root"
                ),
            );
            return None;
        }
        Some((sudo, _)) => *sudo,
        // Like k0sctl, a non-root user implies sudo.
        None => user != "root",
    };
    let host = found.host_name.or(fields.host.clone()).filter(|h| h != target);
    let jumps = match &fields.proxy_jump {
        Some((value, path)) => jumps(value, spec, config, path, home, p)?,
        None => match found.proxy_jump {
            Some(value) => jumps(&value, spec, config, &format!("{at} (ProxyJump of {name})"), home, p)?,
            None => Vec::new(),
        },
    };
    Some(Ssh {
        user,
        port: fields.port.or(found.port).unwrap_or(22),
        identity_file: fields.identity_file.clone().or(found.identity_file).unwrap_or_else(|| default_identity(home)),
        known_hosts_file: fields.known_hosts_file.clone().unwrap_or_else(|| home.join(".ssh/known_hosts")),
        sudo,
        host,
        jumps,
    })
}

pub fn default_identity(home: &Path) -> PathBuf {
    home.join(".ssh/id_ed25519")
}

fn lookup(config: Option<&SshConfig>, name: &str, at: &str, p: &mut Problems) -> Option<ssh_config::HostConfig> {
    match config.map(|c| c.lookup(name)).transpose() {
        Ok(found) => Some(found.unwrap_or_default()),
        Err(e) => {
            push_once(p, at, e.to_string());
            None
        }
    }
}

/// The jump hosts a `ProxyJump` value names, each resolved through the configuration. As in
/// `ssh`, a first hop with a `ProxyJump` of its own is reached through that one first; later hops
/// are reached through the hop before them, whatever their own `ProxyJump` says.
fn jumps(
    value: &str,
    spec: &SshFields,
    config: Option<&SshConfig>,
    at: &str,
    home: &Path,
    p: &mut Problems,
) -> Option<Vec<Jump>> {
    let list = ssh_config::parse_jumps(value).map_err(|e| push_once(p, at, e)).ok()?;
    let chain = chain(&list, spec, config, home, 0).map_err(|e| push_once(p, at, e)).ok()?;
    if chain.len() > MAX_JUMPS {
        push_once(p, at, format!("more than {MAX_JUMPS} jump hosts"));
        return None;
    }
    Some(chain)
}

fn chain(
    list: &[JumpSpec],
    spec: &SshFields,
    config: Option<&SshConfig>,
    home: &Path,
    depth: usize,
) -> Result<Vec<Jump>, String> {
    let Some(first) = list.first() else { return Ok(Vec::new()) };
    if depth > MAX_JUMPS {
        return Err(format!("jump host {first} leads to more than {MAX_JUMPS} jump hosts (a ProxyJump loop?)"));
    }
    let lookup = |name: &str| match config {
        Some(c) => c.lookup(name).map_err(|e| e.to_string()),
        None => Ok(ssh_config::HostConfig::default()),
    };
    let found = lookup(&first.host)?;
    let mut out = match &found.proxy_jump {
        Some(before) => {
            let before = ssh_config::parse_jumps(before).map_err(|e| format!("ProxyJump of {first}: {e}"))?;
            chain(&before, spec, config, home, depth + 1)?
        }
        None => Vec::new(),
    };
    out.push(jump(first, found, spec, home));
    for hop in &list[1..] {
        out.push(jump(hop, lookup(&hop.host)?, spec, home));
    }
    Ok(out)
}

/// One hop: what the `ProxyJump` entry says, over the configuration for its name, over the
/// cluster's `spec.ssh` user and identity file, over the defaults (port 22 whatever the hosts'
/// port is, as for `ssh`).
fn jump(hop: &JumpSpec, found: ssh_config::HostConfig, spec: &SshFields, home: &Path) -> Jump {
    Jump {
        name: hop.to_string(),
        host: found.host_name.unwrap_or_else(|| hop.host.clone()),
        port: hop.port.or(found.port).unwrap_or(22),
        user: hop.user.clone().or(found.user).or_else(|| spec.user.clone()).unwrap_or_else(|| "root".into()),
        identity_file: found
            .identity_file
            .or_else(|| spec.identity_file.clone())
            .unwrap_or_else(|| default_identity(home)),
    }
}

/// Records a problem unless it is already there: hosts that inherit one bad `spec.ssh` field
/// (say `sudo: false` with a non-root user) each meet it, and it is reported once.
fn push_once(p: &mut Problems, path: impl Into<String>, message: impl Into<String>) {
    let (path, message) = (path.into(), message.into());
    if !p.0.iter().any(|x| x.path == path && x.message == message) {
        p.push(path, message);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::inventory::{ParseError, SshConfigChoice, parse_with_ssh_config};
    use crate::plan::{Jump, Plan};

    /// A valid inventory with `ssh` as `spec.ssh` and `cp1` as the first host's line.
    fn inventory(ssh: &str, cp1: &str) -> String {
        format!(
            "apiVersion: kubeha/v1alpha1\nkind: Cluster\nmetadata: {{name: lab}}\nspec:\n  kubernetesVersion: v1.31.4\n  \
             loadBalancer: {{type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}}\n  ssh: {ssh}\n  hosts:\n    \
             - {cp1}\n    - {{name: cp2, address: 198.18.0.12, role: control-plane}}\n    \
             - {{name: cp3, address: 198.18.0.13, role: control-plane}}\n"
        )
    }

    fn plan(dir: &Path, ssh: &str, cp1: &str, choice: SshConfigChoice) -> Result<Plan, Vec<String>> {
        parse_with_ssh_config(&inventory(ssh, cp1), dir, Default::default(), &choice).map_err(|e| match e {
            ParseError::Invalid(problems) => problems.iter().map(|p| p.to_string()).collect(),
            ParseError::Syntax(s) => vec![s],
        })
    }

    const CONFIG: &str = "\
Host cp1-alias
  HostName 10.9.9.1
  User fromconfig
  Port 2201
  IdentityFile /keys/cp1
  ProxyJump outer
Host outer
  HostName 10.9.0.1
  User jumper
  ProxyJump first
Host first
  HostName 10.8.0.1
  Port 2022
  IdentityFile /keys/first
Host 198.18.0.*
  User ipuser
Host *
  User everyone
";

    fn with_config(text: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("ssh.d")).unwrap();
        std::fs::write(dir.path().join("ssh.d/main.conf"), text).unwrap();
        std::fs::write(dir.path().join("ssh_config"), "Include ssh.d/*.conf\n").unwrap();
        dir
    }

    #[test]
    fn without_configuration_the_address_is_dialled_with_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path(), "{}", "{name: cp1, address: 198.18.0.11, role: control-plane}", Default::default())
            .unwrap();
        let ssh = &plan.hosts[0].ssh;
        assert_eq!((ssh.user.as_str(), ssh.port, ssh.host.as_deref(), ssh.sudo), ("root", 22, None, false));
        assert!(ssh.jumps.is_empty());
        assert_eq!(ssh.describe(plan.hosts[0].address), "root@198.18.0.11:22");
    }

    #[test]
    fn configuration_fills_in_what_the_inventory_leaves_out() {
        let dir = with_config(CONFIG);
        let cp1 = "{name: cp1, address: 198.18.0.11, role: control-plane, ssh: {host: cp1-alias}}";
        let plan = plan(dir.path(), "{configFile: ssh_config}", cp1, Default::default()).unwrap();
        let ssh = &plan.hosts[0].ssh;
        assert_eq!(ssh.host.as_deref(), Some("10.9.9.1"));
        assert_eq!((ssh.user.as_str(), ssh.port, ssh.sudo), ("fromconfig", 2201, true));
        assert_eq!(ssh.identity_file, Path::new("/keys/cp1"));
        // cp1-alias jumps through `outer`, which is itself reached through `first`.
        let jumps: Vec<(&str, &str, u16, &str)> =
            ssh.jumps.iter().map(|j| (j.name.as_str(), j.host.as_str(), j.port, j.user.as_str())).collect();
        assert_eq!(jumps, vec![("first", "10.8.0.1", 2022, "everyone"), ("outer", "10.9.0.1", 22, "jumper")]);
        assert_eq!(ssh.jumps[0].identity_file, Path::new("/keys/first"));
        assert_eq!(ssh.describe(plan.hosts[0].address), "fromconfig@10.9.9.1:2201 via first, outer");
        // Hosts without ssh.host are looked up by their address.
        assert_eq!(plan.hosts[1].ssh.user, "ipuser");
        assert_eq!(plan.hosts[1].ssh.host, None);
    }

    #[test]
    fn inventory_fields_win_over_the_configuration() {
        let dir = with_config(CONFIG);
        let cp1 = "{name: cp1, address: 198.18.0.11, role: control-plane, \
                   ssh: {host: cp1-alias, port: 22, identityFile: /keys/mine, proxyJump: 'ops@bastion:2200'}}";
        let plan = plan(dir.path(), "{configFile: ssh_config, user: admin}", cp1, Default::default()).unwrap();
        let ssh = &plan.hosts[0].ssh;
        assert_eq!((ssh.user.as_str(), ssh.port), ("admin", 22));
        assert_eq!(ssh.identity_file, Path::new("/keys/mine"));
        // The hop's own `user@` and `:port` win; `Host *` gives it no key, and spec.ssh none either.
        assert_eq!(
            ssh.jumps,
            vec![Jump {
                name: "ops@bastion:2200".into(),
                host: "bastion".into(),
                port: 2200,
                user: "ops".into(),
                identity_file: super::default_identity(&crate::inventory::spec::home_dir()),
            }]
        );
        // spec.ssh's explicit user wins over the configuration's `Host 198.18.0.*` for cp2 too.
        assert_eq!(plan.hosts[1].ssh.user, "admin");
        // `proxyJump: none` drops the configuration's jump hosts.
        let cp1 = "{name: cp1, address: 198.18.0.11, role: control-plane, ssh: {host: cp1-alias, proxyJump: none}}";
        let plan = super::tests::plan(dir.path(), "{configFile: ssh_config}", cp1, Default::default()).unwrap();
        assert!(plan.hosts[0].ssh.jumps.is_empty());
    }

    #[test]
    fn jump_hosts_not_in_the_configuration_take_spec_ssh_user_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let cp1 = "{name: cp1, address: 198.18.0.11, role: control-plane, ssh: {proxyJump: 'b1,root@b2:2222'}}";
        let plan = plan(dir.path(), "{user: ops, identityFile: /keys/ops}", cp1, Default::default()).unwrap();
        let jumps = &plan.hosts[0].ssh.jumps;
        assert_eq!(jumps.len(), 2);
        assert_eq!((jumps[0].user.as_str(), jumps[0].port), ("ops", 22));
        assert_eq!((jumps[1].user.as_str(), jumps[1].port), ("root", 2222));
        assert!(jumps.iter().all(|j| j.identity_file == Path::new("/keys/ops")));
    }

    #[test]
    fn command_line_choice_and_none() {
        let dir = with_config(CONFIG);
        let cp1 = "{name: cp1, address: 198.18.0.11, role: control-plane}";
        let file = SshConfigChoice::File(dir.path().join("ssh_config"));
        assert_eq!(plan(dir.path(), "{configFile: none}", cp1, file).unwrap().hosts[0].ssh.user, "ipuser");
        let off = plan(dir.path(), "{configFile: ssh_config}", cp1, SshConfigChoice::Off).unwrap();
        assert_eq!(off.hosts[0].ssh.user, "root");
        let none = plan(dir.path(), "{configFile: none}", cp1, SshConfigChoice::UserDefault).unwrap();
        assert_eq!(none.hosts[0].ssh.user, "root");
    }

    #[test]
    fn bad_values_name_their_field() {
        let dir = with_config("Host 198.18.0.11\n  Port nope\n");
        let cp1 = "{name: cp1, address: 198.18.0.11, role: control-plane, ssh: {host: 'a b', proxyJump: 'x:0'}}";
        let problems = plan(dir.path(), "{configFile: missing.conf}", cp1, Default::default()).unwrap_err();
        let text = problems.join("\n");
        assert!(text.contains("spec.ssh.configFile: SSH configuration "), "{text}");
        assert!(text.contains("missing.conf: No such file"), "{text}");
        assert!(text.contains("spec.hosts[0].ssh.host: \"a b\" is not a host name"), "{text}");
        assert!(text.contains("spec.hosts[0].ssh.proxyJump: \"x:0\" is not a jump host"), "{text}");
        let cp1 = "{name: cp1, address: 198.18.0.11, role: control-plane}";
        let problems = plan(dir.path(), "{configFile: ssh_config}", cp1, Default::default()).unwrap_err();
        assert!(problems[0].starts_with("spec.hosts[0].ssh: SSH configuration "), "{problems:?}");
        assert!(
            problems[0].ends_with("main.conf line 2: Port \"nope\" is not a number from 1 to 65535"),
            "{problems:?}"
        );
        let problems = plan(
            dir.path(),
            "{configFile: ssh_config, sudo: false}",
            "{name: cp1, address: 198.18.0.11, \
            role: control-plane, ssh: {host: x}}",
            Default::default(),
        );
        assert!(problems.is_ok(), "root with sudo: false is fine");
    }

    #[test]
    fn a_dns_name_as_address_points_to_ssh_host() {
        let dir = tempfile::tempdir().unwrap();
        let cp1 = "{name: cp1, address: cp1.example.com, role: control-plane}";
        let problems = plan(dir.path(), "{}", cp1, Default::default()).unwrap_err();
        assert_eq!(
            problems[0],
            "spec.hosts[0].address: \"cp1.example.com\" is not an IP address: address is the node IP that \
             certificates and manifests carry; to dial a DNS name, set ssh.host: cp1.example.com and the node's IP here"
        );
        let cp1 = "{name: cp1, address: 198.18.0.11, role: control-plane, ssh: {host: CP1.Example.com}}";
        let plan = plan(dir.path(), "{}", cp1, Default::default()).unwrap();
        assert_eq!(plan.hosts[0].ssh.host.as_deref(), Some("cp1.example.com"));
        assert_eq!(plan.hosts[0].address.to_string(), "198.18.0.11");
    }

    #[test]
    fn a_proxy_jump_loop_is_refused() {
        let dir = with_config("Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n");
        let cp1 = "{name: cp1, address: 198.18.0.11, role: control-plane, ssh: {proxyJump: a}}";
        let problems = plan(dir.path(), "{configFile: ssh_config}", cp1, Default::default()).unwrap_err();
        assert!(problems[0].contains("spec.hosts[0].ssh.proxyJump: jump host "), "{problems:?}");
        assert!(problems[0].contains("(a ProxyJump loop?)"), "{problems:?}");
    }

    #[test]
    fn a_non_root_user_from_the_configuration_with_sudo_false_is_refused() {
        let dir = with_config("Host *\n  User ops\n");
        let cp1 = "{name: cp1, address: 198.18.0.11, role: control-plane}";
        let problems = plan(dir.path(), "{configFile: ssh_config, sudo: false}", cp1, Default::default()).unwrap_err();
        assert!(problems[0].starts_with("spec.ssh.sudo: user \"ops\" is not root"), "{problems:?}");
        assert_eq!(problems.len(), 1, "reported once for the three hosts: {problems:?}");
    }
}
