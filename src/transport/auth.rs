//! Public-key authentication: ssh-agent first, then the host's identity file.
//!
//! One [`Credentials`] serves every host of a run. It remembers each identity file once loaded
//! (and decrypted: the operator is asked for a passphrase once per file, however many hosts use
//! it) and the agent's list of keys. Passphrases are wiped from memory after use; keys are never
//! printed (russh's `PrivateKey` has no revealing `Debug`, and errors name files and
//! fingerprints only).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use russh::client::Handle;
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use tokio::sync::{Mutex, OnceCell};
use zeroize::Zeroizing;

use super::TransportError;
use super::known_hosts::fingerprint;

/// Answers "what is the passphrase of this key file?" (`attempt` counts from 1); `None` gives up.
pub type PassphraseFn = dyn Fn(&Path, u32) -> Option<Zeroizing<String>> + Send + Sync;

/// Where passphrases for encrypted identity files come from.
#[derive(Clone)]
pub enum PassphrasePrompt {
    /// Ask on the controlling terminal (`/dev/tty`); without one, fail with advice to use ssh-agent.
    Terminal,
    /// Never ask: an encrypted key must be in ssh-agent.
    Never,
    /// Ask a function (tests, or a caller with its own secret source).
    Function(Arc<PassphraseFn>),
}

impl std::fmt::Debug for PassphrasePrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PassphrasePrompt::Terminal => "Terminal",
            PassphrasePrompt::Never => "Never",
            PassphrasePrompt::Function(_) => "Function",
        })
    }
}

/// How many times a wrong passphrase may be typed, as `ssh` allows.
const PASSPHRASE_ATTEMPTS: u32 = 3;

/// Why an identity file could not be used; cached so other hosts fail the same way without
/// asking again.
#[derive(Debug, Clone)]
enum LoadFailure {
    Unreadable(String),
    Unprotected(u32),
    Format(String),
    NoTerminal,
    WrongPassphrase(u32),
}

impl LoadFailure {
    fn into_error(self, path: &Path) -> TransportError {
        let path = path.to_path_buf();
        match self {
            LoadFailure::Unreadable(reason) => TransportError::IdentityFile { path, reason },
            LoadFailure::Unprotected(mode) => TransportError::IdentityFile {
                reason: format!(
                    "permissions {mode:04o} are too open: a private key must not be accessible by others \
                     (chmod 600 {})",
                    path.display()
                ),
                path,
            },
            LoadFailure::Format(reason) => TransportError::IdentityFile {
                reason: format!("not a usable private key ({reason}); kubeha reads OpenSSH, PKCS#1 and PKCS#8 keys"),
                path,
            },
            LoadFailure::NoTerminal => TransportError::PassphraseNeeded { path },
            LoadFailure::WrongPassphrase(attempts) => TransportError::WrongPassphrase { path, attempts },
        }
    }
}

/// Runs a terminal prompt with the terminal to itself (e.g. with live progress lines paused).
pub type TerminalGuard = dyn Fn(&mut dyn FnMut()) + Send + Sync;

