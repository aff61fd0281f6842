//! End to end: reaching hosts as operators do. A lab whose control planes refuse SSH from this
//! machine (an nftables rule in each control plane's namespace drops port 22 from the bridge
//! address) is initialised through the worker as a bastion (`proxyJump`, one and two hops);
//! an OpenSSH configuration with aliases, `Include` and `ProxyJump` reaches it too; a wrong host
//! key on the bastion, an unknown one with `--accept-new-host-keys`, and each kind of failure
//! (DNS, refused, timeout, authentication) are reported naming the host and the hop. Needs root
//! and `nft` (skipped otherwise). Labs `b*` on subnet 198.18.80.0/24 in `/tmp/kubeha-e2e/<name>`
//! (kept after a failure for its logs). kubeha runs with `HOME` set to a directory of the lab, so
//! the operator's own `~/.ssh/config` never takes part.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kubeha_lab::{Lab, LabSpec};
use support::cluster::*;

const SUBNET: u8 = 80;
const BASTION: &str = "198.18.80.101";

/// Runs the built `kubeha` with `args`, `inventory`, the lab's state directory, no agent and a
/// `HOME` of the lab's own.
fn kubeha_home(lab: &Lab, inventory: &Path, args: &[&str]) -> Output {
    let home = lab.dir().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut command = Command::new(support::kubeha_bin());
    command.args(args).arg("-i").arg(inventory);
    if args[0] != "validate" {
        command.arg("--state-dir").arg(state(lab));
    }
    command.env_remove("SSH_AUTH_SOCK").env("HOME", &home).stdin(Stdio::null()).output().unwrap()
}

/// Drops SSH from this machine (the bridge address) on every control plane; the other lab hosts
/// still reach them. A counter shows the rule at work.
fn firewall_control_planes(lab: &Lab) {
    let gateway = lab.gateway();
    for cp in control_planes(lab) {
        lab.sh(
            &cp,
            &format!(
                "nft add table inet kubeha_reach && \
                 nft add chain inet kubeha_reach input '{{ type filter hook input priority 0; }}' && \
                 nft add rule inet kubeha_reach input ip saddr {gateway} tcp dport 22 counter drop"
            ),
        )
        .unwrap();
    }
}

/// Packets the rule on `host` dropped.
fn dropped(lab: &Lab, host: &str) -> u64 {
    let rules = lab.sh(host, "nft list chain inet kubeha_reach input").unwrap();
    let after = rules.split("counter packets ").nth(1).unwrap_or_else(|| panic!("no counter: {rules}"));
    after.split_whitespace().next().unwrap().parse().unwrap()
}

/// The lab's inventory with `ssh` blocks added to the named hosts' lines.
fn inventory_with(lab: &Lab, file: &str, extra: &[(&str, &str)], append: &str) -> PathBuf {
    let mut text = std::fs::read_to_string(lab.inventory_path()).unwrap();
    for (host, ssh) in extra {
        let line_start = format!("    - {{name: {host}, ");
        let start = text.find(&line_start).unwrap_or_else(|| panic!("{host} not in the inventory:\n{text}"));
        let end = start + text[start..].find("}\n").unwrap();
        text.insert_str(end, &format!(", ssh: {ssh}"));
    }
    text.push_str(append);
    let path = lab.dir().join(file);
    std::fs::write(&path, text).unwrap();
    path
}

fn nft_available() -> bool {
    let found = Command::new("nft").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if found.is_err() {
        eprintln!("skipping: nft is not installed (scripts/setup installs nftables)");
    }
    found.is_ok()
}

