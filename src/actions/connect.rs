//! Opening one SSH connection per host, all at once within the parallelism bound.

use std::time::Duration;

use super::fanout;
use super::progress::Progress;
use crate::plan::{Host, Plan};
use crate::transport::{Credentials, SshHost, SshOptions, TransportError};

/// How kubeha reaches hosts in one run.
#[derive(Debug, Clone)]
pub struct Reach {
    pub ssh: SshOptions,
    /// Hosts worked on at once.
    pub parallel: usize,
}

impl Default for Reach {
    fn default() -> Self {
        Reach { ssh: SshOptions::default(), parallel: 20 }
    }
}

/// The outcome of connecting to every host, in inventory order.
pub struct Connections<'p> {
    pub results: Vec<(&'p Host, Result<SshHost, TransportError>)>,
}

impl<'p> Connections<'p> {
    /// Connected hosts only.
    pub fn connected(&self) -> impl Iterator<Item = (&'p Host, &SshHost)> {
        self.results.iter().filter_map(|(h, r)| r.as_ref().ok().map(|s| (*h, s)))
    }

    /// Closes every connection politely.
    pub async fn close(self) {
        for (_, r) in self.results {
            if let Ok(ssh) = r {
                ssh.close().await;
            }
        }
    }
}

/// Connects to every host of `plan`; a failed host does not stop the others.
pub async fn connect_all<'p>(
    plan: &'p Plan,
    reach: &Reach,
    credentials: &Credentials,
    progress: &Progress,
) -> Connections<'p> {
    let results = fanout::each(&plan.hosts, reach.parallel, |host| async move {
        progress.step(&host.name, format!("connecting to {}@{}", host.ssh.user, host.address));
        let result = SshHost::connect(host, &reach.ssh, credentials).await;
        if let Err(e) = &result {
            progress.finish(&host.name, format!("cannot connect: {e}"));
        }
        result
    })
    .await;
    Connections { results }
}

/// Command-line friendly defaults for SSH timeouts.
pub fn ssh_options(connect_timeout: Duration, command_timeout: Duration, accept_new_host_keys: bool) -> SshOptions {
    SshOptions { connect_timeout, command_timeout, accept_new_host_keys, ..SshOptions::default() }
}
