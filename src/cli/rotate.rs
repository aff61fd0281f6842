//! `kubeha certs rotate-ca`: replace the cluster's CAs in three stages (trust both, re-issue
//! from the new CA, trust only the new one), each rolled out one control plane at a time with
//! an etcd snapshot first and a backup of every replaced file; resumable at the recorded stage.

use std::time::Duration;

use super::output::println;
use crate::actions::error::ActionError;
use crate::actions::rotate::{RotateOptions, RotateReport, rotate};
use crate::actions::session::SessionOptions;
use crate::actions::wait::WaitOptions;
use crate::pki::rotation::{self, Ca, Stage};
use crate::transport::Credentials;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: super::ClusterArgs,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
    /// The CA to rotate: kubernetes, etcd, front-proxy or all (repeatable) [default: all, or
    /// the CAs of the rotation in progress].
    #[arg(long = "ca", value_name = "CA")]
    cas: Vec<String>,
    /// Connect, run preflight and list the stages with what each host would get; change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    rollout: super::renew::RolloutArgs,
}

/// A `--ca` that is not one of the cluster's CAs.
#[derive(Debug, thiserror::Error)]
#[error("--ca {0:?}: not a CA certs rotate-ca knows; use kubernetes, etcd, front-proxy or all")]
pub struct BadCa(String);

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.cluster.inventory.load()?;
        let cas = match self.cas.is_empty() {
            true => None,
            false => Some(Ca::parse_list(&self.cas).map_err(BadCa)?),
        };
        let state_dir = self.cluster.state_dir(&plan, self.dry_run)?;
        let options = RotateOptions {
            session: SessionOptions {
                parallel: self.remote.parallel(),
                dry_run: self.dry_run,
                wait: WaitOptions { timeout: self.rollout.timeout, interval: Duration::from_secs(1) },
                kubelet_sync: self.rollout.kubelet_sync,
                host_lock: Some(crate::actions::session::HostLockOptions {
                    command: "kubeha certs rotate-ca".into(),
                    // Three roll-outs, each as long as one of init's at most.
                    ttl: super::init::lock_ttl(&plan, self.rollout.timeout, self.rollout.kubelet_sync) * 3,
                    force: self.rollout.force_lock,
                }),
            },
            max_clock_skew: self.remote.max_clock_skew,
            cas,
            no_snapshot: self.rollout.no_snapshot,
        };
        let progress = super::progress(&plan);
        let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
        let connector = self.remote.connector(&credentials);
        let result = super::remote::run(rotate(&plan, &state_dir, &options, &connector, &progress));
        progress.clear();
        let report = match result? {
            Ok(report) => report,
            Err(e) => {
                if let ActionError::Stopped { .. } = &e {
                    let stage = rotation::pending(&state_dir).ok().flatten().map(|r| r.stage);
                    let what = stage.map_or("this stage's files".to_string(), |s| format!("stage {s}'s files"));
                    let next = format!(
                        "run `kubeha certs rotate-ca -i {}` again; it continues the rotation at the recorded stage \
                         ({}), and hosts that already have it are not restarted again",
                        self.cluster.inventory.inventory.display(),
                        stage.map_or("?", Stage::name)
                    );
                    eprint!("{}", super::renew::recovery(&e, &what, &next));
                }
                return Err(super::remote::refusal(e));
            }
        };
        self.print(&report)
    }

    fn print(&self, report: &RotateReport) -> anyhow::Result<()> {
        if !matches!(self.rollout.output, super::Format::Text) {
            let stages: Vec<serde_json::Value> = report
                .stages
                .iter()
                .map(|s| {
                    let extra =
                        serde_json::json!({"stage": s.stage.to_string(), "renewed": s.renewed, "backup": s.backup});
                    super::change_report(self.dry_run, &s.pushed, (Default::default(), Default::default(), &[]), extra)
                })
                .collect();
            let json = serde_json::json!({
                "dryRun": self.dry_run,
                "cas": rotation::names(&report.cas),
                "started": report.started,
                "resumed": report.resumed.map(|s| s.to_string()),
                "stages": stages,
                "archived": report.archived,
                "snapshot": report.snapshot,
                "workSeconds": report.work.as_secs_f64(),
                "waitedSeconds": report.waited.as_secs_f64(),
            });
            return super::print_report(self.rollout.output, &json, String::new);
        }
        if let Some(stage) = report.resumed {
            eprintln!(
                "continuing the rotation of {} started at {}, at stage {stage}",
                rotation::names(&report.cas),
                report.started
            );
        }
        for stage in &report.stages {
            if self.dry_run {
                println(format_args!("stage {}: {}", stage.stage, stage.stage.describe()))?;
                for renewal in &stage.renewed {
                    println(format_args!("  would rewrite {} ({})", renewal.path.display(), renewal.reason))?;
                }
                for (host, pushed) in &stage.pushed {
                    for path in &pushed.written {
                        println(format_args!("  {host}: would write {}", path.display()))?;
                    }
                }
            } else {
                eprintln!("stage {}: {} file(s) rewritten in the state directory", stage.stage, stage.renewed.len());
                for (host, pushed) in stage.pushed.iter().filter(|(_, p)| !p.is_empty()) {
                    eprintln!(
                        "  {host}: {} (replaced files kept in {})",
                        pushed.summary(false),
                        stage.backup.display()
                    );
                }
            }
        }
        if let Some(snapshot) = &report.snapshot {
            eprintln!("etcd snapshot: {}", snapshot.display());
        }
        let phases: Vec<String> =
            report.phases.iter().map(|(name, d)| format!("{name} {:.2}s", d.as_secs_f64())).collect();
        eprintln!("phases: {}", phases.join(", "));
        if self.dry_run {
            println(format_args!(
                "dry run: {} stage(s) of the rotation of {} would be rolled out; nothing was written",
                report.stages.len(),
                rotation::names(&report.cas)
            ))?;
            return Ok(());
        }
        if let Some(archive) = &report.archived {
            eprintln!(
                "the old CAs (certificates and keys) are kept in {}; remove it once no host needs rolling back",
                archive.display()
            );
        }
        println(format_args!(
            "rotated {} (kubeha worked {:.2}s, waited {:.2}s for the components)",
            rotation::names(&report.cas),
            report.work.as_secs_f64(),
            report.waited.as_secs_f64()
        ))?;
        Ok(())
    }
}
