//! Test hosts for the SSH transport tests: two network namespaces on a bridge, each running a
//! real `/usr/sbin/sshd` in its own mount namespace (with its own host keys, users and sudoers).
//!
//! Names start with `khtr` and addresses are in 198.18.250.0/24, so the fixture never collides
//! with other labs. One fixture exists at a time on the machine (a lock file serializes test
//! processes; a mutex serializes tests in one process). Dropping the fixture stops the sshd
//! processes it started (and their session children), by PID, and deletes the namespaces and
//! links, also when a test fails. Needs root, `sshd`, `ssh-keygen`, `ssh-keyscan`, `sudo`.
//!
//! Host 1: 198.18.250.11 port 22, ed25519 host key. Host 2: 198.18.250.12 port 2222, ed25519
//! and ecdsa host keys. Users: root; `ops` (passwordless sudo, TCP forwarding disabled); `ops2`
//! (sudo that asks for a password). Authorized keys: see [`Keys`].

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kubeha::plan::{Host, Role, Ssh};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const DIR: &str = "/tmp/khtr-fixture";
const LOCK: &str = "/tmp/khtr-fixture.lock";
const BRIDGE: &str = "khtrbr0";
pub const NO_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, 250, 99);
pub const PASSPHRASE: &str = "correct horse battery staple";
pub const OPS_UID: u32 = 64123;

static SERIAL: Mutex<()> = Mutex::new(());

/// Serializes fixture use: within this process (mutex) and across processes (lock file).
pub struct Serial {
    _flock: Flock<fs::File>,
    _guard: MutexGuard<'static, ()>,
}

pub fn serial() -> Serial {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let file = fs::OpenOptions::new().create(true).truncate(false).write(true).open(LOCK).unwrap();
    let flock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e).unwrap();
    Serial { _flock: flock, _guard: guard }
}

/// Client key files (all 0600).
pub struct Keys {
    /// Authorized for root, ops and ops2.
    pub ed25519: PathBuf,
    /// Authorized for root.
    pub ecdsa: PathBuf,
    /// Authorized for root (OpenSSH format).
    pub rsa: PathBuf,
    /// Authorized for root (PKCS#1 PEM format).
    pub rsa_pem: PathBuf,
    /// Passphrase-protected ([`PASSPHRASE`]); authorized for root.
    pub encrypted: PathBuf,
    /// Authorized nowhere.
    pub stranger: PathBuf,
}

pub struct FixtureHost {
    pub name: String,
    pub namespace: String,
    pub address: Ipv4Addr,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    sshd: Option<Child>,
}

impl FixtureHost {
    pub fn socket(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.address), self.port)
    }

    pub fn sshd_pid(&self) -> u32 {
        self.sshd.as_ref().map(|c| c.id()).unwrap()
    }

    /// The host's ed25519 public key file.
    pub fn host_key_pub(&self) -> PathBuf {
        self.dir.join("ssh_host_ed25519_key.pub")
    }
}

