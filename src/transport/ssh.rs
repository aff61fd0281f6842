//! The SSH implementation of [`Remote`]: one russh connection per host, many channels on it.
//! A host behind jump hosts is reached as `ssh -J` does: a connection to the first jump host,
//! a `direct-tcpip` channel from it to the next hop's SSH port carrying the next connection,
//! and so on; each hop's host key is verified and its login authenticated like a host's.
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
    target: String,
    user: String,
    sudo: bool,
    options: SshOptions,
    handle: Handle<Client>,
    /// The connections to the jump hosts, first one first: the host's connection runs inside
    /// a channel of the last one, so they live as long as it does.
    hops: Vec<Handle<Client>>,
    sessions: Semaphore,
    shared: Arc<Shared>,
    authenticated_with: String,
}

impl std::fmt::Debug for SshHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshHost")
            .field("name", &self.name)
            .field("target", &self.target)
            .field("hops", &self.hops.len())
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
                match known_hosts::record(&file, &self.known_hosts_name, key)? {
                    // Another connection of this run recorded it meanwhile.
                    Verdict::Known => return Ok(()),
                    Verdict::Unknown => {}
                    Verdict::Changed { lines } => {
                        return Err(TransportError::HostKeyChanged { host, key: presented(), lines });
                    }
                    Verdict::Revoked { line } => {
                        return Err(TransportError::HostKeyRevoked { host, key: presented(), line });
                    }
                }
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

/// One SSH login on the way to a host: a jump host or the host itself.
struct Dial<'a> {
    /// Who the messages name: the inventory's host name, or `jump host <name>`.
    label: &'a str,
    /// The name or address dialled; host keys are looked up under it.
    host: &'a str,
    port: u16,
    user: &'a str,
    identity_file: &'a std::path::Path,
}

/// The connection a hop is reached through, and its label for messages.
struct Via<'a> {
    handle: &'a Handle<Client>,
    label: &'a str,
}

/// An authenticated connection and what its handler shares.
struct Opened {
    handle: Handle<Client>,
    shared: Arc<Shared>,
    authenticated_with: String,
}

impl SshHost {
    /// Connects to `host`: through its jump hosts in order, if any (each reached through a TCP
    /// forwarding channel of the one before, its host key verified and its login authenticated
    /// like the host's), then to the host itself at `ssh.host` or its address. Host keys are
    /// verified against `ssh.known_hosts_file` under the name dialled; authentication tries
    /// ssh-agent, then the login's identity file; for `sudo: true`, `sudo -n` must work.
    pub async fn connect(
        host: &plan::Host,
        options: &SshOptions,
        credentials: &Credentials,
    ) -> Result<SshHost, TransportError> {
        let ssh = &host.ssh;
        let known = KnownHosts::load(&ssh.known_hosts_file)?;
        let mut hops: Vec<(Handle<Client>, String)> = Vec::new();
        for jump in &ssh.jumps {
            let label = format!("jump host {}", jump.name);
            let dial = Dial {
                label: &label,
                host: &jump.host,
                port: jump.port,
                user: &jump.user,
                identity_file: &jump.identity_file,
            };
            let via = hops.last().map(|(handle, label)| Via { handle, label });
            let opened = open(&dial, via, &known, options, credentials).await.map_err(|source| {
                TransportError::Jump { host: host.name.clone(), hop: label.clone(), source: Box::new(source) }
            })?;
            tracing::debug!(host = %host.name, hop = %label, key = %opened.authenticated_with, "jump host authenticated");
            hops.push((opened.handle, label));
        }
        let target = ssh.target(host.address);
        let dial = Dial {
            label: &host.name,
            host: &target,
            port: ssh.port,
            user: &ssh.user,
            identity_file: &ssh.identity_file,
        };
        let via = hops.last().map(|(handle, label)| Via { handle, label });
        let Opened { handle, shared, authenticated_with } = open(&dial, via, &known, options, credentials).await?;
        tracing::debug!(host = %host.name, user = %ssh.user, key = %authenticated_with, "SSH authenticated");

        let connected = SshHost {
            name: host.name.clone(),
            target: plan::join_name_port(&target, ssh.port),
            user: ssh.user.clone(),
            sudo: ssh.sudo,
            options: options.clone(),
            handle,
            hops: hops.into_iter().map(|(handle, _)| handle).collect(),
            sessions: Semaphore::new(options.max_sessions.max(1)),
            shared,
            authenticated_with,
        };
        if connected.sudo {
            connected.check_sudo().await?;
        }
        Ok(connected)
    }

