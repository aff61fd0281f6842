//! `kubeha completion` and `kubeha man`: shell completions and man pages, both generated from
//! the command-line definition itself, so they always match the binary.

use std::path::PathBuf;

use anyhow::Context;
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

impl CompletionArgs {
    pub fn exec(self) -> anyhow::Result<()> {
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut super::Cli::command(), "kubeha", &mut script);
        super::output::print(&String::from_utf8(script).context("the completion script is not UTF-8")?)?;
        Ok(())
    }
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write kubeha.1 and one page per command (kubeha-init.1, kubeha-certs-renew.1, …) into
    /// this directory instead of printing kubeha.1.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

impl ManArgs {
    pub fn exec(self) -> anyhow::Result<()> {
        let cmd = super::Cli::command();
        match self.out {
            None => {
                let mut page = Vec::new();
                clap_mangen::Man::new(cmd).render(&mut page)?;
                super::output::print(&String::from_utf8(page).context("the man page is not UTF-8")?)?;
            }
            Some(dir) => {
                std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
                clap_mangen::generate_to(cmd, &dir)
                    .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
                eprintln!("man pages written to {}", dir.display());
            }
        }
        Ok(())
    }
}
