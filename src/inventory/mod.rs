//! The inventory file: one YAML document describing the cluster, turned into a [`Plan`].
//!
//! Loading has two stages. YAML syntax errors (with line and column) stop at once; after that
//! every field is checked and *all* problems are returned together, each naming its field path,
//! so an operator fixes the file in one pass. No host is contacted before this succeeds.

mod checks;
mod fields;
mod spec;

use std::path::{Path, PathBuf};

pub use fields::Problem;

use crate::plan::Plan;

/// The `apiVersion` this release reads.
pub const API_VERSION: &str = "kubeha/v1alpha1";
pub const KIND: &str = "Cluster";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InventoryError {
    #[error("cannot read inventory {}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
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

/// Reads and validates an inventory file.
pub fn load(path: &Path) -> Result<Plan, InventoryError> {
    load_with(path, ParseOptions::default())
}

/// [`load`] with options.
pub fn load_with(path: &Path, options: ParseOptions) -> Result<Plan, InventoryError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| InventoryError::Read { path: path.to_path_buf(), source })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_with(&text, &base, options).map_err(|e| match e {
        ParseError::Syntax(message) => InventoryError::Syntax { path: path.to_path_buf(), message },
        ParseError::Invalid(problems) => InventoryError::Invalid { path: path.to_path_buf(), problems },
    })
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
    let doc: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| ParseError::Syntax(syntax_message(&e.to_string())))?;
    let mut problems = fields::Problems::default();
    let draft = spec::read_document(&doc, base, &mut problems);
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

/// The YAML parser's message without its own `error:` prefix and its hint about parser options,
/// which operators cannot set.
fn syntax_message(raw: &str) -> String {
    raw.trim_start_matches("error: ").replace(", set DuplicateKeyPolicy in Options if acceptable", "")
}
