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
use super::progress::Progress;
use super::push::{PushReport, push};
use super::wait::{self, Failure, WaitError, WaitOptions, until};
use super::{fanout, preflight};
use crate::files::File;
use crate::https::{ClientIdentity, HttpsError, TlsClient};
use crate::pki::{self, Pki, PkiError};
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

    /// Whether any host file was (or, in a dry run, would be) written.
    pub fn changed_hosts(&self) -> bool {
        self.pushed.iter().any(|(_, r)| !r.written.is_empty())
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
    progress: &Progress,
) -> Result<InitReport, InitError> {
    let started = Instant::now();
    let credentials = Credentials::from_env();
    let vip = preflight::start_vip_probe(plan);
    let connections = connect_all(plan, &options.reach, &credentials, progress).await;
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
    let checks = preflight::run(plan, connections, vip, &expect, options.reach.parallel, progress).await;
    if checks.iter().any(|c| c.status == Status::Fail) {
        return Err(InitError::Preflight { checks });
    }
    report.warnings = checks.into_iter().filter(|c| c.status == Status::Warn).collect();
    report.lap("preflight", &mut clock);

    let scratch = options.dry_run.then(|| Scratch::of(state_dir)).transpose().map_err(InitError::Scratch)?;
    let state_dir = scratch.as_ref().map_or(state_dir, |s| s.path.as_path());
    let generated = pki::generate(plan, state_dir)?;
    report.certificates_changed = generated.created.len() + generated.renewed.len();
    let pki = pki::load(plan, state_dir)?;
    report.lap("certificates", &mut clock);
    let files = render::render(plan, &pki)?;
    report.lap("render", &mut clock);

    report.pushed = push_all(plan, connections, &files, options, progress).await?;
    report.lap("push", &mut clock);
    report.work = started.elapsed();
    if options.dry_run {
        return Ok(report);
    }
    let waiting = Instant::now();
    wait_for_cluster(plan, &pki, connections, options, progress).await?;
    report.waited = waiting.elapsed();
    report.lap("wait", &mut clock);
    Ok(report)
}

/// Writes every host's files (only what differs), all hosts at once within the bound. A host
/// that fails does not stop the others: each file is written atomically, so finishing them
/// leaves less to do on the re-run.
async fn push_all(
    plan: &Plan,
    connections: &Connections<'_>,
    files: &BTreeMap<String, Vec<File>>,
    options: &InitOptions,
    progress: &Progress,
) -> Result<Vec<(String, PushReport)>, InitError> {
    let hosts: Vec<(&Host, &SshHost)> = connections.connected().collect();
    let results = fanout::each(&hosts, options.reach.parallel, |(host, ssh)| async move {
        let files = files.get(&host.name).map(Vec::as_slice).unwrap_or_default();
        let result = push_host(host, ssh, files, options.dry_run, progress).await;
        match &result {
            Ok(r) if host.role == Role::Worker || options.dry_run => {
                progress.finish(&host.name, r.summary(options.dry_run))
            }
            Ok(r) => progress.step(&host.name, r.summary(false)),
            Err(e) => progress.finish(&host.name, format!("failed: {e}")),
        }
        result
    })
    .await;
    let mut pushed = Vec::new();
    let mut failures = Vec::new();
    for ((host, _), result) in results {
        match result {
            Ok(r) => pushed.push((host.name.clone(), r)),
            Err(e) => failures.push((host.name.clone(), e.to_string())),
        }
    }
    if !failures.is_empty() {
        return Err(InitError::Hosts { step: "writing files", failures });
    }
    debug_assert_eq!(pushed.len(), plan.hosts.len());
    Ok(pushed)
}

async fn push_host(
    host: &Host,
    ssh: &SshHost,
    files: &[File],
    dry_run: bool,
    progress: &Progress,
) -> Result<PushReport, TransportError> {
    progress.step(&host.name, if dry_run { "comparing files" } else { "writing files" });
    let mut dirs: Vec<PathBuf> = files.iter().filter_map(|f| f.path.parent().map(Path::to_path_buf)).collect();
    dirs.sort();
    dirs.dedup();
    // Before writing: the puts below create temporary files of their own in the same places.
    if !dry_run {
        ssh.remove_stale_temp_files(&dirs).await?;
    }
    push(ssh, files, dry_run, |i, n, path| progress.detail(&host.name, format!("writing {i}/{n}: {}", path.display())))
        .await
}

/// Waits until every etcd member and apiserver is healthy and the endpoint answers.
async fn wait_for_cluster(
    plan: &Plan,
    pki: &Pki,
    connections: &Connections<'_>,
    options: &InitOptions,
    progress: &Progress,
) -> Result<(), InitError> {
    let deadline = Instant::now() + options.wait.timeout;
    let interval = options.wait.interval;
    let probe_timeout = Duration::from_secs(5);
    let etcd_id = pki.etcd_healthcheck_client();
    let etcd = TlsClient::new(
        pki.etcd_ca_cert_pem(),
        Some(&ClientIdentity::from_pem_named(
            "etcd/healthcheck-client.crt",
            &etcd_id.cert_pem,
            "etcd/healthcheck-client.key",
            &etcd_id.key_pem,
        )?),
    )?
    .with_timeout(probe_timeout);
    let api = TlsClient::new(pki.ca_cert_pem(), None)?.with_timeout(probe_timeout);

    let control_planes: Vec<(&Host, &SshHost)> =
        connections.connected().filter(|(h, _)| h.role == Role::ControlPlane).collect();
    let (etcd, api) = (&etcd, &api);
    let results = fanout::each(&control_planes, control_planes.len().max(1), |(host, ssh)| async move {
        let name = &host.name;
        let step = |what: &'static str| move |last: &str| progress.detail(name, format!("waiting for {what}: {last}"));
        progress.step(name, "waiting for etcd");
        until(&format!("{name}: etcd"), deadline, interval, || wait::etcd_health(*ssh, etcd), step("etcd")).await?;
        progress.step(name, "waiting for kube-apiserver");
        let port = plan.api_server_bind_port;
        until(
            &format!("{name}: kube-apiserver"),
            deadline,
            interval,
            || wait::apiserver_health(*ssh, port, api),
            step("kube-apiserver"),
        )
        .await?;
        progress.finish(name, "etcd and kube-apiserver healthy");
        Ok::<(), WaitError>(())
    })
    .await;
    for (_, result) in results {
        result?;
    }

    if let Some((first, ssh)) = control_planes.first() {
        until(
            "etcd membership",
            deadline,
            interval,
            || async { wait::check_members(plan, &wait::etcd_members(*ssh, etcd).await?).map_err(Failure::Retry) },
            |last| progress.detail(&first.name, format!("waiting for etcd members: {last}")),
        )
        .await?;
    }
    let endpoint = plan.endpoint_url();
    progress.note(format!("waiting for {endpoint}/healthz"));
    until(&format!("{endpoint}/healthz"), deadline, interval, || wait::endpoint_health(plan, api), |_| {}).await?;
    Ok(())
}

/// A throw-away copy of the state directory, so a dry run can show the render without
/// creating or renewing anything in the real one.
struct Scratch {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Scratch {
    fn of(state_dir: &Path) -> std::io::Result<Scratch> {
        let dir = tempfile::Builder::new().prefix("kubeha-dry-run-").tempdir()?;
        let path = dir.path().join("state");
        if state_dir.exists() {
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
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}
