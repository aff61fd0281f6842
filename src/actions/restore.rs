//! `kubeha etcd snapshot restore`: the whole etcd cluster rebuilt from one snapshot, for
//! disaster recovery (lost quorum, data destroyed by a bad change).
//!
//! The sequence (see [`RestorePlan`]): check the snapshot here (its `.sha256` file and the
//! SHA-256 etcd appended to it) → open a session with every host's lock → preflight (every
//! control plane reachable, with `etcdutl` or `etcdctl` and the etcd and apiserver manifests)
//! → upload the snapshot to each control plane (the atomic write protocol, checked) → stop
//! every apiserver, then every etcd member (manifests moved to kubeha's directory; waited
//! until their processes are gone) → restore each member's data directory with its own name
//! and peer URL and a new cluster token (the old data moved aside, never deleted) → start etcd
//! everywhere and wait for every member healthy → start the apiservers and wait for the whole
//! cluster and the endpoint. Without `--yes` (a dry-run session) it stops after preflight and
//! returns the plan.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::checks::{Check, Status};
use super::error::ActionError;
use super::session::Session;
use super::wait::{self, Health};
use crate::files::File;
use crate::host::etcd_restore::{self, Member};
use crate::host::layout::{ETCD_PEER_PORT, MANIFESTS_DIR, RESTORE_DIR, STOPPED_MANIFESTS_DIR};
use crate::host::static_pods;
use crate::pki::Pki;
use crate::plan::{Plan, join_host_port};
use crate::transport::{Remote, TransportError};

/// A snapshot file that must not be restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read the snapshot {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("refusing the snapshot {}: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
}

/// A snapshot read and checked on this machine.
#[derive(Debug, Clone)]
pub struct CheckedSnapshot {
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub sha256: String,
    /// Whether a `.sha256` file vouched for it (else only etcd's own checksum did).
    pub sidecar: bool,
    /// The revision its name gives (`…-rev<N>.db`).
    pub revision: Option<u64>,
}

/// Reads `path` and checks it: the SHA-256 etcd appends to every snapshot (the last 32 bytes,
/// over everything before them) and, when `<path>.sha256` exists, the file's SHA-256 against
/// it (a missing one is a warning).
pub fn check_snapshot(path: &Path) -> Result<CheckedSnapshot, SnapshotError> {
    let content = std::fs::read(path).map_err(|source| SnapshotError::Read { path: path.to_path_buf(), source })?;
    let damaged = |reason: String| SnapshotError::Damaged { path: path.to_path_buf(), reason };
    check_content(&content).map_err(damaged)?;
    let sha256 = hex::encode(Sha256::digest(&content));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let sidecar_path = PathBuf::from(format!("{}.sha256", path.display()));
    let sidecar = match std::fs::read_to_string(&sidecar_path) {
        Ok(text) => {
            let expected = super::snapshot::parse_sha256_line(&text, &name)
                .ok_or_else(|| damaged(format!("{} has no SHA-256 line for {name}", sidecar_path.display())))?;
            if expected != sha256 {
                return Err(damaged(format!(
                    "its SHA-256 is {sha256}, but {} says {expected}",
                    sidecar_path.display()
                )));
            }
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                "{} has no {}: only etcd's own checksum was verified",
                path.display(),
                sidecar_path.display()
            );
            false
        }
        Err(e) => return Err(damaged(format!("cannot read {}: {e}", sidecar_path.display()))),
    };
    let revision = name.strip_suffix(".db").and_then(|n| n.rsplit_once("-rev")).and_then(|(_, r)| r.parse().ok());
    Ok(CheckedSnapshot { path: path.to_path_buf(), content, sha256, sidecar, revision })
}

/// etcd's own integrity check: the last 32 bytes are the SHA-256 of everything before them.
pub fn check_content(content: &[u8]) -> Result<(), String> {
    if content.len() <= 32 {
        return Err(format!("{} bytes is too short for an etcd snapshot", content.len()));
    }
    let (data, hash) = content.split_at(content.len() - 32);
    if Sha256::digest(data).as_slice() != hash {
        return Err("the SHA-256 etcd appends to a snapshot does not match its data (damaged or not a snapshot)".into());
    }
    Ok(())
}

