//! A CA rotation in the state directory (`certs rotate-ca`): the stages, what the active CA
//! files hold at each, and the record that lets a stopped rotation resume where it stopped.
//!
//! While a rotation runs, `pki/rotation/` holds the record (`stage`), the CAs being replaced
//! (`old/`) and their successors (`new/`), keys 0600 in 0700 directories. The active CA files
//! (`pki/ca.crt`, `pki/etcd/ca.crt`, `pki/front-proxy-ca.crt` and their keys) are derived from
//! them and the stage by [`apply`], which is idempotent, so a run stopped anywhere is completed
//! by applying the recorded stage again:
//!
//! | stage        | `<ca>.crt` (a bundle)  | `<ca>.key` | leaves and kubeconfigs signed by |
//! |--------------|------------------------|------------|----------------------------------|
//! | `trust-both` | old, then new          | old        | old                              |
//! | `reissue`    | new, then old          | new        | new (re-issued, keys kept)       |
//! | `trust-new`  | new                    | new        | new                              |
//!
//! The signing CA comes first in a bundle, as every component that pairs `ca.crt` with `ca.key`
//! (the controller-manager's cluster signer) takes the first certificate as the key's; every
//! component that only verifies (client CA files, etcd's trusted CA files, kubeconfigs'
//! `certificate-authority-data`, haproxy and keepalived checks) trusts every certificate in it.
//! The old and the new CA have the same subject and differ in key and key identifier, as
//! kubeadm's manual rotation has them. When the last stage is on every host, [`advance`] moves
//! `pki/rotation/` to `rotated/<started>/`: the old CAs' certificates and keys stay there (for
//! rolling a host back from its backups) until the operator removes them.

use std::fmt;
use std::path::{Path, PathBuf};

use super::certlist::{self, Authority, CAS, CERT_MODE, SECRET_MODE};
use super::issue::{self, CaName, Validity};
use super::keys::Key;
use super::record::{self, ClusterRecord};
use super::store::Store;
use super::{PkiError, inspect};
use crate::plan::Plan;

/// Where a rotation in progress keeps its record and both generations of its CAs.
pub const ROTATION_DIR: &str = "pki/rotation";
/// Where finished rotations are archived, one directory per rotation.
pub const ROTATED_DIR: &str = "rotated";
const RECORD: &str = "pki/rotation/stage";

/// A CA `certs rotate-ca` can rotate, by its name on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ca {
    Kubernetes,
    Etcd,
    FrontProxy,
}

impl Ca {
    pub const ALL: [Ca; 3] = [Ca::Kubernetes, Ca::Etcd, Ca::FrontProxy];

