//! Each host's own filesystem view: directories and files that the host's supervisor bind-mounts
//! over the machine's inside the host's private mount namespace.
//!
//! A host shares the machine's filesystem except for the paths in [`mounts`]: its own
//! `/etc/kubernetes`, `/var/lib/etcd`, `/var/lib/kubelet`, `/run` (sshd's privilege separation
//! directory, pid files of keepalived and haproxy), `/home`, and copies of `/etc/passwd`,
//! `/etc/group`, `/etc/shadow` with the `ops` user added (and the lab's extra users, see
//! [`SshSetup::users`](crate::SshSetup)), `/etc/hosts` naming every lab host, `/etc/hostname` and
//! `/etc/sudoers.d` with a drop-in giving `ops` passwordless sudo (and the extra users their
//! rules). The machine's own `/etc` is never written.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::LabError;
use super::ssh_setup::{ExtraUser, Sudo};
use super::state::{HostState, State, make_dir, write_file};

/// Directories every host replaces with its own; the lab directory must not be below one.
pub const PRIVATE_DIRS: [&str; 5] = ["/etc/kubernetes", "/var/lib/etcd", "/var/lib/kubelet", "/run", "/home"];

/// Machine files replaced by per-host copies (only those the machine has).
const PRIVATE_FILES: [&str; 6] =
    ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/hosts", "/etc/hostname", "/etc/sudoers.d"];

/// The non-root user every host has.
pub const OPS_USER: &str = "ops";
/// Inside each host: authorized keys (the lab's key for every user in `authorized_keys`, more
/// per user in `authorized_keys.d/<user>`), the command-recording wrapper and its log.
pub const LAB_RUN_DIR: &str = "/run/kubeha-lab";

/// One bind mount of a host: `source` (on the machine) over `target` (the path the host sees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
}

/// The bind mounts of the host whose files live in `host_dir`, parents before children.
pub fn mounts(host_dir: &Path) -> Vec<Mount> {
    let dirs = PRIVATE_DIRS.iter().map(|t| Mount { source: host_dir.join(dir_source(t)), target: PathBuf::from(t) });
    let files = PRIVATE_FILES
        .iter()
        .map(|t| Mount { source: host_dir.join("etc").join(&t["/etc/".len()..]), target: PathBuf::from(t) })
        .filter(|m| m.source.exists());
    dirs.chain(files).collect()
}

/// `/etc/kubernetes` → `etc-kubernetes`.
fn dir_source(target: &str) -> String {
    target.trim_start_matches('/').replace('/', "-")
}

/// Where the machine keeps the file a host sees at `path` (`path` itself where the host shares
/// the machine's file).
pub fn machine_path(host_dir: &Path, path: &Path) -> PathBuf {
    mounts(host_dir)
        .into_iter()
        .filter(|m| path.starts_with(&m.target))
        .max_by_key(|m| m.target.as_os_str().len())
        .map(|m| match path.strip_prefix(&m.target).expect("prefix checked") {
            // The mount itself (a file such as /etc/passwd): no trailing slash.
            rest if rest.as_os_str().is_empty() => m.source,
            rest => m.source.join(rest),
        })
        .unwrap_or_else(|| path.to_path_buf())
}

/// Whether `path` (as a host sees it) lies in one of the host's private directories, where the
/// lab may create files.
pub fn is_private(path: &Path) -> bool {
    PRIVATE_DIRS.iter().any(|d| path.starts_with(d))
}

/// Mount points that must exist on the machine for the bind mounts; returns those it created.
pub fn create_mount_points() -> Result<Vec<PathBuf>, LabError> {
    let mut created = Vec::new();
    for d in PRIVATE_DIRS {
        let path = Path::new(d);
        if !path.exists() {
            match std::fs::create_dir(path) {
                Ok(()) => created.push(path.to_path_buf()),
                // Another lab coming up at the same time made it: that lab removes it.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => return Err(LabError::Io { path: path.to_path_buf(), source }),
            }
        }
    }
    Ok(created)
}

/// A user the lab gives every host: `ops` or one of [`SshSetup::users`](crate::SshSetup).
struct HostUser<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    sudo: Sudo,
    /// The machine has this user: the host keeps the machine's entry.
    exists: bool,
}