/// What a restore does, computed before anything changes.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    pub snapshot: String,
    pub sha256: String,
    /// Where the snapshot goes on each control plane.
    pub remote_path: String,
    pub token: String,
    pub members: Vec<Member>,
}

/// The plan for restoring `snapshot` at `at` (a stamp): every etcd member with its own name
/// and peer URL, the cluster's member list, and a new cluster token.
pub fn plan_restore(plan: &Plan, snapshot: &CheckedSnapshot, at: &str) -> RestorePlan {
    let remote_path = format!("{RESTORE_DIR}/{}-{at}.db", plan.name);
    let token = format!("{}-restore-{at}", plan.name);
    let initial_cluster = crate::render::initial_cluster(plan);
    let members = plan
        .etcd_members()
        .map(|h| Member {
            name: h.name.clone(),
            peer_url: format!("https://{}", join_host_port(h.address, ETCD_PEER_PORT)),
            initial_cluster: initial_cluster.clone(),
            token: token.clone(),
            snapshot: remote_path.clone(),
            aside: etcd_restore::aside_dir(at),
        })
        .collect();
    RestorePlan {
        snapshot: snapshot.path.display().to_string(),
        sha256: snapshot.sha256.clone(),
        remote_path,
        token,
        members,
    }
}

impl RestorePlan {
    /// The steps, numbered, as the operator reads them before `--yes`.
    pub fn text(&self) -> String {
        let hosts: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        let hosts = hosts.join(", ");
        let aside = self.members.first().map(|m| m.aside.as_str()).unwrap_or_default();
        let mut out = format!("restore etcd from {} (sha256 {})\n", self.snapshot, self.sha256);
        let steps = [
            format!("upload the snapshot to {} on {hosts}", self.remote_path),
            format!(
                "stop kube-apiserver on {hosts} (manifests moved to {})",
                crate::host::layout::STOPPED_MANIFESTS_DIR
            ),
            format!("stop etcd on {hosts}, and wait until the processes are gone"),
            format!("move each member's data aside to {aside}/member (nothing is deleted)"),
            format!("restore each member from the snapshot with a new cluster token {}:", self.token),
        ];
        for (i, step) in steps.iter().enumerate() {
            out.push_str(&format!("{}. {step}\n", i + 1));
        }
        for m in &self.members {
            out.push_str(&format!("     {}: --name {} --initial-advertise-peer-urls {}\n", m.name, m.name, m.peer_url));
        }
        if let Some(m) = self.members.first() {
            out.push_str(&format!("     --initial-cluster {}\n", m.initial_cluster));
        }
        out.push_str(&format!("6. start etcd on {hosts}; wait until every member is healthy\n"));
        out.push_str(&format!("7. start kube-apiserver on {hosts}; wait for the apiservers and the endpoint\n"));
        out
    }
}

