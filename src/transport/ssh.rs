//! The SSH implementation of [`Remote`]: one russh connection per host, many channels on it.
//!
//! russh has no connect timeout, so TCP connect and handshake run under `tokio::time::timeout`.
//! Commands are sent as `[sudo -n --] timeout -k 5 LIMIT sh -c '<decode base64 and eval>' LABEL`
//! (see [`shell::wrap`]): the login shell (sh, bash, fish, tcsh…) does not matter, sudo never waits for a password, and the
//! host itself ends a command that outlives its limit; the client gives up a little later in
//! case the host stopped answering, and keepalives notice a dead peer on an idle connection. At
//! most [`SshOptions::max_sessions`] session channels are open at once: OpenSSH refuses more than
//! `MaxSessions` (10 by default) per connection.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, DisconnectReason, Handle, Handler};
use russh::keys::PublicKeyOrCertificate;
use russh::{ChannelMsg, ChannelOpenFailure, ChannelReadHalf, Disconnect, Sig};
use tokio::sync::Semaphore;

use super::auth::{AuthTarget, Credentials};
use super::error::{PresentedKey, stderr_text};
use super::known_hosts::{self, KnownHosts, Verdict};
use super::{Output, Remote, TransportError, Tunnel, shell};
use crate::plan;

/// How much longer than the remote `timeout` the client waits before giving up on its own.
const REMOTE_TIMEOUT_GRACE: Duration = Duration::from_secs(3);

/// Connection settings shared by all hosts of a run.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// TCP connect, SSH handshake and each authentication round trip.
    pub connect_timeout: Duration,
    /// Default limit for one remote command (see [`SshHost::exec_with_timeout`]).
    pub command_timeout: Duration,
    /// Send a keepalive after this long without traffic from the server...
    pub keepalive_interval: Duration,
    /// ...and give the connection up after this many unanswered keepalives.
    pub keepalive_max: usize,
    /// Record the key of a host that is not in known_hosts yet (like `ssh -o
    /// StrictHostKeyChecking=accept-new`); a changed key is refused regardless.
    pub accept_new_host_keys: bool,
    /// Session channels (commands) open at once on one connection.
    pub max_sessions: usize,
}

impl Default for SshOptions {
    fn default() -> Self {
        SshOptions {
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(120),
            keepalive_interval: Duration::from_secs(15),
            keepalive_max: 3,
            accept_new_host_keys: false,
            max_sessions: 8,
        }
    }
}

/// A connected, authenticated host.
pub struct SshHost {
    name: String,
    address: SocketAddr,
    user: String,
    sudo: bool,
    options: SshOptions,
    handle: Handle<Client>,
    sessions: Semaphore,
    shared: Arc<Shared>,
    authenticated_with: String,
}

impl std::fmt::Debug for SshHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshHost")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("user", &self.user)
            .field("sudo", &self.sudo)
            .field("authenticated_with", &self.authenticated_with)
            .finish_non_exhaustive()
    }
}

/// What the connection's background task learned, for error messages.
#[derive(Default)]
struct Shared {
    disconnect_reason: Mutex<Option<String>>,
}

impl Shared {
    fn reason(&self) -> Option<String> {
        self.disconnect_reason.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// russh's callbacks: host key verification and disconnect bookkeeping.
struct Client {
    host: String,
    address: String,
    known_hosts_name: String,
    known_hosts: KnownHosts,
    accept_new: bool,
    shared: Arc<Shared>,
}

#[derive(Debug)]
enum ClientError {
    Ssh(russh::Error),
    HostKey(Box<TransportError>),
}

impl From<russh::Error> for ClientError {
    fn from(e: russh::Error) -> Self {
        ClientError::Ssh(e)
    }
}

impl Client {
    fn verify(&self, key: &russh::keys::PublicKey) -> Result<(), TransportError> {
        let file = self.known_hosts.file().to_path_buf();
        let presented = || {
            Box::new(PresentedKey {
                address: self.address.clone(),
                known_hosts_name: self.known_hosts_name.clone(),
                algorithm: key.algorithm().to_string(),
                fingerprint: known_hosts::fingerprint(key),
                file: file.clone(),
            })
        };
        let host = self.host.clone();
        match self.known_hosts.check(&self.known_hosts_name, key) {
            Verdict::Known => Ok(()),
            Verdict::Unknown if self.accept_new => {
                known_hosts::append(&file, &self.known_hosts_name, key)?;
                let fingerprint = known_hosts::fingerprint(key);
                // The operator accepted unknown keys: say which, so they can be checked later.
                tracing::warn!(
                    "{}: accepted the new host key {fingerprint} of {} and recorded it in {}",
                    self.host,
                    self.known_hosts_name,
                    file.display()
                );
                Ok(())
            }
            Verdict::Unknown => Err(TransportError::UnknownHostKey { host, key: presented() }),
            Verdict::Changed { lines } => Err(TransportError::HostKeyChanged { host, key: presented(), lines }),
            Verdict::Revoked { line } => Err(TransportError::HostKeyRevoked { host, key: presented(), line }),
        }
    }
}

impl Handler for Client {
    type Error = ClientError;

    async fn check_server_key(&mut self, server_key: &PublicKeyOrCertificate) -> Result<bool, ClientError> {
        match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.verify(key).map_err(|e| ClientError::HostKey(Box::new(e)))?;
                Ok(true)
            }
            PublicKeyOrCertificate::Certificate(_) => {
                Err(ClientError::HostKey(Box::new(TransportError::HostCertificate {
                    host: self.host.clone(),
                    address: self.address.clone(),
                })))
            }
        }
    }

