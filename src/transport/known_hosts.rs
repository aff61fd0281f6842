//! Host key verification against an OpenSSH `known_hosts` file.
//!
//! kubeha reads the file itself rather than through russh's helper: line numbers must be the
//! file's real ones (the "changed key" error names the line to remove), a malformed line must
//! not disable checking for every other host (OpenSSH skips it too), and `@revoked` markers,
//! hashed names (`ssh-keyscan -H`), `[host]:port` names, wildcards and negations must work as
//! they do for `ssh`.
//!
//! Policy: a key recorded for the host is accepted; any other key for a host with records is a
//! changed key and always refused; a host without records is refused unless accept-new is on,
//! in which case the key is appended.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use hmac::{KeyInit, Mac};
use russh::keys::{Algorithm, HashAlg, PublicKey};

use super::TransportError;
use crate::text::glob;

/// One usable line of the file.
#[derive(Debug, Clone)]
struct Entry {
    /// 1-based line number in the file.
    line: usize,
    revoked: bool,
    patterns: String,
    key: PublicKey,
}

/// What the file says about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Known,
    /// No line names the host.
    Unknown,
    /// Lines name the host, but none with this key.
    Changed {
        lines: Vec<usize>,
    },
    Revoked {
        line: usize,
    },
}

/// The parsed content of a known-hosts file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    file: PathBuf,
    entries: Vec<Entry>,
}

/// The name a host has in known_hosts: the bare address for port 22, `[address]:port` otherwise.
pub fn host_name(ip: IpAddr, port: u16) -> String {
    if port == 22 { ip.to_string() } else { format!("[{ip}]:{port}") }
}

/// The name a host dialled as `host` (a name or an address) has in known_hosts, as `ssh` looks
/// it up: lowercase, bare for port 22, `[host]:port` otherwise.
pub fn name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 { host } else { format!("[{host}]:{port}") }
}

impl KnownHosts {
    /// Reads `file`; a missing file is an empty one.
    pub fn load(file: &Path) -> Result<KnownHosts, TransportError> {
        let text = match std::fs::read(file) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(TransportError::KnownHosts { file: file.to_path_buf(), source }),
        };
        Ok(KnownHosts::parse(file, &text))
    }

    /// Parses known_hosts text; lines that cannot be understood are skipped.
    pub fn parse(file: &Path, text: &str) -> KnownHosts {
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line_text = line.trim();
            if line_text.is_empty() || line_text.starts_with('#') {
                continue;
            }
            let mut fields = line_text.split_whitespace();
            let mut first = fields.next().unwrap_or("");
            let mut revoked = false;
            if let Some(marker) = first.strip_prefix('@') {
                if marker != "revoked" {
                    // @cert-authority lines trust CAs for host certificates; kubeha checks plain keys.
                    continue;
                }
                revoked = true;
                first = fields.next().unwrap_or("");
            }
            let (Some(algorithm), Some(blob)) = (fields.next(), fields.next()) else { continue };
            let Ok(key) = PublicKey::from_openssh(&format!("{algorithm} {blob}")) else { continue };
            entries.push(Entry { line: index + 1, revoked, patterns: first.to_string(), key });
        }
        KnownHosts { file: file.to_path_buf(), entries }
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Checks `key` for the host named `name` (see [`host_name`]).
    pub fn check(&self, name: &str, key: &PublicKey) -> Verdict {
        let matching: Vec<&Entry> = self.entries.iter().filter(|e| host_matches(name, &e.patterns)).collect();
        if let Some(e) = matching.iter().find(|e| e.revoked && e.key.key_data() == key.key_data()) {
            return Verdict::Revoked { line: e.line };
        }
        let recorded: Vec<&&Entry> = matching.iter().filter(|e| !e.revoked).collect();
        if recorded.is_empty() {
            Verdict::Unknown
        } else if recorded.iter().any(|e| e.key.key_data() == key.key_data()) {
            Verdict::Known
        } else {
            Verdict::Changed { lines: recorded.iter().map(|e| e.line).collect() }
        }
    }

    /// Host key algorithms to offer the server, those recorded for `name` first, so a server with
    /// several host keys presents one the file knows (as `ssh` does).
    pub fn preferred_algorithms(&self, name: &str, defaults: &[Algorithm]) -> Vec<Algorithm> {
        let known: Vec<Algorithm> = self
            .entries
            .iter()
            .filter(|e| !e.revoked && host_matches(name, &e.patterns))
            .map(|e| e.key.algorithm())
            .collect();
        let is_known = |a: &Algorithm| known.iter().any(|k| same_key_type(k, a));
        let mut out: Vec<Algorithm> = defaults.iter().filter(|a| is_known(a)).cloned().collect();
        out.extend(defaults.iter().filter(|a| !is_known(a)).cloned());
        out
    }
}