    pub fn name(self) -> &'static str {
        match self {
            Ca::Kubernetes => "kubernetes",
            Ca::Etcd => "etcd",
            Ca::FrontProxy => "front-proxy",
        }
    }

    /// `kubernetes`, `etcd`, `front-proxy`; `all` is every one ([`Ca::parse_list`]).
    pub fn parse(name: &str) -> Option<Ca> {
        Ca::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The CAs `names` stand for (`all` for every one), in [`Ca::ALL`] order without repeats;
    /// `Err` names the first unknown name.
    pub fn parse_list(names: &[String]) -> Result<Vec<Ca>, String> {
        let mut out = Vec::new();
        for name in names {
            let cas = match name.as_str() {
                "all" => Ca::ALL.to_vec(),
                other => vec![Ca::parse(other).ok_or_else(|| other.to_string())?],
            };
            out.extend(cas);
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn row(self) -> &'static certlist::CaRow {
        let authority = match self {
            Ca::Kubernetes => Authority::Kubernetes,
            Ca::Etcd => Authority::Etcd,
            Ca::FrontProxy => Authority::FrontProxy,
        };
        CAS.iter().find(|r| r.authority == authority).expect("every authority has a CA")
    }

    /// `pki/ca`, `pki/etcd/ca`, `pki/front-proxy-ca` (without extension).
    fn active(self) -> PathBuf {
        Path::new("pki").join(self.row().base)
    }

    /// `<dir>/<base>.crt|key` under the rotation directory.
    fn kept(self, generation: &str) -> PathBuf {
        Path::new(ROTATION_DIR).join(generation).join(self.row().base)
    }
}

impl fmt::Display for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The stages of a rotation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Every host trusts the old and the new CA; certificates unchanged.
    TrustBoth,
    /// Every leaf certificate and kubeconfig re-issued from the new CA; both still trusted.
    Reissue,
    /// The old CA dropped from every trust bundle.
    TrustNew,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::TrustBoth, Stage::Reissue, Stage::TrustNew];

    pub fn name(self) -> &'static str {
        match self {
            Stage::TrustBoth => "trust-both",
            Stage::Reissue => "reissue",
            Stage::TrustNew => "trust-new",
        }
    }

    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The stage after this one; `None` after the last.
    pub fn next(self) -> Option<Stage> {
        match self {
            Stage::TrustBoth => Some(Stage::Reissue),
            Stage::Reissue => Some(Stage::TrustNew),
            Stage::TrustNew => None,
        }
    }

    /// What the stage does to the hosts, for the dry run and the progress lines.
    pub fn describe(self) -> &'static str {
        match self {
            Stage::TrustBoth => {
                "every host gets CA bundles of the old and the new CA (certificates unchanged); the pods that \
                 mount them restart, one control plane at a time"
            }
            Stage::Reissue => {
                "every leaf certificate and kubeconfig is re-issued from the new CA (keys kept) and rolled out, one \
                 control plane at a time, workers' kubelet.conf all at once; both CAs stay trusted"
            }
            Stage::TrustNew => {
                "the old CA is dropped from every bundle and kubeconfig; the pods that mount them restart, one \
                 control plane at a time"
            }
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which key signs at a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    Old,
    New,
}

/// What a rotated CA's active files hold at `stage`: the certificate file (a bundle until the
/// last stage, the signing CA first) and which key is the active key.
pub fn active_files(stage: Stage, old_pem: &[u8], new_pem: &[u8]) -> (Vec<u8>, Signer) {
    match stage {
        Stage::TrustBoth => (concat(old_pem, new_pem), Signer::Old),
        Stage::Reissue => (concat(new_pem, old_pem), Signer::New),
        Stage::TrustNew => (new_pem.to_vec(), Signer::New),
    }
}

/// Two PEM files as one, each ending in a newline.
fn concat(first: &[u8], second: &[u8]) -> Vec<u8> {
    let mut out = first.to_vec();
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(second);
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// A rotation in progress, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// When it started (the stamp of its snapshot and backups).
    pub started: String,
    pub cas: Vec<Ca>,
    /// The stage being rolled out (not yet on every host).
    pub stage: Stage,
}

impl Rotation {
    fn render(&self) -> String {
        let cas: Vec<&str> = self.cas.iter().map(|c| c.name()).collect();
        format!(
            "# Written by kubeha certs rotate-ca: the CA rotation in progress and the stage not yet on every\n\
             # host. Run kubeha certs rotate-ca again to continue it.\nstarted: \"{}\"\ncas: [{}]\nstage: {}\n",
            self.started,
            cas.join(", "),
            self.stage
        )
    }

    fn parse(text: &str, path: &Path) -> Result<Rotation, PkiError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            started: String,
            cas: Vec<String>,
            stage: String,
        }
        let bad = |detail: String| PkiError::Corrupt { path: path.to_path_buf(), what: "rotation record", detail };
        let raw: Raw =
            serde_saphyr::from_str(text).map_err(|e| bad(e.to_string().lines().next().unwrap_or("").to_string()))?;
        let cas = Ca::parse_list(&raw.cas).map_err(|name| bad(format!("unknown CA {name:?}")))?;
        if cas.is_empty() {
            return Err(bad("no CA named".into()));
        }
        let stage = Stage::parse(&raw.stage).ok_or_else(|| bad(format!("unknown stage {:?}", raw.stage)))?;
        Ok(Rotation { started: raw.started, cas, stage })
    }
}