    async fn disconnected(&mut self, reason: DisconnectReason<ClientError>) -> Result<(), ClientError> {
        let text = match &reason {
            DisconnectReason::ReceivedDisconnect(info) => format!("server closed the connection: {}", info.message),
            DisconnectReason::Error(ClientError::Ssh(e)) => e.to_string(),
            DisconnectReason::Error(ClientError::HostKey(e)) => e.to_string(),
        };
        *self.shared.disconnect_reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(text);
        match reason {
            DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            DisconnectReason::Error(e) => Err(e),
        }
    }
}

impl SshHost {
    /// Connects to `host` (address, port, user from its `ssh` settings), verifies its host key
    /// against `ssh.known_hosts_file`, authenticates (ssh-agent, then `ssh.identity_file`) and,
    /// for `sudo: true`, checks that `sudo -n` works.
    pub async fn connect(
        host: &plan::Host,
        options: &SshOptions,
        credentials: &Credentials,
    ) -> Result<SshHost, TransportError> {
        let ssh = &host.ssh;
        let socket = SocketAddr::new(host.address, ssh.port);
        let address = plan::join_host_port(host.address, ssh.port);
        let known_hosts_name = known_hosts::host_name(host.address, ssh.port);
        let known = KnownHosts::load(&ssh.known_hosts_file)?;

        let mut preferred = russh::Preferred::default();
        preferred.key = Cow::Owned(known.preferred_algorithms(&known_hosts_name, &preferred.key));
        let config = Arc::new(client::Config {
            preferred,
            keepalive_interval: Some(options.keepalive_interval),
            keepalive_max: options.keepalive_max,
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        });

        let limit = options.connect_timeout;
        let timeout = |what: String| TransportError::Timeout { host: host.name.clone(), what, after: limit };
        let tcp = tokio::time::timeout(limit, tokio::net::TcpStream::connect(socket))
            .await
            .map_err(|_| timeout(format!("connecting to {address}")))?
            .map_err(|source| TransportError::Connect { host: host.name.clone(), address: address.clone(), source })?;
        // Without it, small request/response round trips wait on delayed ACKs.
        let _ = tcp.set_nodelay(true);

        let shared = Arc::new(Shared::default());
        let handler = Client {
            host: host.name.clone(),
            address: address.clone(),
            known_hosts_name,
            known_hosts: known,
            accept_new: options.accept_new_host_keys,
            shared: shared.clone(),
        };
        let mut handle = tokio::time::timeout(limit, client::connect_stream(config, tcp, handler))
            .await
            .map_err(|_| timeout(format!("SSH handshake with {address}")))?
            .map_err(|e| match e {
                ClientError::HostKey(e) => *e,
                ClientError::Ssh(source) => TransportError::Handshake {
                    host: host.name.clone(),
                    address: address.clone(),
                    source: Box::new(source),
                },
            })?;

        let target = AuthTarget {
            host: &host.name,
            address: &address,
            user: &ssh.user,
            identity_file: &ssh.identity_file,
            timeout: limit,
        };
        let authenticated_with = credentials.authenticate(&mut handle, &target).await?;
        tracing::debug!(host = %host.name, user = %ssh.user, key = %authenticated_with, "SSH authenticated");

        let connected = SshHost {
            name: host.name.clone(),
            address: socket,
            user: ssh.user.clone(),
            sudo: ssh.sudo,
            options: options.clone(),
            handle,
            sessions: Semaphore::new(options.max_sessions.max(1)),
            shared,
            authenticated_with,
        };
        if connected.sudo {
            connected.check_sudo().await?;
        }
        Ok(connected)
    }