/// SSH credentials shared by all connections of a run: the agent socket and loaded keys.
pub struct Credentials {
    agent_socket: Option<PathBuf>,
    prompt: PassphrasePrompt,
    terminal_guard: Option<Arc<TerminalGuard>>,
    keys: Mutex<HashMap<PathBuf, Result<Arc<PrivateKey>, LoadFailure>>>,
    agent_keys: OnceCell<Vec<(PublicKey, String)>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("agent_socket", &self.agent_socket)
            .field("prompt", &self.prompt)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The operator's setup: the agent at `SSH_AUTH_SOCK` (if set) and passphrase prompts on
    /// the terminal.
    pub fn from_env() -> Credentials {
        let agent = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()).map(PathBuf::from);
        Credentials::new(agent, PassphrasePrompt::Terminal)
    }

    /// Explicit agent socket (or none) and passphrase source.
    pub fn new(agent_socket: Option<PathBuf>, prompt: PassphrasePrompt) -> Credentials {
        Credentials {
            agent_socket,
            prompt,
            terminal_guard: None,
            keys: Mutex::new(HashMap::new()),
            agent_keys: OnceCell::new(),
        }
    }

    /// Terminal prompts run through `guard`, which can pause whatever else draws on the terminal.
    pub fn with_terminal_guard(mut self, guard: Option<Arc<TerminalGuard>>) -> Credentials {
        self.terminal_guard = guard;
        self
    }

    /// The identity file's key, loaded (and decrypted) once per run. Concurrent callers for the
    /// same file wait for the first one, so the operator is asked once.
    pub async fn identity(&self, path: &Path) -> Result<Arc<PrivateKey>, TransportError> {
        let mut keys = self.keys.lock().await;
        if let Some(result) = keys.get(path) {
            return result.clone().map_err(|f| f.into_error(path));
        }
        let result = load_identity(path, &self.prompt, self.terminal_guard.clone()).await;
        keys.insert(path.to_path_buf(), result.clone());
        result.map_err(|f| f.into_error(path))
    }

    /// Authenticates `handle` as `user`: agent keys first (the one matching `identity_file`
    /// before the others), then the identity file itself unless the agent already offered it.
    /// Returns a description of the key that worked.
    pub(crate) async fn authenticate<H: russh::client::Handler>(
        &self,
        handle: &mut Handle<H>,
        target: &AuthTarget<'_>,
    ) -> Result<String, TransportError> {
        let mut tried = Vec::new();
        let file_public = identity_public_key(target.identity_file);
        let mut rsa_hash: Option<Option<HashAlg>> = None;
        let mut offered_by_agent = false;

        if let Some(socket) = &self.agent_socket {
            let attempts = AgentAttempts {
                socket,
                file_public: file_public.as_ref(),
                rsa_hash: &mut rsa_hash,
                tried: &mut tried,
                offered_file_key: &mut offered_by_agent,
            };
            if let Some(used) = self.agent_attempts(handle, target, attempts).await? {
                return Ok(used);
            }
        }

        if !offered_by_agent {
            let key = match self.identity(target.identity_file).await {
                Ok(key) => key,
                // Nothing else left to try: the file's own problem is the clearest message.
                Err(e) if tried.is_empty() => return Err(e),
                Err(e) => {
                    tried.push(e.to_string());
                    return Err(target.failed(tried));
                }
            };
            let description = format!("{} ({})", target.identity_file.display(), fingerprint(key.public_key()));
            let hash =
                if key.algorithm().is_rsa() { best_rsa_hash(handle, target, &mut rsa_hash).await? } else { None };
            let attempt = handle.authenticate_publickey(target.user, PrivateKeyWithHashAlg::new(key, hash));
            let result = tokio::time::timeout(target.timeout, attempt)
                .await
                .map_err(|_| target.timeout_error())?
                .map_err(|e| target.lost(e))?;
            if result.success() {
                return Ok(description);
            }
            tried.push(description);
        }
        Err(target.failed(tried))
    }

    async fn agent_attempts<H: russh::client::Handler>(
        &self,
        handle: &mut Handle<H>,
        target: &AuthTarget<'_>,
        attempts: AgentAttempts<'_>,
    ) -> Result<Option<String>, TransportError> {
        let AgentAttempts { socket, file_public, rsa_hash, tried, offered_file_key } = attempts;
        // An agent that cannot be reached or listed is noted and skipped, not fatal: the
        // identity file may still work.
        let unusable = |reason: String| format!("ssh-agent at {} (unusable: {reason})", socket.display());
        let mut agent = match tokio::time::timeout(target.timeout, AgentClient::connect_uds(socket)).await {
            Ok(Ok(agent)) => agent,
            Ok(Err(e)) => {
                tried.push(unusable(e.to_string()));
                return Ok(None);
            }
            Err(_) => {
                tried.push(unusable("no answer".into()));
                return Ok(None);
            }
        };
        let listing = self.agent_keys.get_or_try_init(|| async {
            let identities = agent.request_identities().await?;
            Ok::<_, russh::keys::Error>(
                identities
                    .into_iter()
                    .filter_map(|identity| match identity {
                        AgentIdentity::PublicKey { key, comment } => Some((key, comment)),
                        AgentIdentity::Certificate { .. } => None,
                    })
                    .collect::<Vec<_>>(),
            )
        });
        let listed = match tokio::time::timeout(target.timeout, listing).await {
            Ok(Ok(listed)) => listed,
            Ok(Err(e)) => {
                tried.push(unusable(e.to_string()));
                return Ok(None);
            }
            Err(_) => {
                tried.push(unusable("no answer".into()));
                return Ok(None);
            }
        };
        let mut order: Vec<&(PublicKey, String)> = listed.iter().collect();
        if let Some(wanted) = file_public {
            order.sort_by_key(|(key, _)| key.key_data() != wanted.key_data());
        }
        for (key, comment) in order {
            let description = if comment.is_empty() {
                format!("ssh-agent key {}", fingerprint(key))
            } else {
                format!("ssh-agent key {} ({comment})", fingerprint(key))
            };
            let hash = if key.algorithm().is_rsa() { best_rsa_hash(handle, target, rsa_hash).await? } else { None };
            let attempt = handle.authenticate_publickey_with(target.user, key.clone(), hash, &mut agent);
            let result = tokio::time::timeout(target.timeout, attempt).await.map_err(|_| target.timeout_error())?;
            match result {
                Ok(r) if r.success() => return Ok(Some(description)),
                Ok(_) => {
                    // The server refused the file's own key: trying the file would only repeat it.
                    if file_public.is_some_and(|p| p.key_data() == key.key_data()) {
                        *offered_file_key = true;
                    }
                    tried.push(description);
                }
                Err(russh::AgentAuthError::Send(_)) => return Err(target.lost(russh::Error::SendError)),
                Err(russh::AgentAuthError::Key(e)) => tried.push(format!("{description} (agent refused to sign: {e})")),
            }
        }
        Ok(None)
    }
}

