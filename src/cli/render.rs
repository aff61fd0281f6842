//! `kubeha render`: every file each host receives, written under DIR/<host>/<absolute path>.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: super::ClusterArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        anyhow::bail!("render: not implemented yet ({})", self.out.display())
    }
}