    /// The address connected to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The login user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Which key authenticated the connection (agent key or identity file, with fingerprint).
    pub fn authenticated_with(&self) -> &str {
        &self.authenticated_with
    }

    /// Whether the connection has ended (the server went away or keepalives went unanswered).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// [`Remote::exec`] with its own time limit instead of [`SshOptions::command_timeout`].
    ///
    /// The limit is enforced on the host (coreutils `timeout` ends the command's process group)
    /// and, a few seconds later, here (for a host that stopped answering); either way the result
    /// is [`TransportError::Timeout`] and the connection stays usable.
    pub async fn exec_with_timeout(
        &self,
        command: &str,
        stdin: &[u8],
        limit: Duration,
    ) -> Result<Output, TransportError> {
        let step = shell::step_label(command);
        let line = shell::wrap(command, self.sudo, Some(limit));
        let started = tokio::time::Instant::now();
        let out = self.channel_exec(&step, &line, stdin, limit + REMOTE_TIMEOUT_GRACE).await.map_err(|e| match e {
            TransportError::Timeout { host, what, .. } => TransportError::Timeout { host, what, after: limit },
            other => other,
        })?;
        if self.sudo && sudo_wants_password(&out) {
            return Err(TransportError::SudoPasswordRequired { host: self.name.clone(), user: self.user.clone() });
        }
        // 124: `timeout` ended it; 137: it ignored SIGTERM and got SIGKILL. A command may exit
        // with those itself, so only a run that lasted the whole limit counts.
        if matches!(out.status, shell::TIMEOUT_STATUS | 137) && started.elapsed() >= limit {
            return Err(TransportError::Timeout { host: self.name.clone(), what: step, after: limit });
        }
        Ok(out)
    }

