//! `kubeha join-node`: hosts of the inventory join the running cluster.

use super::membership::{ChangeArgs, check_names};
use super::output::println;
use super::remote::{refusal, run};
use crate::actions::join::{JoinOptions, join_node};
use crate::transport::Credentials;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    change: ChangeArgs,
    /// Accept an even number of etcd members at the end (no gain in fault tolerance, a larger
    /// quorum).
    #[arg(long)]
    allow_even_members: bool,
    /// The hosts to join (in the inventory, not yet part of the cluster).
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
}

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.change.cluster.inventory.load()?;
        check_names(&plan, &self.names)?;
        let dry_run = self.change.dry_run;
        let state_dir = self.change.cluster.state_dir(&plan, dry_run)?;
        let options = JoinOptions {
            session: self.change.session(&plan, "kubeha join-node"),
            max_clock_skew: self.change.remote.max_clock_skew,
            allow_even_members: self.allow_even_members,
        };
        let progress = super::progress(&crate::actions::membership::scope(&plan, &self.names));
        let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
        let connector = self.change.remote.connector(&credentials);
        let result = run(join_node(&plan, &self.names, &state_dir, &options, &connector, &progress));
        progress.clear();
        let report = result?.map_err(refusal)?;
        if !matches!(self.change.output, super::Format::Text) {
            let extra = serde_json::json!({
                "joined": report.joined, "already": report.already, "etcd": report.etcd_steps, "warnings": report.warnings,
            });
            let json =
                super::change_report(dry_run, &report.pushed, (report.work, report.waited, &report.phases), extra);
            return super::print_report(self.change.output, &json, String::new);
        }
        for warning in &report.warnings {
            eprintln!("warning: {} {}: {}", warning.host, warning.check, warning.detail);
        }
        for line in &report.etcd_steps {
            println(line)?;
        }
        for (host, pushed) in &report.pushed {
            if dry_run {
                for path in &pushed.removed {
                    println(format_args!("{host}: would remove {}", path.display()))?;
                }
                for path in &pushed.written {
                    println(format_args!("{host}: would write {}", path.display()))?;
                }
            }
        }
        let phases: Vec<String> =
            report.phases.iter().map(|(name, d)| format!("{name} {:.2}s", d.as_secs_f64())).collect();
        eprintln!("phases: {}", phases.join(", "));
        if dry_run {
            println(format_args!("dry run: would join {}; nothing was changed", report.joined.join(", ")))?;
            return Ok(());
        }
        if !report.already.is_empty() {
            println(format_args!("already part of the cluster (converged): {}", report.already.join(", ")))?;
        }
        println(format_args!(
            "joined {} to cluster {} (kubeha worked {:.2}s, waited {:.2}s for catch-up, promotion and the rolling \
             load-balancer update)",
            if report.joined.is_empty() { "nothing new".to_string() } else { report.joined.join(", ") },
            plan.name,
            report.work.as_secs_f64(),
            report.waited.as_secs_f64()
        ))?;
        Ok(())
    }
}
