//! The cluster PKI in the local state directory: kubeadm-compatible certificates, keys and
//! kubeconfigs, generated once and reused.
//!
//! The state directory holds what every control plane shares under `pki/` (the three CAs,
//! `sa.key`/`sa.pub`, the shared client certificates), what belongs to one host under
//! `nodes/<host>/`, `admin.conf`/`super-admin.conf` at its root and the VRRP password under
//! `secrets/`. [`generate`] fills in whatever is missing (so that an interrupted run is
//! completed by the next), re-issues leaf certificates the plan has outgrown and restricts
//! private files an operator left open; [`load`] reads and checks everything without writing,
//! and hands each host its files at their paths under `/etc/kubernetes` ([`Pki::host_files`]).
//!
//! The list of certificates is data in [`certlist`]; `docs/pki.md` describes every file.

mod certlist;
mod error;
pub mod expiry;
mod inspect;
mod issue;
mod keys;
mod kubeconfig;
mod modes;
mod parallel;
mod reconcile;
mod record;
pub mod rotation;
mod secrets;
pub mod state_dir;
mod store;
mod user;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::Digest;

pub use error::PkiError;
pub use reconcile::Renew;
pub use state_dir::StateDirError;
pub use user::{UserKubeconfig, user_kubeconfig};

use crate::files::File;
use crate::plan::{Host, Plan};

/// `$XDG_STATE_HOME/kubeha/<cluster>`, else `~/.local/state/kubeha/<cluster>`.
pub fn default_state_dir(cluster: &str) -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from).filter(|p| p.is_absolute()).unwrap_or_else(|| {
        std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root")).join(".local/state")
    });
    base.join("kubeha").join(cluster)
}

/// What `generate` did, file by file (paths relative to the state directory), in the order of
/// the certificate list.
#[derive(Debug, Default, serde::Serialize)]
pub struct GenerateReport {
    pub created: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
    /// Leaf certificates and kubeconfigs re-issued or rewritten (with their existing keys), CA
    /// certificates re-issued from their existing keys because they were missing, and private
    /// files and directories whose mode was tightened (their content untouched).
    pub renewed: Vec<Renewal>,
}

/// A file (or directory) `generate` rewrote or restricted, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Renewal {
    pub path: PathBuf,
    pub reason: String,
}

/// Creates whatever is missing under `state_dir`, re-issues leaf certificates that no longer
/// fit the plan and CA certificates that are missing (with their existing keys), and restricts
/// private files to 0600 and directories to 0700; never replaces a CA key or any other key.
pub fn generate(plan: &Plan, state_dir: &Path) -> Result<GenerateReport, PkiError> {
    let renew = Renew { window: plan.certificates.renew_before, ..Renew::default() };
    generate_with(plan, state_dir, &renew)
}

/// [`generate`], renewing what `renew` says besides what no longer fits: leaves ending within
/// its window, and the files it names (`certs renew`).
pub fn generate_with(plan: &Plan, state_dir: &Path, renew: &Renew) -> Result<GenerateReport, PkiError> {
    Ok(reconcile::run(plan, state_dir, reconcile::Mode::Generate, renew)?.report)
}

/// `<state>/renewing`: a `certs renew` whose certificates are issued in the state directory but
/// not yet rolled out to every host; it names when that renewal started.
const PENDING_RENEWAL: &str = "renewing";

/// When the renewal still to be rolled out started, if one is.
pub fn pending_renewal(state_dir: &Path) -> Result<Option<String>, PkiError> {
    let store = store::Store::new(state_dir);
    Ok(store.read(Path::new(PENDING_RENEWAL))?.map(|b| String::from_utf8_lossy(&b).trim().to_string()))
}

/// Records a renewal that started at `started`, before its certificates are issued.
pub fn begin_renewal(state_dir: &Path, started: &str) -> Result<(), PkiError> {
    store::Store::new(state_dir).write(Path::new(PENDING_RENEWAL), format!("{started}\n").as_bytes(), 0o600)
}

/// The renewal is on every host: forgets it.
pub fn end_renewal(state_dir: &Path) -> Result<(), PkiError> {
    let path = state_dir.join(PENDING_RENEWAL);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PkiError::Write { path, source: e }),
        _ => Ok(()),
    }
}

