//! `kubeha certs check-expiration`: every certificate on every host, with its expiry; exit code
//! 4 when one has expired or ends within `--error`, so it can run from cron or a monitoring
//! check. Changes nothing anywhere.

use std::time::Duration;

use crate::actions::expiry::{self, Level, Thresholds};
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
    /// Mark certificates that end sooner than this as warnings.
    #[arg(long, default_value = "30d", value_name = "DURATION", value_parser = humantime::parse_duration)]
    warn: Duration,
    /// Mark certificates that end sooner than this as errors (exit code 4).
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = humantime::parse_duration)]
    error: Duration,
}

/// A certificate has expired or ends within the error threshold; the report was printed.
#[derive(Debug, thiserror::Error)]
#[error("{0} certificate(s) expired or ending within the error threshold")]
pub struct Expiring(pub usize);

/// Some hosts could not be read; the report was printed.
#[derive(Debug, thiserror::Error)]
#[error("{0} host(s) could not be checked")]
pub struct Unchecked(pub usize);

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.cluster.inventory.load()?;
        let state_dir = self.cluster.state_dir(&plan, true)?;
        // Reading only: a dry-run session, which takes no lock.
        let options = SessionOptions { parallel: self.remote.parallel(), dry_run: true, ..SessionOptions::default() };
        let progress = super::progress(&plan);
        let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
        let connector = self.remote.connector(&credentials);
        let thresholds = Thresholds { warn: self.warn, error: self.error };
        let rows = super::remote::runtime()?.block_on(async {
            let session = Session::open(&plan, &state_dir, options, &connector, &progress).await?;
            let rows = expiry::check(&session, thresholds, time::OffsetDateTime::now_utc()).await;
            session.close(&connector).await;
            anyhow::Ok(rows)
        })?;
        progress.clear();
        super::print_report(self.output, &rows, || expiry::table(&rows))?;
        let count = |level| rows.iter().filter(|r| r.level == level).count();
        match (count(Level::Error), count(Level::Unreachable)) {
            (0, 0) => Ok(()),
            (0, n) => Err(Unchecked(n).into()),
            (n, _) => Err(Expiring(n).into()),
        }
    }
}