/// `ops` and the extra users with their ids: the machine's own where it has the user, else the
/// first ids from 1000 up free as both a uid and a gid (and not given to another of them).
fn host_users(extra: &[ExtraUser]) -> Result<Vec<HostUser<'_>>, LabError> {
    let passwd = read("/etc/passwd")?;
    let group = read("/etc/group")?;
    let used = |text: &str, id: u32| text.lines().any(|l| l.split(':').nth(2) == Some(id.to_string().as_str()));
    let wanted = std::iter::once((OPS_USER, Sudo::NoPassword)).chain(extra.iter().map(|u| (u.name.as_str(), u.sudo)));
    let mut out: Vec<HostUser> = Vec::new();
    for (name, sudo) in wanted {
        if let Some(line) = passwd.lines().find(|l| l.split(':').next() == Some(name)) {
            let f: Vec<&str> = line.split(':').collect();
            let id = |i: usize| f.get(i).and_then(|s| s.parse().ok()).unwrap_or(0);
            out.push(HostUser { name, uid: id(2), gid: id(3), sudo, exists: true });
            continue;
        }
        let id = (1000..60000)
            .find(|&id| !used(&passwd, id) && !used(&group, id) && !out.iter().any(|u| u.uid == id || u.gid == id))
            .expect("a free id below 60000");
        out.push(HostUser { name, uid: id, gid: id, sudo, exists: false });
    }
    Ok(out)
}

/// Creates the host's directories and private files.
pub fn prepare(state: &State, host: &HostState, authorized_keys: &str, command_wrapper: &str) -> Result<(), LabError> {
    let dir = state.host_dir(&host.name);
    let users = host_users(&state.ssh.users)?;
    for (sub, mode) in [
        ("", 0o700),
        ("etc-kubernetes", 0o755),
        ("var-lib-etcd", 0o700),
        ("var-lib-kubelet", 0o755),
        ("run", 0o755),
        ("run/sshd", 0o755),
        ("run/kubeha-lab", 0o755),
        ("run/kubeha-lab/authorized_keys.d", 0o755),
        ("home", 0o755),
        ("pods", 0o700),
        ("etc", 0o755),
    ] {
        make_dir(&dir.join(sub), mode)?;
    }
    for u in &users {
        let home = dir.join("home").join(u.name);
        make_dir(&home, 0o755)?;
        chown(&home, u.uid, u.gid)?;
    }
    let etc = dir.join("etc");
    let today = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() / 86400);
    let mut additions = vec![("passwd", String::new()), ("group", String::new()), ("shadow", String::new())];
    for u in users.iter().filter(|u| !u.exists) {
        let (name, uid, gid) = (u.name, u.uid, u.gid);
        let gecos = if name == OPS_USER { "kubeha lab operator" } else { "kubeha lab user" };
        additions[0].1.push_str(&format!("{name}:x:{uid}:{gid}:{gecos}:/home/{name}:/bin/sh\n"));
        additions[1].1.push_str(&format!("{name}:x:{gid}:\n"));
        // `*`: no password, and not locked (sshd refuses locked accounts without PAM).
        additions[2].1.push_str(&format!("{name}:*:{today}:0:99999:7:::\n"));
    }
    let mut names: String = state.hosts.iter().map(|h| format!("{} {}\n", h.address, h.name)).collect();
    names.insert_str(0, "# kubeha-lab hosts\n");
    additions.push(("hosts", names));
    for (file, extra) in additions {
        copy_with(Path::new("/etc").join(file).as_path(), &etc.join(file), &extra)?;
    }
    // Lab hosts log root in with /bin/sh: sshd runs every command through the login shell, and
    // bash would source the machine's /root/.bashrc for each one (slow, and not the lab's).
    let passwd = read(&etc.join("passwd").to_string_lossy())?;
    write_file(&etc.join("passwd"), root_shell_sh(&passwd).as_bytes(), 0o644)?;
    if Path::new("/etc/hostname").exists() {
        write_file(&etc.join("hostname"), format!("{}\n", host.name).as_bytes(), 0o644)?;
    }
    if Path::new("/etc/sudoers.d").is_dir() {
        let sudoers = etc.join("sudoers.d");
        make_dir(&sudoers, 0o755)?;
        for entry in std::fs::read_dir("/etc/sudoers.d").map_err(|source| io("/etc/sudoers.d", source))?.flatten() {
            if entry.path().is_file() {
                copy_with(&entry.path(), &sudoers.join(entry.file_name()), "")?;
            }
        }
        let rules: String = users
            .iter()
            .filter_map(|u| match u.sudo {
                Sudo::NoPassword => Some(format!("{} ALL=(ALL:ALL) NOPASSWD: ALL\n", u.name)),
                Sudo::Password => Some(format!("{} ALL=(ALL:ALL) ALL\n", u.name)),
                Sudo::None => None,
            })
            .collect();
        write_file(&sudoers.join("kubeha-lab-users"), rules.as_bytes(), 0o440)?;
    }
    let run = dir.join("run/kubeha-lab");
    write_file(&run.join("authorized_keys"), authorized_keys.as_bytes(), 0o644)?;
    for (user, keys) in &state.ssh.authorized_keys {
        let text: String = keys.iter().map(|k| format!("{}\n", k.trim())).collect();
        write_file(&run.join("authorized_keys.d").join(user), text.as_bytes(), 0o644)?;
    }
    write_file(&run.join("logged-command"), command_wrapper.as_bytes(), 0o755)?;
    // Every login user appends to it; nobody but root reads it.
    write_file(&run.join("commands.log"), b"", 0o622)?;
    Ok(())
}

