//! The inventory file: one YAML document describing the cluster, turned into a [`Plan`].
//!
//! Loading has two stages. YAML syntax errors (with line and column) stop at once; after that
//! every field is checked and *all* problems are returned together, each naming its field path,
//! so an operator fixes the file in one pass. No host is contacted before this succeeds.
//!
//! The file is read up to [`MAX_INVENTORY_BYTES`] (so `-i /dev/zero` fails at once), `-` reads
//! standard input, and the YAML parser's own limits (alias expansion, nesting) turn into plain
//! messages: nothing of the parser's internals reaches the operator.

mod addressing;
mod checks;
mod fields;
mod image;
mod manifest;
mod reach;
mod spec;

use std::io::Read;
use std::path::{Path, PathBuf};

pub use fields::Problem;
pub use reach::{MAX_JUMPS, SshConfigChoice};

use crate::plan::Plan;

/// The `apiVersion` this release reads.
pub const API_VERSION: &str = "kubeha/v1alpha1";
pub const KIND: &str = "Cluster";
/// The largest inventory kubeha reads: a cluster of thousands of hosts fits many times over.
pub const MAX_INVENTORY_BYTES: u64 = 1024 * 1024;
/// `-i -`: the inventory on standard input.
pub const STDIN: &str = "-";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    #[error("cannot read inventory {}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("inventory {} is larger than {} KiB; an inventory is a short YAML file", path.display(), MAX_INVENTORY_BYTES / 1024)]
    TooLarge { path: PathBuf },
    #[error("inventory {} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
    #[error("inventory {} is not valid YAML: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("inventory {} has {} problem{}:\n{}", path.display(), problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

/// Choices the command line makes about how strictly an inventory is read.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParseOptions {
    /// Accept a `kubernetesVersion` outside the supported minors; it is rendered with the
    /// nearest supported minor's rules (`Plan::kubeadm_release`).
    pub allow_unsupported_version: bool,
}

/// Reads and validates an inventory file (`-`: standard input, with relative paths in it
/// resolved against the working directory).
pub fn load(path: &Path) -> Result<Plan, InventoryError> {
    load_with(path, ParseOptions::default())
}

/// [`load`] with options.
pub fn load_with(path: &Path, options: ParseOptions) -> Result<Plan, InventoryError> {
    load_with_ssh_config(path, options, &SshConfigChoice::default())
}

/// [`load_with`], reading the SSH configuration `ssh_config` chooses when `spec.ssh.configFile`
/// does not name one (the command line reads `~/.ssh/config`).
pub fn load_with_ssh_config(
    path: &Path,
    options: ParseOptions,
    ssh_config: &SshConfigChoice,
) -> Result<Plan, InventoryError> {
    let (text, shown, base) = if path == Path::new(STDIN) {
        (read_capped(std::io::stdin().lock(), path)?, PathBuf::from("(standard input)"), PathBuf::new())
    } else {
        let file =
            std::fs::File::open(path).map_err(|source| InventoryError::Read { path: path.to_path_buf(), source })?;
        (read_capped(file, path)?, path.to_path_buf(), path.parent().map(Path::to_path_buf).unwrap_or_default())
    };
    parse_with_ssh_config(&text, &base, options, ssh_config).map_err(|e| match e {
        ParseError::Syntax(message) => InventoryError::Syntax { path: shown, message },
        ParseError::Invalid(problems) => InventoryError::Invalid { path: shown, problems },
    })
}

/// Reads at most [`MAX_INVENTORY_BYTES`] of UTF-8 text.
fn read_capped(reader: impl Read, path: &Path) -> Result<String, InventoryError> {
    let shown = || if path == Path::new(STDIN) { PathBuf::from("(standard input)") } else { path.to_path_buf() };
    let mut bytes = Vec::new();
    reader
        .take(MAX_INVENTORY_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InventoryError::Read { path: shown(), source })?;
    if bytes.len() as u64 > MAX_INVENTORY_BYTES {
        return Err(InventoryError::TooLarge { path: shown() });
    }
    String::from_utf8(bytes).map_err(|_| InventoryError::NotText { path: shown() })
}

