//! etcd snapshots on this machine: `kubeha etcd snapshot save`, and the one `certs renew` takes
//! into the state directory before it changes a running cluster's certificates, so that a
//! cluster the change breaks can be restored (`kubeha etcd snapshot restore`).
//!
//! The snapshot comes through the same SSH tunnel to a control plane's etcd as every health
//! check (nothing but SSH needs to be open), as etcd's healthcheck client, and is checked as it
//! arrives (etcd appends the SHA-256 of the database). It is written `0600` to a dot-named
//! temporary file and renamed into place once complete, named after the cluster, the time and
//! the revision it holds (`<cluster>-<stamp>-rev<revision>.db`), with a `sha256sum` line
//! beside it (`<name>.sha256`) that restore checks.

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

/// A snapshot saved on this machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    pub path: PathBuf,
    /// The control plane whose etcd member gave it.
    pub host: String,
    pub revision: u64,
    pub size: u64,
    /// SHA-256 (hex) of the file, as its `.sha256` file says.
    pub sha256: String,
}

/// Takes a snapshot into the state directory's `snapshots/` from the first control plane
/// whose etcd gives one; its path.
pub async fn take<R: Remote>(session: &Session<'_, R>, pki: &Pki, at: &str) -> Result<PathBuf, ActionError> {
    let dir = session.state_dir().join(SNAPSHOT_DIR);
    Ok(save(session, pki, &dir, at).await?.path)
}

/// Takes a snapshot into `dir` from the first control plane whose etcd gives one.
pub async fn save<R: Remote>(session: &Session<'_, R>, pki: &Pki, dir: &Path, at: &str) -> Result<Saved, ActionError> {
    let identity =
        pki.etcd_healthcheck_client().identity("etcd/healthcheck-client.crt", "etcd/healthcheck-client.key")?;
    let tls = TlsClient::new(pki.etcd_ca_cert_pem(), Some(&identity))?;
    let mut last = String::from("no control plane is connected");
    for (host, remote) in session.control_planes() {
        session.progress.step(&host.name, "taking an etcd snapshot");
        let etcd = EtcdClient::with_tls(remote, host, tls.clone());
        match from(&etcd, dir, session.plan.name.as_str(), at).await {
            Ok(saved) => {
                session.progress.step(&host.name, format!("etcd snapshot saved to {}", saved.path.display()));
                return Ok(saved);
            }
            Err(e) => last = format!("{}: {e}", host.name),
        }
    }
    Err(ActionError::Snapshot(last))
}

async fn from<R: Remote>(etcd: &EtcdClient<'_, R>, dir: &Path, cluster: &str, at: &str) -> Result<Saved, String> {
    let revision = etcd.status().await.map_err(|e| e.to_string())?.revision;
    let name = file_name(cluster, at, revision);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let sums = dir.join(format!("{name}.sha256"));
    let sums_tmp = dir.join(format!(".{name}.sha256.tmp"));
    let written = async {
        let file = create(dir, &tmp).map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let mut file = tokio::fs::File::from_std(file);
        let info = etcd.snapshot(&mut file).await.map_err(|e| e.to_string())?;
        let file = file.into_std().await;
        file.sync_all().map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        // The checksum file first: a snapshot never stands without it.
        let mut sum = create(dir, &sums_tmp).map_err(|e| format!("cannot create {}: {e}", sums_tmp.display()))?;
        sum.write_all(sha256_line(&info.sha256, &name).as_bytes())
            .and_then(|()| sum.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", sums_tmp.display()))?;
        std::fs::rename(&sums_tmp, &sums).map_err(|e| format!("cannot rename {}: {e}", sums_tmp.display()))?;
        std::fs::rename(&tmp, &path).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))?;
        Ok::<_, String>(info)
    };
    match written.await {
        Ok(info) => Ok(Saved { path, host: etcd.host().to_string(), revision, size: info.size, sha256: info.sha256 }),
        Err(e) => {
            for f in [&tmp, &sums_tmp, &sums] {
                let _ = std::fs::remove_file(f);
            }
            Err(e)
        }
    }
}

/// `<hex>  <name>\n`, as `sha256sum` writes it (so `sha256sum -c` checks the file).
pub fn sha256_line(sha256: &str, name: &str) -> String {
    format!("{sha256}  {name}\n")
}

/// The SHA-256 a `.sha256` file gives for `name` (`sha256sum` format).
pub fn parse_sha256_line(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (sum, file) = line.split_once(char::is_whitespace)?;
        let file = file.trim_start().trim_start_matches('*');
        (file == name && sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit())).then(|| sum.to_lowercase())
    })
}

