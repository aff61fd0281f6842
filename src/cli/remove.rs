//! `kubeha remove-node`: one host leaves the running cluster.

use super::membership::{ChangeArgs, check_names};
use super::output::println;
use super::remote::{refusal, run};
use crate::actions::remove::{RemoveOptions, remove_node};
use crate::transport::Credentials;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    change: ChangeArgs,
    /// Accept an even number of etcd members afterwards (no gain in fault tolerance, a larger
    /// quorum).
    #[arg(long)]
    allow_even_members: bool,
    /// The host to remove (a control plane or a worker of the inventory).
    #[arg(value_name = "NAME")]
    name: String,
}

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.change.cluster.inventory.load()?;
        check_names(&plan, std::slice::from_ref(&self.name))?;
        let dry_run = self.change.dry_run;
        let state_dir = self.change.cluster.state_dir(&plan, dry_run)?;
        let options = RemoveOptions {
            session: self.change.session(&plan, "kubeha remove-node"),
            max_clock_skew: self.change.remote.max_clock_skew,
            allow_even_members: self.allow_even_members,
        };
        let progress = super::progress(&crate::actions::membership::scope(&plan, std::slice::from_ref(&self.name)));
        let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
        let connector = self.change.remote.connector(&credentials);
        let result = run(remove_node(&plan, &self.name, &state_dir, &options, &connector, &progress));
        progress.clear();
        let report = result?.map_err(refusal)?;
        if !matches!(self.change.output, super::Format::Text) {
            let extra = serde_json::json!({"removed": self.name, "steps": report.steps, "warnings": report.warnings});
            let json =
                super::change_report(dry_run, &report.pushed, (report.work, report.waited, &report.phases), extra);
            return super::print_report(self.change.output, &json, String::new);
        }
        for warning in &report.warnings {
            eprintln!("warning: {} {}: {}", warning.host, warning.check, warning.detail);
        }
        let verb = if dry_run { "would" } else { "did" };
        for step in &report.steps {
            println(format_args!("{verb}: {step}"))?;
        }
        for (host, pushed) in &report.pushed {
            if dry_run {
                for path in pushed.removed.iter().chain(&pushed.written) {
                    println(format_args!("{host}: would update {}", path.display()))?;
                }
            }
        }
        if dry_run {
            println("dry run: nothing was changed")?;
            return Ok(());
        }
        println(format_args!(
            "removed {} from cluster {} (kubeha worked {:.2}s, waited {:.2}s); delete it from the inventory, or join it \
             again with `kubeha join-node {}`",
            self.name,
            plan.name,
            report.work.as_secs_f64(),
            report.waited.as_secs_f64(),
            self.name
        ))?;
        Ok(())
    }
}
