//! An etcd snapshot in the state directory, taken before kubeha changes a running cluster's
//! certificates, so that a cluster the change breaks can be restored with `etcdctl snapshot
//! restore`.
//!
//! The snapshot comes through the same SSH tunnel to a control plane's etcd as every health
//! check (nothing but SSH needs to be open), as etcd's healthcheck client. It is written
//! `0600` to a dot-named temporary file and renamed into place once complete, named after the
//! cluster, the time and the revision it holds.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::error::ActionError;
use super::session::Session;
use crate::host::etcd::EtcdClient;
use crate::https::TlsClient;
use crate::pki::Pki;
use crate::transport::Remote;

/// Where snapshots go, under the state directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// `20261130T125300Z`: a timestamp for file and directory names.
pub fn stamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// `<cluster>-<stamp>-rev<revision>.db`.
pub fn file_name(cluster: &str, at: &str, revision: u64) -> String {
    format!("{cluster}-{at}-rev{revision}.db")
}

/// Takes a snapshot from the first control plane whose etcd gives one; its path.
pub async fn take<R: Remote>(session: &Session<'_, R>, pki: &Pki, at: &str) -> Result<PathBuf, ActionError> {
    let identity =
        pki.etcd_healthcheck_client().identity("etcd/healthcheck-client.crt", "etcd/healthcheck-client.key")?;
    let tls = TlsClient::new(pki.etcd_ca_cert_pem(), Some(&identity))?;
    let dir = session.state_dir().join(SNAPSHOT_DIR);
    let mut last = String::from("no control plane is connected");
    for (host, remote) in session.control_planes() {
        session.progress.step(&host.name, "taking an etcd snapshot");
        let etcd = EtcdClient::with_tls(remote, host, tls.clone());
        match from(&etcd, &dir, session.plan.name.as_str(), at).await {
            Ok(path) => {
                session.progress.step(&host.name, format!("etcd snapshot saved to {}", path.display()));
                return Ok(path);
            }
            Err(e) => last = format!("{}: {e}", host.name),
        }
    }
    Err(ActionError::Snapshot(last))
}

async fn from<R: Remote>(etcd: &EtcdClient<'_, R>, dir: &Path, cluster: &str, at: &str) -> Result<PathBuf, String> {
    let revision = etcd.status().await.map_err(|e| e.to_string())?.revision;
    let path = dir.join(file_name(cluster, at, revision));
    let tmp = dir.join(format!(".{}.tmp", file_name(cluster, at, revision)));
    let written = async {
        let file = create(dir, &tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let mut file = tokio::fs::File::from_std(file);
        etcd.snapshot(&mut file).await.map_err(|e| e.to_string())?;
        let file = file.into_std().await;
        file.sync_all().map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))
    };
    if let Err(e) = written.await {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(path)
}

/// The temporary file, 0600, in a 0700 directory.
fn create(dir: &Path, tmp: &Path) -> std::io::Result<std::fs::File> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(tmp)?;
    file.flush()?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_cluster_the_time_and_the_revision() {
        let at = OffsetDateTime::from_unix_timestamp(1_796_043_180).unwrap();
        assert_eq!(stamp(at), "20261130T125300Z");
        assert_eq!(file_name("lab", &stamp(at), 42), "lab-20261130T125300Z-rev42.db");
    }
}
