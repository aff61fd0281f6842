//! `kubeha reset`: everything kubeha wrote leaves the named hosts (or all of them).

use super::membership::{ChangeArgs, check_names};
use super::output::println;
use super::remote::{refusal, run};
use crate::actions::reset::{ResetOptions, reset};
use crate::transport::Credentials;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    change: ChangeArgs,
    /// Every host of the inventory.
    #[arg(long, conflicts_with = "names")]
    all: bool,
    /// Remove the files; without it, only list what would be removed.
    #[arg(long)]
    yes: bool,
    /// Also empty the etcd data directory (/var/lib/etcd): the cluster's data is gone for good.
    #[arg(long)]
    delete_etcd_data: bool,
    /// The hosts to reset.
    #[arg(value_name = "NAME", required_unless_present = "all")]
    names: Vec<String>,
}

impl Args {
    pub fn exec(mut self) -> anyhow::Result<()> {
        let plan = self.change.cluster.inventory.load()?;
        let names: Vec<String> =
            if self.all { plan.hosts.iter().map(|h| h.name.clone()).collect() } else { self.names.clone() };
        check_names(&plan, &names)?;
        self.change.dry_run |= !self.yes;
        let dry_run = self.change.dry_run;
        let state_dir = self.change.cluster.state_dir(&plan, dry_run)?;
        let options = ResetOptions {
            session: self.change.session(&plan, "kubeha reset"),
            delete_etcd_data: self.delete_etcd_data,
        };
        let progress = super::progress(&plan);
        let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
        let connector = self.change.remote.connector(&credentials);
        let result = run(reset(&plan, &names, &state_dir, &options, &connector, &progress));
        progress.clear();
        let report = result?.map_err(refusal)?;
        if !matches!(self.change.output, super::Format::Text) {
            let hosts: Vec<serde_json::Value> =
                report.hosts.iter().map(|(name, paths)| serde_json::json!({"name": name, "removed": paths})).collect();
            let json = serde_json::json!({"dryRun": dry_run, "hosts": hosts, "untouched": report.untouched});
            return super::print_report(self.change.output, &json, String::new);
        }
        let verb = if dry_run { "would remove" } else { "removed" };
        for (host, paths) in &report.hosts {
            for path in paths {
                println(format_args!("{host}: {verb} {path}"))?;
            }
        }
        for host in &report.untouched {
            println(format_args!("{host}: nothing of kubeha's"))?;
        }
        if dry_run {
            println("nothing was removed: re-run with --yes to remove these")?;
        } else {
            println(format_args!("reset {} host(s)", report.hosts.len()))?;
        }
        Ok(())
    }
}
