//! `kubeha certs renew`: re-issue named certificates (kubeadm's names) and roll them out one
//! control plane at a time, with a backup of every replaced file and an etcd snapshot first.

use std::time::Duration;

use super::output::println;
use crate::actions::error::ActionError;
use crate::actions::renew::{RenewOptions, RenewReport, renew};
use crate::actions::session::SessionOptions;
use crate::actions::wait::WaitOptions;
use crate::transport::Credentials;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: super::ClusterArgs,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
    /// What to renew, by kubeadm's names (apiserver, apiserver-kubelet-client,
    /// apiserver-etcd-client, front-proxy-client, etcd-server, etcd-peer, etcd-healthcheck-client,
    /// admin.conf, super-admin.conf, controller-manager.conf, scheduler.conf, kubelet.conf), or
    /// `all`.
    #[arg(required = true, value_name = "NAME")]
    names: Vec<String>,
    /// Renew the per-host certificates of this host only (repeatable); the certificates every
    /// control plane shares are renewed for all of them.
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Re-issue with new keys instead of the existing ones.
    #[arg(long)]
    new_keys: bool,
    /// Connect, run preflight and list what would be renewed and written; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    rollout: RolloutArgs,
}

/// What `certs renew` and `certs rotate-ca` share: how their roll-outs run and report.
#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    /// Do not take an etcd snapshot into the state directory first.
    #[arg(long)]
    pub no_snapshot: bool,
    /// Take over the hosts' locks even if another kubeha run holds them (only when that run is
    /// known to have ended).
    #[arg(long)]
    pub force_lock: bool,
    /// How long to wait for each control plane's etcd and apiserver to be healthy again.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// The longest the hosts' kubelets may take to restart a static pod after its manifest
    /// changed (their fileCheckFrequency). Control planes whose pods must restart are rolled one
    /// at a time; kubeha waits until each restarting pod's old process is replaced (at most this
    /// long) before checking that host's health.
    #[arg(long, default_value = "20s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub kubelet_sync: Duration,
    /// Output format of the result (progress and warnings stay on stderr).
    #[arg(short, long, value_enum, default_value_t = super::Format::Text)]
    pub output: super::Format,
}

