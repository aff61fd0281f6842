//! The OpenSSH client configuration (`~/.ssh/config`), as far as kubeha uses it: which name or
//! address to dial, user, port, identity file and jump hosts for a host the inventory names.
//!
//! Read keywords: `Host` (patterns with `*`, `?` and `!negation`), `HostName` (with `%h` and
//! `%%`), `User`, `Port`, `IdentityFile` (the first one), `ProxyJump` (including `none`) and
//! `Include` (globs in the file name; relative paths are relative to the directory of the main
//! configuration file, which for `~/.ssh/config` is `~/.ssh` as for `ssh`). As in `ssh`, the
//! first value found for a keyword wins, so specific blocks go before general ones. Every other
//! keyword is ignored, and so are `Match` blocks (kubeha cannot evaluate their conditions; their
//! settings never apply).
//!
//! A small parser of its own rather than a crate: ssh2-config, the most used one, sorted `Host`
//! blocks and let later values win until a breaking release in 2025 and refuses unknown keywords
//! by default; these seven keywords are simple to read exactly as OpenSSH does.

use crate::text::glob;
use std::path::{Path, PathBuf};

/// How deep `Include` may nest (OpenSSH's limit too), so a file including itself stops.
const MAX_INCLUDE_DEPTH: usize = 16;

/// A configuration file that could not be read or understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SSH configuration {}{}: {message}", file.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// A keyword kubeha reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    HostName,
    User,
    Port,
    IdentityFile,
    ProxyJump,
}

#[derive(Debug, Clone)]
enum Item {
    /// A `Host` line: what follows applies to names matching these patterns. `Match` lines are
    /// a block that never applies (`patterns` empty).
    Host {
        patterns: Vec<String>,
    },
    Set {
        key: Key,
        value: String,
        file: PathBuf,
        line: usize,
    },
    /// An included file's items; afterwards the enclosing block applies again.
    Include(Vec<Item>),
}

/// A parsed configuration file with its includes.
#[derive(Debug, Clone)]
pub struct SshConfig {
    file: PathBuf,
    items: Vec<Item>,
}

/// What the configuration says about one host name; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<PathBuf>,
    /// The raw `ProxyJump` value (`none` included; see [`parse_jumps`]).
    pub proxy_jump: Option<String>,
}

/// One hop of a `ProxyJump` list: `[user@]host[:port]` (or `ssh://[user@]host[:port]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

impl std::fmt::Display for JumpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?
        } else {
            f.write_str(&self.host)?
        }
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl SshConfig {
    /// Reads `file` and what it includes; `home` expands `~/`.
    pub fn load(file: &Path, home: &Path) -> Result<SshConfig, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            message: e.to_string(),
        })?;
        let base = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        let context = Context { base: &base, home };
        let items = parse_text(file, &text, &context, 0)?;
        Ok(SshConfig { file: file.to_path_buf(), items })
    }

    /// Parses configuration text as if read from `file` (includes are read from disk).
    pub fn parse(file: &Path, text: &str, home: &Path) -> Result<SshConfig, ConfigError> {
        let base = file.parent().unwrap_or(Path::new("/")).to_path_buf();
        let items = parse_text(file, text, &Context { base: &base, home }, 0)?;
        Ok(SshConfig { file: file.to_path_buf(), items })
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The settings for `name` (the name as given, before `HostName`), first value winning.
    pub fn lookup(&self, name: &str) -> Result<HostConfig, ConfigError> {
        let mut out = HostConfig::default();
        apply(&self.items, name, true, &mut out)?;
        if let Some(h) = &out.host_name {
            out.host_name = Some(expand_host_tokens(h, name));
        }
        Ok(out)
    }
}

struct Context<'a> {
    base: &'a Path,
    home: &'a Path,
}

fn apply(items: &[Item], name: &str, outer_active: bool, out: &mut HostConfig) -> Result<(), ConfigError> {
    let mut active = outer_active;
    for item in items {
        match item {
            Item::Host { patterns } => active = host_matches(name, patterns),
            Item::Include(inner) => {
                if active {
                    apply(inner, name, true, out)?;
                }
            }
            Item::Set { key, value, file, line } if active => set(out, *key, value, file, *line)?,
            Item::Set { .. } => {}
        }
    }
    Ok(())
}

