//! `kubeha certs`: the cluster PKI in the state directory.

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create every missing certificate, key and kubeconfig; keep valid existing ones.
    Generate(super::ClusterArgs),
}

impl Command {
    pub fn exec(self) -> anyhow::Result<()> {
        match self {
            Command::Generate(args) => {
                let plan = crate::inventory::load(&args.inventory)?;
                let dir = args.state_dir(&plan);
                let report = crate::pki::generate(&plan, &dir)?;
                eprintln!("{} created, {} kept in {}", report.created.len(), report.kept.len(), dir.display());
                Ok(())
            }
        }
    }
}