pub struct Fixture {
    pub dir: PathBuf,
    pub hosts: Vec<FixtureHost>,
    pub keys: Keys,
    agents: Vec<Child>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    /// Commands left running by [`Fixture::kill_sessions`]: (PID, start time).
    orphans: Vec<(u32, u64)>,
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

fn write_mode(path: &Path, content: &str, mode: u32) {
    fs::write(path, content).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn keygen(path: &Path, kind: &[&str], passphrase: &str) {
    let p = path.to_str().unwrap();
    let mut args = vec!["-q"];
    args.extend_from_slice(kind);
    args.extend_from_slice(&["-N", passphrase, "-C", "khtr-test", "-f", p]);
    run("ssh-keygen", &args);
}

/// PIDs of every descendant of `pid`, found through /proc (children first, deepest last).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // The command name is in parentheses and may contain spaces: fields follow the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) else { continue };
        parents.push((child, ppid));
    }
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(child, ppid) in &parents {
            if ppid == p && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Stops an sshd left by a test process that died without cleaning up: its PID file is in the
/// fixture directory and its command line names that directory's config.
fn stop_leftover_sshd(pidfile: &Path) {
    let Ok(text) = fs::read_to_string(pidfile) else { return };
    let Ok(pid) = text.trim().parse::<u32>() else { return };
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return };
    if String::from_utf8_lossy(&cmdline).contains(DIR) {
        for d in descendants(pid) {
            let _ = kill(Pid::from_raw(d as i32), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

fn remove_network() {
    for ns in ["khtr1", "khtr2"] {
        run_quiet("ip", &["netns", "del", ns]);
    }
    run_quiet("ip", &["link", "del", BRIDGE]);
}

impl Fixture {
    /// Builds both hosts and waits until their sshd accepts connections.
    pub fn up() -> Fixture {
        let dir = PathBuf::from(DIR);
        for pidfile in ["h1/sshd.pid", "h2/sshd.pid"] {
            stop_leftover_sshd(&dir.join(pidfile));
        }
        remove_network();
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("keys")).unwrap();
        fs::create_dir_all(dir.join("authorized_keys")).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();

        let k = dir.join("keys");
        let keys = Keys {
            ed25519: k.join("id_ed25519"),
            ecdsa: k.join("id_ecdsa"),
            rsa: k.join("id_rsa"),
            rsa_pem: k.join("id_rsa_pem"),
            encrypted: k.join("id_encrypted"),
            stranger: k.join("id_stranger"),
        };
        keygen(&keys.ed25519, &["-t", "ed25519"], "");
        keygen(&keys.ecdsa, &["-t", "ecdsa", "-b", "256"], "");
        keygen(&keys.rsa, &["-t", "rsa", "-b", "2048"], "");
        keygen(&keys.rsa_pem, &["-t", "rsa", "-b", "2048", "-m", "PEM"], "");
        keygen(&keys.encrypted, &["-t", "ed25519"], PASSPHRASE);
        keygen(&keys.stranger, &["-t", "ed25519"], "");
        let pubkey = |p: &Path| {
            let mut s = p.as_os_str().to_owned();
            s.push(".pub");
            fs::read_to_string(PathBuf::from(s)).unwrap()
        };
        let root_keys = [&keys.ed25519, &keys.ecdsa, &keys.rsa, &keys.rsa_pem, &keys.encrypted]
            .iter()
            .map(|p| pubkey(p))
            .collect::<String>();
        let ak = dir.join("authorized_keys");
        write_mode(&ak.join("root"), &root_keys, 0o644);
        write_mode(&ak.join("ops"), &pubkey(&keys.ed25519), 0o644);
        write_mode(&ak.join("ops2"), &pubkey(&keys.ed25519), 0o644);

        let mut fixture = Fixture {
            dir: dir.clone(),
            hosts: Vec::new(),
            keys,
            agents: Vec::new(),
            threads: Vec::new(),
            stop: Arc::default(),
            orphans: Vec::new(),
        };
        // From here on, Drop cleans up whatever was built if a step panics.
        run("ip", &["link", "add", BRIDGE, "type", "bridge"]);
        run("ip", &["addr", "add", "198.18.250.1/24", "dev", BRIDGE]);
        run("ip", &["link", "set", BRIDGE, "up"]);
        for (i, port) in [(1u8, 22u16), (2, 2222)] {
            let host = fixture.start_host(i, port);
            fixture.hosts.push(host);
        }
        for host in &fixture.hosts {
            wait_for_port(host.socket(), &host.log);
        }
        fixture
    }

    fn start_host(&mut self, i: u8, port: u16) -> FixtureHost {
        let name = format!("khtr{i}");
        let veth = format!("khtrv{i}");
        let address = Ipv4Addr::new(198, 18, 250, 10 + i);
        run("ip", &["netns", "add", &name]);
        run("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name]);
        run("ip", &["link", "set", &veth, "master", BRIDGE, "up"]);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &name,
                "sh",
                "-c",
                &format!("ip link set lo up && ip addr add {address}/24 dev eth0 && ip link set eth0 up"),
            ],
        );

        let dir = self.dir.join(format!("h{i}"));
        fs::create_dir_all(dir.join("sudoers.d")).unwrap();
        fs::create_dir_all(dir.join("home/ops")).unwrap();
        fs::create_dir_all(dir.join("files")).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        keygen(&dir.join("ssh_host_ed25519_key"), &["-t", "ed25519"], "");
        let mut host_keys = format!("HostKey {}/ssh_host_ed25519_key\n", dir.display());
        if i == 2 {
            keygen(&dir.join("ssh_host_ecdsa_key"), &["-t", "ecdsa", "-b", "256"], "");
            host_keys.push_str(&format!("HostKey {}/ssh_host_ecdsa_key\n", dir.display()));
        }

        // Users and sudo rules exist only inside this host's mount namespace.
        let home = dir.join("home/ops");
        // root's login shell is /bin/sh here: the machine's own root rc files (which may run
        // slow setup such as version managers) must not decide the tests' timings.
        let mut passwd: String = fs::read_to_string("/etc/passwd")
            .unwrap()
            .lines()
            .map(|l| match l.strip_prefix("root:") {
                Some(rest) => {
                    let fields: Vec<&str> = rest.split(':').collect();
                    format!("root:{}:/bin/sh\n", fields[..fields.len() - 1].join(":"))
                }
                None => format!("{l}\n"),
            })
            .collect();
        passwd.push_str(&format!("ops:x:{OPS_UID}:{OPS_UID}::{}:/bin/sh\n", home.display()));
        passwd.push_str(&format!("ops2:x:{}:{}::{}:/bin/sh\n", OPS_UID + 1, OPS_UID + 1, home.display()));
        let mut group = fs::read_to_string("/etc/group").unwrap();
        group.push_str(&format!("ops:x:{OPS_UID}:\nops2:x:{}:\n", OPS_UID + 1));
        let mut shadow = fs::read_to_string("/etc/shadow").unwrap();
        shadow.push_str("ops:*:19000:0:99999:7:::\nops2:*:19000:0:99999:7:::\n");
        write_mode(&dir.join("passwd"), &passwd, 0o644);
        write_mode(&dir.join("group"), &group, 0o644);
        write_mode(&dir.join("shadow"), &shadow, 0o640);
        for entry in fs::read_dir("/etc/sudoers.d").unwrap().flatten() {
            fs::copy(entry.path(), dir.join("sudoers.d").join(entry.file_name())).unwrap();
        }
        write_mode(&dir.join("sudoers.d/khtr"), "ops ALL=(ALL:ALL) NOPASSWD: ALL\nops2 ALL=(ALL:ALL) ALL\n", 0o440);
        nix::unistd::chown(&home, Some(nix::unistd::Uid::from_raw(OPS_UID)), None).unwrap();

        let log = dir.join("sshd.log");
        let config = format!(
            "Port {port}
ListenAddress {address}
{host_keys}AuthorizedKeysFile {ak}/%u
PidFile {dir}/sshd.pid
StrictModes no
LogLevel DEBUG3
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UseDNS no
AllowTcpForwarding yes
Subsystem sftp internal-sftp
Match User ops
    AllowTcpForwarding no
",
            ak = self.dir.join("authorized_keys").display(),
            dir = dir.display(),
        );
        write_mode(&dir.join("sshd_config"), &config, 0o644);
        let script = format!(
            "set -e
mount --bind {d}/passwd /etc/passwd
mount --bind {d}/group /etc/group
mount --bind {d}/shadow /etc/shadow
mount --bind {d}/sudoers.d /etc/sudoers.d
mkdir -p /run/sshd
exec /usr/sbin/sshd -D -f {d}/sshd_config -E {d}/sshd.log",
            d = dir.display()
        );
        let stderr = fs::File::create(dir.join("sshd.stderr")).unwrap();
        // `ip netns exec`, `unshare` and `sh` all exec: the child's PID is sshd's.
        let sshd = Command::new("ip")
            .args(["netns", "exec", &name, "unshare", "--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        FixtureHost { name: name.clone(), namespace: name, address, port, dir, log, sshd: Some(sshd) }
    }

    /// An inventory host for fixture host `i` (0 or 1).
    pub fn host(&self, i: usize, user: &str, identity: &Path, known_hosts: &Path, sudo: bool) -> Host {
        let h = &self.hosts[i];
        Host {
            name: h.name.clone(),
            address: IpAddr::V4(h.address),
            role: Role::ControlPlane,
            ssh: Ssh {
                user: user.to_string(),
                port: h.port,
                identity_file: identity.to_path_buf(),
                known_hosts_file: known_hosts.to_path_buf(),
                sudo,
            },
        }
    }

    /// A host that does not exist (nothing answers ARP for its address), with port 22.
    pub fn missing_host(&self, known_hosts: &Path) -> Host {
        let mut h = self.host(0, "root", &self.keys.ed25519, known_hosts, false);
        h.name = "ghost".into();
        h.address = IpAddr::V4(NO_HOST);
        h
    }

    /// What `ssh-keyscan` reports for host `i` (`hashed`: `-H`).
    pub fn keyscan(&self, i: usize, hashed: bool) -> String {
        let h = &self.hosts[i];
        let port = h.port.to_string();
        let address = h.address.to_string();
        let mut args = vec!["-p", &port];
        if hashed {
            args.push("-H");
        }
        args.push(&address);
        let out = Command::new("ssh-keyscan").args(&args).stderr(Stdio::null()).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.trim().is_empty(), "ssh-keyscan found no keys for {address}:{port}");
        text
    }

    /// A fresh known_hosts file holding the keyscan output of `hosts`.
    pub fn known_hosts(&self, file: &str, hosts: &[usize]) -> PathBuf {
        let path = self.dir.join(file);
        let text: String = hosts.iter().map(|&i| self.keyscan(i, false)).collect();
        write_mode(&path, &text, 0o600);
        path
    }

    /// Kills (SIGKILL) the per-connection sshd processes of host `i`, as if sshd crashed or the
    /// connection died: every open connection drops, the listener keeps running, and the commands
    /// those sessions ran see their pipes close (they are remembered and stopped at teardown).
    pub fn kill_sessions(&mut self, i: usize) -> usize {
        let all = descendants(self.hosts[i].sshd_pid());
        let mut killed = 0;
        for pid in all {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sshd" {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                killed += 1;
            } else if let Some(start) = start_time(pid) {
                self.orphans.push((pid, start));
            }
        }
        killed
    }

    /// Stops (SIGSTOP) the per-connection sshd processes of host `i`: the host stops answering
    /// without closing anything, as a hung machine or a silent network would. Teardown kills them.
    pub fn freeze_sessions(&self, i: usize) -> usize {
        let mut frozen = 0;
        for pid in descendants(self.hosts[i].sshd_pid()) {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim() == "sshd" {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
                frozen += 1;
            }
        }
        frozen
    }

    /// Starts an ssh-agent on a socket in the fixture directory and adds `key` with `passphrase`
    /// supplied through SSH_ASKPASS; returns the socket path.
    pub fn agent_with(&mut self, key: &Path, passphrase: &str) -> PathBuf {
        let socket = self.dir.join(format!("agent{}.sock", self.agents.len()));
        let agent = Command::new("ssh-agent")
            .args(["-D", "-a", socket.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.agents.push(agent);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "ssh-agent did not create {}", socket.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        let askpass = self.dir.join("askpass.sh");
        write_mode(&askpass, &format!("#!/bin/sh\nprintf '%s\\n' '{passphrase}'\n"), 0o700);
        let out = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", &socket)
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh-add failed: {}", String::from_utf8_lossy(&out.stderr));
        socket
    }

    /// Serves TCP on `127.0.0.1:port` inside host `i`'s network namespace until the fixture is
    /// dropped: each connection first gets `echo:`, then back what it sends.
    pub fn echo_server(&mut self, i: usize, port: u16) {
        let netns = fs::File::open(format!("/run/netns/{}", self.hosts[i].namespace)).unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stop = self.stop.clone();
        let thread = std::thread::spawn(move || {
            // Only this thread moves into the namespace.
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
            listener.set_nonblocking(true).unwrap();
            ready_tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = stream.set_nonblocking(false);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                std::thread::spawn(move || {
                    use std::io::Read;
                    let _ = stream.write_all(b"echo:");
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 || stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        self.threads.push(thread);
    }

    /// The sshd log of host `i`.
    pub fn log(&self, i: usize) -> String {
        fs::read_to_string(&self.hosts[i].log).unwrap_or_default()
    }
}

/// A process's start time (clock ticks since boot), to recognise it later despite PID reuse.
fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

fn wait_for_port(socket: SocketAddr, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if TcpStream::connect_timeout(&socket, Duration::from_millis(200)).is_ok() {
            return;
        }
        if Instant::now() > deadline {
            panic!("sshd at {socket} did not start; log:\n{}", fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            if let Some(mut sshd) = host.sshd.take() {
                for pid in descendants(sshd.id()) {
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
                let _ = kill(Pid::from_raw(sshd.id() as i32), Signal::SIGTERM);
                let _ = sshd.wait();
            }
        }
        for &(pid, start) in &self.orphans {
            if start_time(pid) == Some(start) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        for agent in &mut self.agents {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        remove_network();
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if std::env::var_os("KHTR_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
