//! In-memory hosts for testing the orchestration (phases, refusals, rollouts) without SSH.
//!
//! [`MemoryConnector`] hands out [`MemoryRemote`]s that answer kubeha's read-only scripts the
//! way a healthy fresh Linux host would (the facts script, the etcd peer probe) and keep the
//! files written to them, so a test can run a whole command and then look at every host.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::session::Connector;
use crate::plan::{Host, Plan};
use crate::transport::{MemoryRemote, Output, TransportError};

/// An inventory with three control planes and a worker behind an external load balancer (no
/// VIP: nothing is probed on the network).
pub const INVENTORY: &str = "apiVersion: kubeha/v1alpha1
kind: Cluster
metadata: {name: mem}
spec:
  kubernetesVersion: v1.31.4
  controlPlaneEndpoint: 198.18.0.10:6443
  loadBalancer: {type: external}
  etcd: {version: 3.5.16-0}
  certificates: {keyAlgorithm: ecdsa-p256}
  ssh: {user: root, identityFile: /nonexistent/id_ed25519}
  hosts:
    - {name: cp1, address: 198.18.0.11, role: control-plane}
    - {name: cp2, address: 198.18.0.12, role: control-plane}
    - {name: cp3, address: 198.18.0.13, role: control-plane}
    - {name: w1, address: 198.18.0.21, role: worker}
";

pub fn plan() -> Plan {
    crate::inventory::parse(INVENTORY, std::path::Path::new("/")).expect("the test inventory is valid")
}

/// The test cluster as `init` leaves it: a state directory with the PKI, and every host with its
/// rendered files and marker (as preflight finds the in-memory hosts: containerd's socket).
pub fn installed() -> (Plan, MemoryConnector, tempfile::TempDir) {
    let plan = plan();
    let hosts = MemoryConnector::new(&plan);
    let state = tempfile::tempdir().unwrap();
    crate::pki::generate(&plan, state.path()).unwrap();
    let mut found = plan.clone();
    for host in &mut found.hosts {
        host.node.cri_socket = Some("unix:///run/containerd/containerd.sock".into());
    }
    let files = crate::render::render(&found, &crate::pki::load(&plan, state.path()).unwrap()).unwrap();
    for (host, files) in &files {
        for f in files {
            hosts.host(host).insert_file(&f.path, f.mode, 0, 0, f.content.clone());
        }
    }
    (plan, hosts, state)
}

/// One in-memory host per plan host; `unreachable` hosts fail to connect.
pub struct MemoryConnector {
    pub hosts: BTreeMap<String, Arc<MemoryRemote>>,
    pub unreachable: Vec<String>,
}

impl MemoryConnector {
    pub fn new(plan: &Plan) -> MemoryConnector {
        let hosts = plan
            .hosts
            .iter()
            .map(|h| {
                let remote = Arc::new(linux_host(h));
                answer_scripts(&remote);
                (h.name.clone(), remote)
            })
            .collect();
        MemoryConnector { hosts, unreachable: Vec::new() }
    }

    pub fn host(&self, name: &str) -> &MemoryRemote {
        &self.hosts[name]
    }
}

impl Connector for MemoryConnector {
    type Remote = Arc<MemoryRemote>;

    async fn connect(&self, host: &Host) -> Result<Arc<MemoryRemote>, TransportError> {
        if self.unreachable.contains(&host.name) {
            return Err(TransportError::Timeout {
                host: host.name.clone(),
                what: "connecting".into(),
                after: std::time::Duration::from_secs(10),
            });
        }
        Ok(self.hosts[&host.name].clone())
    }

    async fn close(&self, _remote: Arc<MemoryRemote>) {}
}

/// A host that answers the facts script from its in-memory files (manifests, etcd data, the
/// kubeha marker), every peer probe with "open", and accepts SSH forwarding.
pub fn linux_host(host: &Host) -> MemoryRemote {
    let remote = MemoryRemote::new(host.name.clone());
    remote.listen_tcp(&host.address.to_string(), host.ssh.port, |_| {});
    remote
}

/// Answers the scripts kubeha runs for facts and peer probes on `remote`, reading its files.
pub fn answer_scripts(remote: &Arc<MemoryRemote>) {
    let weak = Arc::downgrade(remote);
    remote.on_exec(move |command, stdin| {
        let Some(host) = weak.upgrade() else { return Output::default() };
        if command.starts_with("# gathering host facts") {
            return facts(&host);
        }
        if command.starts_with("# checking etcd peer ports") {
            return peers(command);
        }
        if command.starts_with("# reading certificates") {
            return certificates(&host);
        }
        if command.starts_with("# kubeha taking the host lock")
            || command.starts_with("# kubeha taking over the host lock")
            || command.starts_with("# kubeha releasing the host lock")
        {
            return host_lock(&host, command, stdin);
        }
        if command.starts_with("# backing up") {
            back_up(&host, command);
        }
        Output::default()
    });
}

