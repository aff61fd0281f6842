//! What kubeha needs to know about a host before touching it, gathered in one remote command.
//!
//! One round trip per host keeps preflight fast on large inventories; the parsing and every
//! decision made from the facts are plain functions, tested without a host.

use std::collections::BTreeSet;
use std::time::SystemTime;

use super::layout;
use crate::marker::HostMarker;
use crate::transport::{Remote, TransportError};

/// A POSIX sh script printing `@@section` headers followed by raw lines. It only reads. The
/// `%NAME%` placeholders are the layout's paths (see [`script`]). It runs on every host of every
/// command, so it starts as few programs as it can: files are read and directories listed with
/// shell builtins, `uname` runs once, and `systemctl` only where systemd runs (`sd_booted`'s
/// test).
const SCRIPT_TEMPLATE: &str = r#"# gathering host facts
export LC_ALL=C
show() { [ -r "$1" ] || return 0; while IFS= read -r l || [ -n "$l" ]; do printf '%s\n' "$l"; done < "$1"; }
names() { for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do [ -e "$f" ] || [ -L "$f" ] && printf '%s\n' "${f##*/}"; done; }
u=$(uname -s -n -m); set -- $u
echo @@uid; id -u
echo @@uname; echo "$1"; echo "$3"
echo @@hostname; echo "$2"
echo @@os; (. /etc/os-release 2>/dev/null && echo "${PRETTY_NAME:-$ID}")
echo @@time; date +%s%N
echo @@swaps; show /proc/swaps
echo @@tcp; cat /proc/net/tcp /proc/net/tcp6 2>/dev/null
echo @@manifests; names %MANIFESTS_DIR%
echo @@etcd; names %ETCD_DATA_DIR%
echo @@marker; show %MARKER%
echo @@tools
for t in sha256sum stat sync timeout mv head wc cat chmod chown mkdir rm; do
  command -v "$t" >/dev/null 2>&1 || echo "$t is missing"
done
printf 'ab\n' | { head -c 1 >/dev/null; IFS= read -r r; [ "$r" = b ] || echo "head -c reads past its byte count"; }
if d=$(mktemp -d 2>/dev/null); then
  : > "$d/a"
  mv -f -T -- "$d/a" "$d/b" 2>/dev/null || echo "mv has no -T"
  [ -e "$d/b" ] && { sync -- "$d/b" 2>/dev/null || echo "sync cannot flush one file"; }
  case $(stat -c %a -- "$d" 2>/dev/null) in 700) ;; *) echo "stat has no -c" ;; esac
  rm -rf -- "$d"
fi
echo @@kubelet; command -v kubelet 2>/dev/null
echo @@runtime
for s in /run/containerd/containerd.sock /var/run/crio/crio.sock /run/cri-dockerd.sock; do [ -S "$s" ] && echo "$s"; done
echo @@forward; show /proc/sys/net/ipv4/ip_forward
echo @@addresses; ip -o addr show 2>/dev/null
echo @@cadirs; for d in %CA_DIRS%; do [ -d "$d" ] && echo "$d"; done
echo @@resolved; [ -d /run/systemd/system ] && systemctl is-active systemd-resolved 2>/dev/null
echo @@dirs
set --
for d in %WRITTEN_DIRS%; do
  if [ -L "$d" ]; then echo "$d link $(printf %s "$(readlink -- "$d")" | tr -c '[:graph:]' '?')"
  elif [ -d "$d" ]; then set -- "$@" "$d"
  elif [ -e "$d" ]; then echo "$d other"
  fi