    /// The name or address and port connected to (`host:port`, `[v6]:port`).
    pub fn target(&self) -> &str {
        &self.target
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
        // A script without input of its own travels on stdin (one program fewer to start).
        let (line, script_input) = match stdin {
            [] => shell::wrap_stdin(command, self.sudo, Some(limit)),
            _ => (shell::wrap(command, self.sudo, Some(limit)), Vec::new()),
        };
        let stdin = if stdin.is_empty() { script_input.as_slice() } else { stdin };
        let started = tokio::time::Instant::now();
        let out = self.channel_exec(&step, &line, stdin, limit + REMOTE_TIMEOUT_GRACE).await.map_err(|e| match e {
            TransportError::Timeout { host, what, .. } => TransportError::Timeout { host, what, after: limit },
            other => other,
        })?;
        tracing::debug!(host = %self.name, %step, status = out.status, took_ms = started.elapsed().as_millis() as u64, "remote command");
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

    /// Ends the connection politely, then those to its jump hosts, the nearest first.
    pub async fn close(self) {
        let _ = self.handle.disconnect(Disconnect::ByApplication, "", "en").await;
        for hop in self.hops.iter().rev() {
            let _ = hop.disconnect(Disconnect::ByApplication, "", "en").await;
        }
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

/// Opens one authenticated SSH connection: over TCP from here, or through `via`'s forwarding.
async fn open(
    dial: &Dial<'_>,
    via: Option<Via<'_>>,
    known: &KnownHosts,
    options: &SshOptions,
    credentials: &Credentials,
) -> Result<Opened, TransportError> {
    let address = plan::join_name_port(dial.host, dial.port);
    let known_hosts_name = known_hosts::name(dial.host, dial.port);
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
    let shared = Arc::new(Shared::default());
    let handler = Client {
        host: dial.label.to_string(),
        address: address.clone(),
        known_hosts_name,
        known_hosts: known.clone(),
        accept_new: options.accept_new_host_keys,
        shared: shared.clone(),
    };
    let timeout = |what: String| TransportError::Timeout { host: dial.label.to_string(), what, after: limit };
    let connected = match via {
        None => {
            let tcp = dial_tcp(dial, &address, limit).await?;
            tokio::time::timeout(limit, client::connect_stream(config, tcp, handler)).await
        }
        Some(via) => {
            let stream = forward(dial, &address, &via, limit).await?;
            tokio::time::timeout(limit, client::connect_stream(config, stream, handler)).await
        }
    };
    let mut handle = connected.map_err(|_| timeout(format!("SSH handshake with {address}")))?.map_err(|e| match e {
        ClientError::HostKey(e) => *e,
        ClientError::Ssh(source) => TransportError::Handshake {
            host: dial.label.to_string(),
            address: address.clone(),
            source: Box::new(source),
        },
    })?;
    let target = AuthTarget {
        host: dial.label,
        address: &address,
        user: dial.user,
        identity_file: dial.identity_file,
        timeout: limit,
    };
    let authenticated_with = credentials.authenticate(&mut handle, &target).await?;
    Ok(Opened { handle, shared, authenticated_with })
}

/// A TCP connection from here: the name resolved (each address tried in turn, as `ssh` does).
async fn dial_tcp(dial: &Dial<'_>, address: &str, limit: Duration) -> Result<tokio::net::TcpStream, TransportError> {
    let label = dial.label.to_string();
    let started = tokio::time::Instant::now();
    let candidates: Vec<SocketAddr> = match dial.host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, dial.port)],
        Err(_) => {
            let resolve = tokio::net::lookup_host((dial.host, dial.port));
            let found = tokio::time::timeout(limit, resolve)
                .await
                .map_err(|_| TransportError::Timeout {
                    host: label.clone(),
                    what: format!("resolving {}", dial.host),
                    after: limit,
                })?
                .map_err(|source| TransportError::Resolve { host: label.clone(), name: dial.host.to_string(), source })?
                .collect::<Vec<_>>();
            if found.is_empty() {
                return Err(TransportError::Resolve {
                    host: label,
                    name: dial.host.to_string(),
                    source: std::io::Error::other("no address"),
                });
            }
            found
        }
    };
    let mut last = None;
    for socket in &candidates {
        let remaining = limit.saturating_sub(started.elapsed());
        let shown = if dial.host.parse::<std::net::IpAddr>().is_ok() {
            address.to_string()
        } else {
            format!("{address} ({socket})")
        };
        match tokio::time::timeout(remaining, tokio::net::TcpStream::connect(socket)).await {
            Ok(Ok(tcp)) => {
                // Without it, small request/response round trips wait on delayed ACKs.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Ok(Err(source)) => last = Some(TransportError::Connect { host: label.clone(), address: shown, source }),
            Err(_) => {
                last = Some(TransportError::Timeout {
                    host: label.clone(),
                    what: format!("connecting to {shown}"),
                    after: limit,
                })
            }
        }
    }
    Err(last.expect("at least one address was tried"))
}

/// A byte stream to `dial`'s SSH port, opened by the previous hop (`ssh -J`'s way): the name is
/// resolved there, so a name only the bastion's network knows works.
async fn forward(
    dial: &Dial<'_>,
    address: &str,
    via: &Via<'_>,
    limit: Duration,
) -> Result<russh::ChannelStream<client::Msg>, TransportError> {
    let shown = format!("{address} through {}", via.label);
    let opened = tokio::time::timeout(
        limit,
        via.handle.channel_open_direct_tcpip(dial.host, u32::from(dial.port), "127.0.0.1", 0),
    )
    .await
    .map_err(|_| TransportError::Timeout {
        host: dial.label.to_string(),
        what: format!("connecting to {shown}"),
        after: limit,
    })?;
    let reason = match opened {
        Ok(channel) => return Ok(channel.into_stream()),
        Err(russh::Error::ChannelOpenFailure(ChannelOpenFailure::AdministrativelyProhibited)) => {
            format!("{} refuses TCP forwarding (`AllowTcpForwarding no` or a `permitopen` restriction)", via.label)
        }
        Err(russh::Error::ChannelOpenFailure(ChannelOpenFailure::ConnectFailed)) => {
            format!("{} could not connect to it (refused, unreachable, or a name it cannot resolve)", via.label)
        }
        Err(russh::Error::ChannelOpenFailure(ChannelOpenFailure::Other { code, reason })) => {
            format!("{} could not connect to it (code {code}: {reason})", via.label)
        }
        Err(russh::Error::ChannelOpenFailure(other)) => format!("{} could not connect to it ({other:?})", via.label),
        Err(e) => format!("the connection to {} was lost ({e})", via.label),
    };
    Err(TransportError::Connect { host: dial.label.to_string(), address: shown, source: std::io::Error::other(reason) })
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
    use crate::plan::{Host, Jump, Role, Ssh};
    use crate::transport::PassphrasePrompt;

    fn host(target: &str, port: u16, jumps: Vec<Jump>, dir: &std::path::Path) -> Host {
        Host {
            name: "cp1".into(),
            address: "198.18.0.11".parse().unwrap(),
            role: Role::ControlPlane,
            ssh: Ssh {
                user: "root".into(),
                port,
                identity_file: dir.join("id_ed25519"),
                known_hosts_file: dir.join("known_hosts"),
                sudo: false,
                host: Some(target.into()),
                jumps,
            },
            node: Default::default(),
        }
    }

    fn jump(target: &str, port: u16, dir: &std::path::Path) -> Jump {
        Jump {
            name: format!("{target}:{port}"),
            host: target.into(),
            port,
            user: "root".into(),
            identity_file: dir.join("id_ed25519"),
        }
    }

    /// A port on 127.0.0.1 where nothing listens (just released).
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    async fn failure(host: &Host) -> String {
        let options = SshOptions { connect_timeout: Duration::from_millis(500), ..SshOptions::default() };
        let credentials = Credentials::new(None, PassphrasePrompt::Never);
        SshHost::connect(host, &options, &credentials).await.unwrap_err().to_string()
    }

    #[tokio::test]
    async fn each_failure_names_the_host_and_the_hop() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // DNS: `.invalid` never resolves (RFC 6761).
        let e = failure(&host("nothing.invalid", 22, vec![], d)).await;
        assert!(e.starts_with("cp1: cannot resolve nothing.invalid: "), "{e}");
        let e = failure(&host("198.18.0.11", 22, vec![jump("nothing.invalid", 22, d)], d)).await;
        assert!(e.starts_with("cp1: jump host nothing.invalid:22: cannot resolve nothing.invalid: "), "{e}");
        // Refused: a closed port.
        let port = closed_port();
        let e = failure(&host("127.0.0.1", port, vec![], d)).await;
        assert!(e.starts_with(&format!("cp1: cannot connect to 127.0.0.1:{port}: Connection refused")), "{e}");
        let e = failure(&host("198.18.0.11", 22, vec![jump("127.0.0.1", port, d)], d)).await;
        let hop = format!("jump host 127.0.0.1:{port}");
        assert!(e.starts_with(&format!("cp1: {hop}: cannot connect to 127.0.0.1:{port}: Connection refused")), "{e}");
        // Timeout: a port that accepts but never speaks SSH.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let e = failure(&host("127.0.0.1", port, vec![], d)).await;
        assert_eq!(e, format!("cp1: SSH handshake with 127.0.0.1:{port} timed out after 500ms"));
        let e = failure(&host("198.18.0.11", 22, vec![jump("127.0.0.1", port, d)], d)).await;
        assert_eq!(
            e,
            format!("cp1: jump host 127.0.0.1:{port}: SSH handshake with 127.0.0.1:{port} timed out after 500ms")
        );
    }

    #[test]
    fn sudo_password_prompt_is_recognised() {
        let out = |status, stderr: &str| Output { status, stdout: vec![], stderr: stderr.as_bytes().to_vec() };
        assert!(sudo_wants_password(&out(1, "sudo: a password is required\n")));
        assert!(sudo_wants_password(&out(1, "sudo: a terminal is required to read the password; either use ...\n")));
        assert!(!sudo_wants_password(&out(2, "sudo: a password is required\n")));
        assert!(!sudo_wants_password(&out(1, "grep: a password is required\n")));
    }
}
