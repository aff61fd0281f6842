//! `kubeha etcd snapshot save|restore`: etcd backups on this machine, and disaster recovery
//! from one (see `docs/backup.md`).

use std::path::PathBuf;

use crate::actions::session::{HostLockOptions, Session, SessionOptions};
use crate::actions::{restore, snapshot};
use crate::transport::Credentials;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// etcd snapshots: save one here, or restore the cluster from one.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Stream a snapshot of etcd through SSH to this machine, checked, with a .sha256 file.
    #[command(after_help = "Examples:\n  \
        kubeha etcd snapshot save -i cluster.yaml\n  \
        kubeha etcd snapshot save -i cluster.yaml --out /var/backups/etcd --keep 48")]
    Save(SaveArgs),
    /// Restore every etcd member from a snapshot (stops etcd and the apiservers; needs --yes).
    #[command(after_help = "Examples:\n  \
        kubeha etcd snapshot restore -i cluster.yaml /var/backups/etcd/prod-20261130T120000Z-rev81234.db\n  \
        kubeha etcd snapshot restore -i cluster.yaml /var/backups/etcd/prod-20261130T120000Z-rev81234.db --yes")]
    Restore(RestoreArgs),
}

impl Command {
    pub fn exec(self) -> anyhow::Result<()> {
        match self {
            Command::Snapshot(SnapshotCommand::Save(args)) => args.exec(),
            Command::Snapshot(SnapshotCommand::Restore(args)) => args.exec(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    #[command(flatten)]
    cluster: super::ClusterArgs,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
    /// Directory for the snapshot [default: the state directory's snapshots/].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Keep only the newest N snapshots of this cluster in that directory (older ones and their
    /// .sha256 files are removed after a successful save).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    keep: Option<u32>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = super::Format::Text)]
    output: super::Format,
}

/// What `save` printed.
#[derive(Debug, serde::Serialize)]
struct SaveReport {
    #[serde(flatten)]
    saved: snapshot::Saved,
    pruned: Vec<PathBuf>,
}

impl SaveArgs {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.cluster.inventory.load()?;
        let state_dir = self.cluster.state_dir(&plan, true)?;
        let pki = crate::pki::load(&plan, &state_dir)?;
        let dir = self.out.clone().unwrap_or_else(|| state_dir.join(snapshot::SNAPSHOT_DIR));
        // Only reads the hosts: no lock on them.
        let options = SessionOptions { parallel: self.remote.parallel(), dry_run: true, ..SessionOptions::default() };
        let progress = super::progress(&plan);
        let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
        let connector = self.remote.connector(&credentials);
        let at = snapshot::stamp(time::OffsetDateTime::now_utc());
        let saved = super::remote::runtime()?.block_on(async {
            let session = Session::open(&plan, &state_dir, options, &connector, &progress).await?;
            let saved = snapshot::save(&session, &pki, &dir, &at).await;
            session.close(&connector).await;
            saved
        })?;
        progress.clear();
        let pruned = match self.keep {
            Some(keep) => snapshot::prune(&dir, &plan.name, keep as usize)
                .map_err(|e| anyhow::anyhow!("the snapshot was saved, but pruning {} failed: {e}", dir.display()))?,
            None => Vec::new(),
        };
        let report = SaveReport { saved, pruned };
        super::print_report(self.output, &report, || {
            let s = &report.saved;
            let mut text = format!(
                "saved {} ({} bytes, revision {}, from {})\nsha256 {}\n",
                s.path.display(),
                s.size,
                s.revision,
                s.host,
                s.sha256
            );
            for p in &report.pruned {
                text.push_str(&format!("removed {}\n", p.display()));
            }
            text
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    cluster: super::ClusterArgs,
    #[command(flatten)]
    remote: super::remote::RemoteArgs,
    /// The snapshot file (made by `kubeha etcd snapshot save`; its .sha256 file is checked).
    #[arg(value_name = "SNAPSHOT")]
    snapshot: PathBuf,
    /// Do it. Without --yes, the plan is printed and nothing changes.
    #[arg(long)]
    yes: bool,
    /// How long to wait for etcd and the apiservers to stop and to become healthy again.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
    /// Take over another run's lock on the hosts.
    #[arg(long)]
    force_lock: bool,
}

impl RestoreArgs {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.cluster.inventory.load()?;
        let state_dir = self.cluster.state_dir(&plan, !self.yes)?;
        let pki = crate::pki::load(&plan, &state_dir)?;
        // Checked before anything connects: a damaged snapshot never leaves this machine.
        let checked = restore::check_snapshot(&self.snapshot)?;
        let mut options = SessionOptions {
            parallel: self.remote.parallel(),
            dry_run: !self.yes,
            host_lock: Some(HostLockOptions {
                command: "kubeha etcd snapshot restore".into(),
                ttl: self.timeout * 3 + std::time::Duration::from_secs(3600),
                force: self.force_lock,
            }),
            ..SessionOptions::default()
        };
        options.wait.timeout = self.timeout;
        let progress = super::progress(&plan);
        let credentials = Credentials::from_env().with_terminal_guard(progress.terminal_guard());
        let connector = self.remote.connector(&credentials);
        let at = snapshot::stamp(time::OffsetDateTime::now_utc());
        let plan_text = super::remote::runtime()?.block_on(async {
            let session = Session::open(&plan, &state_dir, options, &connector, &progress).await?;
            let result = restore::run(&session, &pki, &checked, &at).await;
            session.close(&connector).await;
            result
        });
        progress.clear();
        let restore_plan = plan_text?;
        super::output::print(&restore_plan.text())?;
        if !self.yes {
            super::output::println("dry run: nothing was changed; run again with --yes to restore")?;
        } else {
            super::output::println(format!(
                "restored etcd from {} (revision {}); the cluster is healthy",
                self.snapshot.display(),
                checked.revision.map_or_else(|| "?".to_string(), |r| r.to_string())
            ))?;
        }
        Ok(())
    }
}
