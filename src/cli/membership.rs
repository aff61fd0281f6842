//! What `join-node`, `remove-node` and `reset` share on the command line: the options of a
//! command that changes hosts, the hosts it names, and how its refusals and results are printed.

use std::time::Duration;

use crate::actions::session::{HostLockOptions, SessionOptions};
use crate::actions::wait::WaitOptions;
use crate::plan::Plan;

/// A host named on the command line that the inventory does not have.
#[derive(Debug, thiserror::Error)]
#[error("{0}: no such host in the inventory")]
pub struct UnknownHost(pub String);

/// Options of a command that changes a running cluster's hosts.
#[derive(Debug, clap::Args)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub cluster: super::ClusterArgs,
    #[command(flatten)]
    pub remote: super::remote::RemoteArgs,
    /// How long to wait for each step (a learner to catch up, a host to become healthy).
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Connect, check and list what would happen per host; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The longest the hosts' kubelets may take to restart a static pod after its manifest
    /// changed (their fileCheckFrequency). Control planes whose pods must restart are rolled one
    /// at a time; kubeha waits until each restarting pod's old process is replaced (at most this
    /// long) before checking that host's health.
    #[arg(long, default_value = "20s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub kubelet_sync: Duration,
    /// Take over the hosts' locks even if another kubeha run holds them.
    #[arg(long)]
    pub force_lock: bool,
    /// Output format of the result (progress and warnings stay on stderr).
    #[arg(short, long, value_enum, default_value_t = super::Format::Text)]
    pub output: super::Format,
}

impl ChangeArgs {
    /// The session options for `command` (e.g. `kubeha join-node`).
    pub fn session(&self, plan: &Plan, command: &str) -> SessionOptions {
        SessionOptions {
            parallel: self.remote.parallel(),
            dry_run: self.dry_run,
            wait: WaitOptions { timeout: self.timeout, interval: Duration::from_secs(1) },
            kubelet_sync: self.kubelet_sync,
            host_lock: Some(HostLockOptions {
                command: command.into(),
                ttl: super::init::lock_ttl(plan, self.timeout, self.kubelet_sync),
                force: self.force_lock,
            }),
        }
    }
}

/// Every name is a host of `plan`.
pub fn check_names(plan: &Plan, names: &[String]) -> Result<(), UnknownHost> {
    match names.iter().find(|n| plan.host(n).is_none()) {
        Some(n) => Err(UnknownHost(n.clone())),
        None => Ok(()),
    }
}