fn same_key_type(a: &Algorithm, b: &Algorithm) -> bool {
    match (a, b) {
        (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
        _ => a == b,
    }
}

/// Whether `name` matches a comma-separated OpenSSH host pattern list: hashed entries
/// (`|1|salt|hash`), `*` and `?` wildcards, case-insensitive, and `!negations` that veto a match.
fn host_matches(name: &str, patterns: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(hashed) = pattern.strip_prefix("|1|") {
            if hashed_matches(&name, hashed) {
                matched = true;
            }
        } else if let Some(negated) = pattern.strip_prefix('!') {
            if glob(&negated.to_ascii_lowercase(), &name) {
                return false;
            }
        } else if glob(&pattern.to_ascii_lowercase(), &name) {
            matched = true;
        }
    }
    matched
}

/// `name` as OpenSSH hashes it: `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`, random salt.
fn hashed_name(name: &str) -> String {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut salt = [0u8; 20];
    getrandom::fill(&mut salt).expect("the operating system's random source works");
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).expect("HMAC takes any key length");
    mac.update(name.as_bytes());
    format!("|1|{}|{}", engine.encode(salt), engine.encode(mac.finalize().into_bytes()))
}

fn hashed_matches(name: &str, salt_and_hash: &str) -> bool {
    let engine = base64::engine::general_purpose::STANDARD;
    let Some((salt, hash)) = salt_and_hash.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (engine.decode(salt), engine.decode(hash)) else { return false };
    let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else { return false };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// Serializes appends from concurrent connections within this process.
static APPEND: Mutex<()> = Mutex::new(());

/// Appends `name key` to `file` (created 0600, its directory 0700, if missing). Where the file
/// already hashes its host names (`ssh-keygen -H`, `HashKnownHosts yes`), the new entry is
/// hashed too, so recording a key does not reveal which hosts this machine reaches.
pub fn append(file: &Path, name: &str, key: &PublicKey) -> Result<(), TransportError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let io_err = |source| TransportError::KnownHosts { file: file.to_path_buf(), source };
    let _guard = APPEND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io_err)?;
    }
    let existing = std::fs::read(file).unwrap_or_default();
    let mut line = String::new();
    if existing.last().is_some_and(|&b| b != b'\n') {
        line.push('\n');
    }
    let encoded = key.to_openssh().map_err(|e| io_err(std::io::Error::other(e.to_string())))?;
    let mut parts = encoded.split_whitespace();
    let (algorithm, blob) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let hashed = String::from_utf8_lossy(&existing).lines().any(|l| l.trim_start().starts_with("|1|"));
    let shown = if hashed { hashed_name(name) } else { name.to_string() };
    line.push_str(&format!("{shown} {algorithm} {blob}\n"));
    let mut f = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(file).map_err(io_err)?;
    f.write_all(line.as_bytes()).map_err(io_err)?;
    f.sync_all().map_err(io_err)
}

/// Records `key` for `name` unless the file, as it is now, already has a say: connections to
/// the same new host in parallel (several hosts behind one jump host) record it once, and a
/// different key recorded meanwhile is reported (`Changed`), not added beside it. Returns the
/// verdict of the file before: `Unknown` when the key was appended.
pub fn record(file: &Path, name: &str, key: &PublicKey) -> Result<Verdict, TransportError> {
    let _guard = RECORD.lock().unwrap_or_else(|e| e.into_inner());
    let verdict = KnownHosts::load(file)?.check(name, key);
    if verdict == Verdict::Unknown {
        append(file, name, key)?;
    }
    Ok(verdict)
}

/// Serializes [`record`]'s check-then-append within this process.
static RECORD: Mutex<()> = Mutex::new(());

