//! `init`: bare hosts to a running HA control plane.
//!
//! Phases, in order: connect → preflight → certificates → render → push → wait. Nothing is
//! written to any host before preflight passes; the push writes only files that differ, each
//! atomically, so a re-run on a healthy cluster changes nothing and a run cut short converges
//! when repeated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::checks::{Check, Expectations, Status};
use super::connect::{Connections, Reach, connect_all};
use super::facts::Ownership;
use super::progress::Progress;
use super::push::{self, HostPush, PushReport};
use super::wait::{Health, WaitError, WaitOptions};
use super::{fanout, preflight};
use crate::files::File;
use crate::https::HttpsError;
use crate::pki::{self, PkiError};
use crate::plan::{Host, Plan, Role};
use crate::render::{self, RenderError};
use crate::transport::{Credentials, Remote, SshHost, TransportError};

/// Everything `init` can be told.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub reach: Reach,
    pub max_clock_skew: Duration,
    pub wait: WaitOptions,
    /// Connect, check and compare, but write nothing (not even the state directory).
    pub dry_run: bool,
    /// How long a kubelet may take to notice a changed static-pod manifest (its
    /// `fileCheckFrequency`); rolling restarts wait this long before checking a host's health.
    pub kubelet_sync: Duration,
}

/// What `init` did.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Per host, in inventory order.
    pub pushed: Vec<(String, PushReport)>,
    /// Preflight warnings.
    pub warnings: Vec<Check>,
    /// Certificates and kubeconfigs created or renewed in the state directory.
    pub certificates_changed: usize,
    /// Time spent on kubeha's own work, and waiting for the components to come up.
    pub work: Duration,
    pub waited: Duration,
    /// How long each phase took, in order.
    pub phases: Vec<(&'static str, Duration)>,
}

impl InitReport {
    fn lap(&mut self, phase: &'static str, since: &mut Instant) {
        self.phases.push((phase, since.elapsed()));
        *since = Instant::now();
    }