/// kubeadm's names for the certificates and kubeconfigs `certs renew` can re-issue.
pub fn renewable_names() -> impl Iterator<Item = &'static str> {
    certlist::KUBEADM_NAMES.iter().map(|(name, _)| *name)
}

/// The state-directory files `names` (kubeadm's, or `all`) stand for, per-host ones only for
/// `hosts` (all when empty), in certificate-list order without repeats; `Err` names the first
/// name that is not kubeadm's.
pub fn renewal_targets(plan: &Plan, names: &[String], hosts: &[String]) -> Result<Vec<PathBuf>, String> {
    let all: Vec<String> = renewable_names().map(String::from).collect();
    let names = if names.iter().any(|n| n == "all") { &all } else { names };
    let mut out: Vec<PathBuf> = Vec::new();
    for name in names {
        for rel in certlist::named_files(plan, name, hosts).ok_or_else(|| name.clone())? {
            if !out.contains(&rel) {
                out.push(rel);
            }
        }
    }
    Ok(out)
}

/// The cluster id (see [`Pki::cluster_id`]) of the CA already in `state_dir`, if there is one.
/// Preflight uses it to recognise hosts that belong to this cluster before anything is generated.
///
/// The id is a function of the CA key alone: when `pki/ca.key` is there without its certificate
/// (which `generate` re-issues from the key), it is read from the key.
pub fn existing_cluster_id(state_dir: &Path) -> Result<Option<String>, PkiError> {
    let store = store::Store::new(state_dir);
    let (crt, key) = (Path::new("pki/ca.crt"), Path::new("pki/ca.key"));
    if let Some(pem) = store.read(crt)? {
        let der = inspect::pem_to_der(&pem, &store.path(crt))?;
        return Ok(Some(inspect::cluster_id(&inspect::parse(&der, &store.path(crt))?)));
    }
    match store.read(key)? {
        Some(pem) => Ok(Some(inspect::cluster_id_of_spki(&keys::Key::from_pem(pem, &store.path(key))?.spki_der()))),
        None => Ok(None),
    }
}

/// Refuses a state directory that is not safe to use (see [`state_dir`]) or whose record names
/// another cluster than the plan's; a missing state directory is fine. Writes nothing.
pub fn check_state_dir(plan: &Plan, state_dir: &Path) -> Result<(), PkiError> {
    let store = store::Store::new(state_dir);
    if store.check_root()? {
        record::check_name(&store, record::read(&store)?.as_ref(), &plan.name)?;
    }
    Ok(())
}

/// `--force-state-dir`: makes the existing state directory the plan's cluster's, rewriting its
/// record (name, and no CA fingerprint, which the next `generate` records afresh) when it names
/// another cluster, is unreadable, or records a CA fingerprint. Whether it was rewritten.
/// The directory must still be safe to use: force never overrides owner, mode or link checks.
pub fn adopt_state_dir(plan: &Plan, state_dir: &Path) -> Result<bool, PkiError> {
    let store = store::Store::new(state_dir);
    if !store.check_root()? {
        return Ok(false);
    }
    let wanted = record::ClusterRecord { cluster: plan.name.clone(), ca_fingerprint: None };
    let current = match record::read(&store) {
        Ok(current) => current,
        Err(PkiError::StateDir(StateDirError::BadRecord { .. })) => {
            Some(record::ClusterRecord { cluster: String::new(), ca_fingerprint: None })
        }
        Err(e) => return Err(e),
    };
    match current {
        Some(found) if found != wanted => {
            record::write(&store, &wanted)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// A client certificate and key in PEM, for kubeha's own TLS connections.
pub struct CertAndKey {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl CertAndKey {
    /// The pair as a TLS client identity; `cert` and `key` name the files in errors.
    pub fn identity(&self, cert: &str, key: &str) -> Result<crate::https::ClientIdentity, crate::https::HttpsError> {
        crate::https::ClientIdentity::from_pem_named(cert, &self.cert_pem, key, &self.key_pem)
    }
}

/// The key is wiped from memory when dropped.
impl Drop for CertAndKey {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.key_pem.zeroize();
    }
}

/// Never prints the key.
impl std::fmt::Debug for CertAndKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAndKey").field("cert_pem_bytes", &self.cert_pem.len()).finish_non_exhaustive()
    }
}

/// Everything in the state directory, loaded and checked against the plan.
pub struct Pki {
    state_dir: PathBuf,
    /// Every file of the plan by path relative to the state directory.
    files: BTreeMap<PathBuf, Vec<u8>>,
    cluster_id: String,
    vrrp_password: String,
}

/// Every file (keys among them) and the password are wiped from memory when dropped.
impl Drop for Pki {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for content in self.files.values_mut() {
            content.zeroize();
        }
        self.vrrp_password.zeroize();
    }
}

