//! `<state>/cluster.yaml`: which cluster's PKI a state directory holds.
//!
//! Without it one cluster could silently use another's state directory (`certs generate -i
//! prod.yaml --state-dir <lab's dir>` would hand prod the lab's CAs). `generate` writes the
//! cluster name and the cluster CA's fingerprint (the discovery hash) once the CAs are settled;
//! every run refuses an inventory of another name, and a CA that is not the recorded one. A state
//! directory made before the record existed simply gets one. `--force-state-dir`
//! ([`super::adopt`]) rewrites the record for the inventory's cluster.

use std::path::Path;

use super::store::Store;
use super::{PkiError, StateDirError};

/// The record's path in the state directory.
pub(crate) const RECORD: &str = "cluster.yaml";

#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ClusterRecord {
    pub(crate) cluster: String,
    #[serde(default)]
    pub(crate) ca_fingerprint: Option<String>,
}

/// The record, or `None` when there is none yet.
pub(crate) fn read(store: &Store) -> Result<Option<ClusterRecord>, PkiError> {
    let rel = Path::new(RECORD);
    let Some(bytes) = store.read(rel)? else { return Ok(None) };
    let bad = |detail: String| StateDirError::BadRecord { path: store.path(rel), detail };
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("not UTF-8 text".into()))?;
    let record: ClusterRecord =
        serde_saphyr::from_str(text).map_err(|e| bad(e.to_string().lines().next().unwrap_or("").to_string()))?;
    Ok(Some(record))
}

/// Writes `record` atomically, 0600.
pub(crate) fn write(store: &Store, record: &ClusterRecord) -> Result<(), PkiError> {
    let mut text = format!(
        "# Written by kubeha: the cluster whose PKI this directory holds. kubeha refuses an inventory\n\
         # of another cluster here unless given --force-state-dir.\ncluster: {}\n",
        record.cluster
    );
    if let Some(fingerprint) = &record.ca_fingerprint {
        text.push_str(&format!("caFingerprint: \"{fingerprint}\"\n"));
    }
    store.write(Path::new(RECORD), text.as_bytes(), super::certlist::SECRET_MODE)?;
    store.sync_dir_of(Path::new(RECORD))
}

/// Refuses a record of another cluster than `cluster`.
pub(crate) fn check_name(store: &Store, record: Option<&ClusterRecord>, cluster: &str) -> Result<(), PkiError> {
    match record {
        Some(r) if r.cluster != cluster => Err(StateDirError::OtherCluster {
            dir: store.root().to_path_buf(),
            record: store.path(Path::new(RECORD)),
            recorded: r.cluster.clone(),
            inventory: cluster.to_string(),
        }
        .into()),
        _ => Ok(()),
    }
}

/// Refuses a cluster CA whose fingerprint `found` is not the recorded one.
pub(crate) fn check_ca(store: &Store, record: Option<&ClusterRecord>, found: &str) -> Result<(), PkiError> {
    match record.and_then(|r| r.ca_fingerprint.as_deref()) {
        Some(recorded) if recorded != found => Err(StateDirError::CaChanged {
            ca: store.path(Path::new("pki/ca.crt")),
            record: store.path(Path::new(RECORD)),
            recorded: recorded.to_string(),
            found: found.to_string(),
        }
        .into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_other_clusters() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(&dir.path().join("state"));
        store.create_root().unwrap();
        assert_eq!(read(&store).unwrap(), None);
        let record = ClusterRecord { cluster: "lab".into(), ca_fingerprint: Some("sha256:00ff".into()) };
        write(&store, &record).unwrap();
        let back = read(&store).unwrap();
        assert_eq!(back.as_ref(), Some(&record));
        check_name(&store, back.as_ref(), "lab").unwrap();
        let err = check_name(&store, back.as_ref(), "prod").unwrap_err().to_string();
        assert!(
            err.contains("cluster \"lab\"") && err.contains("\"prod\"") && err.contains("--force-state-dir"),
            "{err}"
        );
        check_ca(&store, back.as_ref(), "sha256:00ff").unwrap();
        assert!(check_ca(&store, back.as_ref(), "sha256:0000").is_err());
        std::fs::write(dir.path().join("state/cluster.yaml"), "cluster: [\n").unwrap();
        assert!(matches!(read(&store), Err(PkiError::StateDir(StateDirError::BadRecord { .. }))));
    }
}