/// `SHA256:...` as `ssh` and `ssh-keygen -l` print it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const KEY_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    #[test]
    fn plain_port_and_bracketed_names() {
        let kh = KnownHosts::parse(
            Path::new("kh"),
            &format!("# comment\n\n198.18.0.11 {KEY_A}\n[198.18.0.12]:2222 {KEY_A} a comment\n"),
        );
        assert_eq!(kh.check("198.18.0.11", &key(KEY_A)), Verdict::Known);
        assert_eq!(kh.check("198.18.0.11", &key(KEY_B)), Verdict::Changed { lines: vec![3] });
        assert_eq!(kh.check("[198.18.0.12]:2222", &key(KEY_A)), Verdict::Known);
        assert_eq!(kh.check("198.18.0.12", &key(KEY_A)), Verdict::Unknown);
        assert_eq!(kh.check("[198.18.0.11]:2222", &key(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn malformed_lines_are_skipped_and_counted() {
        let kh = KnownHosts::parse(Path::new("kh"), &format!("garbage\nhost ssh-ed25519 !!!\n\t10.0.0.1\t{KEY_A}\n"));
        assert_eq!(kh.check("10.0.0.1", &key(KEY_B)), Verdict::Changed { lines: vec![3] });
    }

    #[test]
    fn revoked_keys_are_refused() {
        let kh = KnownHosts::parse(Path::new("kh"), &format!("@revoked * {KEY_B}\n10.0.0.1 {KEY_B}\n"));
        assert_eq!(kh.check("10.0.0.1", &key(KEY_B)), Verdict::Revoked { line: 1 });
    }

    #[test]
    fn patterns_and_negation() {
        let kh = KnownHosts::parse(Path::new("kh"), &format!("10.0.0.*,!10.0.0.9 {KEY_A}\n"));
        assert_eq!(kh.check("10.0.0.5", &key(KEY_A)), Verdict::Known);
        assert_eq!(kh.check("10.0.0.9", &key(KEY_A)), Verdict::Unknown);
        assert!(glob("a*b?c", "axxxbyc"));
        assert!(!glob("a*b?c", "axxxbc"));
        assert!(glob("*", ""));
    }

    #[test]
    fn hashed_names() {
        // `ssh-keygen -H` form: |1|base64(salt)|base64(HMAC-SHA1(salt, name)).
        let salt = [7u8; 20];
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[198.18.0.11]:2222");
        let engine = base64::engine::general_purpose::STANDARD;
        let entry = format!("|1|{}|{} {KEY_A}\n", engine.encode(salt), engine.encode(mac.finalize().into_bytes()));
        let kh = KnownHosts::parse(Path::new("kh"), &entry);
        assert_eq!(kh.check("[198.18.0.11]:2222", &key(KEY_A)), Verdict::Known);
        assert_eq!(kh.check("198.18.0.11", &key(KEY_A)), Verdict::Unknown);
    }

    #[test]
    fn a_hashed_file_gets_hashed_entries_that_openssh_finds() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        std::fs::write(&file, format!("{} {KEY_B}\n", hashed_name("10.9.9.9"))).unwrap();
        append(&file, "[198.18.0.11]:2222", &key(KEY_A)).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(!text.contains("198.18.0.11"), "{text}");
        let kh = KnownHosts::load(&file).unwrap();
        assert_eq!(kh.check("[198.18.0.11]:2222", &key(KEY_A)), Verdict::Known);
        let found = std::process::Command::new("ssh-keygen")
            .args(["-F", "[198.18.0.11]:2222", "-f"])
            .arg(&file)
            .output()
            .expect("ssh-keygen runs");
        assert!(String::from_utf8_lossy(&found.stdout).contains("Host [198.18.0.11]:2222 found"), "{found:?}");
        // A plain file stays plain.
        let plain = dir.path().join("plain");
        append(&plain, "198.18.0.12", &key(KEY_A)).unwrap();
        assert!(std::fs::read_to_string(&plain).unwrap().starts_with("198.18.0.12 ssh-ed25519 "));
    }

    #[test]
    fn append_then_known() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/known_hosts");
        append(&file, "[10.0.0.1]:2222", &key(KEY_A)).unwrap();
        std::fs::write(&file, std::fs::read_to_string(&file).unwrap().trim_end()).unwrap();
        append(&file, "10.0.0.2", &key(KEY_B)).unwrap();
        let kh = KnownHosts::load(&file).unwrap();
        assert_eq!(kh.check("[10.0.0.1]:2222", &key(KEY_A)), Verdict::Known);
        assert_eq!(kh.check("10.0.0.2", &key(KEY_B)), Verdict::Known);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn recording_twice_writes_once_and_a_different_key_is_not_added() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        assert_eq!(record(&file, "bastion", &key(KEY_A)).unwrap(), Verdict::Unknown);
        assert_eq!(record(&file, "bastion", &key(KEY_A)).unwrap(), Verdict::Known);
        assert_eq!(record(&file, "bastion", &key(KEY_B)).unwrap(), Verdict::Changed { lines: vec![1] });
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 1);
    }

    #[test]
    fn names_are_looked_up_as_dialled_also_hashed() {
        assert_eq!(name("CP1.Example.com", 22), "cp1.example.com");
        assert_eq!(name("cp1.example.com", 2222), "[cp1.example.com]:2222");
        assert_eq!(name("2001:db8::1", 2222), "[2001:db8::1]:2222");
        let text = format!("{} {KEY_A}\n[bastion.example]:2200 {KEY_B}\n", hashed_name("cp1.example.com"));
        let kh = KnownHosts::parse(Path::new("kh"), &text);
        assert_eq!(kh.check(&name("cp1.example.com", 22), &key(KEY_A)), Verdict::Known);
        assert_eq!(kh.check(&name("cp1.example.com", 22), &key(KEY_B)), Verdict::Changed { lines: vec![1] });
        assert_eq!(kh.check(&name("cp1.example.com", 2200), &key(KEY_A)), Verdict::Unknown);
        assert_eq!(kh.check(&name("bastion.example", 2200), &key(KEY_B)), Verdict::Known);
        assert_eq!(kh.check(&name("bastion.example", 22), &key(KEY_B)), Verdict::Unknown);
    }

    #[test]
    fn preferred_algorithms_put_recorded_first() {
        let kh = KnownHosts::parse(Path::new("kh"), &format!("h {KEY_A}\n"));
        let defaults = [Algorithm::Rsa { hash: Some(HashAlg::Sha512) }, Algorithm::Ed25519];
        assert_eq!(kh.preferred_algorithms("h", &defaults)[0], Algorithm::Ed25519);
        assert_eq!(kh.preferred_algorithms("other", &defaults), defaults.to_vec());
    }
}
