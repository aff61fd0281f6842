//! `kubeha preflight`: checks every host and prints a table (or JSON); exit code 3 when any
//! check fails. Changes nothing anywhere.

use crate::actions::checks::{self, Expectations, Status};
use crate::actions::connect::connect_all;
use crate::actions::preflight;
use crate::actions::progress::Progress;
use crate::transport::Credentials;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: super::ClusterArgs,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = super::Format::Text)]
    output: super::Format,
}

/// At least one check failed; the report was printed.
#[derive(Debug, thiserror::Error)]
#[error("preflight found {0} problem(s)")]
pub struct PreflightFailed(pub usize);

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = crate::inventory::load(&self.cluster.inventory)?;
        let state_dir = self.cluster.state_dir(&plan);
        let expect = Expectations {
            max_clock_skew: self.remote.max_clock_skew,
            cluster_id: crate::pki::existing_cluster_id(&state_dir)?,
        };
        let reach = self.remote.reach();
        let progress = Progress::new(plan.hosts.iter().map(|h| h.name.as_str()));
        let rows = super::remote::runtime()?.block_on(async {
            let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
            let vip = preflight::start_vip_probe(&plan);
            let connections = connect_all(&plan, &reach, &credentials, &progress).await;
            let rows = preflight::run(&plan, &connections, vip, &expect, reach.parallel, &progress).await.checks;
            connections.close().await;
            rows
        });
        progress.clear();
        match self.output {
            super::Format::Text => print!("{}", checks::table(&rows)),
            super::Format::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        }
        match rows.iter().filter(|c| c.status == Status::Fail).count() {
            0 => Ok(()),
            n => Err(PreflightFailed(n).into()),
        }
    }
}
