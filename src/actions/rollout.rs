//! Rolling rendered files out to a cluster without losing etcd quorum or the endpoint.
//!
//! [`converge`] is the one way kubeha changes hosts' files: it compares every host's files with
//! what was rendered (in parallel), then writes only what differs, each file atomically. How
//! running static pods are treated is an input, the [`Restart`] policy. Hosts where no running
//! pod restarts (a first install, workers, unchanged hosts) are written all at once; control
//! planes whose running pods restart are rolled one at a time, each behind [`Gates`]: before it,
//! the rest of the cluster must be able to spare it; after it, it must be back.
//!
//! The kubelet restarts a static pod only when its manifest changes. Every manifest kubeha
//! renders carries a hash of the files the pod mounts (`render::INPUTS_HASH_ANNOTATION`), so a
//! certificate-only change changes the manifests of exactly the pods that use it, and the
//! kubelet notices; [`Restart::Also`] restarts named pods even when nothing they use changed.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::ActionError;
use super::session::Session;
use crate::files::File;
use crate::host::files::{self, HostPush, PushReport};
use crate::plan::{Host, Role};
use crate::transport::{Remote, TransportError};

/// What happens to running static pods when their files change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restart {
    /// Pods whose manifest changed restart; since manifests carry a hash of everything the pod
    /// mounts, that includes pods whose certificates or configs changed. `init`'s policy.
    Changed,
    /// As `Changed`, and these pods (by name, e.g. `kube-apiserver`) restart on every control
    /// plane even where nothing they use changed: their manifests get a new restart stamp.
    Also { pods: Vec<String>, stamp: String },
    /// No running pod restarts: every other file is written, manifests of running pods are
    /// left as they are (for components that reload their files themselves).
    Never,
}

