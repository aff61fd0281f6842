//! The one pass over the state directory that both `generate` and `load` make: read every file
//! the plan needs, check it, and (when generating) create what is missing and re-issue leaf
//! certificates that no longer fit, always with their existing keys.
//!
//! Rules, file by file:
//! - a CA is kept if its certificate and key are readable, match, and it is an unexpired CA;
//!   anything else about a CA is an error, because replacing a CA breaks every host;
//! - a CA key without its certificate gets its certificate re-issued: it is self-signed, so a
//!   new one for the same key and subject (and subject key identifier) is the same CA to
//!   everything signed with the key, and the cluster id (a hash of the public key) stays;
//! - a key is never replaced; a certificate (or `sa.pub`) without its key is an error (the key
//!   may have been lost, and kubeha does not guess), a key without its certificate gets a new
//!   certificate;
//! - a leaf that no longer fits the plan is re-issued with its key and reported as renewed; so
//!   is one that ends within the renewal window ([`Renew::window`]) and one the caller names
//!   ([`Renew::force`], `certs renew`), with a new key if asked;
//! - a private file or directory open to other users is restricted ([`super::modes`]);
//! - in [`Mode::Check`] nothing is written, and whatever would be created, renewed or
//!   restricted is an error.
//!
//! So a run stopped at any point leaves a state the next run completes: every file is written
//! atomically, and a new key is written (and its directory fsynced) before its certificate.
//!
//! CAs are settled first (each parsed once, with its rcgen issuer built once); then leaves and
//! kubeconfigs, which are independent of each other, are handled on every core.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rcgen::{Issuer, KeyPair};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;

use super::certlist::{self, Authority, CAS, CERT_MODE, CaRow, Kubeconfig, Leaf, SA_KEY, SA_PUB, SECRET_MODE};
use super::issue::{self, CaName, Validity};
use super::keys::{self, Key};
use super::kubeconfig::{self, Contents};
use super::modes;
use super::record::{self, ClusterRecord};
use super::store::Store;
use super::{GenerateReport, PkiError, Renewal, inspect, parallel, secrets};
use crate::plan::Plan;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Create what is missing and renew what no longer fits.
    Generate,
    /// Write nothing; anything missing or out of date is an error.
    Check,
}

/// Everything the pass read or wrote.
pub(crate) struct Outcome {
    /// Content of every file of the plan, by path relative to the state directory.
    pub(crate) files: BTreeMap<PathBuf, Vec<u8>>,
    pub(crate) report: GenerateReport,
    pub(crate) cluster_id: String,
    pub(crate) vrrp_password: String,
}

enum Change {
    Created,
    Kept,
    Renewed(String),
}

/// Why a CA certificate was re-issued for its existing key.
const REISSUED: &str = "certificate was missing; re-issued from the existing key";

/// A private file (key, kubeconfig, password) as found.
struct Private {
    content: Vec<u8>,
    mode: u32,
}

struct Record {
    rel: PathBuf,
    change: Change,
    content: Vec<u8>,
}

impl Record {
    fn new(rel: impl Into<PathBuf>, change: Change, content: impl Into<Vec<u8>>) -> Self {
        Record { rel: rel.into(), change, content: content.into() }
    }
}

/// A CA's certificate and key, as read or created.
struct CaMaterial {
    pem: Vec<u8>,
    der: Vec<u8>,
    key: Key,
}

/// A CA ready to check and sign leaves: parsed once.
struct Signer<'a> {
    authority: Authority,
    crt: PathBuf,
    pem: &'a [u8],
    cert: X509Certificate<'a>,
    issuer: Issuer<'a, &'a KeyPair>,
}

/// What a generating run renews besides what no longer fits the plan.
#[derive(Debug, Clone, Default)]
pub struct Renew {
    /// Leaves (and kubeconfig client certificates) ending within this window are re-issued.
    pub window: std::time::Duration,
    /// Re-issued whatever they say: leaf certificates (`pki/apiserver-etcd-client.crt`,
    /// `nodes/cp1/pki/apiserver.crt`) and kubeconfigs (`admin.conf`, `nodes/cp1/kubelet.conf`),
    /// relative to the state directory.
    pub force: Vec<PathBuf>,
    /// The forced ones get new keys.
    pub new_keys: bool,
}

struct Run<'a> {
    store: &'a Store,
    plan: &'a Plan,
    mode: Mode,
    renew: &'a Renew,
    validity: Validity,
    /// The state directory's cluster record, as found.
    record: Option<ClusterRecord>,
}

