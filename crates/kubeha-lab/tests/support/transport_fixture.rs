//! Test hosts for the SSH transport tests: a lab of two hosts (`kubeha_lab::Lab`: network
//! namespaces on a bridge, each running the real `/usr/sbin/sshd` in its own mount namespace),
//! set up for SSH client tests through the lab's [`SshSetup`].
//!
//! The lab is named `khtr`, lives in [`DIR`] and uses 198.18.250.0/24. One fixture exists at a
//! time on the machine (a lock file serializes test processes; a mutex serializes tests in one
//! process). Dropping the fixture takes the lab down (its sshd processes, their sessions and
//! whatever those left running, then the namespaces and links), also when a test fails. Needs
//! root, `sshd`, `ssh-keygen`, `ssh-keyscan`, `ssh-agent`, `ssh-add`, `sudo`.
//!
//! Host 1 (`cp1`): 198.18.250.11 port 22, ed25519 host key. Host 2 (`cp2`): 198.18.250.12 port
//! 2222, ed25519 and ecdsa host keys. Users: root; `ops` (passwordless sudo, TCP forwarding
//! disabled); `ops2` (sudo that asks for a password). sshd logs at DEBUG3, runs commands without
//! the lab's recording wrapper and allows OpenSSH's default 10 sessions per connection.
//! Authorized keys: see [`Keys`].

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kubeha::plan::{Host, Role, Ssh};
use kubeha_lab::{ExtraUser, HostKeyType, Lab, LabSpec, OPS_USER, SshSetup, Sudo};
use nix::fcntl::{Flock, FlockArg};

pub const DIR: &str = "/tmp/khtr-fixture";
const LOCK: &str = "/tmp/khtr-fixture.lock";
const SUBNET: u8 = 250;
pub const NO_HOST: Ipv4Addr = Ipv4Addr::new(198, 18, SUBNET, 99);
pub const PASSPHRASE: &str = "correct horse battery staple";

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
    /// The lab's own key: authorized for root, ops and ops2.
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
    pub address: Ipv4Addr,
    pub port: u16,
    /// The lab's directory of this host (`<DIR>/hosts/<name>`): the host sees it at the same
    /// path, so files written over SSH below it can be checked from here.
    pub dir: PathBuf,
}

impl FixtureHost {
    pub fn socket(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.address), self.port)
    }
}

pub struct Fixture {
    pub dir: PathBuf,
    pub hosts: Vec<FixtureHost>,
    pub keys: Keys,
    /// The uid of `ops` on the hosts.
    pub ops_uid: u32,
    lab: Option<Lab>,
    agents: Vec<Child>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
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

fn public_key(private: &Path) -> String {
    let mut s = private.as_os_str().to_owned();
    s.push(".pub");
    fs::read_to_string(PathBuf::from(s)).unwrap().trim().to_string()
}

impl Fixture {
    /// Builds both hosts; returns once their sshd accepts connections.
    pub fn up() -> Fixture {
        let dir = PathBuf::from(DIR);
        // A lab left by a test process that died without cleaning up.
        if dir.join("lab.json").exists() {
            Lab::open(&dir).unwrap().down().unwrap();
        }
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("keys")).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();

        let k = dir.join("keys");
        let keys = Keys {
            ed25519: dir.join("id_ed25519"),
            ecdsa: k.join("id_ecdsa"),
            rsa: k.join("id_rsa"),
            rsa_pem: k.join("id_rsa_pem"),
            encrypted: k.join("id_encrypted"),
            stranger: k.join("id_stranger"),
        };
        keygen(&keys.ecdsa, &["-t", "ecdsa", "-b", "256"], "");
        keygen(&keys.rsa, &["-t", "rsa", "-b", "2048"], "");
        keygen(&keys.rsa_pem, &["-t", "rsa", "-b", "2048", "-m", "PEM"], "");
        keygen(&keys.encrypted, &["-t", "ed25519"], PASSPHRASE);
        keygen(&keys.stranger, &["-t", "ed25519"], "");