/// Why an inventory text was rejected, before a file name is attached.
#[derive(Debug)]
pub enum ParseError {
    Syntax(String),
    Invalid(Vec<Problem>),
}

/// Validates inventory text; relative file paths in it are resolved against `base`.
pub fn parse(text: &str, base: &Path) -> Result<Plan, ParseError> {
    parse_with(text, base, ParseOptions::default())
}

/// [`parse`] with options.
pub fn parse_with(text: &str, base: &Path, options: ParseOptions) -> Result<Plan, ParseError> {
    parse_with_ssh_config(text, base, options, &SshConfigChoice::default())
}

/// [`parse_with`] and the SSH configuration to read (see [`load_with_ssh_config`]).
pub fn parse_with_ssh_config(
    text: &str,
    base: &Path,
    options: ParseOptions,
    ssh_config: &SshConfigChoice,
) -> Result<Plan, ParseError> {
    let doc: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| ParseError::Syntax(syntax_message(&e.to_string())))?;
    let mut problems = fields::Problems::default();
    let draft = spec::read_document(&doc, base, ssh_config, &mut problems);
    if let Some(version) = draft.kubernetes_version
        && !options.allow_unsupported_version
        && let Err(unsupported) = crate::version::KubeadmRelease::exact(version)
    {
        problems.push("spec.kubernetesVersion", unsupported.to_string());
    }
    checks::cross_check(&draft, &mut problems);
    let plan = draft.into_plan();
    match plan {
        Some(plan) if problems.0.is_empty() => Ok(plan),
        _ => {
            debug_assert!(!problems.0.is_empty(), "a rejected inventory must say why");
            Err(ParseError::Invalid(problems.0))
        }
    }
}

/// The YAML parser's message in plain words: its first line (the parser adds a rendered
/// excerpt of the file), without its `error:` prefix and hints about parser options, which
/// operators cannot set.
fn syntax_message(raw: &str) -> String {
    let first = raw.lines().next().unwrap_or("").trim_start_matches("error: ");
    // `line 3 column 1: ...`: keep the position, replace what follows when it is internal.
    let (position, what) = match first.split_once(": ") {
        Some((pos, rest)) if pos.starts_with("line ") => (format!("{pos}: "), rest),
        _ => (String::new(), first),
    };
    let plain = if what.starts_with("multiple YAML documents detected") {
        "a second YAML document starts here ('---'); an inventory is exactly one document".to_string()
    } else if what.contains("budget breached") {
        "the document expands too far (deep nesting, or aliases that repeat other aliases); \
         write the values out instead"
            .to_string()
    } else {
        what.replace(", set DuplicateKeyPolicy in Options if acceptable", "")
    };
    format!("{position}{plain}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_messages_are_plain() {
        let multi = parse("a: 1\n---\nb: 2\n", Path::new(".")).unwrap_err();
        let ParseError::Syntax(text) = multi else { panic!("{multi:?}") };
        assert_eq!(
            text,
            "line 3 column 1: a second YAML document starts here ('---'); an inventory is exactly one document"
        );
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
        for (prev, name) in
            ["a", "b", "c", "d", "e", "f", "g", "h"].iter().zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            bomb.push_str(&format!("{name}: &{name} [{}]\n", vec![format!("*{prev}"); 9].join(", ")));
        }
        let ParseError::Syntax(text) = parse(&bomb, Path::new(".")).unwrap_err() else { panic!() };
        assert!(text.contains("expands too far") && !text.contains("budget") && !text.contains('\n'), "{text}");
    }

    #[test]
    fn reads_are_capped() {
        let err = read_capped(std::io::repeat(0), Path::new("/dev/zero")).unwrap_err();
        assert!(matches!(err, InventoryError::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("larger than 1024 KiB"), "{err}");
    }
}