/// The rotation in progress in `state_dir`, if one is.
pub fn pending(state_dir: &Path) -> Result<Option<Rotation>, PkiError> {
    let store = Store::new(state_dir);
    let Some(bytes) = store.read(Path::new(RECORD))? else { return Ok(None) };
    let path = store.path(Path::new(RECORD));
    let text = String::from_utf8(bytes).map_err(|_| PkiError::Corrupt {
        path: path.clone(),
        what: "rotation record",
        detail: "not UTF-8".into(),
    })?;
    Rotation::parse(&text, &path).map(Some)
}

/// Refuses `command` while a CA rotation is in progress: its stages decide what every
/// certificate is signed by and what each host trusts.
pub fn refuse_if_pending(state_dir: &Path, command: &str) -> Result<(), PkiError> {
    let Some(rotation) = pending(state_dir)? else { return Ok(()) };
    Err(PkiError::Rotation {
        path: state_dir.join(ROTATION_DIR),
        detail: format!(
            "a rotation of {} started at {} is in progress (stage {}); finish it with kubeha certs rotate-ca \
             before {command}",
            names(&rotation.cas),
            rotation.started,
            rotation.stage
        ),
    })
}

/// Starts rotating `cas`: keeps each current CA under `old/`, makes its successor (a new key,
/// the same name) under `new/`, records the first stage and applies it ([`apply`]). Nothing
/// a host uses changes until the caller rolls the result out.
pub fn begin(plan: &Plan, state_dir: &Path, cas: &[Ca], started: &str) -> Result<Rotation, PkiError> {
    let store = Store::new(state_dir);
    if let Some(found) = pending(state_dir)? {
        return Err(PkiError::Rotation {
            path: store.path(Path::new(RECORD)),
            detail: format!("a rotation of {} started at {} is in progress", names(&found.cas), found.started),
        });
    }
    let validity = Validity::starting_now(&plan.certificates);
    for &ca in cas {
        let active = ca.active();
        let (crt, key_rel) = (active.with_extension("crt"), active.with_extension("key"));
        let pem = store.read(&crt)?.ok_or_else(|| PkiError::Missing { path: store.path(&crt) })?;
        let key = store.read(&key_rel)?.ok_or_else(|| PkiError::Missing { path: store.path(&key_rel) })?;
        if count_certificates(&pem) != 1 {
            return Err(PkiError::Rotation {
                path: store.path(&crt),
                detail: "holds more than one certificate: a rotation that was not finished? restore the CA, or \
                         the rotation record"
                    .into(),
            });
        }
        let old = ca.kept("old");
        store.write(&old.with_extension("key"), &key, SECRET_MODE)?;
        store.write(&old.with_extension("crt"), &pem, CERT_MODE)?;

        let new = ca.kept("new");
        let new_key = Key::generate(plan.certificates.key_algorithm)?;
        let cert = issue::ca(&CaName::new(ca.row().common_name), &new_key, &validity)
            .map_err(|e| PkiError::Sign { path: store.path(&new.with_extension("crt")), detail: e.to_string() })?;
        store.write(&new.with_extension("key"), new_key.pem(), SECRET_MODE)?;
        store.sync_dir_of(&new.with_extension("key"))?;
        store.write(&new.with_extension("crt"), cert.pem().as_bytes(), CERT_MODE)?;
    }
    store.sync_dirs()?;
    let rotation = Rotation { started: started.to_string(), cas: cas.to_vec(), stage: Stage::TrustBoth };
    write_record(&store, &rotation)?;
    apply(state_dir, &rotation)?;
    Ok(rotation)
}

