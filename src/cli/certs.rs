//! `kubeha certs`: the cluster PKI in the state directory.
//!
//! `generate` prints one line per file it created or renewed on stdout (the result) and a
//! one-line summary on stderr.

use anyhow::Context;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create every missing certificate, key and kubeconfig; keep valid existing ones, and
    /// re-issue (with the same key) leaf certificates that no longer fit the inventory.
    Generate(super::ClusterArgs),
    /// List every certificate on every host (PKI files and kubeconfigs) with its expiry; exit
    /// code 4 when one has expired or ends within --error.
    CheckExpiration(super::expiry::Args),
}

impl Command {
    pub fn exec(self) -> anyhow::Result<()> {
        match self {
            Command::Generate(args) => {
                let plan = args.inventory.load()?;
                let dir = args.state_dir(&plan, false)?;
                let _lock = crate::actions::lock::lock(&dir)?;
                let report = crate::pki::generate(&plan, &dir)
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
        }
    }
}