/// Runs the restore (or, in a dry-run session, only its preflight); the plan.
pub async fn run<R: Remote>(
    session: &Session<'_, R>,
    pki: &Pki,
    snapshot: &CheckedSnapshot,
    at: &str,
) -> Result<RestorePlan, ActionError> {
    let restore = plan_restore(session.plan, snapshot, at);
    preflight(session).await?;
    session.lap("preflight");
    if session.options.dry_run {
        return Ok(restore);
    }
    let health = Health::new(session.plan, pki, session.options.wait.interval)?;
    let deadline = Instant::now() + session.options.wait.timeout;
    let file = File::new(&restore.remote_path, 0o600, snapshot.content.clone());
    let file = &file;
    on_members(session, "uploading the snapshot", |_, r| async move { r.put(file).await }).await?;
    session.lap("upload");
    stop(session, "kube-apiserver", deadline).await?;
    stop(session, "etcd", deadline).await?;
    session.lap("stop");
    let members = &restore.members;
    on_members(session, "restoring the etcd member", |host, r| async move {
        let member = members.iter().find(|m| m.name == host).expect("every control plane has a member");
        etcd_restore::restore(r, member).await
    })
    .await?;
    session.lap("restore");
    on_members(session, "starting etcd", |_, r| static_pods::start(r, "etcd")).await?;
    wait_for_etcd(session, &health, deadline).await?;
    on_members(session, "starting kube-apiserver", |_, r| static_pods::start(r, "kube-apiserver")).await?;
    health.cluster(session).await?;
    session.lap("start");
    let path = restore.remote_path.clone();
    let cleanup = on_members(session, "removing the uploaded snapshot", |_, r| {
        let script = format!("# removing the uploaded snapshot\nrm -f -- {}\n", crate::transport::shell::quote(&path));
        async move { r.run(&script, b"").await.map(drop) }
    })
    .await;
    if let Err(e) = cleanup {
        tracing::warn!("{e}");
    }
    Ok(restore)
}

/// Every control plane reachable, with a restore tool and the manifests to stop (in the
/// manifests directory, or already in kubeha's from an interrupted run).
async fn preflight<R: Remote>(session: &Session<'_, R>) -> Result<(), ActionError> {
    let members: Vec<_> =
        session.hosts.iter().filter(|(h, _)| session.plan.etcd_members().any(|m| m.name == h.name)).collect();
    let results = session
        .each(&members, |(host, conn)| async move {
            let fail = |check, detail: String| Check::new(&host.name, check, Status::Fail, detail);
            let remote = match conn {
                Ok(r) => r,
                Err(e) => return vec![fail("reachable", e.to_string())],
            };
            let mut checks = Vec::new();
            match etcd_restore::tool(remote).await {
                Ok(Some(tool)) => checks.push(Check::new(&host.name, "restore tool", Status::Ok, tool)),
                Ok(None) => checks.push(fail(
                    "restore tool",
                    "neither etcdutl nor etcdctl is on the host's PATH: install the etcd client tools (Debian: \
                     etcd-client; or etcdutl from an etcd release of the cluster's version)"
                        .into(),
                )),
                Err(e) => checks.push(fail("restore tool", e.to_string())),
            }
            let script = format!(
                "# checking the manifests to stop\nfor p in etcd kube-apiserver; do\n  \
                 [ -f {MANIFESTS_DIR}/$p.yaml ] || [ -f {STOPPED_MANIFESTS_DIR}/$p.yaml ] || echo \"$p\"\ndone\n"
            );
            match remote.run(&script, b"").await {
                Ok(out) => {
                    for missing in out.stdout_text().split_whitespace() {
                        checks.push(fail("manifests", format!("no {missing}.yaml manifest to stop and start")));
                    }
                }
                Err(e) => checks.push(fail("manifests", e.to_string())),
            }
            checks
        })
        .await;
    let checks: Vec<Check> = results.into_iter().flat_map(|(_, c)| c).collect();
    if checks.iter().any(|c| c.status == Status::Fail) {
        return Err(ActionError::Preflight { checks });
    }
    Ok(())
}

/// Runs `f` on every control plane at once; every failure is reported, naming its host.
async fn on_members<'s, R, F, Fut>(session: &'s Session<'_, R>, step: &'static str, f: F) -> Result<(), ActionError>
where
    R: Remote,
    F: Fn(&'s str, &'s R) -> Fut,
    Fut: std::future::Future<Output = Result<(), TransportError>>,
{
    let members: Vec<(&str, &R)> = session
        .control_planes()
        .filter(|(h, _)| session.plan.etcd_members().any(|m| m.name == h.name))
        .map(|(h, r)| (h.name.as_str(), r))
        .collect();
    let results = session
        .each(&members, |&(host, remote)| {
            session.progress.step(host, step);
            f(host, remote)
        })
        .await;
    let failures: Vec<TransportError> = results.into_iter().filter_map(|(_, r)| r.err()).collect();
    if failures.is_empty() { Ok(()) } else { Err(ActionError::Hosts { step, failures }) }
}