done
[ $# -eq 0 ] || stat -c '%n dir %u %a' -- "$@"
echo @@end
"#;

/// The facts script with the layout's paths filled in (plain paths: no quoting needed).
pub fn script() -> String {
    SCRIPT_TEMPLATE
        .replace("%MANIFESTS_DIR%", layout::MANIFESTS_DIR)
        .replace("%ETCD_DATA_DIR%", layout::ETCD_DATA_DIR)
        .replace("%MARKER%", layout::CLUSTER_MARKER)
        .replace("%CA_DIRS%", &layout::OPTIONAL_CA_DIRS.map(|(_, d)| d).join(" "))
        .replace("%WRITTEN_DIRS%", &layout::WRITTEN_DIRS.join(" "))
}

/// Facts about one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    /// The uid commands run as (after sudo).
    pub uid: Option<u32>,
    pub kernel: String,
    pub arch: String,
    pub os: String,
    /// The host's clock minus the operator's, in seconds, and how precisely it is known
    /// (half the round trip).
    pub clock_skew: Option<(f64, f64)>,
    /// Active swap devices.
    pub swaps: Vec<String>,
    /// TCP ports something listens on (IPv4 and IPv6).
    pub listening: BTreeSet<u16>,
    /// Entries in /etc/kubernetes/manifests and /var/lib/etcd.
    pub manifests: Vec<String>,
    pub etcd_data: Vec<String>,
    /// The content of the kubeha marker file, if any.
    pub marker: Option<String>,
    /// What is wrong with the tools kubeha's remote scripts use (GNU coreutils behaviour).
    pub tool_problems: Vec<String>,
    /// Where the kubelet is, if on PATH; the container runtime sockets found.
    pub kubelet: Option<String>,
    pub runtime_sockets: Vec<String>,
    /// `net.ipv4.ip_forward`.
    pub ip_forward: Option<bool>,
    /// Which of kubeadm's optional system CA directories exist (`layout::OPTIONAL_CA_DIRS`).
    pub ca_dirs: Vec<String>,
    /// The machine's hostname (what a kubelet registers as without `--hostname-override`).
    pub hostname: String,
    /// Whether systemd-resolved is running (then pods need its upstream resolv.conf).
    pub resolved: bool,
    /// The IP addresses configured on the host's interfaces (with `ip`; empty without it).
    pub addresses: BTreeSet<std::net::IpAddr>,
    /// Those of [`layout::WRITTEN_DIRS`] that exist, as the host has them (links not followed).
    pub dirs: Vec<(String, DirState)>,
}

/// What is at a path kubeha writes into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirState {
    /// A directory with its owner and permission bits.
    Dir { uid: u32, mode: u32 },
    /// A symbolic link, with what it points at.
    Link(String),
    /// Something else (a file, a socket...).
    Other,
    /// A line the parser did not understand.
    Unknown(String),
}

/// The script reading a host's IP addresses alone (the facts' `@@addresses` section).
const ADDRESSES_SCRIPT: &str = "# reading addresses\necho @@addresses; ip -o addr show 2>/dev/null\necho @@end\n";

/// The host's IP addresses, and nothing else: a cheap look for who holds a VIP, asked again
/// and again while it moves.
pub async fn addresses<R: Remote>(remote: &R) -> Result<BTreeSet<std::net::IpAddr>, TransportError> {
    let out = remote.exec(ADDRESSES_SCRIPT, b"").await?;
    Ok(parse(&out.stdout_text()).addresses)
}

/// Runs the facts script on `remote`.
pub async fn gather<R: Remote>(remote: &R) -> Result<Facts, TransportError> {
    let before = SystemTime::now();
    let out = remote.exec(&script(), b"").await?;
    Ok(from_output(&out.stdout, before, SystemTime::now()))
}

/// The facts the script's output `stdout` gives, the command having run between `before` and
/// `after` (which bound the clock skew).
pub fn from_output(stdout: &[u8], before: SystemTime, after: SystemTime) -> Facts {
    let text = String::from_utf8_lossy(stdout);
    let mut facts = parse(&text);
    if let Some(remote_ns) = section(&text, "time").first().and_then(|t| t.trim().parse::<i128>().ok()) {
        let ns = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
        let (b, a) = (ns(before), ns(after));
        let skew = (remote_ns - (a + b) / 2) as f64 / 1e9;
        facts.clock_skew = Some((skew, (a - b) as f64 / 2e9));
    }
    facts
}

