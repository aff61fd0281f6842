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
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = super::Format::Text)]
    output: super::Format,
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
    #[command(after_help = "Examples:\n  \
        kubeha certs generate -i cluster.yaml\n  \
        kubeha certs generate -i cluster.yaml --renew-before 60d")]
    Generate(GenerateArgs),
    /// List every certificate on every host (PKI files and kubeconfigs) with its expiry; exit
    /// code 4 when one has expired or ends within --error.
    #[command(after_help = "Examples:\n  \
        kubeha certs check-expiration -i cluster.yaml\n  \
        kubeha certs check-expiration -i cluster.yaml --warn 60d --error 14d -o json")]
    CheckExpiration(super::expiry::Args),
    /// Re-issue certificates and kubeconfigs by kubeadm's names (or all) from the same CAs, and
    /// roll them out one control plane at a time (backup of each replaced file, etcd snapshot
    /// first).
    #[command(after_help = "Examples:\n  \
        kubeha certs renew -i cluster.yaml all\n  \
        kubeha certs renew -i cluster.yaml apiserver --host cp2\n  \
        kubeha certs renew -i cluster.yaml all --new-keys --dry-run")]
    Renew(super::renew::Args),
    /// Replace CAs (kubernetes, etcd, front-proxy or all) in three stages: trust the old and new
    /// CA everywhere, re-issue every certificate and kubeconfig from the new one, trust only the
    /// new one; each rolled out one control plane at a time; re-run to continue a stopped one.
    #[command(after_help = "Examples:\n  \
        kubeha certs rotate-ca -i cluster.yaml --dry-run\n  \
        kubeha certs rotate-ca -i cluster.yaml\n  \
        kubeha certs rotate-ca -i cluster.yaml --ca etcd")]
    RotateCa(super::rotate::Args),
}

impl Command {
    pub fn exec(self) -> anyhow::Result<()> {
        match self {
            Command::Generate(GenerateArgs { cluster: args, renew, output }) => {
                let plan = args.inventory.load()?;
                let dir = args.state_dir(&plan, false)?;
                let _lock = crate::actions::lock::lock(&dir)?;
                let renew = crate::pki::Renew { window: renew.window(&plan), ..Default::default() };
                let report = crate::pki::generate_with(&plan, &dir, &renew)
                    .with_context(|| format!("cannot generate the PKI in {}", dir.display()))?;
                super::print_report(output, &report, || generated(&report))?;
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

/// One line per file `certs generate` created or renewed.
fn generated(report: &crate::pki::GenerateReport) -> String {
    let created = report.created.iter().map(|path| format!("created {}\n", path.display()));
    let renewed = report.renewed.iter().map(|r| format!("renewed {} ({})\n", r.path.display(), r.reason));
    created.chain(renewed).collect()
}
