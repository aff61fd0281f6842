//! `kubeha certs`: the cluster PKI in the state directory.
//!
//! `generate` prints one line per file it created or renewed on stdout (the result) and a
//! one-line summary on stderr.

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    cluster: super::ClusterArgs,
    #[command(flatten)]
    renew: RenewBefore,
}

/// `--renew-before`, shared by `certs generate` and `init`.
#[derive(Debug, clap::Args)]
pub struct RenewBefore {
    /// Renew leaf certificates and kubeconfig client certificates that end within this window
    /// [default: the inventory's spec.certificates.renewBefore, else 30d].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    renew_before: Option<std::time::Duration>,
}

impl RenewBefore {
    /// The renewal window for `plan`.
    pub fn window(&self, plan: &crate::plan::Plan) -> std::time::Duration {
        self.renew_before.unwrap_or(plan.certificates.renew_before)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create every missing certificate, key and kubeconfig; keep valid existing ones, and
    /// re-issue (with the same key) leaf certificates that no longer fit the inventory or end
    /// within --renew-before.
    Generate(GenerateArgs),
    /// List every certificate on every host (PKI files and kubeconfigs) with its expiry; exit
    /// code 4 when one has expired or ends within --error.
    CheckExpiration(super::expiry::Args),
    /// Re-issue certificates and kubeconfigs by kubeadm's names (or all) from the same CAs, and
    /// roll them out one control plane at a time (backup of each replaced file, etcd snapshot
    /// first).
    Renew(super::renew::Args),
    /// Replace CAs (kubernetes, etcd, front-proxy or all) in three stages: trust the old and new
    /// CA everywhere, re-issue every certificate and kubeconfig from the new one, trust only the
    /// new one; each rolled out one control plane at a time; re-run to continue a stopped one.
    RotateCa(super::rotate::Args),
}

impl Command {
    pub fn exec(self) -> anyhow::Result<()> {
        match self {
            Command::Generate(GenerateArgs { cluster: args, renew }) => {
                let plan = args.inventory.load()?;
                let dir = args.state_dir(&plan, false)?;
                let _lock = crate::actions::lock::lock(&dir)?;
                let renew = crate::pki::Renew { window: renew.window(&plan), ..Default::default() };
                let report = crate::pki::generate_with(&plan, &dir, &renew)
                    .with_context(|| format!("cannot generate the PKI in {}", dir.display()))?;
                for path in &report.created {
                    super::output::println(format_args!("created {}", path.display()))?;
                }
                for renewal in &report.renewed {
                    super::output::println(format_args!("renewed {} ({})", renewal.path.display(), renewal.reason))?;
                }
                eprintln!(
                    "{} created, {} renewed, {} kept in {}",
                    report.created.len(),
                    report.renewed.len(),
                    report.kept.len(),
                    dir.display()
                );
                Ok(())
            }
            Command::CheckExpiration(args) => args.exec(),
            Command::Renew(args) => args.exec(),
            Command::RotateCa(args) => args.exec(),
        }
    }
}
