//! A throwaway host for running real programs on rendered files: a chroot tree that holds the
//! files at their absolute paths, entered inside private mount and network namespaces.
//!
//! The host's `/usr` (with the real haproxy, keepalived, etcd, curl, openssl) is bind-mounted
//! read-only; everything else in the tree is the test's own. The namespaces die with the shell,
//! so nothing leaks onto the machine: no mounts, no interfaces, no traffic outside the sandbox.
//! Requires root (the lab machine runs tests as root); tests call [`require_root`] first.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kubeha::files::File;

pub struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        assert!(is_root(), "this test runs haproxy/keepalived/etcd in namespaces and needs root");
        let dir = tempfile::Builder::new().prefix("kubeha-sandbox-").tempdir().unwrap();
        let root = dir.path();
        for d in ["usr", "proc", "dev", "tmp", "etc", "run", "var/lib"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        // Merged-/usr systems link these into /usr; link them the same way in the tree.
        for link in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            if let Ok(target) = std::fs::read_link(Path::new("/").join(link)) {
                std::os::unix::fs::symlink(target, root.join(link)).unwrap();
            }
        }
        // keepalived looks up script_user root; openssl reads its config (linked from /usr).
        for f in ["passwd", "group", "ssl/openssl.cnf"] {
            let to = root.join("etc").join(f);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(Path::new("/etc").join(f), to).unwrap();
        }
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
        Sandbox { dir }
    }

    /// Where absolute path `abs` of the sandboxed host lies on this machine.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(abs.as_ref().strip_prefix("/").expect("absolute path"))
    }

    /// Writes a rendered file at its path with its mode (parents 0755, as kubeha creates them).
    pub fn put(&self, file: &File) {
        self.write(&file.path, file.mode, &file.content);
    }

    pub fn write(&self, abs: impl AsRef<Path>, mode: u32, content: impl AsRef<[u8]>) {
        let path = self.path(abs);
        let parent = path.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        let mut dir = parent;
        while dir != self.dir.path() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            dir = dir.parent().unwrap();
        }
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Runs `script` with `sh` inside the tree, in new mount and network namespaces (only `lo`,
    /// brought up). Returns the output whatever the exit status.
    pub fn run(&self, script: &str) -> Output {
        let root = self.dir.path().display().to_string();
        let setup = format!(
            "set -e; mount --bind /usr '{root}/usr'; mount -o remount,bind,ro '{root}/usr'; mount -t proc proc '{root}/proc'; \
             mount --rbind /dev '{root}/dev'; ip link set lo up; exec chroot '{root}' /bin/sh -c \"$0\""
        );
        Command::new("unshare")
            .args(["--mount", "--net", "--propagation", "private", "sh", "-c", &setup, script])
            .output()
            .expect("unshare runs")
    }

    /// A CA and leaf certificates signed by it, made with the real `openssl`, written under
    /// `dir` (absolute, inside the sandbox) as `<name>.crt`/`<name>.key`.
    pub fn make_certs(&self, dir: &str, ca_cn: &str, leaves: &[(&str, &str)]) {
        let out = self.run(&certs_script(dir, ca_cn, leaves));
        assert!(out.status.success(), "openssl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Shell for `make_certs`: an ECDSA CA, then each leaf with its subjectAltName list.
fn certs_script(dir: &str, ca_cn: &str, leaves: &[(&str, &str)]) -> String {
    let mut s = format!(
        "set -e; mkdir -p {dir}; cd {dir}; \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt \
           -subj '/CN={ca_cn}' -days 2; "
    );
    for (name, sans) in leaves {
        s.push_str(&format!(
            "printf 'subjectAltName={sans}\\nextendedKeyUsage=serverAuth,clientAuth\\n' > {name}.ext; \
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key -out {name}.csr \
               -subj '/CN={name}'; \
             openssl x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
               -extfile {name}.ext -out {name}.crt; "
        ));
    }
    s
}

/// Whether the calling test can run: it needs root for mount and network namespaces. When not
/// root, says so on stderr (past the test harness's capture) and returns false; the test then
/// returns early and passes.
pub fn require_root() -> bool {
    if is_root() {
        return true;
    }
    // The test harness names each test's thread after the test.
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or("this test");
    let _ = writeln!(std::io::stderr(), "skipping {test}: needs root (mount and network namespaces)");
    false
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// `arg` single-quoted for `sh`.
pub fn sh_quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}