/// Health and quorum checks around a host whose running pods restart.
pub trait Gates<R: Remote> {
    /// Before `host` is touched: the rest of the cluster can spare it (every other etcd member
    /// healthy, so quorum survives the restart).
    fn before(&self, session: &Session<'_, R>, host: &Host) -> impl Future<Output = Result<(), ActionError>>;

    /// After `host`'s files are written and the kubelet had time to act: it is healthy again
    /// and the cluster has every member.
    fn after(&self, session: &Session<'_, R>, host: &Host, remote: &R)
    -> impl Future<Output = Result<(), ActionError>>;
}

/// What a rollout did (or, in a dry run, would do).
#[derive(Debug, Default)]
pub struct Rollout {
    /// Per host, in inventory order.
    pub reports: Vec<(String, PushReport)>,
    /// Time spent on rolled hosts waiting for the kubelet and the gates.
    pub waited: Duration,
}

/// Brings every connected host's files in line with `files` (per host name). `previous` is,
/// per host, what kubeha wrote there last time (the host marker's list): those files no longer
/// rendered are removed. In a dry run, only compares.
pub async fn converge<R: Remote, G: Gates<R>>(
    session: &Session<'_, R>,
    files: &BTreeMap<String, Vec<File>>,
    previous: &BTreeMap<String, Vec<PathBuf>>,
    restart: &Restart,
    gates: &G,
) -> Result<Rollout, ActionError> {
    let stamped = stamp(files, restart);
    let files = stamped.as_ref().unwrap_or(files);
    let pushes = prepare_all(session, files, previous, restart).await?;
    let reports: Vec<(String, PushReport)> = pushes.iter().map(|(h, _, p)| (h.name.clone(), p.report())).collect();
    let progress = session.progress;
    if session.options.dry_run {
        for (host, report) in &reports {
            progress.finish(host, report.summary(true));
        }
        return Ok(Rollout { reports, waited: Duration::ZERO });
    }

    let (rolling, at_once): (Vec<_>, Vec<_>) =
        pushes.into_iter().partition(|(h, _, p)| h.role == Role::ControlPlane && p.restarts_pods());
    let results = session
        .each(&at_once, |(host, remote, push)| async move {
            let result = write_host(session, host, *remote, push).await;
            match &result {
                Ok(()) if host.role == Role::Worker => progress.finish(&host.name, push.report().summary(false)),
                Ok(()) => progress.step(&host.name, push.report().summary(false)),
                Err(e) => progress.finish(&host.name, format!("failed: {e}")),
            }
            result
        })
        .await;
    let failures: Vec<TransportError> = results.into_iter().filter_map(|(_, r)| r.err()).collect();
    if !failures.is_empty() {
        return Err(ActionError::Hosts { step: "writing files", failures });
    }

    let mut waited = Duration::ZERO;
    for (host, remote, push) in &rolling {
        let waiting = Instant::now();
        gates.before(session, host).await?;
        waited += waiting.elapsed();
        progress.note(format!("{}: restarting {} (one host at a time)", host.name, push.restarting_pods().join(", ")));
        write_host(session, host, *remote, push).await.map_err(|e| ActionError::host("writing files", e))?;
        let kubelet_sync = session.options.kubelet_sync;
        progress.step(&host.name, format!("waiting {}s for the kubelet to restart pods", kubelet_sync.as_secs()));
        let waiting = Instant::now();
        tokio::time::sleep(kubelet_sync).await;
        gates.after(session, host, remote).await?;
        waited += waiting.elapsed();
        progress.step(&host.name, push.report().summary(false));
    }
    Ok(Rollout { reports, waited })
}

/// Under [`Restart::Also`], the named pods' manifests with a new restart stamp.
fn stamp(files: &BTreeMap<String, Vec<File>>, restart: &Restart) -> Option<BTreeMap<String, Vec<File>>> {
    let Restart::Also { pods, stamp } = restart else { return None };
    let stamped = files
        .iter()
        .map(|(host, files)| {
            let files = files
                .iter()
                .map(|f| match pod_name(&f.path) {
                    Some(pod) if pods.iter().any(|p| p == pod) => crate::render::stamp_restart(f, stamp),
                    _ => f.clone(),
                })
                .collect();
            (host.clone(), files)
        })
        .collect();
    Some(stamped)
}

/// The static pod a manifest path runs.
fn pod_name(path: &Path) -> Option<&str> {
    if !path.starts_with(crate::host::layout::MANIFESTS_DIR) {
        return None;
    }
    path.file_name()?.to_str()?.strip_suffix(".yaml")
}

type Prepared<'s, 'f, R> = Vec<(&'s Host, &'s R, HostPush<'f>)>;

/// Compares every connected host's files, all at once within the bound; a host that cannot be
/// compared stops the rollout before anything is written anywhere.
async fn prepare_all<'s, 'f, R: Remote>(
    session: &'s Session<'_, R>,
    files: &'f BTreeMap<String, Vec<File>>,
    previous: &BTreeMap<String, Vec<PathBuf>>,
    restart: &Restart,
) -> Result<Prepared<'s, 'f, R>, ActionError> {
    let hosts: Vec<(&Host, &R)> = session.connected().collect();
    let dry_run = session.options.dry_run;
    let prepared = session
        .each(&hosts, |(host, remote)| async move {
            let files = files.get(&host.name).map(Vec::as_slice).unwrap_or_default();
            let previous = previous.get(&host.name).map(Vec::as_slice).unwrap_or_default();
            session.progress.step(&host.name, "comparing files");
            let result = prepare_host(*remote, files, previous, dry_run).await;
            if let Err(e) = &result {
                session.progress.finish(&host.name, format!("failed: {e}"));
            }
            result
        })
        .await;
    let mut failures = Vec::new();
    let mut pushes = Vec::new();
    for ((host, remote), result) in prepared {
        match result {
            Ok(mut push) => {
                if *restart == Restart::Never {
                    push.keep_pods_running();
                }
                pushes.push((*host, *remote, push));
            }
            Err(e) => failures.push(e),
        }
    }
    if failures.is_empty() { Ok(pushes) } else { Err(ActionError::Hosts { step: "comparing files", failures }) }
}

/// Removes temporary files an interrupted run left (before anything is written: the writes
/// make temporary files of their own in the same places), then compares.
async fn prepare_host<'f, R: Remote>(
    remote: &R,
    files: &'f [File],
    previous: &[PathBuf],
    dry_run: bool,
) -> Result<HostPush<'f>, TransportError> {
    if !dry_run {
        let mut dirs: Vec<PathBuf> = files.iter().filter_map(|f| f.path.parent().map(Path::to_path_buf)).collect();
        dirs.sort();
        dirs.dedup();
        remote.remove_stale_temp_files(&dirs).await?;
    }
    files::prepare(remote, files, previous).await
}

async fn write_host<R: Remote>(
    session: &Session<'_, R>,
    host: &Host,
    remote: &R,
    push: &HostPush<'_>,
) -> Result<(), TransportError> {
    let progress = session.progress;
    progress.step(&host.name, "writing files");
    push.apply(remote, |i, n, path| progress.detail(&host.name, format!("writing {i}/{n}: {}", path.display()))).await
}
