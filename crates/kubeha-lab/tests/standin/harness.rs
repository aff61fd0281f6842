//! The harness of the stand-in lab tests: network namespaces, processes stopped by PID,
//! kubeadm-style certificates made with openssl, and a per-test lab tying them together.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kubeha::https::{ClientIdentity, Request, Response, TlsClient};

pub const STANDIN: &str = env!("CARGO_BIN_EXE_kubeha-lab");
pub const VERSION: &str = "v1.31.4";

// ---------------------------------------------------------------------------------------------
// Network namespaces

/// Serializes the choice of a free address pair between tests running in parallel.
pub static SLOTS: Mutex<()> = Mutex::new(());

pub fn sh(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace joined to the root namespace by a veth pair on a /30 of 198.18.240.0/24.
pub struct Netns {
    pub name: String,
    pub veth: String,
    /// The namespace's address (the test process reaches it through the veth).
    pub ip: Ipv4Addr,
}

impl Netns {
    pub fn create() -> Netns {
        assert!(nix::unistd::Uid::effective().is_root(), "the stand-in lab tests need root (network namespaces)");
        let _guard = SLOTS.lock().unwrap_or_else(|p| p.into_inner());
        let addresses = sh("ip", &["-o", "addr", "show"]);
        let namespaces = sh("ip", &["netns", "list"]);
        let pid = std::process::id() % 10000;
        for slot in 0u8..60 {
            let host_ip = Ipv4Addr::new(198, 18, 240, slot * 4 + 1);
            let name = format!("khsi{pid}s{slot}");
            if addresses.contains(&format!(" {host_ip}/"))
                || namespaces.lines().any(|l| l.split(' ').next() == Some(&name))
            {
                continue;
            }
            let ns = Netns { veth: format!("{name}h"), ip: Ipv4Addr::new(198, 18, 240, slot * 4 + 2), name };
            sh("ip", &["netns", "add", &ns.name]);
            sh("ip", &["link", "add", &ns.veth, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
            sh("ip", &["addr", "add", &format!("{host_ip}/30"), "dev", &ns.veth]);
            sh("ip", &["link", "set", &ns.veth, "up"]);
            let inside = format!("ip link set lo up && ip addr add {}/30 dev eth0 && ip link set eth0 up", ns.ip);
            sh("ip", &["netns", "exec", &ns.name, "sh", "-c", &inside]);
            return ns;
        }
        panic!("no free 198.18.240.0/24 slot");
    }

    /// Runs a program inside the namespace to completion.
    pub fn run(&self, program: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.veth]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// A process started inside a namespace, stopped by PID when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    pub status: Option<ExitStatus>,
}

impl Proc {
    pub fn start(ns: &Netns, name: &str, log_dir: &Path, program: &str, args: &[String], env: &[(&str, &str)]) -> Proc {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, program])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        Proc { name: name.to_string(), child, log, status: None }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().unwrap();
        }
        self.status
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(Instant::now() < deadline, "{} still running after {within:?}; log:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then SIGKILL after 5 s; returns the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let status = self.child.wait().unwrap();
        self.status = Some(status);
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates (openssl, kubeadm's layout)

pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(&self.dir).output().expect("openssl is installed");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    pub fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// Generates `name.key` in the given format: rsa1 (PKCS#1, as kubeadm), rsa8, ec1 (SEC1 with
    /// parameters), ec8 (PKCS#8).
    pub fn key(&self, name: &str, format: &str) {
        let key = format!("{name}.key");
        match format {
            "rsa1" => self.openssl(&["genrsa", "-traditional", "-out", &key, "2048"]),
            "rsa8" => self.openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", &key]),
            "ec1" => self.openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-out", &key]),
            _ => self.openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", &key]),
        }
    }

    pub fn ca(&self, name: &str, cn: &str) {
        self.key(name, "rsa1");
        self.openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={cn}"),
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    /// A leaf certificate `name.crt` for `subject`, signed by the CA `ca`.
    pub fn leaf(&self, name: &str, format: &str, ca: &str, subject: &str, usage: &str, sans: &[String]) {
        self.key(name, format);
        let mut ext = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
        );
        if !sans.is_empty() {
            writeln!(ext, "subjectAltName={}", sans.join(",")).unwrap();
        }
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).unwrap();
        let mut serial = [0u8; 8];
        getrandom::fill(&mut serial).unwrap();
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            subject,
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &format!("0x{}", hex::encode(serial)),
            "-days",
            "365",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    /// Writes `name.conf`: a kubeconfig for `server` with the cluster CA and the client pair
    /// `cert`.crt/.key embedded.
    pub fn kubeconfig(&self, name: &str, server: &str, user: &str, cert: &str) {
        let b64 = |f: &str| base64::engine::general_purpose::STANDARD.encode(self.read(f));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: kubernetes\n\
             contexts:\n- context:\n    cluster: kubernetes\n    user: {user}\n  name: {user}@kubernetes\n\
             current-context: {user}@kubernetes\npreferences: {{}}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {c}\n    client-key-data: {k}\n",
            ca = b64("ca.crt"),
            c = b64(&format!("{cert}.crt")),
            k = b64(&format!("{cert}.key")),
        );
        std::fs::write(self.dir.join(format!("{name}.conf")), text).unwrap();
    }

    /// Everything a kubeadm control plane has, plus a foreign CA and certificates it signed.
    pub fn create(dir: PathBuf, address: Ipv4Addr) -> Pki {
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki { dir };
        let ip = |a: &str| format!("IP:{a}");
        let dns = |a: &str| format!("DNS:{a}");
        pki.ca("ca", "kubernetes");
        pki.ca("etcd-ca", "etcd-ca");
        pki.ca("front-proxy-ca", "front-proxy-ca");
        pki.ca("other-ca", "kubernetes");
        let apiserver_sans = [
            dns("kubernetes"),
            dns("kubernetes.default"),
            dns("kubernetes.default.svc"),
            dns("kubernetes.default.svc.cluster.local"),
            ip("10.96.0.1"),
            ip("127.0.0.1"),
            ip(&address.to_string()),
        ];
        pki.leaf("apiserver", "ec1", "ca", "/CN=kube-apiserver", "serverAuth", &apiserver_sans);
        pki.leaf(
            "apiserver-kubelet-client",
            "rsa8",
            "ca",
            "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client",
            "clientAuth",
            &[],
        );
        pki.leaf("front-proxy-client", "ec8", "front-proxy-ca", "/CN=front-proxy-client", "clientAuth", &[]);
        let etcd_sans = [dns("localhost"), ip("127.0.0.1"), ip(&address.to_string())];
        pki.leaf("etcd-server", "ec8", "etcd-ca", "/CN=etcd-server", "serverAuth,clientAuth", &etcd_sans);
        pki.leaf("apiserver-etcd-client", "ec1", "etcd-ca", "/CN=kube-apiserver-etcd-client", "clientAuth", &[]);
        pki.leaf("other-client", "ec8", "other-ca", "/CN=kube-apiserver-etcd-client", "clientAuth", &[]);
        pki.key("sa", "rsa1");
        pki.openssl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        pki.key("other-sa", "rsa1");
        pki.openssl(&["rsa", "-in", "other-sa.key", "-pubout", "-out", "other-sa.pub"]);
        pki.leaf("admin", "rsa1", "ca", "/O=kubeadm:cluster-admins/CN=kubernetes-admin", "clientAuth", &[]);
        pki.leaf("super-admin", "ec1", "ca", "/O=system:masters/CN=kubernetes-super-admin", "clientAuth", &[]);
        pki.leaf("cm", "rsa8", "ca", "/CN=system:kube-controller-manager", "clientAuth", &[]);
        pki.leaf("sched", "ec1", "ca", "/CN=system:kube-scheduler", "clientAuth", &[]);
        pki.leaf("sched-foreign", "ec8", "other-ca", "/CN=system:kube-scheduler", "clientAuth", &[]);
        let server = format!("https://{address}:6443");
        pki.kubeconfig("admin", &server, "kubernetes-admin", "admin");
        pki.kubeconfig("super-admin", &server, "kubernetes-super-admin", "super-admin");
        pki.kubeconfig("controller-manager", &server, "system:kube-controller-manager", "cm");
        pki.kubeconfig("scheduler", &server, "system:kube-scheduler", "sched");
        pki.kubeconfig("scheduler-foreign", &server, "system:kube-scheduler", "sched-foreign");
        // A kubeconfig whose embedded key is not the certificate's.
        std::fs::copy(pki.dir.join("sched.crt"), pki.dir.join("sched-mismatch.crt")).unwrap();
        std::fs::copy(pki.dir.join("cm.key"), pki.dir.join("sched-mismatch.key")).unwrap();
        pki.kubeconfig("scheduler-mismatch", &server, "system:kube-scheduler", "sched-mismatch");
        pki
    }

    /// kubeadm's kube-apiserver flags for a host at `address`.
    pub fn apiserver_flags(&self, address: Ipv4Addr) -> Vec<String> {
        let p = |n: &str| self.path(n);
        [
            format!("--advertise-address={address}"),
            "--allow-privileged=true".into(),
            "--authorization-mode=Node,RBAC".into(),
            format!("--client-ca-file={}", p("ca.crt")),
            "--enable-admission-plugins=NodeRestriction".into(),
            "--enable-bootstrap-token-auth=true".into(),
            format!("--etcd-cafile={}", p("etcd-ca.crt")),
            format!("--etcd-certfile={}", p("apiserver-etcd-client.crt")),
            format!("--etcd-keyfile={}", p("apiserver-etcd-client.key")),
            "--etcd-servers=https://127.0.0.1:2379".into(),
            format!("--kubelet-client-certificate={}", p("apiserver-kubelet-client.crt")),
            format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
            "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname".into(),
            format!("--proxy-client-cert-file={}", p("front-proxy-client.crt")),
            format!("--proxy-client-key-file={}", p("front-proxy-client.key")),
            "--requestheader-allowed-names=front-proxy-client".into(),
            format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
            "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
            "--requestheader-group-headers=X-Remote-Group".into(),
            "--requestheader-username-headers=X-Remote-User".into(),
            "--secure-port=6443".into(),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-cluster-ip-range=10.96.0.0/12".into(),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
        ]
        .into()
    }

    /// kubeadm's kube-controller-manager flags.
    pub fn controller_manager_flags(&self, kubeconfig: &str) -> Vec<String> {
        let p = |n: &str| self.path(n);
        let kc = p(kubeconfig);
        [
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".into(),
            format!("--client-ca-file={}", p("ca.crt")),
            "--cluster-name=kubernetes".into(),
            format!("--cluster-signing-cert-file={}", p("ca.crt")),
            format!("--cluster-signing-key-file={}", p("ca.key")),
            "--controllers=*,bootstrapsigner,tokencleaner".into(),
            format!("--kubeconfig={kc}"),
            "--leader-elect=true".into(),
            format!("--requestheader-client-ca-file={}", p("front-proxy-ca.crt")),
            format!("--root-ca-file={}", p("ca.crt")),
            format!("--service-account-private-key-file={}", p("sa.key")),
            "--use-service-account-credentials=true".into(),
            "--allocate-node-cidrs=true".into(),
            "--cluster-cidr=10.244.0.0/16".into(),
            "--service-cluster-ip-range=10.96.0.0/12".into(),
        ]
        .into()
    }

    /// kubeadm's kube-scheduler flags (plus a port, to run several in one namespace).
    pub fn scheduler_flags(&self, kubeconfig: &str, port: u16) -> Vec<String> {
        let kc = self.path(kubeconfig);
        vec![
            format!("--authentication-kubeconfig={kc}"),
            format!("--authorization-kubeconfig={kc}"),
            "--bind-address=127.0.0.1".into(),
            format!("--kubeconfig={kc}"),
            "--leader-elect=true".into(),
            format!("--secure-port={port}"),
        ]
    }
}

/// Replaces (or adds) `--name=value` in a flag list.
pub fn with_flag(flags: &[String], name: &str, value: &str) -> Vec<String> {
    let prefix = format!("--{name}=");
    let mut out: Vec<String> = flags.iter().filter(|f| !f.starts_with(&prefix)).cloned().collect();
    out.push(format!("{prefix}{value}"));
    out
}

// ---------------------------------------------------------------------------------------------
// The lab of one test: a namespace, its certificates, etcd and stand-ins

pub struct Lab {
    // Field order is drop order: processes stop before the namespace goes away.
    pub procs: Vec<Proc>,
    pub pki: Pki,
    pub ns: Netns,
    pub dir: tempfile::TempDir,
    pub rt: tokio::runtime::Runtime,
}

impl Lab {
    pub fn new() -> Lab {
        let ns = Netns::create();
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::create(dir.path().join("pki"), ns.ip);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        Lab { procs: Vec::new(), pki, ns, dir, rt }
    }

    pub fn start(&mut self, name: &str, program: &str, args: Vec<String>, env: &[(&str, &str)]) -> usize {
        let proc = Proc::start(&self.ns, name, self.dir.path(), program, &args, env);
        self.procs.push(proc);
        self.procs.len() - 1
    }

    pub fn start_etcd(&mut self) -> usize {
        let p = |n: &str| self.pki.path(n);
        let data = self.dir.path().join("etcd-data").display().to_string();
        let args = vec![
            "--name=khsi".to_string(),
            format!("--data-dir={data}"),
            format!("--listen-client-urls=https://127.0.0.1:2379,https://{}:2379", self.ns.ip),
            format!("--advertise-client-urls=https://{}:2379", self.ns.ip),
            "--listen-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-advertise-peer-urls=http://127.0.0.1:2380".into(),
            "--initial-cluster=khsi=http://127.0.0.1:2380".into(),
            "--listen-metrics-urls=http://127.0.0.1:2381".into(),
            format!("--cert-file={}", p("etcd-server.crt")),
            format!("--key-file={}", p("etcd-server.key")),
            "--client-cert-auth=true".into(),
            format!("--trusted-ca-file={}", p("etcd-ca.crt")),
        ];
        let id = self.start("etcd", "etcd", args, &[]);
        // Ready when a linearizable read through the JSON gateway succeeds.
        let identity = ClientIdentity::from_pem(
            &self.pki.read("apiserver-etcd-client.crt"),
            &self.pki.read("apiserver-etcd-client.key"),
        )
        .unwrap();
        let client = TlsClient::new(&self.pki.read("etcd-ca.crt"), Some(&identity))
            .unwrap()
            .with_timeout(Duration::from_secs(2));
        let url = format!("https://{}:2379/v3/kv/range", self.ns.ip);
        let body = serde_json::json!({"key": "aGVhbHRo"});
        self.wait(id, "etcd to answer", Duration::from_secs(30), |lab| {
            lab.rt.block_on(client.post_json(&url, &body)).ok().filter(Response::is_success)
        });
        id
    }

    pub fn start_standin(&mut self, name: &str, component: &str, flags: Vec<String>) -> usize {
        let image = format!("registry.k8s.io/{component}:{VERSION}");
        let mut args = vec!["stand-in".to_string(), component.to_string()];
        args.extend(flags);
        self.start(name, STANDIN, args, &[("KUBEHA_LAB_IMAGE", &image)])
    }

    /// Polls `probe` until it returns Some, failing with the process's log if the process
    /// exits or time runs out.
    pub fn wait<T>(
        &mut self,
        id: usize,
        what: &str,
        within: Duration,
        mut probe: impl FnMut(&mut Lab) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(value) = probe(self) {
                return value;
            }
            if let Some(status) = self.procs[id].exited() {
                panic!(
                    "{} exited ({status}) while waiting for {what}; log:\n{}",
                    self.procs[id].name,
                    self.procs[id].log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; {} log:\n{}",
                self.procs[id].name,
                self.procs[id].log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub fn client(&self, ca: &str, identity: Option<&str>) -> TlsClient {
        let identity = identity.map(|n| {
            ClientIdentity::from_pem(&self.pki.read(&format!("{n}.crt")), &self.pki.read(&format!("{n}.key"))).unwrap()
        });
        TlsClient::new(&self.pki.read(ca), identity.as_ref()).unwrap().with_timeout(Duration::from_secs(5))
    }

    pub fn get(&self, client: &TlsClient, path: &str) -> Result<Response, kubeha::https::HttpsError> {
        self.rt.block_on(client.get(&format!("https://{}:6443{path}", self.ns.ip)))
    }

    /// Sends `request` to the stand-in listening on `port` at the namespace's address.
    pub fn send(&self, client: &TlsClient, port: u16, request: &Request) -> Response {
        let url = kubeha::https::HttpsUrl::parse(&format!("https://{}:{port}", self.ns.ip)).unwrap();
        self.rt
            .block_on(client.send(&url, request))
            .unwrap_or_else(|e| panic!("{} {} on port {port}: {e}", request.method(), request.path()))
    }

    /// curl inside the namespace: (exit code, body).
    pub fn curl(&self, args: &[&str]) -> (i32, String) {
        let out = self.ns.run("curl", &[&["-sS", "--max-time", "5"], args].concat(), &[]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    }

    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        let home = self.dir.path().display().to_string();
        let kubeconfig = self.pki.path("admin.conf");
        let out = self.ns.run(
            "kubectl",
            &[&["--kubeconfig", &kubeconfig, "--request-timeout=10s"], args].concat(),
            &[("HOME", &home)],
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Runs the `component` stand-in with `flags` and expects it to exit 1 within `within`, with
/// every `expected` text in its output. Returns the output.
pub fn expect_failure(
    lab: &mut Lab,
    name: &str,
    component: &str,
    flags: Vec<String>,
    image: Option<&str>,
    within: Duration,
    expected: &[&str],
) -> String {
    let image = image.map(str::to_string).unwrap_or(format!("registry.k8s.io/{component}:{VERSION}"));
    let mut args = vec!["stand-in".to_string(), component.to_string()];
    args.extend(flags);
    let id = lab.start(name, STANDIN, args, &[("KUBEHA_LAB_IMAGE", &image)]);
    let status = lab.procs[id].wait_exit(within);
    let log = lab.procs[id].log();
    assert_eq!(status.code(), Some(1), "{name}: expected exit 1, got {status}; log:\n{log}");
    for text in expected {
        assert!(log.contains(text), "{name}: output lacks {text:?}:\n{log}");
    }
    let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(last.starts_with("Error: "), "{name}: the last line should be the error: {last:?}");
    assert!(!log.contains("PRIVATE KEY"), "{name}: output shows key material:\n{log}");
    log
}

/// A serving certificate for `apiserver.key` that expired yesterday (made with rcgen from the
/// openssl CA, since openssl 3.0 cannot back-date).
pub fn expired_serving_cert(pki: &Pki) -> String {
    let ca_key = rcgen::KeyPair::from_pem(&String::from_utf8(pki.read("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&String::from_utf8(pki.read("ca.crt")).unwrap(), ca_key).unwrap();
    // rcgen reads PKCS#8 only: convert the SEC1 key.
    pki.openssl(&["pkey", "-in", "apiserver.key", "-out", "apiserver-pkcs8.key"]);
    let key = rcgen::KeyPair::from_pem(&String::from_utf8(pki.read("apiserver-pkcs8.key")).unwrap()).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "kube-apiserver");
    params.serial_number = Some(rcgen::SerialNumber::from(0x1234_5678_u64));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - Duration::from_secs(3 * 86400);
    params.not_after = now - Duration::from_secs(86400);
    let cert = params.signed_by(&key, &issuer).unwrap();
    let path = pki.dir.join("apiserver-expired.crt");
    std::fs::write(&path, cert.pem()).unwrap();
    path.display().to_string()
}
