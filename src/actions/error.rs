//! What can stop a command that works on hosts, as data: which step, which hosts, and why.
//!
//! The command line maps these to exit codes (see `cli::exit`); nothing here is turned into a
//! string before it reaches the operator.

use super::checks::{Check, Status};
use super::lock::LockError;
use super::wait::WaitError;
use crate::https::HttpsError;
use crate::pki::PkiError;
use crate::render::RenderError;
use crate::transport::TransportError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// A preflight check failed; nothing was written anywhere.
    #[error("preflight failed: {}", failed_checks(checks))]
    Preflight { checks: Vec<Check> },
    /// `step` failed on these hosts (each error names its host); the other hosts finished it.
    #[error("{step} failed on {}:\n{}", hosts(failures), lines(failures))]
    Hosts { step: &'static str, failures: Vec<TransportError> },
    /// A component did not become healthy in time (or its host was lost while waiting).
    #[error(transparent)]
    Unhealthy(#[from] WaitError),
    /// A rolling restart stopped at `host`: the hosts in `rolled` have their new files and came
    /// back healthy, `host` has its new files if `written`, the hosts in `untouched` were not
    /// written. With a `backup`, each written host keeps the files it replaced there.
    #[error("the rollout stopped at {host}")]
    Stopped {
        host: String,
        written: bool,
        rolled: Vec<String>,
        untouched: Vec<String>,
        backup: Option<std::path::PathBuf>,
        #[source]
        source: Box<ActionError>,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("cannot use the cluster's certificates to reach it")]
    Tls(#[from] HttpsError),
    #[error("cannot take an etcd snapshot: {0}")]
    Snapshot(String),
    #[error("dry run: cannot prepare a scratch copy of the state directory: {0}")]
    Scratch(std::io::Error),
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Another kubeha run holds the lock on these hosts (host, who holds it); nothing was
    /// written.
    #[error(
        "another kubeha run holds the lock on {}:\n{}\nwait for it to finish; if that run is gone, re-run with --force-lock",
        held.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>().join(", "),
        held.iter().map(|(h, by)| format!("  {h}: {by}")).collect::<Vec<_>>().join("\n")
    )]
    HostsLocked { held: Vec<(String, String)> },
    /// An etcd call failed (the error names the host and the operation).
    #[error(transparent)]
    Etcd(Box<crate::host::etcd::EtcdError>),
    /// A membership step on `host` cannot go on, and why.
    #[error("{host}: {step}: {detail}")]
    Membership { host: String, step: String, detail: String },
    /// A membership step on `host` failed; the source says why.
    #[error("{host}: {step}")]
    Step {
        host: String,
        step: String,
        #[source]
        source: Box<ActionError>,
    },
}

impl From<crate::host::etcd::EtcdError> for ActionError {
    fn from(e: crate::host::etcd::EtcdError) -> Self {
        ActionError::Etcd(Box::new(e))
    }
}

impl ActionError {
    /// The transport errors behind this one, to tell a lost connection or a changed host key
    /// from other failures.
    pub fn transport_errors(&self) -> &[TransportError] {
        match self {
            ActionError::Hosts { failures, .. } => failures,
            ActionError::Stopped { source, .. } | ActionError::Step { source, .. } => source.transport_errors(),
            _ => &[],
        }
    }

    /// `step` failed on one host.
    pub fn host(step: &'static str, error: TransportError) -> ActionError {
        ActionError::Hosts { step, failures: vec![error] }
    }
}

fn failed_checks(checks: &[Check]) -> String {
    let failed: Vec<String> =
        checks.iter().filter(|c| c.status == Status::Fail).map(|c| format!("{} {}", c.host, c.check)).collect();
    format!("{} problem(s): {}", failed.len(), failed.join(", "))
}

fn hosts(failures: &[TransportError]) -> String {
    failures.iter().map(|e| e.host().unwrap_or("?")).collect::<Vec<_>>().join(", ")
}

fn lines(failures: &[TransportError]) -> String {
    failures.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
}