/// Copies `from` to `to` with `extra` appended, keeping mode and owner.
fn copy_with(from: &Path, to: &Path, extra: &str) -> Result<(), LabError> {
    let meta = std::fs::metadata(from).map_err(|source| io(from, source))?;
    let mut content = std::fs::read(from).map_err(|source| io(from, source))?;
    if !content.is_empty() && !content.ends_with(b"\n") && !extra.is_empty() {
        content.push(b'\n');
    }
    content.extend_from_slice(extra.as_bytes());
    write_file(to, &content, meta.permissions().mode() & 0o7777)?;
    chown(to, meta.uid(), meta.gid())
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<(), LabError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| io(path, source))
}

fn read(path: &str) -> Result<String, LabError> {
    std::fs::read_to_string(path).map_err(|source| io(path, source))
}

fn io(path: impl AsRef<Path>, source: std::io::Error) -> LabError {
    LabError::Io { path: path.as_ref().to_path_buf(), source }
}

/// Processes whose mount namespace has something mounted on `path` (e.g. another lab's hosts):
/// such a directory must not be removed.
pub fn mounted_by(path: &Path) -> Vec<u32> {
    let mut namespaces = std::collections::HashMap::new();
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) else { continue };
        let mounts_it = *namespaces.entry(ns).or_insert_with(|| {
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .is_ok_and(|info| info.lines().any(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m) == path)))
        });
        if mounts_it {
            out.push(pid);
        }
    }
    out
}

/// The lab directory of a supervisor process (`kubeha-lab node --dir DIR --host HOST`).
pub fn supervisor_lab_dir(pid: u32) -> Option<PathBuf> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let node = args.iter().position(|a| *a == b"node")?;
    let dir = args.get(node + 1..)?.windows(2).find(|w| w[0] == b"--dir")?[1];
    Some(PathBuf::from(String::from_utf8_lossy(dir).into_owned()))
}

/// `passwd` with root's login shell set to /bin/sh.
fn root_shell_sh(passwd: &str) -> String {
    passwd
        .lines()
        .map(|line| match line.split_once(':') {
            Some(("root", _)) => match line.rsplit_once(':') {
                Some((head, _)) => format!("{head}:/bin/sh\n"),
                None => format!("{line}\n"),
            },
            _ => format!("{line}\n"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_map_to_the_private_copies() {
        let d = Path::new("/tmp/lab/hosts/cp1");
        assert_eq!(machine_path(d, Path::new("/etc/kubernetes/pki/ca.crt")), d.join("etc-kubernetes/pki/ca.crt"));
        assert_eq!(machine_path(d, Path::new("/run/sshd.pid")), d.join("run/sshd.pid"));
        assert_eq!(machine_path(d, Path::new("/var/lib/etcd")), d.join("var-lib-etcd"));
        assert_eq!(machine_path(d, Path::new("/usr/bin/etcd")), PathBuf::from("/usr/bin/etcd"));
        assert_eq!(machine_path(d, Path::new("/etc/kubernetesx")), PathBuf::from("/etc/kubernetesx"));
        assert_eq!(machine_path(d, Path::new("/var/lib/kubelet")).as_os_str(), d.join("var-lib-kubelet").as_os_str());
        assert!(is_private(Path::new("/var/lib/kubelet/config.yaml")));
        assert!(!is_private(Path::new("/etc/pki")));
    }
}
