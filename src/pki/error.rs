//! What can go wrong with the state directory. Every error names the file it is about and says
//! what the operator can do; none ever carries key material (messages about keys are fixed
//! texts, never a library's description of the bytes it rejected).

use std::path::PathBuf;

/// Why the PKI in the state directory cannot be generated or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },

    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },

    #[error(
        "{} is not a valid {what} ({detail}); restore it from a backup, or move it away so that kubeha creates a new one",
        path.display()
    )]
    Corrupt { path: PathBuf, what: &'static str, detail: String },

    #[error(
        "{} does not match its private key {}; restore the matching pair, or move both away so that kubeha creates new ones",
        cert.display(),
        key.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    #[error(
        "the client certificate in {} does not match the client key next to it; move the file away so that kubeha creates a new one",
        path.display()
    )]
    EmbeddedKeyMismatch { path: PathBuf },

    #[error(
        "{} exists but its private key {} is missing; restore the key, or move {} away so that kubeha creates a new pair",
        cert.display(),
        key.display(),
        cert.display()
    )]
    MissingKey { cert: PathBuf, key: PathBuf },

    #[error(
        "{} is open to other users (mode {mode:04o}); run `kubeha certs generate`, which restricts it to 0600, or `chmod 600` it yourself",
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },

    #[error("{} is not a CA certificate (basicConstraints CA:TRUE is missing); restore the cluster's CA", path.display())]
    NotCa { path: PathBuf },

    #[error(
        "the CA {} expired on {not_after}; kubeha never replaces a CA on its own: rotate it by hand, or move the whole state directory away to start a new cluster",
        path.display()
    )]
    CaExpired { path: PathBuf, not_after: String },

    #[error("{} is missing; run `kubeha certs generate`", path.display())]
    Missing { path: PathBuf },

    #[error("{} no longer matches the inventory ({reason}); run `kubeha certs generate`", path.display())]
    Stale { path: PathBuf, reason: String },

    #[error("cannot generate a {algorithm} key: {detail}")]
    KeyGeneration { algorithm: &'static str, detail: String },

    #[error("cannot sign {}: {detail}", path.display())]
    Sign { path: PathBuf, detail: String },

    #[error("{}: {detail}", path.display())]
    Rotation { path: PathBuf, detail: String },

    /// The state directory (or a path in it) is not safe to use, or belongs to another cluster.
    #[error(transparent)]
    StateDir(#[from] super::StateDirError),
}