    /// Ends the connection politely.
    pub async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
    }

    async fn check_sudo(&self) -> Result<(), TransportError> {
        let out = self.channel_exec("checking sudo", "sudo -n -- true", b"", self.options.command_timeout).await?;
        if out.status == 0 {
            Ok(())
        } else if sudo_wants_password(&out) {
            Err(TransportError::SudoPasswordRequired { host: self.name.clone(), user: self.user.clone() })
        } else {
            Err(TransportError::SudoFailed {
                host: self.name.clone(),
                user: self.user.clone(),
                status: out.status,
                stderr: stderr_text(&out.stderr),
            })
        }
    }

    fn lost(&self, what: &str) -> TransportError {
        TransportError::Disconnected { host: self.name.clone(), what: what.to_string(), reason: self.shared.reason() }
    }

    /// Opens a session channel. OpenSSH frees a session slot only after our reply to its channel
    /// close, so right after other commands end it may still count them against `MaxSessions`
    /// and answer "connect failed" ("no more sessions" in its log): retry with a short backoff
    /// (the caller's timeout bounds the whole).
    async fn open_session(&self) -> Result<russh::Channel<client::Msg>, russh::Error> {
        let mut delay = Duration::from_millis(5);
        loop {
            match self.handle.channel_open_session().await {
                Err(russh::Error::ChannelOpenFailure(
                    ChannelOpenFailure::ConnectFailed | ChannelOpenFailure::ResourceShortage,
                )) => {
                    tracing::debug!(host = %self.name, "session refused by the server (MaxSessions?), retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// Runs `line` as sent (already wrapped) on a new session channel.
    async fn channel_exec(
        &self,
        step: &str,
        line: &str,
        stdin: &[u8],
        limit: Duration,
    ) -> Result<Output, TransportError> {
        // The semaphore is never closed.
        let _permit = self.sessions.acquire().await.map_err(|_| self.lost(step))?;
        let timed_out = || TransportError::Timeout { host: self.name.clone(), what: step.to_string(), after: limit };
        let started = tokio::time::Instant::now();
        let channel =
            tokio::time::timeout(limit, self.open_session()).await.map_err(|_| timed_out())?.map_err(|e| match e {
                russh::Error::ChannelOpenFailure(reason) => TransportError::Channel {
                    host: self.name.clone(),
                    what: format!("opening a session for {step}"),
                    source: Box::new(russh::Error::ChannelOpenFailure(reason)),
                },
                _ => self.lost(step),
            })?;
        let (mut reader, writer) = channel.split();
        writer.exec(true, line.as_bytes()).await.map_err(|_| self.lost(step))?;

        let io = async {
            let send = async {
                writer.data(stdin).await?;
                writer.eof().await
            };
            let receive = collect(&mut reader);
            tokio::pin!(send, receive);
            let mut sent = false;
            loop {
                tokio::select! {
                    received = &mut receive => return received,
                    // The command may exit without reading all of stdin: that is its business
                    // (the put script checks what it received), so a failed send is ignored.
                    _ = &mut send, if !sent => sent = true,
                }
            }
        };
        let remaining = limit.saturating_sub(started.elapsed());
        let outcome = tokio::time::timeout(remaining, io).await;
        let received = match outcome {
            Ok(received) => received,
            Err(_) => {
                let _ = writer.signal(Sig::KILL).await;
                let _ = writer.close().await;
                return Err(timed_out());
            }
        };
        match received {
            Received::Exited(out) => Ok(out),
            Received::Killed { signal, stderr } => Err(TransportError::CommandKilled {
                host: self.name.clone(),
                step: step.to_string(),
                signal,
                stderr: stderr_text(&stderr),
            }),
            Received::Refused => Err(TransportError::ExecRefused { host: self.name.clone(), step: step.to_string() }),
            Received::Lost => Err(self.lost(step)),
        }
    }
}

/// How a session channel ended.
enum Received {
    Exited(Output),
    Killed {
        signal: String,
        stderr: Vec<u8>,
    },
    Refused,
    /// Closed without an exit status: the connection went away.
    Lost,
}

async fn collect(reader: &mut ChannelReadHalf) -> Received {
    let mut out = Output::default();
    let mut status = None;
    let mut signal = None;
    // After the exit status, output may still be in flight: read until the channel closes.
    while let Some(msg) = reader.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => out.stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => signal = Some(format!("{signal_name:?}")),
            ChannelMsg::Failure => return Received::Refused,
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    match (status, signal) {
        (Some(status), _) => Received::Exited(Output { status, ..out }),
        (None, Some(signal)) => Received::Killed { signal, stderr: out.stderr },
        (None, None) => Received::Lost,
    }
}

/// `sudo -n` failing because the rule needs a password (sudo's own message, exit status 1).
fn sudo_wants_password(out: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&out.stderr);
    out.status == 1
        && stderr.lines().any(|l| {
            l.starts_with("sudo: ")
                && (l.contains("a password is required") || l.contains("a terminal is required to read the password"))
        })
}

impl Remote for SshHost {
    fn host(&self) -> &str {
        &self.name
    }

    fn login(&self) -> &str {
        self.authenticated_with()
    }

    async fn exec(&self, command: &str, stdin: &[u8]) -> Result<Output, TransportError> {
        self.exec_with_timeout(command, stdin, self.options.command_timeout).await
    }

    async fn open_tcp(&self, address: &str, port: u16) -> Result<Tunnel, TransportError> {
        let target = if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") };
        let what = format!("opening a tunnel to {target}");
        let limit = self.options.connect_timeout;
        let opened = tokio::time::timeout(
            limit,
            self.handle.channel_open_direct_tcpip(address, u32::from(port), "127.0.0.1", 0),
        )
        .await
        .map_err(|_| TransportError::Timeout { host: self.name.clone(), what: what.clone(), after: limit })?;
        match opened {
            Ok(channel) => Ok(Box::new(channel.into_stream())),
            Err(russh::Error::ChannelOpenFailure(ChannelOpenFailure::AdministrativelyProhibited)) => {
                Err(TransportError::ForwardingRefused { host: self.name.clone(), target })
            }
            Err(russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed)) => {
                Err(TransportError::TargetUnreachable {
                    host: self.name.clone(),
                    target,
                    reason: "connect failed".into(),
                })
            }
            Err(russh::Error::ChannelOpenFailure(ChannelOpenFailure::Other { code, reason })) => {
                Err(TransportError::TargetUnreachable {
                    host: self.name.clone(),
                    target,
                    reason: format!("code {code}: {reason}"),
                })
            }
            Err(russh::Error::ChannelOpenFailure(other)) => {
                Err(TransportError::TargetUnreachable { host: self.name.clone(), target, reason: format!("{other:?}") })
            }
            Err(_) => Err(self.lost(&what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_password_prompt_is_recognised() {
        let out = |status, stderr: &str| Output { status, stdout: vec![], stderr: stderr.as_bytes().to_vec() };
        assert!(sudo_wants_password(&out(1, "sudo: a password is required\n")));
        assert!(sudo_wants_password(&out(1, "sudo: a terminal is required to read the password; either use ...\n")));
        assert!(!sudo_wants_password(&out(2, "sudo: a password is required\n")));
        assert!(!sudo_wants_password(&out(1, "grep: a password is required\n")));
    }
}
