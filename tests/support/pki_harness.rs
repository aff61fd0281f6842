//! Helpers for the PKI tests: small inventories, the real `kubeha`, `openssl` and `kubectl`
//! binaries, and reading certificates back.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

/// An inventory text with `control_planes` control planes (cp1..) and `workers` workers (w1..).
pub struct Inventory {
    pub name: &'static str,
    pub algorithm: &'static str,
    pub control_planes: usize,
    pub workers: usize,
    pub extra_sans: Vec<&'static str>,
    /// `host:port`; the VIP is the host.
    pub endpoint: &'static str,
}

impl Default for Inventory {
    fn default() -> Self {
        Inventory {
            name: "lab",
            algorithm: "ecdsa-p256",
            control_planes: 3,
            workers: 1,
            extra_sans: Vec::new(),
            endpoint: "198.18.0.10:8443",
        }
    }
}

impl Inventory {
    pub fn text(&self) -> String {
        let sans = if self.extra_sans.is_empty() {
            String::new()
        } else {
            format!(", extraSANs: [{}]", self.extra_sans.join(", "))
        };
        let mut s = format!(
            "apiVersion: kubeha/v1alpha1
kind: Cluster
metadata: {{name: {name}}}
spec:
  kubernetesVersion: v1.31.4
  controlPlaneEndpoint: {endpoint}
  loadBalancer: {{type: keepalived-haproxy, vip: {vip}, interface: eth0}}
  networking: {{podSubnet: 10.244.0.0/16, serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}}
  etcd: {{version: 3.5.16-0}}
  certificates: {{keyAlgorithm: {algorithm}{sans}}}
  ssh: {{user: root, port: 22, identityFile: /nonexistent/id, knownHostsFile: /nonexistent/known_hosts}}
  hosts:
",
            name = self.name,
            endpoint = self.endpoint,
            vip = self.endpoint.split(':').next().unwrap(),
            algorithm = self.algorithm,
        );
        for i in 1..=self.control_planes {
            s += &format!("    - {{name: cp{i}, address: 198.18.0.{}, role: control-plane}}\n", 10 + i);
        }
        for i in 1..=self.workers {
            s += &format!("    - {{name: w{i}, address: 198.18.1.{i}, role: worker}}\n");
        }
        s
    }

    pub fn plan(&self) -> kubeha::plan::Plan {
        kubeha::inventory::parse(&self.text(), Path::new("/")).expect("test inventories are valid")
    }

    /// Writes the inventory to `dir/inventory.yaml` and returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("inventory.yaml");
        std::fs::write(&path, self.text()).unwrap();
        path
    }
}

/// The repository's example inventory.
pub fn example_inventory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("inventories/example.yaml")
}

/// Runs the built `kubeha` binary.
pub fn kubeha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubeha")).args(args).env_remove("KUBEHA_STATE_DIR").output().unwrap()
}

/// Runs `kubeha certs generate -i INVENTORY --state-dir DIR`.
pub fn certs_generate_output(inventory: &Path, state: &Path) -> Output {
    kubeha(&["certs", "generate", "-i", inventory.to_str().unwrap(), "--state-dir", state.to_str().unwrap()])
}

/// `kubeha certs generate -i INVENTORY --state-dir DIR`, which must succeed; returns stdout.
pub fn certs_generate(inventory: &Path, state: &Path) -> String {
    let out = certs_generate_output(inventory, state);
    assert!(out.status.success(), "kubeha certs generate failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a program and returns its output, whatever its exit status.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a program that must succeed and returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(out.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `openssl verify -CAfile ca [-purpose p] cert` succeeded.
pub fn openssl_verifies(ca: &Path, cert: &Path, purpose: Option<&str>) -> bool {
    let mut args = vec!["verify", "-CAfile", ca.to_str().unwrap()];
    if let Some(p) = purpose {
        args.extend(["-purpose", p]);
    }
    args.push(cert.to_str().unwrap());
    let out = run("openssl", &args);
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim().ends_with(": OK")
}

/// The DER of the first certificate in a PEM text.
pub fn der(pem: &[u8]) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem).expect("a PEM certificate").to_vec()
}

/// Every file under `dir` with its hex SHA-256 and mode, and every directory with its mode.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, (String, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
        out.insert(d.strip_prefix(dir).unwrap().to_path_buf(), ("<dir>".to_string(), mode));
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
                let hash = hex::encode(Sha256::digest(std::fs::read(&path).unwrap()));
                out.insert(path.strip_prefix(dir).unwrap().to_path_buf(), (hash, mode));
            }
        }
    }
    out
}

/// The embedded data of a kubeconfig as `kubectl config view --raw -o json` shows it.
pub struct KubectlView {
    pub cluster: String,
    pub server: String,
    pub user: String,
    pub context: String,
    pub ca_pem: Vec<u8>,
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

pub fn kubectl_view(kubeconfig: &Path) -> KubectlView {
    use base64::Engine;
    let text =
        run_ok("kubectl", &["config", "view", "--kubeconfig", kubeconfig.to_str().unwrap(), "--raw", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let b64 = |v: &serde_json::Value| base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap();
    let cluster = &v["clusters"][0];
    let user = &v["users"][0];
    assert_eq!(v["clusters"].as_array().unwrap().len(), 1);
    assert_eq!(v["users"].as_array().unwrap().len(), 1);
    assert_eq!(v["contexts"][0]["context"]["cluster"], cluster["name"]);
    assert_eq!(v["contexts"][0]["context"]["user"], user["name"]);
    KubectlView {
        cluster: cluster["name"].as_str().unwrap().into(),
        server: cluster["cluster"]["server"].as_str().unwrap().into(),
        user: user["name"].as_str().unwrap().into(),
        context: v["current-context"].as_str().unwrap().into(),
        ca_pem: b64(&cluster["cluster"]["certificate-authority-data"]),
        cert_pem: b64(&user["user"]["client-certificate-data"]),
        key_pem: b64(&user["user"]["client-key-data"]),
    }
}