        let mut spec = LabSpec::new("khtr", SUBNET);
        (spec.control_planes, spec.workers) = (2, 0);
        spec.dir = dir.clone();
        spec.etcd_version = Some("3.4.23".into());
        spec.exe = Some(env!("CARGO_BIN_EXE_kubeha-lab").into());
        let root_keys = [&keys.ecdsa, &keys.rsa, &keys.rsa_pem, &keys.encrypted].map(|p| public_key(p));
        spec.ssh = SshSetup {
            users: vec![ExtraUser { name: "ops2".into(), sudo: Sudo::Password }],
            authorized_keys: [("root".to_string(), root_keys.to_vec())].into(),
            ports: [("cp2".to_string(), 2222)].into(),
            host_keys: [("cp2".to_string(), vec![HostKeyType::Ecdsa])].into(),
            // sshd's DEBUG3 log shows the command lines of non-root users (with the recording
            // wrapper it would name the wrapper instead); 10 sessions is OpenSSH's default.
            settings: vec!["LogLevel DEBUG3".into(), "MaxSessions 10".into()],
            matches: vec![format!("Match User {OPS_USER}"), "    AllowTcpForwarding no".into()],
            record_commands: false,
        };
        let lab = Lab::up(spec).unwrap();
        let hosts = lab
            .hosts()
            .iter()
            .map(|h| FixtureHost {
                name: h.name.clone(),
                address: h.address,
                port: h.ssh_port,
                dir: lab.host_dir(&h.name).unwrap(),
            })
            .collect();
        let ops_uid = lab.uid("cp1", OPS_USER).unwrap().expect("ops exists on lab hosts");
        Fixture {
            dir,
            hosts,
            keys,
            ops_uid,
            lab: Some(lab),
            agents: Vec::new(),
            threads: Vec::new(),
            stop: Arc::default(),
        }
    }

    fn lab(&self) -> &Lab {
        self.lab.as_ref().expect("the lab is up until the fixture is dropped")
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
                host: None,
                jumps: Vec::new(),
            },
            node: Default::default(),
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

    /// The ed25519 public host key file of host `i`.
    pub fn host_key_pub(&self, i: usize) -> PathBuf {
        self.lab().ssh_host_key(&self.hosts[i].name).unwrap()
    }

    /// PIDs of every process below host `i`'s sshd listener (sessions and their commands).
    pub fn session_processes(&self, i: usize) -> Vec<u32> {
        self.lab().ssh_processes(&self.hosts[i].name).unwrap().into_iter().map(|p| p.pid).collect()
    }

    /// Kills (SIGKILL) the per-connection sshd processes of host `i`, as if sshd crashed or the
    /// connection died: every open connection drops, the listener keeps running, and the commands
    /// those sessions ran see their pipes close (what is left of them stops with the lab).
    pub fn kill_sessions(&self, i: usize) -> usize {
        self.lab().kill_ssh_sessions(&self.hosts[i].name).unwrap()
    }

    /// Stops (SIGSTOP) the per-connection sshd processes of host `i`: the host stops answering
    /// without closing anything, as a hung machine or a silent network would. Teardown kills them.
    pub fn freeze_sessions(&self, i: usize) -> usize {
        self.lab().freeze_ssh_sessions(&self.hosts[i].name).unwrap()
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
        let netns = self.lab().netns(&self.hosts[i].name).unwrap();
        let netns = fs::File::open(format!("/run/netns/{netns}")).unwrap();
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
        fs::read_to_string(self.lab().sshd_log(&self.hosts[i].name).unwrap()).unwrap_or_default()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for agent in &mut self.agents {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        // Frozen sessions would make sshd's shutdown wait for its grace period.
        for h in &self.hosts {
            if let Some(lab) = &self.lab {
                let _ = lab.kill_ssh_sessions(&h.name);
            }
        }
        if let Some(lab) = self.lab.take()
            && let Err(e) = lab.down()
        {
            eprintln!("taking the transport test lab down: {e}");
        }
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if std::env::var_os("KHTR_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}