fn set(out: &mut HostConfig, key: Key, value: &str, file: &Path, line: usize) -> Result<(), ConfigError> {
    match key {
        Key::HostName => {
            out.host_name.get_or_insert_with(|| value.to_string());
        }
        Key::User => {
            out.user.get_or_insert_with(|| value.to_string());
        }
        Key::Port => {
            if out.port.is_none() {
                let port = value.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| ConfigError {
                    file: file.to_path_buf(),
                    line: Some(line),
                    message: format!("Port {value:?} is not a number from 1 to 65535"),
                })?;
                out.port = Some(port);
            }
        }
        Key::IdentityFile => {
            out.identity_file.get_or_insert_with(|| PathBuf::from(value));
        }
        Key::ProxyJump => {
            out.proxy_jump.get_or_insert_with(|| value.to_string());
        }
    }
    Ok(())
}

/// `%h` is the name as given, `%%` a percent sign.
fn expand_host_tokens(value: &str, name: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(name),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn parse_text(file: &Path, text: &str, context: &Context, depth: usize) -> Result<Vec<Item>, ConfigError> {
    let mut items = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let err = |message: String| ConfigError { file: file.to_path_buf(), line: Some(line), message };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (keyword, rest) = split_keyword(trimmed);
        let args = split_args(rest).map_err(err)?;
        let keyword = keyword.to_ascii_lowercase();
        let one = |args: &[String]| -> Result<String, ConfigError> {
            args.first().cloned().ok_or_else(|| err(format!("{keyword} needs a value")))
        };
        let key = match keyword.as_str() {
            "host" => {
                if args.is_empty() {
                    return Err(err("Host needs at least one pattern".into()));
                }
                items.push(Item::Host { patterns: args });
                continue;
            }
            "match" => {
                items.push(Item::Host { patterns: Vec::new() });
                continue;
            }
            "include" => {
                if args.is_empty() {
                    return Err(err("Include needs a file name".into()));
                }
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(err(format!(
                        "Include nests deeper than {MAX_INCLUDE_DEPTH} files (does a file include itself?)"
                    )));
                }
                let mut included = Vec::new();
                for pattern in &args {
                    for path in include_paths(pattern, context).map_err(err)? {
                        let text = std::fs::read_to_string(&path)
                            .map_err(|e| err(format!("Include {}: {e}", path.display())))?;
                        included.extend(parse_text(&path, &text, context, depth + 1)?);
                    }
                }
                items.push(Item::Include(included));
                continue;
            }
            "hostname" => Key::HostName,
            "user" => Key::User,
            "port" => Key::Port,
            "identityfile" => Key::IdentityFile,
            "proxyjump" => Key::ProxyJump,
            _ => continue,
        };
        let mut value = one(&args)?;
        if key == Key::IdentityFile {
            value = expand_tilde(&value, context.home).to_string_lossy().into_owned();
        }
        items.push(Item::Set { key, value, file: file.to_path_buf(), line });
    }
    Ok(items)
}

/// `Keyword value`, `Keyword=value` or `Keyword = value`.
fn split_keyword(line: &str) -> (&str, &str) {
    let end = line.find(|c: char| c.is_whitespace() || c == '=').unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest).trim_start();
    (keyword, rest)
}

/// Whitespace-separated arguments; double quotes group an argument with spaces.
fn split_args(text: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    let mut started = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                started = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if started {
                    args.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if in_quotes {
        return Err("unbalanced quotes".into());
    }
    if started {
        args.push(current);
    }
    Ok(args)
}

fn expand_tilde(text: &str, home: &Path) -> PathBuf {
    match text.strip_prefix("~/") {
        Some(rest) => home.join(rest),
        None if text == "~" => home.to_path_buf(),
        None => PathBuf::from(text),
    }
}

/// The files an `Include` argument names, sorted; a pattern matching nothing is no error (as in
/// OpenSSH). Wildcards are allowed in the file name, not in directory names.
fn include_paths(pattern: &str, context: &Context) -> Result<Vec<PathBuf>, String> {
    let path = expand_tilde(pattern, context.home);
    let path = if path.is_absolute() { path } else { context.base.join(path) };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(format!("Include {pattern}: kubeha supports wildcards in the file name only"));
    }
    if !name.contains(['*', '?']) {
        return Ok(if path.is_file() { vec![path] } else { Vec::new() });
    }
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            // A shell glob does not match hidden files with `*`.
            !n.starts_with('.') && glob(&name, &n)
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    Ok(found)
}