pub(crate) fn run(plan: &Plan, dir: &Path, mode: Mode, renew: &Renew) -> Result<Outcome, PkiError> {
    let store = Store::new(dir);
    if mode == Mode::Generate {
        store.create_root()?;
    } else {
        store.check_root()?;
    }
    let found = record::read(&store)?;
    record::check_name(&store, found.as_ref(), &plan.name)?;
    let validity = Validity::starting_now(&plan.certificates);
    let run = Run { store: &store, plan, mode, renew, validity, record: found };
    let result = run.all();
    // Make whatever was written durable, even when a later file failed.
    let synced = store.sync_dirs();
    let outcome = result?;
    synced?;
    Ok(outcome)
}

impl Run<'_> {
    fn all(&self) -> Result<Outcome, PkiError> {
        let leaves = certlist::leaves(self.plan);
        let kubeconfigs = certlist::kubeconfigs(self.plan);
        let mut report = GenerateReport::default();
        if self.mode == Mode::Generate {
            let cas = CAS.iter().map(|row| Path::new("pki").join(row.base).with_extension("crt"));
            let leaf_files = leaves.iter().map(|leaf| leaf.rel.with_extension("crt"));
            let other = kubeconfigs.iter().map(|kc| kc.rel.clone());
            let files: Vec<PathBuf> =
                cas.chain(leaf_files).chain(other).chain([SA_KEY, secrets::VRRP_PASSWORD].map(PathBuf::from)).collect();
            report.renewed = modes::restrict_dirs(self.store, files.iter().map(PathBuf::as_path))?;
        }
        let mut records = Vec::new();

        let (cas, sa) = std::thread::scope(|scope| {
            let sa = scope.spawn(|| self.service_account());
            let cas = parallel::map(&CAS, |row| self.ca(row));
            (cas, sa.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
        });
        let mut materials = Vec::new();
        for ca in cas {
            let (material, mut recs) = ca?;
            records.append(&mut recs);
            materials.push(material);
        }
        records.append(&mut sa?);

        let signers = CAS.iter().zip(&materials).map(|(row, m)| self.signer(row, m)).collect::<Result<Vec<_>, _>>()?;
        let signer = |authority| signers.iter().find(|s| s.authority == authority).expect("every authority has a CA");
        let cluster_id = inspect::cluster_id(&signer(Authority::Kubernetes).cert);
        self.settle_record(&cluster_id)?;

        let jobs: Vec<Job> = leaves.iter().map(Job::Leaf).chain(kubeconfigs.iter().map(Job::Kubeconfig)).collect();
        let done = parallel::map(&jobs, |job| match job {
            Job::Leaf(leaf) => self.leaf(leaf, signer(leaf.identity.signer)),
            Job::Kubeconfig(kc) => self.kubeconfig(kc, signer(Authority::Kubernetes)).map(|r| vec![r]),
        });
        for recs in done {
            records.append(&mut recs?);
        }

        let (vrrp_password, record) = self.vrrp_password()?;
        records.push(record);

        let mut files = BTreeMap::new();
        for Record { rel, change, content } in records {
            match change {
                Change::Created => report.created.push(rel.clone()),
                Change::Kept => report.kept.push(rel.clone()),
                Change::Renewed(reason) => report.renewed.push(Renewal { path: rel.clone(), reason }),
            }
            files.insert(rel, content);
        }
        Ok(Outcome { files, report, cluster_id, vrrp_password })
    }

    /// Refuses a cluster CA that is not the recorded one; when generating, records the cluster
    /// and its CA if the record is missing or incomplete (a state directory of an older kubeha).
    fn settle_record(&self, cluster_id: &str) -> Result<(), PkiError> {
        record::check_ca(self.store, self.record.as_ref(), cluster_id)?;
        let wanted = ClusterRecord { cluster: self.plan.name.clone(), ca_fingerprint: Some(cluster_id.to_string()) };
        if self.mode == Mode::Generate && self.record.as_ref() != Some(&wanted) {
            record::write(self.store, &wanted)?;
        }
        Ok(())
    }

    /// In check mode, what would be created is an error.
    fn may_create(&self, rel: &Path) -> Result<(), PkiError> {
        match self.mode {
            Mode::Generate => Ok(()),
            Mode::Check => Err(PkiError::Missing { path: self.store.path(rel) }),
        }
    }

    /// In check mode, what would be renewed is an error.
    fn may_renew(&self, rel: &Path, reason: &str) -> Result<(), PkiError> {
        match self.mode {
            Mode::Generate => Ok(()),
            Mode::Check => Err(PkiError::Stale { path: self.store.path(rel), reason: reason.to_string() }),
        }
    }

    fn new_key(&self) -> Result<Key, PkiError> {
        Key::generate(self.plan.certificates.key_algorithm)
    }

    /// Reads a private file; in check mode, one open to other users is an error.
    fn read_private(&self, rel: &Path) -> Result<Option<Private>, PkiError> {
        let Some((content, mode)) = self.store.read_with_mode(rel)? else { return Ok(None) };
        if self.mode == Mode::Check && modes::too_open(mode) {
            return Err(PkiError::TooOpen { path: self.store.path(rel), mode });
        }
        Ok(Some(Private { content, mode }))
    }

    /// Restricts a private file found with `mode` (and accepted) to 0600 if it is open to other
    /// users, which is then its change; `Kept` otherwise.
    fn restrict(&self, rel: &Path, mode: u32) -> Result<Change, PkiError> {
        if !modes::too_open(mode) {
            return Ok(Change::Kept);
        }
        self.store.set_mode(rel, SECRET_MODE)?;
        Ok(Change::Renewed(modes::restricted(mode, SECRET_MODE)))
    }

    fn ca(&self, row: &CaRow) -> Result<(CaMaterial, Vec<Record>), PkiError> {
        let base = Path::new("pki").join(row.base);
        let (crt, key_rel) = (base.with_extension("crt"), base.with_extension("key"));
        let (crt_path, key_path) = (self.store.path(&crt), self.store.path(&key_rel));
        match (self.store.read(&crt)?, self.read_private(&key_rel)?) {
            (Some(pem), Some(found)) => {
                let der = inspect::pem_to_der(&pem, &crt_path)?;
                let (cert, key) = pair(&der, found.content, &crt_path, &key_path)?;
                inspect::check_ca(&cert, &crt_path, self.validity.now)?;
                let key_change = self.restrict(&key_rel, found.mode)?;
                let records =
                    vec![Record::new(crt, Change::Kept, pem.clone()), Record::new(key_rel, key_change, key.pem())];
                Ok((CaMaterial { pem, der, key }, records))
            }
            (None, None) => {
                self.may_create(&crt)?;
                let key = self.new_key()?;
                let (pem, der) = self.self_signed(&CaName::new(row.common_name), &key, &crt_path)?;
                self.store.write(&key_rel, key.pem(), SECRET_MODE)?;
                self.store.sync_dir_of(&key_rel)?;
                self.store.write(&crt, &pem, CERT_MODE)?;
                let records = vec![
                    Record::new(crt, Change::Created, pem.clone()),
                    Record::new(key_rel, Change::Created, key.pem()),
                ];
                Ok((CaMaterial { pem, der, key }, records))
            }
            (Some(_), None) => Err(PkiError::MissingKey { cert: crt_path, key: key_path }),
            (None, Some(found)) => {
                // A run stopped between the key and its certificate, or the certificate was lost.
                self.may_create(&crt)?;
                let key = Key::from_pem(found.content, &key_path)?;
                let key_change = self.restrict(&key_rel, found.mode)?;
                let name = self.name_in_use(row, &key).unwrap_or_else(|| CaName::new(row.common_name));
                let (pem, der) = self.self_signed(&name, &key, &crt_path)?;
                self.store.write(&crt, &pem, CERT_MODE)?;
                let records = vec![
                    Record::new(crt, Change::Renewed(REISSUED.into()), pem.clone()),
                    Record::new(key_rel, key_change, key.pem()),
                ];
                Ok((CaMaterial { pem, der, key }, records))
            }
        }
    }

    /// A CA certificate for `key` (PEM and DER).
    fn self_signed(&self, name: &CaName, key: &Key, crt_path: &Path) -> Result<(Vec<u8>, Vec<u8>), PkiError> {
        let cert = issue::ca(name, key, &self.validity)
            .map_err(|e| PkiError::Sign { path: crt_path.to_path_buf(), detail: e.to_string() })?;
        Ok((cert.pem().into_bytes(), cert.der().to_vec()))
    }

    /// How the leaves of the plan already signed with the CA key `key` name their CA (issuer
    /// name, authority key identifier), so that a re-issued CA certificate says the same and
    /// everything signed under the lost one still chains to it. `None` when no leaf was signed
    /// with the key yet: then the CA gets kubeha's name, which is what kubeha gave it if kubeha
    /// created the key.
    fn name_in_use(&self, row: &CaRow, key: &Key) -> Option<CaName> {
        let spki = key.spki_der();
        certlist::leaves(self.plan).iter().filter(|leaf| leaf.identity.signer == row.authority).find_map(|leaf| {
            let crt = leaf.rel.with_extension("crt");
            let pem = self.store.read(&crt).ok()??;
            let der = inspect::pem_to_der(&pem, &crt).ok()?;
            let cert = inspect::parse(&der, &crt).ok()?;
            inspect::signed_with(&cert, &spki).then(|| CaName::issuer_of(&cert, row.common_name))?
        })
    }

    fn signer<'m>(&self, row: &CaRow, material: &'m CaMaterial) -> Result<Signer<'m>, PkiError> {
        let crt = Path::new("pki").join(row.base).with_extension("crt");
        let cert = inspect::parse(&material.der, &self.store.path(&crt))?;
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(material.der.as_slice()), material.key.pair())
            .map_err(|e| PkiError::Corrupt {
                path: self.store.path(&crt),
                what: "CA certificate for rcgen",
                detail: e.to_string(),
            })?;
        Ok(Signer { authority: row.authority, crt, pem: &material.pem, cert, issuer })
    }

    fn service_account(&self) -> Result<Vec<Record>, PkiError> {
        let (key_path, pub_path) = (self.store.path(Path::new(SA_KEY)), self.store.path(Path::new(SA_PUB)));
        match (self.read_private(Path::new(SA_KEY))?, self.store.read(Path::new(SA_PUB))?) {
            (Some(found), Some(public)) => {
                let key = Key::from_pem(found.content, &key_path)?;
                if !keys::public_pem_matches(&public, &key, &pub_path)? {
                    return Err(PkiError::KeyMismatch { cert: pub_path, key: key_path });
                }
                let key_change = self.restrict(Path::new(SA_KEY), found.mode)?;
                Ok(vec![Record::new(SA_KEY, key_change, key.pem()), Record::new(SA_PUB, Change::Kept, public)])
            }
            (Some(found), None) => {
                self.may_create(Path::new(SA_PUB))?;
                let key = Key::from_pem(found.content, &key_path)?;
                let key_change = self.restrict(Path::new(SA_KEY), found.mode)?;
                let public = key.public_pem();
                self.store.write(Path::new(SA_PUB), public.as_bytes(), CERT_MODE)?;
                Ok(vec![Record::new(SA_KEY, key_change, key.pem()), Record::new(SA_PUB, Change::Created, public)])
            }
            (None, Some(_)) => Err(PkiError::MissingKey { cert: pub_path, key: key_path }),
            (None, None) => {
                self.may_create(Path::new(SA_KEY))?;
                let key = self.new_key()?;
                let public = key.public_pem();
                self.store.write(Path::new(SA_KEY), key.pem(), SECRET_MODE)?;
                self.store.sync_dir_of(Path::new(SA_KEY))?;
                self.store.write(Path::new(SA_PUB), public.as_bytes(), CERT_MODE)?;
                Ok(vec![Record::new(SA_KEY, Change::Created, key.pem()), Record::new(SA_PUB, Change::Created, public)])
            }
        }
    }

    fn leaf(&self, leaf: &Leaf, signer: &Signer<'_>) -> Result<Vec<Record>, PkiError> {
        let (crt, key_rel) = (leaf.rel.with_extension("crt"), leaf.rel.with_extension("key"));
        let (crt_path, key_path) = (self.store.path(&crt), self.store.path(&key_rel));
        let (key, key_change, cert_change) = match (self.store.read(&crt)?, self.read_private(&key_rel)?) {
            (Some(pem), Some(found)) => {
                let der = inspect::pem_to_der(&pem, &crt_path)?;
                let (cert, key) = pair(&der, found.content, &crt_path, &key_path)?;
                let key_change = self.restrict(&key_rel, found.mode)?;
                let mismatch =
                    inspect::leaf_mismatch(&cert, &leaf.identity, &signer.cert, &signer.crt, self.validity.now);
                match mismatch.or_else(|| self.early(&crt, &cert)) {
                    None => {
                        return Ok(vec![
                            Record::new(crt, Change::Kept, pem),
                            Record::new(key_rel, key_change, key.pem()),
                        ]);
                    }
                    Some(reason) => {
                        self.may_renew(&crt, &reason)?;
                        let (key, key_change) = self.rekey(&crt, &key_rel, key, key_change)?;
                        (key, key_change, Change::Renewed(reason))
                    }
                }
            }
            (None, Some(found)) => {
                self.may_create(&crt)?;
                let key = Key::from_pem(found.content, &key_path)?;
                (key, self.restrict(&key_rel, found.mode)?, Change::Created)
            }
            (Some(_), None) => return Err(PkiError::MissingKey { cert: crt_path, key: key_path }),
            (None, None) => {
                self.may_create(&crt)?;
                let key = self.new_key()?;
                self.store.write(&key_rel, key.pem(), SECRET_MODE)?;
                self.store.sync_dir_of(&key_rel)?;
                (key, Change::Created, Change::Created)
            }
        };
        let pem = self.issue(&leaf.identity, &key, signer, &crt_path)?;
        self.store.write(&crt, &pem, CERT_MODE)?;
        Ok(vec![Record::new(crt, cert_change, pem), Record::new(key_rel, key_change, key.pem())])
    }

    /// Why a leaf that fits the plan is renewed all the same: the caller named it, or it ends
    /// within the renewal window. `None` in check mode, which only asks whether files fit.
    fn early(&self, rel: &Path, cert: &X509Certificate<'_>) -> Option<String> {
        if self.mode == Mode::Check {
            return None;
        }
        if self.renew.force.iter().any(|f| f == rel) {
            return Some(
                if self.renew.new_keys { "renewal requested, with a new key" } else { "renewal requested" }.into(),
            );
        }
        let not_after = cert.validity().not_after;
        let window = time::Duration::try_from(self.renew.window).unwrap_or(time::Duration::MAX);
        let renew_from = time::OffsetDateTime::from_unix_timestamp(not_after.timestamp()).ok()?.checked_sub(window);
        (self.renew.window > std::time::Duration::ZERO && renew_from.is_none_or(|t| t <= self.validity.now)).then(
            || {
                format!(
                    "expires on {not_after}, within the renewal window of {}",
                    crate::plan::format_duration(self.renew.window)
                )
            },
        )
    }

    /// The key a renewed leaf gets: a new one, written (and its directory synced) before the
    /// certificate, when the caller asked for new keys for it; else the one it had.
    fn rekey(&self, crt: &Path, key_rel: &Path, key: Key, change: Change) -> Result<(Key, Change), PkiError> {
        if !(self.renew.new_keys && self.renew.force.iter().any(|f| f == crt)) {
            return Ok((key, change));
        }
        let key = self.new_key()?;
        self.store.write(key_rel, key.pem(), SECRET_MODE)?;
        self.store.sync_dir_of(key_rel)?;
        Ok((key, Change::Renewed("new key requested".into())))
    }

    fn issue(
        &self,
        identity: &certlist::Identity,
        key: &Key,
        signer: &Signer<'_>,
        path: &Path,
    ) -> Result<Vec<u8>, PkiError> {
        let cert = issue::leaf(identity, key, &signer.issuer, &self.validity)
            .map_err(|e| PkiError::Sign { path: path.to_path_buf(), detail: e.to_string() })?;
        // rcgen re-encodes the CA's subject as the issuer name; Go clients chain by exact bytes.
        let issued = inspect::parse(cert.der(), path)?;
        if issued.issuer().as_raw() != signer.cert.subject().as_raw() {
            return Err(PkiError::Sign {
                path: path.to_path_buf(),
                detail: format!(
                    "the subject of {} cannot be reproduced exactly as an issuer name",
                    signer.crt.display()
                ),
            });
        }
        Ok(cert.pem().into_bytes())
    }

    fn kubeconfig(&self, kc: &Kubeconfig, signer: &Signer<'_>) -> Result<Record, PkiError> {
        let path = self.store.path(&kc.rel);
        let mut expected = Contents {
            cluster: self.plan.name.clone(),
            server: kc.server.clone(),
            user: kc.identity.common_name.clone(),
            ca_pem: signer.pem.to_vec(),
            cert_pem: Vec::new(),
            key_pem: Vec::new(),
        };
        let Some(Private { content: bytes, mode }) = self.read_private(&kc.rel)? else {
            self.may_create(&kc.rel)?;
            let key = self.new_key()?;
            expected.cert_pem = self.issue(&kc.identity, &key, signer, &path)?;
            expected.key_pem = key.pem().to_vec();
            let text = kubeconfig::render(&expected);
            self.store.write(&kc.rel, text.as_bytes(), SECRET_MODE)?;
            return Ok(Record::new(&kc.rel, Change::Created, text));
        };
        let corrupt =
            |detail: &str| PkiError::Corrupt { path: path.clone(), what: "kubeconfig", detail: detail.into() };
        let mut found = kubeconfig::parse(&bytes).map_err(corrupt)?;
        let key = Key::from_pem(found.key_pem.clone(), &path)
            .map_err(|_| corrupt("client-key-data is not a usable private key"))?;
        let not_a_cert = |_| corrupt("client-certificate-data is not a certificate");
        let der = inspect::pem_to_der(&found.cert_pem, &path).map_err(not_a_cert)?;
        let cert = inspect::parse(&der, &path).map_err(not_a_cert)?;
        if !key.matches(cert.public_key()) {
            return Err(PkiError::EmbeddedKeyMismatch { path });
        }

        let mut reasons = Vec::new();
        let cert_reason = inspect::leaf_mismatch(&cert, &kc.identity, &signer.cert, &signer.crt, self.validity.now)
            .or_else(|| self.early(&kc.rel, &cert));
        if let Some(reason) = &cert_reason {
            reasons.push(format!("client certificate: {reason}"));
        }
        if found.server != expected.server {
            reasons.push(format!("server is {}, expected {}", found.server, expected.server));
        }
        if found.cluster != expected.cluster || found.user != expected.user {
            reasons.push(format!(
                "names cluster {:?} and user {:?}, expected {:?} and {:?}",
                found.cluster, found.user, expected.cluster, expected.user
            ));
        }
        // Every certificate, not only the first: during a CA rotation the file is a bundle.
        let same_ca = found.ca_pem == signer.pem || inspect::all_ders(&found.ca_pem) == inspect::all_ders(signer.pem);
        if !same_ca {
            reasons.push(format!("its CA is not the current {}", signer.crt.display()));
        }
        if reasons.is_empty() {
            return Ok(Record::new(&kc.rel, self.restrict(&kc.rel, mode)?, bytes));
        }
        if modes::too_open(mode) {
            // The rewrite below creates the file 0600.
            reasons.push(modes::restricted(mode, SECRET_MODE));
        }
        let reason = reasons.join("; ");
        self.may_renew(&kc.rel, &reason)?;
        let key = match self.renew.new_keys && self.renew.force.iter().any(|f| f == &kc.rel) {
            true => self.new_key()?,
            false => key,
        };
        expected.cert_pem = match cert_reason {
            Some(_) => self.issue(&kc.identity, &key, signer, &path)?,
            None => std::mem::take(&mut found.cert_pem),
        };
        expected.key_pem = key.pem().to_vec();
        let text = kubeconfig::render(&expected);
        self.store.write(&kc.rel, text.as_bytes(), SECRET_MODE)?;
        Ok(Record::new(&kc.rel, Change::Renewed(reason), text))
    }

    fn vrrp_password(&self) -> Result<(String, Record), PkiError> {
        let rel = Path::new(secrets::VRRP_PASSWORD);
        if let Some(found) = self.read_private(rel)? {
            let password = secrets::parse_vrrp_password(&found.content, &self.store.path(rel))?;
            let change = self.restrict(rel, found.mode)?;
            return Ok((password, Record::new(rel, change, found.content)));
        }
        self.may_create(rel)?;
        let password = secrets::new_vrrp_password();
        let content = secrets::vrrp_password_file(&password);
        self.store.write(rel, &content, SECRET_MODE)?;
        Ok((password, Record::new(rel, Change::Created, content)))
    }
}

/// An existing certificate and its key, refused unless they belong together.
fn pair<'d>(der: &'d [u8], key_pem: Vec<u8>, crt: &Path, key: &Path) -> Result<(X509Certificate<'d>, Key), PkiError> {
    let cert = inspect::parse(der, crt)?;
    let private = Key::from_pem(key_pem, key)?;
    if !private.matches(cert.public_key()) {
        return Err(PkiError::KeyMismatch { cert: crt.to_path_buf(), key: key.to_path_buf() });
    }
    Ok((cert, private))
}

enum Job<'a> {
    Leaf(&'a Leaf),
    Kubeconfig(&'a Kubeconfig),
}