/// The agent step's inputs and what it reports back.
struct AgentAttempts<'a> {
    socket: &'a Path,
    file_public: Option<&'a PublicKey>,
    rsa_hash: &'a mut Option<Option<HashAlg>>,
    tried: &'a mut Vec<String>,
    /// Set when the agent offered the identity file's own key (no need to try the file).
    offered_file_key: &'a mut bool,
}

/// Who is logging in where, for attempts and messages.
pub(crate) struct AuthTarget<'a> {
    pub host: &'a str,
    pub address: &'a str,
    pub user: &'a str,
    pub identity_file: &'a Path,
    pub timeout: Duration,
}

impl AuthTarget<'_> {
    fn failed(&self, tried: Vec<String>) -> TransportError {
        TransportError::AuthFailed {
            host: self.host.to_string(),
            user: self.user.to_string(),
            address: self.address.to_string(),
            tried,
        }
    }

    fn timeout_error(&self) -> TransportError {
        TransportError::Timeout { host: self.host.to_string(), what: "SSH authentication".into(), after: self.timeout }
    }

    fn lost(&self, e: russh::Error) -> TransportError {
        TransportError::Disconnected {
            host: self.host.to_string(),
            what: "SSH authentication".into(),
            reason: Some(e.to_string()),
        }
    }
}

/// rsa-sha2-512/256 as the server announces them (asked once per connection).
async fn best_rsa_hash<H: russh::client::Handler>(
    handle: &Handle<H>,
    target: &AuthTarget<'_>,
    cached: &mut Option<Option<HashAlg>>,
) -> Result<Option<HashAlg>, TransportError> {
    if let Some(hash) = cached {
        return Ok(*hash);
    }
    let hash = tokio::time::timeout(target.timeout, handle.best_supported_rsa_hash())
        .await
        .map_err(|_| target.timeout_error())?
        .map_err(|e| target.lost(e))?
        // No server-sig-algs extension: rsa-sha2-256 is what every current server accepts.
        .unwrap_or(Some(HashAlg::Sha256));
    *cached = Some(hash);
    Ok(hash)
}