/// Makes the active CA files what `rotation`'s stage says (see the module's table), and the
/// cluster record name the signing cluster CA. Idempotent.
pub fn apply(state_dir: &Path, rotation: &Rotation) -> Result<(), PkiError> {
    let store = Store::new(state_dir);
    for &ca in &rotation.cas {
        let read = |rel: PathBuf| -> Result<Vec<u8>, PkiError> {
            store.read(&rel)?.ok_or_else(|| PkiError::Missing { path: store.path(&rel) })
        };
        let (old, new) = (ca.kept("old"), ca.kept("new"));
        let (old_pem, new_pem) = (read(old.with_extension("crt"))?, read(new.with_extension("crt"))?);
        let (crt, signer) = active_files(rotation.stage, &old_pem, &new_pem);
        let key = read(match signer {
            Signer::Old => old.with_extension("key"),
            Signer::New => new.with_extension("key"),
        })?;
        let active = ca.active();
        // A stop between the two writes leaves a key that does not match the certificate:
        // refused by every other command, and put right by applying the stage again.
        store.write(&active.with_extension("key"), &key, SECRET_MODE)?;
        store.sync_dir_of(&active.with_extension("key"))?;
        store.write(&active.with_extension("crt"), &crt, CERT_MODE)?;
        if ca == Ca::Kubernetes {
            let der = inspect::pem_to_der(&crt, &store.path(&active.with_extension("crt")))?;
            let id = inspect::cluster_id(&inspect::parse(&der, &store.path(&active.with_extension("crt")))?);
            let name = record::read(&store)?.map(|r| r.cluster);
            if let Some(cluster) = name {
                record::write(&store, &ClusterRecord { cluster, ca_fingerprint: Some(id) })?;
            }
        }
    }
    store.sync_dirs()
}

/// Records that `rotation`'s stage is on every host: the next stage becomes the one to roll
/// out, or, after the last, the rotation is archived under `rotated/<started>/` and is over.
/// The next stage (not yet applied), or `None` when the rotation is over.
pub fn advance(state_dir: &Path, rotation: &mut Rotation) -> Result<Option<Stage>, PkiError> {
    let store = Store::new(state_dir);
    match rotation.stage.next() {
        Some(next) => {
            rotation.stage = next;
            write_record(&store, rotation)?;
            Ok(Some(next))
        }
        None => {
            let archive = Path::new(ROTATED_DIR).join(&rotation.started);
            store.create_dir(Path::new(ROTATED_DIR))?;
            std::fs::rename(store.path(Path::new(ROTATION_DIR)), store.path(&archive))
                .map_err(|source| PkiError::Write { path: store.path(&archive), source })?;
            store.sync_dir_of(&archive)?;
            store.sync_dir_of(Path::new(ROTATION_DIR))?;
            Ok(None)
        }
    }
}

/// During a rotation of the cluster CA, the cluster id (see [`super::Pki::cluster_id`]) of
/// the CA that is not the signing one now: hosts not yet rolled in the current stage still
/// carry it in their markers.
pub fn other_cluster_id(state_dir: &Path) -> Result<Option<String>, PkiError> {
    let Some(rotation) = pending(state_dir)? else { return Ok(None) };
    if !rotation.cas.contains(&Ca::Kubernetes) {
        return Ok(None);
    }
    let store = Store::new(state_dir);
    let generation = match active_files(rotation.stage, b"", b"").1 {
        Signer::Old => "new",
        Signer::New => "old",
    };
    let rel = Ca::Kubernetes.kept(generation).with_extension("crt");
    let pem = store.read(&rel)?.ok_or_else(|| PkiError::Missing { path: store.path(&rel) })?;
    let der = inspect::pem_to_der(&pem, &store.path(&rel))?;
    Ok(Some(inspect::cluster_id(&inspect::parse(&der, &store.path(&rel))?)))
}

/// `kubernetes, etcd`.
pub fn names(cas: &[Ca]) -> String {
    cas.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}

fn write_record(store: &Store, rotation: &Rotation) -> Result<(), PkiError> {
    store.write(Path::new(RECORD), rotation.render().as_bytes(), SECRET_MODE)?;
    store.sync_dir_of(Path::new(RECORD))
}

