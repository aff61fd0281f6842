//! Options shared by the commands that work on hosts over SSH.

use std::time::Duration;

use crate::actions::session::SshConnector;
use crate::transport::{Credentials, SshOptions};

#[derive(Debug, clap::Args)]
pub struct RemoteArgs {
    /// Hosts worked on at once.
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    parallel: u16,
    /// Record the host key of a host not yet in its knownHostsFile (like ssh's
    /// StrictHostKeyChecking=accept-new). A changed host key is always refused.
    #[arg(long)]
    accept_new_host_keys: bool,
    /// Limit for the TCP connection, SSH handshake and each authentication step.
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Limit for each remote command.
    #[arg(long, default_value = "2m", value_name = "DURATION", value_parser = humantime::parse_duration)]
    command_timeout: Duration,
    /// Fail preflight when a host's clock differs from this machine's by more than this.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_clock_skew: Duration,
}

impl RemoteArgs {
    /// Hosts worked on at once.
    pub fn parallel(&self) -> usize {
        usize::from(self.parallel)
    }

    /// SSH connections with these options.
    pub fn connector<'c>(&self, credentials: &'c Credentials) -> SshConnector<'c> {
        let ssh = SshOptions {
            connect_timeout: self.connect_timeout,
            command_timeout: self.command_timeout,
            accept_new_host_keys: self.accept_new_host_keys,
            ..SshOptions::default()
        };
        SshConnector { ssh, credentials }
    }
}

/// A multi-threaded runtime for the commands that talk to hosts.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

/// Runs `future` on a runtime. Ctrl-C drops the run: its SSH channels close, every file written
/// so far is complete, a write in flight removes its temporary file, and the state-directory
/// lock goes.
pub fn run<T>(future: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    runtime()?.block_on(async {
        tokio::select! {
            result = future => Ok(result),
            _ = tokio::signal::ctrl_c() => Err(super::Interrupted.into()),
        }
    })
}

/// Prints the rows that are not OK of a preflight refusal before returning it.
pub fn refusal(e: crate::actions::error::ActionError) -> anyhow::Error {
    use crate::actions::checks;
    if let crate::actions::error::ActionError::Preflight { checks } = &e {
        let failed: Vec<_> = checks.iter().filter(|c| c.status != checks::Status::Ok).cloned().collect();
        eprint!("{}", checks::table(&failed));
    }
    e.into()
}