/// The public half of an identity file without decrypting it: from `<file>.pub`, or from the
/// unencrypted header of an OpenSSH private key file.
fn identity_public_key(path: &Path) -> Option<PublicKey> {
    let mut public = path.as_os_str().to_owned();
    public.push(".pub");
    if let Ok(key) = russh::keys::load_public_key(PathBuf::from(public)) {
        return Some(key);
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).ok()?);
    russh::keys::ssh_key::PrivateKey::from_openssh(text.as_bytes()).ok().map(|k| k.public_key().clone())
}

async fn load_identity(
    path: &Path,
    prompt: &PassphrasePrompt,
    guard: Option<Arc<TerminalGuard>>,
) -> Result<Arc<PrivateKey>, LoadFailure> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| LoadFailure::Unreadable(e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(LoadFailure::Unprotected(mode));
    }
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| LoadFailure::Unreadable(e.to_string()))?);
    match russh::keys::decode_secret_key(&text, None) {
        Ok(key) => return Ok(Arc::new(key)),
        Err(russh::keys::Error::KeyIsEncrypted) => {}
        Err(e) => return Err(LoadFailure::Format(e.to_string())),
    }
    for attempt in 1..=PASSPHRASE_ATTEMPTS {
        let Some(passphrase) = ask(path, attempt, prompt, guard.clone()).await? else {
            return Err(if attempt == 1 { LoadFailure::NoTerminal } else { LoadFailure::WrongPassphrase(attempt - 1) });
        };
        // bcrypt key derivation takes a noticeable time: keep it off the async workers.
        let text = text.clone();
        let decoded =
            tokio::task::spawn_blocking(move || russh::keys::decode_secret_key(&text, Some(passphrase.as_str())))
                .await
                .map_err(|e| LoadFailure::Format(e.to_string()))?;
        if let Ok(key) = decoded {
            return Ok(Arc::new(key));
        }
    }
    Err(LoadFailure::WrongPassphrase(PASSPHRASE_ATTEMPTS))
}

/// One passphrase from the configured source; `Ok(None)` when the source has none to give.
async fn ask(
    path: &Path,
    attempt: u32,
    prompt: &PassphrasePrompt,
    guard: Option<Arc<TerminalGuard>>,
) -> Result<Option<Zeroizing<String>>, LoadFailure> {
    let path = path.to_path_buf();
    match prompt {
        PassphrasePrompt::Never => Ok(None),
        PassphrasePrompt::Function(f) => {
            let f = f.clone();
            tokio::task::spawn_blocking(move || f(&path, attempt)).await.map_err(|e| LoadFailure::Format(e.to_string()))
        }
        PassphrasePrompt::Terminal => {
            let asked = tokio::task::spawn_blocking(move || {
                let text = if attempt == 1 {
                    format!("Enter passphrase for key '{}': ", path.display())
                } else {
                    format!("Wrong passphrase, try again. Enter passphrase for key '{}': ", path.display())
                };
                let mut answer = None;
                let mut read = || answer = Some(rpassword::prompt_password(&text).map(Zeroizing::new));
                match guard {
                    Some(guard) => guard(&mut read),
                    None => read(),
                }
                answer.unwrap_or_else(|| Err(std::io::Error::other("the prompt did not run")))
            })
            .await
            .map_err(|e| LoadFailure::Format(e.to_string()))?;
            match asked {
                Ok(passphrase) => Ok(Some(passphrase)),
                // No controlling terminal (ENXIO), or it went away: treat as none available.
                Err(_) if attempt == 1 => Err(LoadFailure::NoTerminal),
                Err(_) => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_permissions_are_refused_without_reading() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, "not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let creds = Credentials::new(None, PassphrasePrompt::Never);
        let err = creds.identity(&path).await.unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        // The first failure is remembered for the run (no second prompt or read).
        let again = creds.identity(&path).await.unwrap_err().to_string();
        assert_eq!(err, again);
    }

    #[tokio::test]
    async fn garbage_is_a_format_error_and_missing_is_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, "not a key").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let creds = Credentials::new(None, PassphrasePrompt::Never);
        let err = creds.identity(&path).await.unwrap_err().to_string();
        assert!(err.contains("not a usable private key"), "{err}");
        let err = creds.identity(&dir.path().join("absent")).await.unwrap_err().to_string();
        assert!(err.contains("absent") && err.contains("No such file"), "{err}");
    }
}