/// Never prints file contents or the password.
impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("state_dir", &self.state_dir)
            .field("files", &self.files.len())
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

/// Loads the complete PKI; fails when anything the plan needs is missing or invalid, or a leaf
/// certificate no longer fits the plan (then `kubeha certs generate` renews it).
pub fn load(plan: &Plan, state_dir: &Path) -> Result<Pki, PkiError> {
    let outcome = reconcile::run(plan, state_dir, reconcile::Mode::Check, &Renew::default())?;
    Ok(Pki {
        state_dir: state_dir.to_path_buf(),
        files: outcome.files,
        cluster_id: outcome.cluster_id,
        vrrp_password: outcome.vrrp_password,
    })
}

impl Pki {
    /// The certificates, keys and kubeconfigs `host` receives, at their paths on the host,
    /// sorted by path.
    ///
    /// # Panics
    /// If `host` is not a host of the plan the PKI was loaded for.
    pub fn host_files(&self, host: &Host) -> Vec<File> {
        let mut out: Vec<File> = certlist::placements(host)
            .into_iter()
            .map(|p| File::new(p.host_path, p.mode, self.file(&p.rel).to_vec()))
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_cert_pem(&self) -> &[u8] {
        self.file(Path::new("pki/ca.crt"))
    }

    /// The etcd CA certificate (PEM).
    pub fn etcd_ca_cert_pem(&self) -> &[u8] {
        self.file(Path::new("pki/etcd/ca.crt"))
    }

    /// The `etcd/healthcheck-client` identity kubeha uses to query etcd.
    pub fn etcd_healthcheck_client(&self) -> CertAndKey {
        self.identity("pki/etcd/healthcheck-client")
    }

    /// The `apiserver-etcd-client` identity (what the apiservers use to reach etcd).
    pub fn apiserver_etcd_client(&self) -> CertAndKey {
        self.identity("pki/apiserver-etcd-client")
    }

    /// The `super-admin.conf` identity (group `system:masters`, beyond RBAC): what kubeha
    /// applies cluster objects with, since `admin.conf`'s rights come from one of them.
    pub fn super_admin(&self) -> CertAndKey {
        let mut contents = kubeconfig::parse(self.file(Path::new("super-admin.conf")))
            .expect("pki::load checked every kubeconfig of the plan");
        CertAndKey { cert_pem: std::mem::take(&mut contents.cert_pem), key_pem: std::mem::take(&mut contents.key_pem) }
    }

    /// `admin.conf` in the state directory.
    pub fn admin_kubeconfig_path(&self) -> PathBuf {
        self.state_dir.join("admin.conf")
    }

    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo (kubeadm's discovery hash).
    pub fn cluster_id(&self) -> String {
        self.cluster_id.clone()
    }

    /// The key of the manifests' inputs hash: derived from the service-account signing key, a
    /// secret that never leaves the state directory and the control planes, so the hash, which
    /// anyone who can read pods sees, cannot be checked against guessed configs.
    pub fn config_hash_key(&self) -> [u8; 32] {
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"kubeha manifest inputs hash key\0");
        hasher.update(self.file(Path::new(certlist::SA_KEY)));
        hasher.finalize().into()
    }

    /// The VRRP authentication password shared by every keepalived of this cluster.
    pub fn vrrp_password(&self) -> &str {
        &self.vrrp_password
    }

    fn identity(&self, base: &str) -> CertAndKey {
        let base = Path::new(base);
        CertAndKey {
            cert_pem: self.file(&base.with_extension("crt")).to_vec(),
            key_pem: self.file(&base.with_extension("key")).to_vec(),
        }
    }

    fn file(&self, rel: &Path) -> &[u8] {
        self.files.get(rel).map(Vec::as_slice).unwrap_or_else(|| panic!("{} is not a file of the plan", rel.display()))
    }
}
