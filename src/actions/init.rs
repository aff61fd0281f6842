//! `init`: bare hosts to a running HA control plane, or a running one converged.
//!
//! A short sequence of the shared steps: open a session (lock, connect) → preflight with
//! [`InitRules`] → certificates → render → [`rollout::converge`] with [`Restart::Changed`] behind
//! the health gates → wait for the whole cluster. Nothing is written to any host before preflight
//! passes; the rollout writes only files that differ, each atomically, so a re-run on a healthy
//! cluster changes nothing and a run cut short converges when repeated.

use std::path::Path;
use std::time::{Duration, Instant};

use super::checks::{Check, Expectations};
use super::error::ActionError;
use super::preflight::{self, InitRules, VipProbe};
use super::progress::Progress;
use super::rollout::{self, Restart};
use super::session::{Connector, Session, SessionOptions};
use super::wait::Health;
use crate::host::files::PushReport;
use crate::pki;
use crate::plan::Plan;
use crate::transport::Remote;

/// Everything `init` can be told.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub session: SessionOptions,
    pub max_clock_skew: Duration,
}

/// What `init` did.
#[derive(Debug, Default)]
pub struct InitReport {
    /// Per host, in inventory order.
    pub pushed: Vec<(String, PushReport)>,
    /// Preflight warnings.
    pub warnings: Vec<Check>,
    /// Certificates and kubeconfigs created or renewed in the state directory.
    pub certificates_changed: usize,
    /// Time spent on kubeha's own work, and waiting for the components to come up.
    pub work: Duration,
    pub waited: Duration,
    /// How long each phase took, in order.
    pub phases: Vec<(&'static str, Duration)>,
}

impl InitReport {
    /// Whether any host file was (or, in a dry run, would be) written or removed.
    pub fn changed_hosts(&self) -> bool {
        self.pushed.iter().any(|(_, r)| !r.is_empty())
    }
}

/// Runs every phase of `init` on the hosts `connector` reaches.
pub async fn init<C: Connector>(
    plan: &Plan,
    state_dir: &Path,
    options: &InitOptions,
    connector: &C,
    progress: &Progress,
) -> Result<InitReport, ActionError> {
    let started = Instant::now();
    // The VIP probe may wait its whole timeout: it runs while kubeha connects and checks.
    let vip = preflight::start_vip_probe(plan);
    let mut session = Session::open(plan, state_dir, options.session.clone(), connector, progress).await?;
    let result = phases(&mut session, options, vip, started).await;
    session.close(connector).await;
    result
}

async fn phases<R: Remote>(
    session: &mut Session<'_, R>,
    options: &InitOptions,
    vip: VipProbe,
    started: Instant,
) -> Result<InitReport, ActionError> {
    let plan = session.plan;
    let expect = Expectations {
        max_clock_skew: options.max_clock_skew,
        cluster_id: pki::existing_cluster_id(session.state_dir())?,
    };
    let found = preflight::run(session, vip, &expect, &InitRules).await.passed()?;
    session.lap("preflight");

    session.use_scratch_state()?;
    let generated = pki::generate(plan, session.state_dir())?;
    let pki = pki::load(plan, session.state_dir())?;
    session.lap("certificates");
    let files = crate::render::render(plan, &pki)?;
    session.lap("render");

    let health = Health::new(plan, &pki, session.options.wait.interval)?;
    let rollout = rollout::converge(session, &files, &found.previous_files(), &Restart::Changed, &health).await?;
    session.lap("push");
    let mut report = InitReport {
        pushed: rollout.reports,
        warnings: found.warnings(),
        certificates_changed: generated.created.len() + generated.renewed.len(),
        work: started.elapsed() - rollout.waited,
        waited: rollout.waited,
        phases: Vec::new(),
    };
    if !session.options.dry_run {
        let waiting = Instant::now();
        health.cluster(session).await?;
        report.waited += waiting.elapsed();
        session.lap("wait");
    }
    report.phases = session.phases();
    Ok(report)
}
