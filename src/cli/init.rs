//! `kubeha init`: preflight, certificates, render, push, and wait until the control plane is up.

use std::time::Duration;

use super::output::println;
use crate::actions::checks;
use crate::actions::init::{InitOptions, init};
use crate::actions::session::{HostLockOptions, SessionOptions};
use crate::actions::wait::WaitOptions;
use crate::transport::Credentials;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: super::ClusterArgs,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
    #[command(flatten)]
    renew: super::certs::RenewBefore,
    /// How long to wait for etcd, the apiservers and the endpoint to become healthy.
    #[arg(long, default_value = "10m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Connect, run preflight and show which files would change; write nothing anywhere.
    #[arg(long)]
    dry_run: bool,
    /// The longest the hosts' kubelets may take to restart a static pod after its manifest
    /// changed (their fileCheckFrequency). Control planes whose pods must restart are rolled one
    /// at a time; kubeha waits until each restarting pod's old process is replaced (at most this
    /// long) before checking that host's health.
    #[arg(long, default_value = "20s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    kubelet_sync: Duration,
    /// Take over the hosts' locks even if another kubeha run holds them. Only when that run is
    /// gone (a stale lock of an ended run on this machine, or one past its time, is taken over
    /// without it).
    #[arg(long)]
    force_lock: bool,
    /// Output format of the result (progress and warnings stay on stderr).
    #[arg(short, long, value_enum, default_value_t = super::Format::Text)]
    output: super::Format,
}

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.cluster.inventory.load()?;
        let state_dir = self.cluster.state_dir(&plan, self.dry_run)?;
        let options = InitOptions {
            session: SessionOptions {
                parallel: self.remote.parallel(),
                dry_run: self.dry_run,
                wait: WaitOptions { timeout: self.timeout, interval: Duration::from_secs(1) },
                kubelet_sync: self.kubelet_sync,
                host_lock: Some(HostLockOptions {
                    command: "kubeha init".into(),
                    ttl: lock_ttl(&plan, self.timeout, self.kubelet_sync),
                    force: self.force_lock,
                }),
            },
            max_clock_skew: self.remote.max_clock_skew,
            renew_before: self.renew.window(&plan),
        };
        let progress = super::progress(&plan);
        let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
        let connector = self.remote.connector(&credentials);
        let result = super::remote::run(init(&plan, &state_dir, &options, &connector, &progress));
        progress.clear();
        let report = result?.map_err(super::remote::refusal)?;
        for warning in &report.warnings {
            eprintln!("warning: {} {}: {}", warning.host, warning.check, warning.detail);
        }
        if !report.expiring.is_empty() {
            let window = crate::plan::format_duration(options.renew_before);
            eprintln!("warning: {} certificate(s) on the hosts end within {window}:", report.expiring.len());
            for row in &report.expiring {
                eprintln!("  {}", row.expiring_line());
            }
            if !self.dry_run {
                eprintln!("  this run renewed the ones kubeha issues (see `kubeha certs check-expiration`)");
            }
        }
        if !matches!(self.output, super::Format::Text) {
            print_objects(&report);
            let json = Summary::new(&plan, &state_dir, self.dry_run, &report);
            return super::print_report(self.output, &json, String::new);
        }
        for (host, pushed) in &report.pushed {
            // Plain logs already have this line; live lines were replaced by later steps.
            if progress.is_live() && !pushed.is_empty() {
                eprintln!("{host}: {}", pushed.summary(self.dry_run));
            }
            if self.dry_run {
                for path in &pushed.removed {
                    println(format_args!("{host}: would remove {}", path.display()))?;
                }
                for path in &pushed.written {
                    println(format_args!("{host}: would write {}", path.display()))?;
                }
            }
        }
        print_objects(&report);
        let phases: Vec<String> =
            report.phases.iter().map(|(name, d)| format!("{name} {:.2}s", d.as_secs_f64())).collect();
        eprintln!("phases: {}", phases.join(", "));
        let timing = format!(
            "kubeha worked {:.2}s, waited {:.2}s for the components",
            report.work.as_secs_f64(),
            report.waited.as_secs_f64()
        );
        if self.dry_run {
            let verdict = if report.changed_hosts() { "files would change" } else { "nothing would change" };
            println(format_args!("dry run: {verdict}; nothing was written"))?;
        } else if report.changed_hosts() || report.certificates_changed > 0 {
            println(format_args!("cluster {} is up: {} ({timing})", plan.name, plan.endpoint_url()))?;
            println(format_args!("admin kubeconfig: {}", state_dir.join("admin.conf").display()))?;
        } else {
            println(format_args!(
                "cluster {} is up and unchanged: every host already had its files ({timing})",
                plan.name
            ))?;
        }
        Ok(())
    }
}

