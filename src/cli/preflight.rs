//! `kubeha preflight`: checks every host and prints a table (or JSON); exit code 3 when any
//! check fails. Changes nothing anywhere.

use crate::actions::checks::{self, Expectations, Status};
use crate::actions::preflight::{self, InitRules};
use crate::actions::session::{Session, SessionOptions};
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
        let plan = self.cluster.inventory.load()?;
        let state_dir = self.cluster.state_dir(&plan, true)?;
        let expect = Expectations {
            max_clock_skew: self.remote.max_clock_skew,
            cluster_id: crate::pki::existing_cluster_id(&state_dir)?,
            also_cluster_id: crate::pki::rotation::other_cluster_id(&state_dir)?,
        };
        // Preflight writes nothing: a dry-run session, which takes no lock.
        let options = SessionOptions { parallel: self.remote.parallel(), dry_run: true, ..SessionOptions::default() };
        let progress = super::progress(&plan);
        let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
        let connector = self.remote.connector(&credentials);
        let rows = super::remote::runtime()?.block_on(async {
            let vip = preflight::start_vip_probe(&plan);
            let session = Session::open(&plan, &state_dir, options, &connector, &progress).await?;
            let rows = preflight::run(&session, vip, &expect, &InitRules).await.checks;
            session.close(&connector).await;
            anyhow::Ok(rows)
        })?;
        progress.clear();
        super::print_report(self.output, &rows, || checks::table(&rows))?;
        match rows.iter().filter(|c| c.status == Status::Fail).count() {
            0 => Ok(()),
            n => Err(PreflightFailed(n).into()),
        }
    }
}