/// Stops `pod` on every control plane and waits until its program runs on none.
async fn stop<R: Remote>(session: &Session<'_, R>, pod: &'static str, deadline: Instant) -> Result<(), ActionError> {
    let step = if pod == "etcd" { "stopping etcd" } else { "stopping kube-apiserver" };
    on_members(session, step, |_, r| static_pods::stop(r, pod)).await?;
    let interval = session.options.wait.interval;
    for (host, remote) in session.control_planes() {
        let probe = || async {
            match static_pods::running(remote, &[pod]).await {
                Ok(left) if left.is_empty() => Ok(()),
                Ok(_) => Err(wait::Failure::Retry(format!("{pod} still runs"))),
                Err(e) => Err(wait::Failure::Fatal(e.to_string())),
            }
        };
        let on_retry = |last: &str| session.progress.detail(&host.name, format!("waiting for {pod} to stop: {last}"));
        wait::until(&format!("{pod} on {} to stop", host.name), deadline, interval, probe, on_retry).await?;
    }
    Ok(())
}

/// Waits until every member is healthy and the member list is the plan's.
async fn wait_for_etcd<R: Remote>(
    session: &Session<'_, R>,
    health: &Health<'_>,
    deadline: Instant,
) -> Result<(), ActionError> {
    let members: Vec<_> = session.control_planes().collect();
    let results = session
        .each(&members, |&(host, remote)| async move { health.etcd(host, remote, deadline, session.progress).await })
        .await;
    for (_, result) in results {
        result?;
    }
    if let Some((host, remote)) = members.first() {
        health.members(host, *remote, deadline, session.progress).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot_file(dir: &Path, len: usize) -> PathBuf {
        let mut data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let hash = Sha256::digest(&data);
        data.extend_from_slice(&hash);
        let path = dir.join("mem-20261130T125300Z-rev42.db");
        std::fs::write(&path, &data).unwrap();
        let line =
            super::super::snapshot::sha256_line(&hex::encode(Sha256::digest(&data)), "mem-20261130T125300Z-rev42.db");
        std::fs::write(dir.join("mem-20261130T125300Z-rev42.db.sha256"), line).unwrap();
        path
    }

    #[test]
    fn a_snapshot_is_checked_against_its_checksum_file_and_etcds_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = snapshot_file(dir.path(), 5000);
        let checked = check_snapshot(&path).unwrap();
        assert!(checked.sidecar);
        assert_eq!(checked.revision, Some(42));
        // One flipped byte: etcd's hash no longer matches.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let err = check_snapshot(&path).unwrap_err().to_string();
        assert!(err.contains("refusing the snapshot") && err.contains("does not match its data"), "{err}");
        // A whole snapshot that is not the one the checksum file names.
        let path = snapshot_file(dir.path(), 5000);
        let other = snapshot_file(&tempfile::tempdir().unwrap().keep(), 6000);
        std::fs::copy(&other, &path).unwrap();
        let err = check_snapshot(&path).unwrap_err().to_string();
        assert!(err.contains(".sha256 says"), "{err}");
        // Without a checksum file, etcd's own check alone.
        let path = snapshot_file(dir.path(), 5000);
        std::fs::remove_file(dir.path().join("mem-20261130T125300Z-rev42.db.sha256")).unwrap();
        assert!(!check_snapshot(&path).unwrap().sidecar);
        assert!(check_snapshot(&dir.path().join("missing.db")).unwrap_err().to_string().contains("cannot read"));
    }

    /// Answers the restore tool lookup on `host` as a host with etcdctl would.
    fn with_etcdctl(hosts: &crate::actions::fake::MemoryConnector, host: &str) {
        hosts.host(host).on_exec(|command, _| {
            let stdout =
                if command.starts_with("# looking for etcdutl") { b"/usr/bin/etcdctl\n".to_vec() } else { Vec::new() };
            crate::transport::Output { status: 0, stdout, stderr: Vec::new() }
        });
    }

    #[tokio::test]
    async fn preflight_names_hosts_without_a_restore_tool_and_a_dry_run_writes_nothing() {
        use crate::actions::fake::MemoryConnector;
        use crate::actions::progress::Progress;
        use crate::actions::session::SessionOptions;
        let plan = crate::actions::fake::plan();
        let hosts = MemoryConnector::new(&plan);
        with_etcdctl(&hosts, "cp1");
        with_etcdctl(&hosts, "cp2");
        let state = tempfile::tempdir().unwrap();
        crate::pki::generate(&plan, state.path()).unwrap();
        let pki = crate::pki::load(&plan, state.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let checked = check_snapshot(&snapshot_file(dir.path(), 100)).unwrap();
        let progress = Progress::hidden();
        let options = SessionOptions { dry_run: true, ..Default::default() };
        let session = Session::open(&plan, state.path(), options.clone(), &hosts, &progress).await.unwrap();
        let err = run(&session, &pki, &checked, "20261130T130000Z").await.unwrap_err();
        session.close(&hosts).await;
        let ActionError::Preflight { checks } = &err else { panic!("{err}") };
        let failed: Vec<(&str, &str)> =
            checks.iter().filter(|c| c.status == Status::Fail).map(|c| (c.host.as_str(), c.check)).collect();
        assert_eq!(failed, [("cp3", "restore tool")]);
        assert!(checks.iter().any(|c| c.detail.contains("etcd-client")), "{err}");

        with_etcdctl(&hosts, "cp3");
        let session = Session::open(&plan, state.path(), options, &hosts, &progress).await.unwrap();
        let restore = run(&session, &pki, &checked, "20261130T130000Z").await.unwrap();
        session.close(&hosts).await;
        assert_eq!(restore.members.len(), 3);
        for name in ["cp1", "cp2", "cp3", "w1"] {
            let calls = hosts.host(name).calls();
            let changed = calls.iter().any(|c| match c {
                crate::transport::Call::Put { .. } => true,
                crate::transport::Call::Exec { command, .. } => {
                    command.starts_with("# stopping") || command.starts_with("# restoring")
                }
                _ => false,
            });
            assert!(!changed, "{name}: {calls:?}");
            assert_eq!(name == "w1", calls.is_empty(), "{name}: only control planes are asked: {calls:?}");
        }
    }

    #[test]
    fn the_plan_gives_each_member_its_name_and_peer_url_and_a_new_token() {
        let plan = crate::actions::fake::plan();
        let dir = tempfile::tempdir().unwrap();
        let checked = check_snapshot(&snapshot_file(dir.path(), 100)).unwrap();
        let restore = plan_restore(&plan, &checked, "20261130T130000Z");
        assert_eq!(restore.token, "mem-restore-20261130T130000Z");
        assert_eq!(restore.remote_path, "/etc/kubernetes/kubeha/restore/mem-20261130T130000Z.db");
        let members: Vec<(&str, &str)> =
            restore.members.iter().map(|m| (m.name.as_str(), m.peer_url.as_str())).collect();
        assert_eq!(
            members,
            [
                ("cp1", "https://198.18.0.11:2380"),
                ("cp2", "https://198.18.0.12:2380"),
                ("cp3", "https://198.18.0.13:2380")
            ]
        );
        assert!(restore.members.iter().all(|m| m.initial_cluster
            == "cp1=https://198.18.0.11:2380,cp2=https://198.18.0.12:2380,cp3=https://198.18.0.13:2380"));
        let text = restore.text();
        assert!(text.contains("2. stop kube-apiserver on cp1, cp2, cp3"), "{text}");
        assert!(
            text.contains("/var/lib/etcd/.kubeha-before-restore-20261130T130000Z/member (nothing is deleted)"),
            "{text}"
        );
    }
}