/// One line on the cluster objects, and one per object that was not as kubeha left it.
/// `init`'s result for `-o json|yaml`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Summary<'a> {
    cluster: &'a str,
    endpoint: String,
    dry_run: bool,
    /// Whether any host file was (or would be) written or removed.
    changed: bool,
    hosts: Vec<HostSummary<'a>>,
    certificates_changed: usize,
    objects: &'a [crate::actions::objects::Applied],
    warnings: &'a [checks::Check],
    expiring: &'a [crate::actions::expiry::Row],
    phases: Vec<(&'static str, f64)>,
    work_seconds: f64,
    waited_seconds: f64,
    admin_kubeconfig: std::path::PathBuf,
}

#[derive(serde::Serialize)]
struct HostSummary<'a> {
    name: &'a str,
    #[serde(flatten)]
    pushed: &'a crate::host::files::PushReport,
}

impl<'a> Summary<'a> {
    fn new(
        plan: &'a crate::plan::Plan,
        state_dir: &std::path::Path,
        dry_run: bool,
        report: &'a crate::actions::init::InitReport,
    ) -> Self {
        Summary {
            cluster: &plan.name,
            endpoint: plan.endpoint_url(),
            dry_run,
            changed: report.changed_hosts(),
            hosts: report.pushed.iter().map(|(name, pushed)| HostSummary { name, pushed }).collect(),
            certificates_changed: report.certificates_changed,
            objects: &report.objects,
            warnings: &report.warnings,
            expiring: &report.expiring,
            phases: report.phases.iter().map(|(name, d)| (*name, d.as_secs_f64())).collect(),
            work_seconds: report.work.as_secs_f64(),
            waited_seconds: report.waited.as_secs_f64(),
            admin_kubeconfig: state_dir.join("admin.conf"),
        }
    }
}

fn print_objects(report: &crate::actions::init::InitReport) {
    use crate::actions::objects::Outcome;
    if report.objects.is_empty() {
        if report.object_count > 0 {
            eprintln!("cluster objects: {} to apply once the control plane is up", report.object_count);
        }
        return;
    }
    let count = |o: Outcome| report.objects.iter().filter(|a| a.outcome == o).count();
    eprintln!(
        "cluster objects: {} created, {} updated, {} unchanged",
        count(Outcome::Created),
        count(Outcome::Updated),
        count(Outcome::Unchanged)
    );
    for applied in &report.objects {
        match applied.outcome {
            Outcome::Updated => eprintln!("  {} differed from kubeha's and was converged", applied.object),
            Outcome::NotRegistered => {
                eprintln!("  {} is not registered yet: its labels are applied by the next init", applied.object)
            }
            Outcome::Created | Outcome::Unchanged => {}
        }
    }
}

/// How long an `init` may hold the hosts' locks: its deadline, the longest it can run (every
/// control plane rolled one at a time, each waited for, then the final wait), plus an hour for
/// connecting, preflight and writing.
pub(super) fn lock_ttl(plan: &crate::plan::Plan, timeout: Duration, kubelet_sync: Duration) -> Duration {
    let rolled = plan.control_planes().count() as u32;
    (timeout + kubelet_sync) * (rolled + 1) + Duration::from_secs(3600)
}