/// Parses the script's output (everything but the clock, which needs the local times).
pub fn parse(text: &str) -> Facts {
    let first = |name: &str| section(text, name).first().map(|l| l.trim().to_string()).unwrap_or_default();
    let uname = section(text, "uname");
    let marker = section(text, "marker");
    Facts {
        uid: first("uid").parse().ok(),
        kernel: uname.first().map(|s| s.trim().to_string()).unwrap_or_default(),
        arch: uname.get(1).map(|s| s.trim().to_string()).unwrap_or_default(),
        os: first("os"),
        clock_skew: None,
        swaps: section(text, "swaps")
            .iter()
            .skip(1) // header
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect(),
        listening: listening_ports(&section(text, "tcp")),
        manifests: names(&section(text, "manifests")),
        etcd_data: names(&section(text, "etcd")),
        marker: (!marker.is_empty()).then(|| marker.join("\n")),
        tool_problems: names(&section(text, "tools")),
        kubelet: names(&section(text, "kubelet")).into_iter().next(),
        runtime_sockets: names(&section(text, "runtime")),
        ca_dirs: names(&section(text, "cadirs")),
        hostname: first("hostname"),
        resolved: first("resolved") == "active",
        addresses: section(text, "addresses")
            .iter()
            .filter_map(|l| l.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
            .collect(),
        dirs: section(text, "dirs").iter().filter_map(|l| dir_state(l)).collect(),
        ip_forward: match first("forward").as_str() {
            "1" => Some(true),
            "0" => Some(false),
            _ => None,
        },
    }
}

/// One line of the `@@dirs` section: `PATH dir UID MODE`, `PATH link TARGET`, `PATH other`.
fn dir_state(line: &str) -> Option<(String, DirState)> {
    let mut words = line.split_whitespace();
    let path = words.next()?.to_string();
    let state = match (words.next(), words.next(), words.next()) {
        (Some("dir"), Some(uid), Some(mode)) => match (uid.parse(), u32::from_str_radix(mode, 8)) {
            (Ok(uid), Ok(mode)) => DirState::Dir { uid, mode },
            _ => DirState::Unknown(line.trim().to_string()),
        },
        (Some("link"), target, _) => DirState::Link(target.unwrap_or("").to_string()),
        (Some("other"), _, _) => DirState::Other,
        _ => DirState::Unknown(line.trim().to_string()),
    };
    Some((path, state))
}

fn names(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// The lines between the header line `@@name` and the next header: how kubeha's remote scripts
/// mark up their output.
pub(crate) fn section<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
    let header = format!("@@{name}");
    text.lines().skip_while(|l| l.trim() != header).skip(1).take_while(|l| !l.starts_with("@@")).collect()
}

/// Ports in state LISTEN (0A) in /proc/net/tcp{,6} lines.
fn listening_ports(lines: &[&str]) -> BTreeSet<u16> {
    lines
        .iter()
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1)?;
            let state = cols.nth(1)?;
            let port = local.rsplit_once(':')?.1;
            (state == "0A").then(|| u16::from_str_radix(port, 16).ok()).flatten()
        })
        .collect()
}

/// Whose a host is, judged from its directories and marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Nothing of a cluster is there.
    Fresh,
    /// kubeha set it up for this cluster (the marker names this cluster's CA).
    Ours(Box<HostMarker>),
    /// Something else lives there; the text says what and what to do.
    Other(String),
}

impl Ownership {
    pub fn is_ours(&self) -> bool {
        matches!(self, Ownership::Ours(_))
    }
}

