//! `kubeha status`: the whole cluster on one screen; exit code 5 when anything is degraded, so
//! it can run from cron or a monitoring check. With `--watch`, a new report every `--interval`
//! (the screen redrawn on a terminal, reports one after the other otherwise) until Ctrl-C.
//! Changes nothing anywhere.

use std::io::IsTerminal;
use std::time::Duration;

use crate::actions::progress::Progress;
use crate::actions::session::{Session, SessionOptions};
use crate::actions::status::{self, Limits, Report};
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
    /// Report again every --interval until Ctrl-C.
    #[arg(short, long)]
    watch: bool,
    /// Time between reports with --watch.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Count a certificate that ends sooner than this as a problem.
    #[arg(long, default_value = "7d", value_name = "DURATION", value_parser = humantime::parse_duration)]
    certificate_error: Duration,
}

/// The cluster is degraded; the report was printed.
#[derive(Debug, thiserror::Error)]
#[error("the cluster is degraded: {0}")]
pub struct Degraded(pub String);

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.cluster.inventory.load()?;
        let state_dir = self.cluster.state_dir(&plan, true)?;
        let pki = crate::pki::load(&plan, &state_dir)?;
        // Reading only: a dry-run session, which takes no lock.
        let options = SessionOptions { parallel: self.remote.parallel(), dry_run: true, ..SessionOptions::default() };
        let limits = Limits { clock_skew: self.remote.max_clock_skew, certificate: self.certificate_error };
        // Progress lines would scroll a watched screen away.
        let progress = if self.watch { Progress::hidden() } else { super::progress(&plan) };
        let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
        let connector = self.remote.connector(&credentials);
        let redraw = self.watch && std::io::stdout().is_terminal();
        let once = || async {
            let session = Session::open(&plan, &state_dir, options.clone(), &connector, &progress).await?;
            let report = status::check(&session, &pki, limits).await;
            session.close(&connector).await;
            anyhow::Ok(report?)
        };
        let last = super::remote::runtime()?.block_on(async {
            let mut last: Option<Report> = None;
            // One listener for the whole watch: a Ctrl-C that arrives while a report is printed
            // is kept for the next `recv`, where a new `ctrl_c()` each time would miss it. A
            // single report keeps Ctrl-C's default (the process ends at once).
            let mut interrupt = match self.watch {
                true => Some(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?),
                false => None,
            };
            loop {
                let report = if self.watch {
                    tokio::select! {
                        r = once() => r?,
                        _ = interrupt.as_mut().expect("watching").recv() => return anyhow::Ok(last),
                    }
                } else {
                    once().await?
                };
                progress.clear();
                if redraw {
                    super::output::print("\x1b[H\x1b[2J")?;
                    let at = time::OffsetDateTime::now_utc()
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default();
                    let every = humantime::format_duration(self.interval);
                    super::output::println(format!(
                        "kubeha status {} at {at}, every {every} (Ctrl-C ends)",
                        plan.name
                    ))?;
                }
                self.print(&report)?;
                last = Some(report);
                if !self.watch {
                    return Ok(last);
                }
                tokio::select! {
                    () = tokio::time::sleep(self.interval) => {}
                    _ = interrupt.as_mut().expect("watching").recv() => return Ok(last),
                }
            }
        })?;
        match last {
            // Ctrl-C ended a watch: the reports were the result.
            _ if self.watch => Ok(()),
            Some(report) if !report.summary.healthy => Err(Degraded(degraded(&report)).into()),
            _ => Ok(()),
        }
    }

    fn print(&self, report: &Report) -> anyhow::Result<()> {
        super::print_report(self.output, report, || status::text(report))
    }
}

/// How many problems, and the first of them.
fn degraded(report: &Report) -> String {
    let problems: Vec<String> = report
        .hosts
        .iter()
        .flat_map(|h| h.problems.iter().map(move |p| format!("{}: {p}", h.host)))
        .chain(report.summary.problems.iter().cloned())
        .collect();
    match problems.as_slice() {
        [] => "no problem recorded".into(),
        [one] => one.clone(),
        [first, rest @ ..] => format!("{first} (and {} more)", rest.len()),
    }
}