    /// Whether any host file was (or, in a dry run, would be) written or removed.
    pub fn changed_hosts(&self) -> bool {
        self.pushed.iter().any(|(_, r)| !r.is_empty())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    #[error("preflight failed: {}", failed_checks(checks))]
    Preflight { checks: Vec<Check> },
    #[error("{step} failed on {}:\n{}", hosts(failures), lines(failures))]
    Hosts { step: &'static str, failures: Vec<(String, String)> },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("waiting for the cluster")]
    Wait(#[from] WaitError),
    #[error("cannot use the cluster's certificates for health checks")]
    Tls(#[from] HttpsError),
    #[error("dry run: cannot prepare a scratch copy of the state directory: {0}")]
    Scratch(std::io::Error),
    #[error(transparent)]
    Lock(#[from] super::lock::LockError),
}

fn failed_checks(checks: &[Check]) -> String {
    let failed: Vec<String> =
        checks.iter().filter(|c| c.status == Status::Fail).map(|c| format!("{} {}", c.host, c.check)).collect();
    format!("{} problem(s): {}", failed.len(), failed.join(", "))
}

fn hosts(failures: &[(String, String)]) -> String {
    failures.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>().join(", ")
}

fn lines(failures: &[(String, String)]) -> String {
    failures.iter().map(|(_, e)| format!("  {e}")).collect::<Vec<_>>().join("\n")
}

/// Runs every phase of `init`.
pub async fn init(
    plan: &Plan,
    state_dir: &Path,
    options: &InitOptions,
    credentials: &Credentials,
    progress: &Progress,
) -> Result<InitReport, InitError> {
    let started = Instant::now();
    let _lock = if options.dry_run { None } else { Some(super::lock::lock(state_dir)?) };
    let vip = preflight::start_vip_probe(plan);
    let connections = connect_all(plan, &options.reach, credentials, progress).await;
    let connected = started.elapsed();
    let mut result = phases(plan, state_dir, options, &connections, vip, progress, started).await;
    if let Ok(report) = &mut result {
        report.phases.insert(0, ("connect", connected));
    }
    connections.close().await;
    result
}

async fn phases(
    plan: &Plan,
    state_dir: &Path,
    options: &InitOptions,
    connections: &Connections<'_>,
    vip: preflight::VipProbe,
    progress: &Progress,
    started: Instant,
) -> Result<InitReport, InitError> {
    let mut report = InitReport::default();
    let mut clock = Instant::now();
    let expect =
        Expectations { max_clock_skew: options.max_clock_skew, cluster_id: pki::existing_cluster_id(state_dir)? };
    let found = preflight::run(plan, connections, vip, &expect, options.reach.parallel, progress).await;
    if found.failed() {
        return Err(InitError::Preflight { checks: found.checks });
    }
    report.warnings = found.checks.iter().filter(|c| c.status == Status::Warn).cloned().collect();
    report.lap("preflight", &mut clock);

    let scratch = options.dry_run.then(|| Scratch::of(state_dir)).transpose().map_err(InitError::Scratch)?;
    let state_dir = scratch.as_ref().map_or(state_dir, |s| s.path.as_path());
    let generated = pki::generate(plan, state_dir)?;
    report.certificates_changed = generated.created.len() + generated.renewed.len();
    let pki = pki::load(plan, state_dir)?;
    report.lap("certificates", &mut clock);
    let files = render::render(plan, &pki)?;
    report.lap("render", &mut clock);

    let health = Health::new(plan, &pki, options.wait.interval)?;
    let (pushed, rolling_waits) = push_all(connections, &files, &found, &health, options, progress).await?;
    report.pushed = pushed;
    report.lap("push", &mut clock);
    report.work = started.elapsed() - rolling_waits;
    report.waited = rolling_waits;
    if options.dry_run {
        return Ok(report);
    }
    let waiting = Instant::now();
    wait_for_cluster(connections, &health, options, progress).await?;
    report.waited += waiting.elapsed();
    report.lap("wait", &mut clock);
    Ok(report)
}

/// Writes every host's files (only what differs) and removes those kubeha no longer renders.
///
/// Hosts where no running static pod would restart (a first install, workers, config-only
/// changes) are written all at once within the bound; a host that fails does not stop the
/// others, since every file is written atomically and finishing them leaves less to do on the
/// re-run. Control planes whose running pods would restart (an upgrade, a changed flag) are then
/// rolled one at a time: written, given the kubelet's sync period to notice, and waited for
/// until their etcd and apiserver are healthy and etcd has every member again, so the cluster
/// keeps its quorum and its endpoint. Returns the reports and the time spent waiting on
/// rolled hosts.
async fn push_all(
    connections: &Connections<'_>,
    files: &BTreeMap<String, Vec<File>>,
    found: &preflight::Outcome,
    health: &Health<'_>,
    options: &InitOptions,
    progress: &Progress,
) -> Result<(Vec<(String, PushReport)>, Duration), InitError> {
    let hosts: Vec<(&Host, &SshHost)> = connections.connected().collect();
    let prepared = fanout::each(&hosts, options.reach.parallel, |(host, ssh)| async move {
        let files = files.get(&host.name).map(Vec::as_slice).unwrap_or_default();
        let previous = match found.hosts.get(&host.name) {
            Some((_, Ownership::Ours(marker))) => marker.files.as_slice(),
            _ => &[],
        };
        progress.step(&host.name, "comparing files");
        let result = prepare_host(ssh, files, previous, options.dry_run).await;
        if let Err(e) = &result {
            progress.finish(&host.name, format!("failed: {e}"));
        }
        result
    })
    .await;
    let mut failures = Vec::new();
    let mut pushes = Vec::new();
    for ((host, ssh), result) in prepared {
        match result {
            Ok(push) => pushes.push((*host, *ssh, push)),
            Err(e) => failures.push((host.name.clone(), e.to_string())),
        }
    }
    if !failures.is_empty() {
        return Err(InitError::Hosts { step: "comparing files", failures });
    }
    let reports: Vec<(String, PushReport)> = pushes.iter().map(|(h, _, p)| (h.name.clone(), p.report())).collect();
    if options.dry_run {
        for (host, report) in &reports {
            progress.finish(host, report.summary(true));
        }
        return Ok((reports, Duration::ZERO));
    }

    let (rolling, at_once): (Vec<_>, Vec<_>) =
        pushes.into_iter().partition(|(h, _, p)| h.role == Role::ControlPlane && p.restarts_pods);
    let results = fanout::each(&at_once, options.reach.parallel, |(host, ssh, push)| async move {
        let result = write_host(host, ssh, push, progress).await;
        match &result {
            Ok(()) if host.role == Role::Worker => progress.finish(&host.name, push.report().summary(false)),
            Ok(()) => progress.step(&host.name, push.report().summary(false)),
            Err(e) => progress.finish(&host.name, format!("failed: {e}")),
        }
        result
    })
    .await;
    let failures: Vec<(String, String)> =
        results.into_iter().filter_map(|((h, _, _), r)| r.err().map(|e| (h.name.clone(), e.to_string()))).collect();
    if !failures.is_empty() {
        return Err(InitError::Hosts { step: "writing files", failures });
    }
    let mut waited = Duration::ZERO;
    for (host, ssh, push) in &rolling {
        progress.note(format!("{}: restarting its control-plane pods (one host at a time)", host.name));
        write_host(host, ssh, push, progress).await.map_err(|e| InitError::Hosts {
            step: "writing files",
            failures: vec![(host.name.clone(), e.to_string())],
        })?;
        progress
            .step(&host.name, format!("waiting {}s for the kubelet to restart pods", options.kubelet_sync.as_secs()));
        let waiting = Instant::now();
        tokio::time::sleep(options.kubelet_sync).await;
        let deadline = Instant::now() + options.wait.timeout;
        health.control_plane(host, *ssh, deadline, progress).await?;
        health.members(host, *ssh, deadline, progress).await?;
        waited += waiting.elapsed();
        progress.step(&host.name, push.report().summary(false));
    }
    Ok((reports, waited))
}

/// Removes temporary files an interrupted run left (before anything is written: the writes
/// below make temporary files of their own in the same places), then compares.
async fn prepare_host<'f>(
    ssh: &SshHost,
    files: &'f [File],
    previous: &[PathBuf],
    dry_run: bool,
) -> Result<HostPush<'f>, TransportError> {
    if !dry_run {
        let mut dirs: Vec<PathBuf> = files.iter().filter_map(|f| f.path.parent().map(Path::to_path_buf)).collect();
        dirs.sort();
        dirs.dedup();
        ssh.remove_stale_temp_files(&dirs).await?;
    }
    push::prepare(ssh, files, previous).await
}

async fn write_host(
    host: &Host,
    ssh: &SshHost,
    push: &HostPush<'_>,
    progress: &Progress,
) -> Result<(), TransportError> {
    progress.step(&host.name, "writing files");
    push.apply(ssh, |i, n, path| progress.detail(&host.name, format!("writing {i}/{n}: {}", path.display()))).await
}

/// Waits until every etcd member and apiserver is healthy and the endpoint answers.
async fn wait_for_cluster(
    connections: &Connections<'_>,
    health: &Health<'_>,
    options: &InitOptions,
    progress: &Progress,
) -> Result<(), InitError> {
    let deadline = Instant::now() + options.wait.timeout;
    let control_planes: Vec<(&Host, &SshHost)> =
        connections.connected().filter(|(h, _)| h.role == Role::ControlPlane).collect();
    let results = fanout::each(&control_planes, control_planes.len().max(1), |(host, ssh)| async move {
        health.control_plane(host, *ssh, deadline, progress).await?;
        progress.finish(&host.name, "etcd and kube-apiserver healthy");
        Ok::<(), WaitError>(())
    })
    .await;
    for (_, result) in results {
        result?;
    }
    if let Some((first, ssh)) = control_planes.first() {
        health.members(first, *ssh, deadline, progress).await?;
    }
    health.endpoint(deadline, progress).await?;
    Ok(())
}

/// A throw-away copy of the state directory, so a dry run can show the render without
/// creating or renewing anything in the real one. The copy of an existing state directory (CA
/// keys included) lives inside it, under the same 0700 protection, so a dry run cut short
/// leaves no keys anywhere else; a fresh cluster's scratch PKI (keys no cluster uses) goes to
/// the system's temporary directory.
struct Scratch {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

/// Prefix of scratch directories inside a state directory (skipped when copying it).
const SCRATCH_PREFIX: &str = ".dry-run-";

impl Scratch {
    fn of(state_dir: &Path) -> std::io::Result<Scratch> {
        let builder = tempfile::Builder::new().prefix(SCRATCH_PREFIX).to_owned();
        let dir = if state_dir.is_dir() { builder.tempdir_in(state_dir)? } else { builder.tempdir()? };
        let path = dir.path().join("state");
        if state_dir.is_dir() {
            copy_tree(state_dir, &path)?;
        }
        Ok(Scratch { path, _dir: dir })
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().mode(0o700).create(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) || entry.file_name() == ".lock" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}