/// Whether `name` matches a `Host` line: some pattern matches and no `!pattern` does
/// (case-insensitive).
pub fn host_matches(name: &str, patterns: &[String]) -> bool {
    let name = name.to_ascii_lowercase();
    let mut matched = false;
    for pattern in patterns {
        for part in pattern.split(',').filter(|p| !p.is_empty()) {
            let part = part.to_ascii_lowercase();
            if let Some(negated) = part.strip_prefix('!') {
                if glob(negated, &name) {
                    return false;
                }
            } else if glob(&part, &name) {
                matched = true;
            }
        }
    }
    matched
}

/// A `ProxyJump` value: `none` (no jump host: `Ok(vec![])`) or a comma-separated list of
/// `[user@]host[:port]` / `ssh://[user@]host[:port]`, visited in order.
pub fn parse_jumps(value: &str) -> Result<Vec<JumpSpec>, String> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    value.split(',').map(|hop| parse_jump(hop.trim())).collect()
}

fn parse_jump(text: &str) -> Result<JumpSpec, String> {
    let bad = |why: &str| Err(format!("{text:?} is not a jump host ([user@]host[:port]): {why}"));
    let rest = text.strip_prefix("ssh://").unwrap_or(text);
    if rest.is_empty() {
        return bad("empty");
    }
    let (user, hostport) = match rest.rsplit_once('@') {
        Some((user, h)) if !user.is_empty() => (Some(user.to_string()), h),
        Some(_) => return bad("empty user"),
        None => (None, rest),
    };
    let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
        let Some((host, after)) = inner.split_once(']') else { return bad("'[' without ']'") };
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return bad("text after ']'"),
        }
    } else if hostport.matches(':').count() == 1 {
        let (h, p) = hostport.split_once(':').expect("one colon");
        (h, Some(p))
    } else {
        (hostport, None)
    };
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return bad("bad host name");
    }
    let port = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && !p.starts_with('+') => Some(n),
            _ => return bad("the port is not a number from 1 to 65535"),
        },
        None => None,
    };
    Ok(JumpSpec { user, host: host.to_string(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> SshConfig {
        SshConfig::parse(Path::new("/nowhere/config"), text, Path::new("/home/op")).unwrap()
    }

    #[test]
    fn aliases_and_first_value_wins() {
        let c = config(
            "# comment\n\
             Host cp1 cp2\n  HostName 10.0.0.1\n  User ops\n  Port 2222\n  IdentityFile ~/.ssh/ops\n  User later\n\
             Host *\n  User everyone\n  Port 22\n  IdentityFile ~/.ssh/id_rsa\n",
        );
        let cp1 = c.lookup("cp1").unwrap();
        assert_eq!(cp1.host_name.as_deref(), Some("10.0.0.1"));
        assert_eq!(cp1.user.as_deref(), Some("ops"));
        assert_eq!(cp1.port, Some(2222));
        assert_eq!(cp1.identity_file, Some(PathBuf::from("/home/op/.ssh/ops")));
        let other = c.lookup("other").unwrap();
        assert_eq!(other.host_name, None);
        assert_eq!(other.user.as_deref(), Some("everyone"));
        assert_eq!(other.port, Some(22));
        assert_eq!(other.identity_file, Some(PathBuf::from("/home/op/.ssh/id_rsa")));
    }

    #[test]
    fn global_settings_before_any_host_apply_to_all_and_win() {
        let c = config("User first\nHost cp1\n  User second\n");
        assert_eq!(c.lookup("cp1").unwrap().user.as_deref(), Some("first"));
    }

    #[test]
    fn wildcards_negation_case_and_equals_syntax() {
        let c = config(
            "Host *.prod.example !db?.prod.example\n  User=prod\nHOST 10.1.*\n  port = 2200\n\
             Host \"quoted name\"\n  User q\n",
        );
        assert_eq!(c.lookup("web1.PROD.example").unwrap().user.as_deref(), Some("prod"));
        assert_eq!(c.lookup("db1.prod.example").unwrap().user, None);
        assert_eq!(c.lookup("db10.prod.example").unwrap().user.as_deref(), Some("prod"));
        assert_eq!(c.lookup("10.1.2.3").unwrap().port, Some(2200));
        assert_eq!(c.lookup("10.2.2.3").unwrap().port, None);
        assert_eq!(c.lookup("quoted name").unwrap().user.as_deref(), Some("q"));
    }

    #[test]
    fn hostname_tokens() {
        let c = config("Host *\n  HostName %h.internal.example\n");
        assert_eq!(c.lookup("cp1").unwrap().host_name.as_deref(), Some("cp1.internal.example"));
        assert_eq!(expand_host_tokens("a%%b%x", "n"), "a%b%x");
    }

    #[test]
    fn match_blocks_never_apply_and_unknown_keywords_are_ignored() {
        let c = config("Match host cp1\n  User matched\nHost cp1\n  ForwardAgent yes\n  User plain\n");
        assert_eq!(c.lookup("cp1").unwrap().user.as_deref(), Some("plain"));
    }

    #[test]
    fn bad_port_names_file_and_line() {
        let c = config("Host cp1\n  Port ssh\n");
        let e = c.lookup("cp1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "SSH configuration /nowhere/config line 2: Port \"ssh\" is not a number from 1 to 65535"
        );
        assert!(c.lookup("cp2").is_ok(), "a bad value in a block that does not apply is not read");
        let e = SshConfig::parse(Path::new("/c"), "Host\n", Path::new("/")).unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = SshConfig::parse(Path::new("/c"), "User \"x\n", Path::new("/")).unwrap_err();
        assert!(e.message.contains("unbalanced quotes"), "{e}");
    }

    #[test]
    fn include_globs_relative_to_the_main_file_and_inside_host_blocks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(dir.path().join("conf.d/10-cp.conf"), "Host cp*\n  User fromcp\n  ProxyJump bastion\n").unwrap();
        std::fs::write(dir.path().join("conf.d/20-all.conf"), "Host *\n  Port 2022\n").unwrap();
        std::fs::write(dir.path().join("conf.d/.hidden"), "Host *\n  User hidden\n").unwrap();
        std::fs::write(dir.path().join("only-w"), "User fromw\n").unwrap();
        let main = dir.path().join("config");
        std::fs::write(
            &main,
            "Include conf.d/*.conf\nHost w1\n  Include only-w missing-file\n  Port 2200\nHost *\n  User last\n",
        )
        .unwrap();
        let c = SshConfig::load(&main, Path::new("/home/op")).unwrap();
        let cp1 = c.lookup("cp1").unwrap();
        assert_eq!(
            (cp1.user.as_deref(), cp1.port, cp1.proxy_jump.as_deref()),
            (Some("fromcp"), Some(2022), Some("bastion"))
        );
        let w1 = c.lookup("w1").unwrap();
        assert_eq!((w1.user.as_deref(), w1.port), (Some("fromw"), Some(2022)));
        // The include inside `Host w1` applies to w1 only.
        assert_eq!(c.lookup("x").unwrap().user.as_deref(), Some("last"));
    }

    #[test]
    fn an_include_loop_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config");
        std::fs::write(&main, "Include config\n").unwrap();
        let e = SshConfig::load(&main, Path::new("/")).unwrap_err();
        assert!(e.message.contains("nests deeper than 16"), "{e}");
    }

    #[test]
    fn proxy_jump_lists() {
        assert_eq!(parse_jumps("none").unwrap(), vec![]);
        assert_eq!(
            parse_jumps("ops@bastion:2222, inner,ssh://root@[2001:db8::1]:22").unwrap(),
            vec![
                JumpSpec { user: Some("ops".into()), host: "bastion".into(), port: Some(2222) },
                JumpSpec { user: None, host: "inner".into(), port: None },
                JumpSpec { user: Some("root".into()), host: "2001:db8::1".into(), port: Some(22) },
            ]
        );
        assert_eq!(parse_jumps("2001:db8::1").unwrap()[0].host, "2001:db8::1");
        for bad in ["", "a,,b", "a:0", "a:x", "@a", "[a", "a b"] {
            assert!(parse_jumps(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(parse_jumps("ops@[2001:db8::1]:2222").unwrap()[0].to_string(), "ops@[2001:db8::1]:2222");
    }
}