/// The stamp and revision in a snapshot's file name, if it is `<cluster>-<stamp>-rev<N>.db`.
pub fn parse_name<'n>(cluster: &str, name: &'n str) -> Option<(&'n str, u64)> {
    let rest = name.strip_prefix(cluster)?.strip_prefix('-')?.strip_suffix(".db")?;
    let (at, revision) = rest.split_once("-rev")?;
    let stamp_like = at.len() == 16 && at.as_bytes()[8] == b'T' && at.ends_with('Z');
    stamp_like.then_some(())?;
    Some((at, revision.parse().ok()?))
}

/// Of the file names in a directory, this cluster's snapshots beyond the newest `keep`, oldest
/// first: what `--keep` removes (each with its `.sha256`). Other files are never chosen.
pub fn to_prune(cluster: &str, names: &[String], keep: usize) -> Vec<String> {
    let mut ours: Vec<(&str, u64, &String)> =
        names.iter().filter_map(|n| parse_name(cluster, n).map(|(at, rev)| (at, rev, n))).collect();
    ours.sort();
    let excess = ours.len().saturating_sub(keep);
    ours.into_iter().take(excess).map(|(_, _, n)| n.clone()).collect()
}

/// Removes this cluster's snapshots in `dir` beyond the newest `keep` (and their checksum
/// files); the paths removed.
pub fn prune(dir: &Path, cluster: &str, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let names: Vec<String> = std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    let mut removed = Vec::new();
    for name in to_prune(cluster, &names, keep) {
        let path = dir.join(&name);
        std::fs::remove_file(&path)?;
        let _ = std::fs::remove_file(dir.join(format!("{name}.sha256")));
        removed.push(path);
    }
    Ok(removed)
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
        assert_eq!(parse_name("lab", "lab-20261130T125300Z-rev42.db"), Some(("20261130T125300Z", 42)));
        assert_eq!(parse_name("la", "lab-20261130T125300Z-rev42.db"), None);
        assert_eq!(parse_name("lab", "lab-20261130T125300Z-rev42.db.sha256"), None);
        assert_eq!(parse_name("lab", "lab-yesterday-rev42.db"), None);
        assert_eq!(parse_name("lab", "lab-20261130T125300Z-revx.db"), None);
    }

    #[test]
    fn pruning_keeps_the_newest_of_this_cluster_and_nothing_else_is_touched() {
        let names: Vec<String> = [
            "lab-20261130T125300Z-rev42.db",
            "lab-20261130T125300Z-rev42.db.sha256",
            "lab-20261201T000000Z-rev50.db",
            "lab-20261129T000000Z-rev9.db",
            "lab-2-20261101T000000Z-rev1.db",
            "other-20261101T000000Z-rev1.db",
            "notes.txt",
            ".lab-20261202T000000Z-rev60.db.tmp",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(to_prune("lab", &names, 1), ["lab-20261129T000000Z-rev9.db", "lab-20261130T125300Z-rev42.db"]);
        assert_eq!(to_prune("lab", &names, 2), ["lab-20261129T000000Z-rev9.db"]);
        assert!(to_prune("lab", &names, 3).is_empty());
        assert_eq!(to_prune("lab", &names, 0).len(), 3);
        // On disk: the checksum files go with their snapshots.
        let dir = tempfile::tempdir().unwrap();
        for n in &names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        let removed = prune(dir.path(), "lab", 1).unwrap();
        assert_eq!(removed.len(), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".lab-20261202T000000Z-rev60.db.tmp",
                "lab-2-20261101T000000Z-rev1.db",
                "lab-20261201T000000Z-rev50.db",
                "notes.txt",
                "other-20261101T000000Z-rev1.db"
            ]
        );
    }

    #[test]
    fn checksum_lines_are_sha256sums() {
        let sum = "ab".repeat(32);
        let line = sha256_line(&sum, "lab-x.db");
        assert_eq!(line, format!("{sum}  lab-x.db\n"));
        assert_eq!(parse_sha256_line(&line, "lab-x.db"), Some(sum.clone()));
        assert_eq!(parse_sha256_line(&format!("{sum} *lab-x.db\n"), "lab-x.db"), Some(sum));
        assert_eq!(parse_sha256_line(&line, "other.db"), None);
        assert_eq!(parse_sha256_line("xyz  lab-x.db\n", "lab-x.db"), None);
    }
}