#[test]
fn control_planes_behind_a_bastion_are_initialised_through_it() {
    if !support::require_root() || !nft_available() {
        return;
    }
    let lab = fresh_lab(LabSpec::new("bra", SUBNET));
    firewall_control_planes(&lab);

    // Directly, this machine cannot reach them.
    let direct = kubeha_home(&lab, &lab.inventory_path(), &["preflight", "--connect-timeout", "2s"]);
    let out = text(&direct);
    assert!(!direct.status.success(), "{out}");
    assert!(out.contains("cp1: connecting to 198.18.80.11:22 timed out after 2s"), "{out}");
    assert!(dropped(&lab, "cp1") > 0, "the firewall rule saw nothing");

    // Through w1 (cp1, cp2) and through w1 then cp2 (cp3): init, then a re-run that writes nothing.
    let jumped = inventory_with(
        &lab,
        "jump.yaml",
        &[
            ("cp1", &format!("{{proxyJump: {BASTION}}}")),
            ("cp2", &format!("{{proxyJump: 'root@{BASTION}:22'}}")),
            ("cp3", &format!("{{proxyJump: '{BASTION},198.18.80.12'}}")),
        ],
        "",
    );
    let validated = kubeha_home(&lab, &jumped, &["validate"]);
    assert_ok(&validated, "validate");
    let shown = text(&validated);
    assert!(shown.contains("root@198.18.80.13:22 via 198.18.80.101, 198.18.80.12"), "{shown}");
    let before = dropped(&lab, "cp1");
    let init = kubeha_home(&lab, &jumped, &["init", "--timeout", "3m"]);
    println!("{}", text(&init));
    assert_ok(&init, "kubeha init through the bastion");
    assert_eq!(dropped(&lab, "cp1"), before, "init tried to reach cp1 directly");
    let members = etcdctl(&lab, &["member", "list"]);
    assert_ok(&members, "etcdctl member list");
    assert_eq!(String::from_utf8_lossy(&members.stdout).lines().filter(|l| l.contains("started")).count(), 3);
    assert_ok(&curl_healthz(&lab), "/healthz through the VIP");
    let again = kubeha_home(&lab, &jumped, &["init", "--timeout", "3m"]);
    assert_ok(&again, "the re-run through the bastion");

    // An OpenSSH configuration: aliases, Include, ProxyJump through an aliased bastion.
    let ssh_dir = lab.dir().join("ssh");
    std::fs::create_dir_all(ssh_dir.join("conf.d")).unwrap();
    std::fs::write(ssh_dir.join("config"), "Include conf.d/*.conf\nHost *\n  User nobody-by-default\n").unwrap();
    std::fs::write(
        ssh_dir.join("conf.d/10-lab.conf"),
        format!(
            "Host bra-bastion\n  HostName {BASTION}\n  User root\n  IdentityFile {key}\n\
             Host bra-cp?\n  ProxyJump bra-bastion\n  User root\n  IdentityFile {key}\n\
             Host bra-cp1\n  HostName 198.18.80.11\nHost bra-cp2\n  HostName 198.18.80.12\n\
             Host bra-cp3\n  HostName 198.18.80.13\nHost {BASTION}\n  User root\n  IdentityFile {key}\n",
            key = lab.identity_file().display()
        ),
    )
    .unwrap();
    // The lab inventory's spec.ssh sets user and identity file: without them the configuration
    // decides (and `Host *` would give the wrong user to anything not listed before it).
    let aliased = {
        let path = inventory_with(
            &lab,
            "alias.yaml",
            &[("cp1", "{host: bra-cp1}"), ("cp2", "{host: bra-cp2}"), ("cp3", "{host: bra-cp3}")],
            "",
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let start = text.find("  ssh: {").unwrap();
        let end = start + text[start..].find("}\n").unwrap() + 2;
        let kh = lab.known_hosts_file();
        let text = format!(
            "{}  ssh: {{knownHostsFile: {}, configFile: {}}}\n{}",
            &text[..start],
            kh.display(),
            ssh_dir.join("config").display(),
            &text[end..]
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let validated = kubeha_home(&lab, &aliased, &["validate"]);
    assert_ok(&validated, "validate with the SSH configuration");
    let shown = text(&validated);
    assert!(shown.contains("root@198.18.80.12:22 via bra-bastion"), "{shown}");
    let w1 = shown.lines().find(|l| l.starts_with("w1 ")).unwrap_or_default();
    assert!(w1.ends_with(" root@198.18.80.101:22"), "w1 takes `Host 198.18.80.101`'s user: {shown}");
    let rerun = kubeha_home(&lab, &aliased, &["init", "--timeout", "3m"]);
    println!("{}", text(&rerun));
    assert_ok(&rerun, "kubeha init through the configuration's aliases");
    assert_eq!(dropped(&lab, "cp1"), before, "the aliased run reached cp1 directly");
    // `--ssh-config none` leaves the aliases unknown: bra-cp1 does not resolve.
    let without = kubeha_home(&lab, &aliased, &["preflight", "--ssh-config", "none", "--connect-timeout", "2s"]);
    assert!(text(&without).contains("cp1: cannot resolve bra-cp1"), "{}", text(&without));

    // A wrong host key for the bastion: refused, naming the hop.
    let known = std::fs::read_to_string(lab.known_hosts_file()).unwrap();
    let cp1_key = known.lines().find(|l| l.starts_with("198.18.80.11 ")).unwrap().split_once(' ').unwrap().1;
    let forged: String = known
        .lines()
        .map(
            |l| if l.starts_with(&format!("{BASTION} ")) { format!("{BASTION} {cp1_key}\n") } else { format!("{l}\n") },
        )
        .collect();
    let forged_file = lab.dir().join("known_hosts.forged");
    std::fs::write(&forged_file, forged).unwrap();
    let forged_inventory = inventory_with(
        &lab,
        "forged.yaml",
        &[("cp1", &format!("{{proxyJump: {BASTION}, knownHostsFile: {}}}", forged_file.display()))],
        "",
    );
    let refused =
        kubeha_home(&lab, &forged_inventory, &["preflight", "--accept-new-host-keys", "--connect-timeout", "2s"]);
    let out = text(&refused);
    assert!(!refused.status.success(), "{out}");
    assert!(out.contains(&format!("cp1: jump host {BASTION}: HOST KEY CHANGED: {BASTION}:22 presented")), "{out}");

    // No keys known at all: --accept-new-host-keys records the bastion's and each host's.
    let empty = lab.dir().join("known_hosts.empty");
    std::fs::write(&empty, "").unwrap();
    let through_bastion = format!("{{proxyJump: {BASTION}, knownHostsFile: {}}}", empty.display());
    let fresh = inventory_with(&lab, "fresh.yaml", &[("cp1", &through_bastion), ("cp2", &through_bastion)], "");
    let unknown = kubeha_home(&lab, &fresh, &["preflight", "--connect-timeout", "2s"]);
    assert!(
        text(&unknown).contains(&format!("cp1: jump host {BASTION}: the host key of {BASTION}:22 is not known")),
        "{}",
        text(&unknown)
    );
    let accepted = kubeha_home(&lab, &fresh, &["preflight", "--accept-new-host-keys", "--connect-timeout", "2s"]);
    assert!(text(&accepted).contains("root@198.18.80.11:22 via 198.18.80.101 ("), "{}", text(&accepted));
    let recorded = std::fs::read_to_string(&empty).unwrap();
    // cp1 and cp2 met the bastion's key at the same time: it is recorded once.
    assert_eq!(recorded.lines().filter(|l| l.starts_with(&format!("{BASTION} "))).count(), 1, "{recorded}");
    for name in [BASTION, "198.18.80.11", "198.18.80.12"] {
        let line = recorded
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not recorded: {recorded}"));
        assert!(known.contains(line), "{name}: recorded {line}, the lab has another key");
    }

    lab.down().unwrap();
}

#[test]
fn each_failure_names_the_host_and_the_hop() {
    if !support::require_root() || !nft_available() {
        return;
    }
    let lab = fresh_lab(LabSpec::new("brb", SUBNET + 1));
    firewall_control_planes(&lab);
    let bastion = "198.18.81.101";
    let workers: String = [
        "{name: w2, address: 198.18.81.102, role: worker, ssh: {host: nothing.invalid}}",
        "{name: w3, address: 198.18.81.103, role: worker, ssh: {host: 198.18.81.11}}",
        "{name: w4, address: 198.18.81.104, role: worker, ssh: {host: 198.18.81.11, proxyJump: 198.18.81.12}}",
        "{name: w5, address: 198.18.81.105, role: worker, ssh: {host: 198.18.81.11, port: 2999, proxyJump: 198.18.81.101}}",
        "{name: w6, address: 198.18.81.106, role: worker, ssh: {host: nothing.invalid, proxyJump: 198.18.81.101}}",
    ]
    .iter()
    .map(|line| format!("    - {line}\n"))
    .collect();
    let inventory = inventory_with(
        &lab,
        "failures.yaml",
        &[
            ("cp1", "{proxyJump: nothing.invalid}"),
            ("cp2", &format!("{{proxyJump: '{bastion}:2999'}}")),
            ("cp3", &format!("{{proxyJump: 'nosuch@{bastion}'}}")),
            ("w1", "{port: 2999}"),
        ],
        &workers,
    );
    let started = std::time::Instant::now();
    let out = kubeha_home(&lab, &inventory, &["preflight", "--connect-timeout", "2s"]);
    let took = started.elapsed();
    let shown = text(&out);
    println!("{shown}\n(preflight took {took:.1?})");
    assert!(!out.status.success(), "{shown}");
    for expected in [
        // DNS: here, for a jump host, and on the jump host for the host behind it.
        "w2: cannot resolve nothing.invalid",
        "cp1: jump host nothing.invalid: cannot resolve nothing.invalid",
        "w6: cannot connect to nothing.invalid:22 through jump host 198.18.81.101: jump host 198.18.81.101 could not \
         connect to it",
        // Refused: the host, a jump host, and behind a jump host.
        "w1: cannot connect to 198.18.81.101:2999: Connection refused",
        "cp2: jump host 198.18.81.101:2999: cannot connect to 198.18.81.101:2999: Connection refused",
        "w5: cannot connect to 198.18.81.11:2999 through jump host 198.18.81.101: jump host 198.18.81.101 could not \
         connect to it",
        // Timeout: the host and a jump host.
        "w3: connecting to 198.18.81.11:22 timed out after 2s",
        "w4: jump host 198.18.81.12: connecting to 198.18.81.12:22 timed out after 2s",
        // Authentication on a jump host.
        "cp3: jump host nosuch@198.18.81.101: SSH authentication as nosuch@198.18.81.101:22 failed",
    ] {
        assert!(shown.contains(expected), "missing {expected:?} in:\n{shown}");
    }
    assert!(took.as_secs() < 30, "the failures took {took:?}");
    lab.down().unwrap();
}