fn count_certificates(pem: &[u8]) -> usize {
    String::from_utf8_lossy(pem).matches("-----BEGIN CERTIFICATE-----").count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::fake;

    fn certs(pem: &[u8]) -> Vec<Vec<u8>> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        CertificateDer::pem_slice_iter(pem).map(|c| c.unwrap().to_vec()).collect()
    }

    fn der(pem: &[u8]) -> Vec<u8> {
        certs(pem).remove(0)
    }

    #[test]
    fn stages_come_in_order_and_round_trip_by_name() {
        assert_eq!(Stage::TrustBoth.next(), Some(Stage::Reissue));
        assert_eq!(Stage::Reissue.next(), Some(Stage::TrustNew));
        assert_eq!(Stage::TrustNew.next(), None);
        for stage in Stage::ALL {
            assert_eq!(Stage::parse(stage.name()), Some(stage));
        }
        assert_eq!(Ca::parse_list(&["etcd".into(), "all".into()]).unwrap(), Ca::ALL);
        assert_eq!(Ca::parse_list(&["front-proxy".into(), "etcd".into()]).unwrap(), [Ca::Etcd, Ca::FrontProxy]);
        assert_eq!(Ca::parse_list(&["sa".into()]).unwrap_err(), "sa");
    }

    #[test]
    fn each_stage_bundles_the_signing_ca_first_and_the_last_trusts_only_the_new_one() {
        let (old, new) = (b"OLD\n".as_slice(), b"NEW".as_slice());
        assert_eq!(active_files(Stage::TrustBoth, old, new), (b"OLD\nNEW\n".to_vec(), Signer::Old));
        assert_eq!(active_files(Stage::Reissue, old, new), (b"NEW\nOLD\n".to_vec(), Signer::New));
        assert_eq!(active_files(Stage::TrustNew, old, new), (b"NEW".to_vec(), Signer::New));
    }

    #[test]
    fn the_record_round_trips_and_a_bad_one_is_named() {
        let r =
            Rotation { started: "20261130T120000Z".into(), cas: vec![Ca::Etcd, Ca::FrontProxy], stage: Stage::Reissue };
        assert_eq!(Rotation::parse(&r.render(), Path::new("x")).unwrap(), r);
        let err = Rotation::parse("started: a\ncas: [etcd]\nstage: later\n", Path::new("/s/pki/rotation/stage"));
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("/s/pki/rotation/stage is not a valid rotation record (unknown stage")
        );
    }

    /// Walks a whole rotation in a state directory: what the active files, the record and the
    /// leaves are at each stage, and that nothing of the old CA is active at the end.
    #[test]
    fn a_rotation_moves_the_state_directory_through_every_stage() {
        use std::os::unix::fs::PermissionsExt;
        let plan = fake::plan();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        crate::pki::generate(&plan, state).unwrap();
        let read = |rel: &str| std::fs::read(state.join(rel)).unwrap();
        let (old_ca, old_key, old_etcd) = (read("pki/ca.crt"), read("pki/ca.key"), read("pki/etcd/ca.crt"));
        let old_front = read("pki/front-proxy-ca.crt");
        let old_leaf = read("nodes/cp1/pki/apiserver.crt");
        let old_id = crate::pki::existing_cluster_id(state).unwrap().unwrap();

        let mut rotation = begin(&plan, state, &[Ca::Kubernetes, Ca::Etcd], "20261130T120000Z").unwrap();
        assert_eq!(pending(state).unwrap(), Some(rotation.clone()));
        assert!(begin(&plan, state, &[Ca::Etcd], "later").unwrap_err().to_string().contains("is in progress"));
        let new_ca = read("pki/rotation/new/ca.crt");
        assert_eq!(read("pki/rotation/old/ca.crt"), old_ca);
        for key in
            ["pki/rotation/new/ca.key", "pki/rotation/old/ca.key", "pki/rotation/new/etcd/ca.key", "pki/rotation/stage"]
        {
            let mode = std::fs::metadata(state.join(key)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{key}");
        }
        for d in ["pki/rotation", "pki/rotation/new", "pki/rotation/old/etcd"] {
            assert_eq!(std::fs::metadata(state.join(d)).unwrap().permissions().mode() & 0o777, 0o700, "{d}");
        }

        // trust-both: the bundle, old first; the leaves untouched; kubeconfigs carry the bundle.
        let report = crate::pki::generate(&plan, state).unwrap();
        assert_eq!(certs(&read("pki/ca.crt")), [der(&old_ca), der(&new_ca)]);
        assert_eq!(read("pki/ca.key"), old_key);
        assert_eq!(read("nodes/cp1/pki/apiserver.crt"), old_leaf);
        assert_eq!(read("pki/front-proxy-ca.crt"), old_front, "a CA not rotated stays as it was");
        assert!(report.renewed.iter().any(|r| r.path == Path::new("admin.conf")), "{:?}", report.renewed);
        assert!(!report.renewed.iter().any(|r| r.path.extension().is_some_and(|e| e == "crt")), "{:?}", report.renewed);
        assert_eq!(crate::pki::existing_cluster_id(state).unwrap().unwrap(), old_id);
        let new_id = other_cluster_id(state).unwrap().unwrap();
        assert_ne!(new_id, old_id);

        // reissue: the new CA signs, every leaf of the rotated CAs is re-issued with its key.
        assert_eq!(advance(state, &mut rotation).unwrap(), Some(Stage::Reissue));
        apply(state, &rotation).unwrap();
        let report = crate::pki::generate(&plan, state).unwrap();
        assert_eq!(certs(&read("pki/ca.crt")), [der(&new_ca), der(&old_ca)]);
        assert_eq!(read("pki/ca.key"), read("pki/rotation/new/ca.key"));
        assert_eq!(crate::pki::existing_cluster_id(state).unwrap().unwrap(), new_id);
        assert_eq!(other_cluster_id(state).unwrap().unwrap(), old_id);
        let renewed: Vec<String> = report.renewed.iter().map(|r| r.path.display().to_string()).collect();
        for path in [
            "nodes/cp1/pki/apiserver.crt",
            "nodes/cp2/pki/etcd/peer.crt",
            "pki/apiserver-etcd-client.crt",
            "admin.conf",
            "nodes/w1/kubelet.conf",
        ] {
            assert!(renewed.iter().any(|r| r == path), "{path} was not re-issued: {renewed:?}");
        }
        assert!(!renewed.iter().any(|r| r == "pki/front-proxy-client.crt"), "{renewed:?}");
        let leaf_key_before = read("nodes/cp1/pki/apiserver.key");
        crate::pki::load(&plan, state).unwrap();

        // trust-new: only the new CA; the leaves stay; then the rotation is archived.
        assert_eq!(advance(state, &mut rotation).unwrap(), Some(Stage::TrustNew));
        apply(state, &rotation).unwrap();
        let report = crate::pki::generate(&plan, state).unwrap();
        assert_eq!(read("pki/ca.crt"), new_ca);
        assert_eq!(read("nodes/cp1/pki/apiserver.key"), leaf_key_before);
        assert!(report.renewed.iter().all(|r| r.path.extension().is_none_or(|e| e != "crt")), "{:?}", report.renewed);
        let admin = String::from_utf8(read("admin.conf")).unwrap();
        use base64::Engine;
        let ca_data = admin.lines().find_map(|l| l.trim().strip_prefix("certificate-authority-data: ")).unwrap();
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(ca_data).unwrap(), new_ca);
        assert_eq!(advance(state, &mut rotation).unwrap(), None);
        assert_eq!(pending(state).unwrap(), None);
        assert!(!state.join(ROTATION_DIR).exists());
        assert_eq!(std::fs::read(state.join("rotated/20261130T120000Z/old/ca.crt")).unwrap(), old_ca);
        assert_eq!(std::fs::read(state.join("rotated/20261130T120000Z/old/etcd/ca.crt")).unwrap(), old_etcd);
        crate::pki::load(&plan, state).unwrap();
        assert_eq!(other_cluster_id(state).unwrap(), None);
    }

    #[test]
    fn applying_a_stage_again_after_a_stop_between_key_and_certificate_repairs_it() {
        let plan = fake::plan();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        crate::pki::generate(&plan, state).unwrap();
        let mut rotation = begin(&plan, state, &[Ca::Etcd], "t").unwrap();
        advance(state, &mut rotation).unwrap();
        // As a stop after the key was written: the new key next to the old bundle.
        std::fs::copy(state.join("pki/rotation/new/etcd/ca.key"), state.join("pki/etcd/ca.key")).unwrap();
        assert!(matches!(crate::pki::load(&plan, state), Err(PkiError::KeyMismatch { .. })));
        let rotation = pending(state).unwrap().unwrap();
        apply(state, &rotation).unwrap();
        crate::pki::generate(&plan, state).unwrap();
        crate::pki::load(&plan, state).unwrap();
    }
}