/// Decides ownership; `cluster_id` is this cluster's CA hash when the state directory has a CA.
pub fn ownership(facts: &Facts, cluster_id: Option<&str>) -> Ownership {
    let marker = facts.marker.as_deref().map(|text| HostMarker::parse(text).ok_or(text));
    match (marker, cluster_id) {
        (Some(Ok(m)), Some(id)) if m.cluster_id == id => Ownership::Ours(Box::new(m)),
        (Some(Ok(m)), Some(_)) => Ownership::Other(format!(
            "belongs to another kubeha cluster ({}, {}); remove it from this inventory or reset it",
            m.cluster, m.cluster_id
        )),
        (Some(Ok(m)), None) => Ownership::Other(format!(
            "was set up by kubeha for cluster {} ({}) whose CA is not in this state directory; \
             point --state-dir at that cluster's state",
            m.cluster, m.cluster_id
        )),
        (Some(Err(_)), _) => Ownership::Other(format!(
            "{} is not a kubeha marker kubeha can read; restore it or reset the host",
            crate::marker::PATH
        )),
        (None, _) if !facts.manifests.is_empty() || !facts.etcd_data.is_empty() => {
            let mut what = Vec::new();
            if !facts.manifests.is_empty() {
                what.push(format!("{} has {}", layout::MANIFESTS_DIR, facts.manifests.join(", ")));
            }
            if !facts.etcd_data.is_empty() {
                what.push(format!("{} is not empty", layout::ETCD_DATA_DIR));
            }
            Ownership::Other(format!(
                "{} and kubeha did not set it up (another cluster, e.g. kubeadm's?); clean it first (kubeadm reset)",
                what.join(" and ")
            ))
        }
        (None, _) => Ownership::Fresh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "@@uid\n0\n@@uname\nLinux\nx86_64\n@@os\nDebian GNU/Linux 12 (bookworm)\n@@time\n1795457467462089258\n\
@@swaps\nFilename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/vdb                                partition\t1048572\t\t0\t\t-2\n\
@@tcp\n  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:0951 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 0B0012C6:0016 0B0012C6:D2F4 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   0: 00000000000000000000000000000000:1A0B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n\
@@manifests\netcd.yaml\n@@etcd\n@@marker\ncluster: lab\nclusterID: sha256:abcd\nhost: cp1\nrole: control-plane\n\
@@tools\nhead -c reads past its byte count\n@@kubelet\n/usr/bin/kubelet\n@@runtime\n/run/containerd/containerd.sock\n@@forward\n0\n\
@@addresses\n1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever\n\
2: eth0    inet 198.18.0.11/24 scope global eth0\\       valid_lft forever preferred_lft forever\n\
2: eth0    inet 198.18.0.10/32 scope global eth0\\       valid_lft forever preferred_lft forever\n\
2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever\n@@hostname\nnode-a\n@@resolved\nactive\n\
@@dirs\n/etc/kubernetes dir 0 755\n/etc/kubernetes/pki link /tmp/x\n/etc/kubernetes/manifests dir 1000 1777\n/var/lib/kubelet other\n@@end\n";

    #[test]
    fn parses_every_section() {
        let f = parse(OUTPUT);
        assert_eq!(f.uid, Some(0));
        assert_eq!((f.kernel.as_str(), f.arch.as_str()), ("Linux", "x86_64"));
        assert_eq!(f.os, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(f.swaps, ["/dev/vdb"]);
        // 0x0951 = 2385 listening on 127.0.0.1, 0x1A0B = 6667 on [::]; 22 is an established socket.
        assert_eq!(f.listening.iter().copied().collect::<Vec<_>>(), [2385, 6667]);
        assert_eq!(f.manifests, ["etcd.yaml"]);
        assert!(f.etcd_data.is_empty());
        assert_eq!(f.marker.as_deref(), Some("cluster: lab\nclusterID: sha256:abcd\nhost: cp1\nrole: control-plane"));
        assert_eq!(f.tool_problems, ["head -c reads past its byte count"]);
        assert_eq!(f.kubelet.as_deref(), Some("/usr/bin/kubelet"));
        assert_eq!(f.runtime_sockets, ["/run/containerd/containerd.sock"]);
        assert_eq!(f.ip_forward, Some(false));
        assert_eq!((f.hostname.as_str(), f.resolved), ("node-a", true));
        let addresses: Vec<String> = f.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(addresses, ["127.0.0.1", "198.18.0.10", "198.18.0.11", "fe80::1"]);
        assert_eq!(
            f.dirs,
            [
                ("/etc/kubernetes".to_string(), DirState::Dir { uid: 0, mode: 0o755 }),
                ("/etc/kubernetes/pki".to_string(), DirState::Link("/tmp/x".into())),
                ("/etc/kubernetes/manifests".to_string(), DirState::Dir { uid: 1000, mode: 0o1777 }),
                ("/var/lib/kubelet".to_string(), DirState::Other),
            ]
        );
    }

    /// The whole facts script against this machine, the layout's paths moved to a temporary
    /// directory.
    #[test]
    fn the_script_reads_this_machine() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("manifests")).unwrap();
        std::fs::create_dir_all(root.join("etcd")).unwrap();
        for name in ["etcd.yaml", ".kubeha-x.tmp", "..odd", "with space.yaml"] {
            std::fs::write(root.join("manifests").join(name), "").unwrap();
        }
        std::fs::write(root.join("marker"), "cluster: lab\nhost: 'a\\b'").unwrap();
        let text = SCRIPT_TEMPLATE
            .replace("%MANIFESTS_DIR%", root.join("manifests").to_str().unwrap())
            .replace("%ETCD_DATA_DIR%", root.join("etcd").to_str().unwrap())
            .replace("%MARKER%", root.join("marker").to_str().unwrap())
            .replace("%CA_DIRS%", "/nonexistent")
            .replace("%WRITTEN_DIRS%", root.to_str().unwrap());
        let out = std::process::Command::new("sh").arg("-c").arg(&text).output().unwrap();
        let f = parse(&String::from_utf8_lossy(&out.stdout));
        let uname = |flag: &str| {
            let out = std::process::Command::new("uname").arg(flag).output().unwrap();
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        assert_eq!(f.uid, Some(nix::unistd::getuid().as_raw()));
        assert_eq!(
            (f.kernel.as_str(), f.arch.as_str(), f.hostname.as_str()),
            (&*uname("-s"), &*uname("-m"), &*uname("-n"))
        );
        let mut manifests = f.manifests.clone();
        manifests.sort();
        assert_eq!(manifests, ["..odd", ".kubeha-x.tmp", "etcd.yaml", "with space.yaml"]);
        assert!(f.etcd_data.is_empty());
        assert_eq!(f.marker.as_deref(), Some("cluster: lab\nhost: 'a\\b'"), "the last line has no newline");
        assert!(f.tool_problems.is_empty(), "{:?}", f.tool_problems);
        assert!(f.ip_forward.is_some());
        assert!(!f.addresses.is_empty());
        assert_eq!(f.dirs.len(), 1);
    }

    #[test]
    fn the_addresses_script_reads_this_machines_addresses() {
        let out = std::process::Command::new("sh").arg("-c").arg(ADDRESSES_SCRIPT).output().unwrap();
        let addresses = parse(&String::from_utf8_lossy(&out.stdout)).addresses;
        assert!(addresses.contains(&std::net::IpAddr::from([127, 0, 0, 1])), "{addresses:?}");
    }

    /// The facts script's directory section against the local filesystem.
    #[test]
    fn the_script_reports_links_and_modes_of_the_written_directories() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let text = SCRIPT_TEMPLATE
            .split("echo @@dirs\n")
            .nth(1)
            .unwrap()
            .replace("%WRITTEN_DIRS%", &format!("{root}/etc {root}/etc/pki {root}/missing {root}/file"));
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path().join("etc"), std::fs::Permissions::from_mode(0o775)).unwrap();
        std::os::unix::fs::symlink("/tmp/some where", dir.path().join("etc/pki")).unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let out = std::process::Command::new("sh").arg("-c").arg(&text).output().unwrap();
        let f = parse(&format!("@@dirs\n{}", String::from_utf8_lossy(&out.stdout)));
        use std::os::unix::fs::MetadataExt;
        let uid = std::fs::metadata(dir.path()).unwrap().uid();
        let mut dirs = f.dirs;
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            dirs,
            [
                (format!("{root}/etc"), DirState::Dir { uid, mode: 0o775 }),
                (format!("{root}/etc/pki"), DirState::Link("/tmp/some?where".into())),
                (format!("{root}/file"), DirState::Other),
            ]
        );
    }

    #[test]
    fn empty_output_gives_empty_facts() {
        let f = parse("@@uid\n@@end\n");
        assert_eq!(f.uid, None);
        assert!(f.listening.is_empty() && f.swaps.is_empty() && f.marker.is_none());
    }

    #[test]
    fn ownership_follows_the_marker_and_directories() {
        let mut f = parse(OUTPUT);
        assert!(ownership(&f, Some("sha256:abcd")).is_ours());
        assert!(
            matches!(ownership(&f, Some("sha256:ffff")), Ownership::Other(m) if m.contains("another kubeha cluster"))
        );
        assert!(matches!(ownership(&f, None), Ownership::Other(m) if m.contains("--state-dir")));
        f.marker = None;
        assert!(
            matches!(ownership(&f, None), Ownership::Other(m) if m.contains("etcd.yaml") && m.contains("kubeadm reset"))
        );
        f.manifests.clear();
        assert_eq!(ownership(&f, Some("sha256:abcd")), Ownership::Fresh);
    }
}