/// A name on the command line that is not one of kubeadm's, or a host not in the inventory.
#[derive(Debug, thiserror::Error)]
pub enum BadTarget {
    #[error("{0:?} is not a certificate certs renew knows; use one of: {1}, or all")]
    Name(String, String),
    #[error("--host {0}: no such host in the inventory")]
    Host(String),
}

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.cluster.inventory.load()?;
        if let Some(h) = self.hosts.iter().find(|h| !plan.hosts.iter().any(|p| &p.name == *h)) {
            return Err(BadTarget::Host(h.clone()).into());
        }
        let targets = crate::pki::renewal_targets(&plan, &self.names, &self.hosts)
            .map_err(|name| BadTarget::Name(name, crate::pki::renewable_names().collect::<Vec<_>>().join(", ")))?;
        let state_dir = self.cluster.state_dir(&plan, self.dry_run)?;
        let options = RenewOptions {
            session: SessionOptions {
                parallel: self.remote.parallel(),
                dry_run: self.dry_run,
                wait: WaitOptions { timeout: self.rollout.timeout, interval: Duration::from_secs(1) },
                kubelet_sync: self.rollout.kubelet_sync,
                host_lock: Some(crate::actions::session::HostLockOptions {
                    command: "kubeha certs renew".into(),
                    ttl: super::init::lock_ttl(&plan, self.rollout.timeout, self.rollout.kubelet_sync),
                    force: self.rollout.force_lock,
                }),
            },
            max_clock_skew: self.remote.max_clock_skew,
            targets,
            new_keys: self.new_keys,
            no_snapshot: self.rollout.no_snapshot,
        };
        let progress = super::progress(&plan);
        let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
        let connector = self.remote.connector(&credentials);
        let result = super::remote::run(renew(&plan, &state_dir, &options, &connector, &progress));
        progress.clear();
        let report = match result? {
            Ok(report) => report,
            Err(e) => {
                if let ActionError::Stopped { .. } = &e {
                    let inventory = self.cluster.inventory.inventory.display();
                    let next = format!(
                        "run `kubeha certs renew -i {inventory} ...` again; it rolls out the certificates already \
                         issued (no new ones) to the hosts that do not have them yet"
                    );
                    eprint!("{}", recovery(&e, "the renewed certificates", &next));
                }
                return Err(super::remote::refusal(e));
            }
        };
        self.print(&report)
    }

    fn print(&self, report: &RenewReport) -> anyhow::Result<()> {
        if !matches!(self.rollout.output, super::Format::Text) {
            let extra = serde_json::json!({
                "renewed": report.renewed, "resumed": report.resumed, "snapshot": report.snapshot, "backup": report.backup,
            });
            let json =
                super::change_report(self.dry_run, &report.pushed, (report.work, report.waited, &report.phases), extra);
            return super::print_report(self.rollout.output, &json, String::new);
        }
        if let Some(started) = &report.resumed {
            eprintln!("continuing the renewal started at {started}: its certificates were already issued");
        }
        let verb = if self.dry_run { "would renew" } else { "renewed" };
        for renewal in &report.renewed {
            println(format_args!("{verb} {} ({})", renewal.path.display(), renewal.reason))?;
        }
        for (host, pushed) in &report.pushed {
            if self.dry_run {
                for path in &pushed.written {
                    println(format_args!("{host}: would write {}", path.display()))?;
                }
            } else if !pushed.is_empty() {
                eprintln!("{host}: {} (replaced files kept in {})", pushed.summary(false), report.backup.display());
            }
        }
        if let Some(snapshot) = &report.snapshot {
            eprintln!("etcd snapshot: {}", snapshot.display());
        }
        let phases: Vec<String> =
            report.phases.iter().map(|(name, d)| format!("{name} {:.2}s", d.as_secs_f64())).collect();
        eprintln!("phases: {}", phases.join(", "));
        let timing = format!(
            "kubeha worked {:.2}s, waited {:.2}s for the components",
            report.work.as_secs_f64(),
            report.waited.as_secs_f64()
        );
        if self.dry_run {
            println(format_args!(
                "dry run: {} certificate file(s) would be renewed; nothing was written",
                report.renewed.len()
            ))?;
        } else if let Some(started) = &report.resumed {
            println(format_args!("rolled out the renewal started at {started} ({timing})"))?;
        } else {
            println(format_args!(
                "renewed {} certificate file(s) and rolled them out ({timing})",
                report.renewed.len()
            ))?;
        }
        Ok(())
    }
}

/// `cp1 has` / `cp1, cp2 have`.
fn hosts(names: &[String], one: &str, many: &str) -> String {
    format!("{} {}", names.join(", "), if names.len() == 1 { one } else { many })
}

/// What to do after a roll-out stopped: which hosts have `what` (e.g. `the renewed
/// certificates`), how to roll a host back, and how to continue (`next`, after "fix <host> and").
pub fn recovery(e: &ActionError, what: &str, next: &str) -> String {
    let ActionError::Stopped { host, written, rolled, untouched, backup, .. } = e else { return String::new() };
    let mut out = format!("the roll-out stopped at {host}:\n");
    if !rolled.is_empty() {
        out += &format!("  {} {what} and came back healthy\n", hosts(rolled, "has", "have"));
    }
    if *written {
        out += &format!("  {host} was written to (some or all of its new files) but did not come back healthy\n");
    } else {
        out += &format!("  {host} was not written (it keeps its files)\n");
    }
    if !untouched.is_empty() {
        out += &format!("  {} not touched (they keep their files)\n", hosts(untouched, "was", "were"));
    }
    if let (true, Some(dir)) = (*written, backup) {
        out += &format!(
            "to roll {host} back: copy the files under {host}:{d} back to their places (cp -a {d}/etc/kubernetes/. /etc/kubernetes/)\n",
            d = dir.display()
        );
    }
    out += &format!("to continue: fix {host} and {next}\n");
    out
}