/// The host-lock scripts (`host::lock`) on the in-memory lock file: an exclusive create, a
/// takeover only of the lock whose SHA-256 the script names, a release only of this run's lock.
fn host_lock(host: &MemoryRemote, command: &str, stdin: &[u8]) -> Output {
    use sha2::Digest;
    let path = crate::host::layout::HOST_LOCK;
    let current = host.file(path).map(|f| f.content);
    let held = |content: Vec<u8>| Output { status: 3, stdout: content, stderr: Vec::new() };
    let mut text = stdin.to_vec();
    text.push(b'\n');
    if command.starts_with("# kubeha releasing") {
        let token = command.split("'token: ").nth(1).and_then(|t| t.split('\'').next()).unwrap_or("");
        if current.is_some_and(|c| String::from_utf8_lossy(&c).lines().any(|l| l == format!("token: {token}"))) {
            host.remove_file(path);
        }
        return Output::default();
    }
    match current {
        None if command.starts_with("# kubeha taking the") => {
            host.insert_file(path, 0o644, 0, 0, text);
            // The script to run once the lock is taken (`lock::try_take_then`): the facts.
            if command.contains("\n# gathering host facts") { facts(host) } else { Output::default() }
        }
        None => Output { status: 12, stdout: Vec::new(), stderr: b"no lock to take over".to_vec() },
        Some(content) if command.starts_with("# kubeha taking the") => held(content),
        Some(content) => {
            let sum = hex::encode(sha2::Sha256::digest(&content));
            if command.contains(&format!("= {sum} ]")) {
                host.insert_file(path, 0o644, 0, 0, text);
                Output::default()
            } else {
                held(content)
            }
        }
    }
}

/// Does what `host::files::backup_script` does: copies each file that exists (every path in
/// the tests is free of quotes, so the quoted words are the paths).
fn back_up(host: &MemoryRemote, command: &str) {
    for line in command.lines().filter(|l| l.starts_with("if [ -f ")) {
        let words: Vec<&str> = line.split('\'').skip(1).step_by(2).collect();
        if let [from, _, _, to] = words.as_slice()
            && let Some(file) = host.file(from)
        {
            host.insert_file(*to, file.mode, file.uid, file.gid, file.content);
        }
    }
}

fn facts(host: &MemoryRemote) -> Output {
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let listed = |dir: &str| -> String {
        host.paths()
            .iter()
            .filter(|p| p.parent() == Some(std::path::Path::new(dir)))
            .filter_map(|p| p.file_name()?.to_str().map(|n| format!("{n}\n")))
            .collect()
    };
    let mut marker = host
        .file(crate::host::layout::CLUSTER_MARKER)
        .map(|f| String::from_utf8_lossy(&f.content).into_owned())
        .unwrap_or_default();
    if !marker.is_empty() && !marker.ends_with('\n') {
        marker.push('\n');
    }
    let text = format!(
        "@@uid\n0\n@@uname\nLinux\nx86_64\n@@os\nDebian GNU/Linux 12\n@@time\n{now}\n@@swaps\nFilename Type\n@@tcp\n\
         @@manifests\n{}@@etcd\n{}@@marker\n{marker}@@tools\n@@kubelet\n/usr/bin/kubelet\n@@runtime\n\
         /run/containerd/containerd.sock\n@@forward\n1\n@@cadirs\n/etc/ca-certificates\n/usr/local/share/ca-certificates\n\
         /usr/share/ca-certificates\n@@end\n",
        listed(crate::host::layout::MANIFESTS_DIR),
        listed(crate::host::layout::ETCD_DATA_DIR),
    );
    Output { status: 0, stdout: text.into_bytes(), stderr: Vec::new() }
}

fn peers(command: &str) -> Output {
    let targets = command
        .lines()
        .find_map(|l| l.strip_prefix("for t in "))
        .and_then(|l| l.strip_suffix("; do"))
        .unwrap_or_default();
    let text: String = targets.split_whitespace().map(|t| format!("@@peer {t}\nrc=0\n\n")).collect();
    Output { status: 0, stdout: text.into_bytes(), stderr: Vec::new() }
}

/// What `host::certs`'s script prints: the certificate blocks of PEM files under the PKI
/// directories, and each kubeconfig's client-certificate-data line.
fn certificates(host: &MemoryRemote) -> Output {
    let mut text = String::new();
    let pki_dirs = [crate::host::layout::PKI_DIR.to_string(), format!("{}/pki", crate::host::layout::KUBELET_DIR)];
    for path in host.paths() {
        let name = path.to_string_lossy().into_owned();
        let content = String::from_utf8_lossy(&host.file(&path).unwrap().content).into_owned();
        if pki_dirs.iter().any(|d| path.starts_with(d)) && (name.ends_with(".crt") || name.ends_with(".pem")) {
            text.push_str(&format!("@@file {name}\n"));
            let mut inside = false;
            for line in content.lines() {
                inside |= line == "-----BEGIN CERTIFICATE-----";
                if inside {
                    text.push_str(line);
                    text.push('\n');
                }
                inside &= line != "-----END CERTIFICATE-----";
            }
        }
    }
    for path in host.paths() {
        if path.parent() == Some(std::path::Path::new(crate::host::layout::KUBERNETES_DIR))
            && path.extension().is_some_and(|e| e == "conf")
        {
            text.push_str(&format!("@@kubeconfig {}\n", path.display()));
            let content = String::from_utf8_lossy(&host.file(&path).unwrap().content).into_owned();
            for line in content.lines().filter(|l| l.trim_start().starts_with("client-certificate-data:")) {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    text.push_str("@@end\n");
    Output { status: 0, stdout: text.into_bytes(), stderr: Vec::new() }
}
