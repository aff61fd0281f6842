//! Errors of the HTTPS client and server helpers.
//!
//! Callers decide differently on a server that cannot be verified (wrong CA file, wrong address:
//! retrying will not help) and one that cannot be reached yet (retry), so verification failures
//! have their own variant with a [`VerifyFailure`] kind. Messages name the server or file but
//! never contain key bytes: PEM errors for keys are reduced to what is wrong with the file.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::time::Duration;

/// Why a peer's certificate was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyFailure {
    /// The certificate does not chain to the given CA.
    UnknownCa,
    /// The certificate is not valid for the server name (DNS name or IP address) asked for.
    NameMismatch,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The certificate may not be used for this purpose (extended key usage).
    WrongUsage,
    /// Any other certificate problem (bad encoding, bad signature, ...).
    Other,
}

impl VerifyFailure {
    fn advice(self) -> &'static str {
        match self {
            VerifyFailure::UnknownCa => "it is not signed by the given CA; check the CA file",
            VerifyFailure::NameMismatch => {
                "it is not valid for that server name; check the address or the certificate's SANs"
            }
            VerifyFailure::Expired => "it has expired; renew the certificate",
            VerifyFailure::NotYetValid => "it is not valid yet; check the clocks",
            VerifyFailure::WrongUsage => "its key usage does not allow this use",
            VerifyFailure::Other => "it is not acceptable",
        }
    }
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.advice())
    }
}

/// Everything that can go wrong in [`crate::https`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpsError {
    /// A PEM input (certificate, key or CA) could not be used.
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    /// The server name is neither a DNS name nor an IP address.
    #[error("{name:?} is not a valid TLS server name (a DNS name or an IP address)")]
    ServerName { name: String },
    /// The URL is not `https://host:port/path`.
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    /// The TCP connection could not be made.
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// The server's certificate did not verify: retrying will not help.
    #[error("TLS: the certificate of {server} was rejected: {kind} ({detail})")]
    Verify { server: String, kind: VerifyFailure, detail: String },
    /// The TLS handshake failed for another reason (the server refused our client certificate,
    /// no common protocol version, the peer is not speaking TLS, ...).
    #[error("TLS handshake with {server} failed: {detail}")]
    Handshake { server: String, detail: String },
    /// The HTTP exchange failed after the handshake.
    #[error("HTTP request to {server} failed: {detail}")]
    Http { server: String, detail: String },
    /// Nothing came back in time.
    #[error("{server}: {stage} did not finish within {after:?}")]
    Timeout { server: String, stage: &'static str, after: Duration },
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {detail}")]
    Config { detail: String },
}

impl HttpsError {
    /// Whether the peer's certificate was rejected (wrong CA, name mismatch, expiry, ...).
    pub fn is_verification_failure(&self) -> bool {
        matches!(self, HttpsError::Verify { .. })
    }

    /// The kind of verification failure, if this is one.
    pub fn verify_failure(&self) -> Option<VerifyFailure> {
        match self {
            HttpsError::Verify { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether a later attempt could succeed (connection refused, timeouts, HTTP failures),
    /// as opposed to configuration problems (bad PEM, bad names, certificate rejection).
    pub fn is_transient(&self) -> bool {
        matches!(self, HttpsError::Connect { .. } | HttpsError::Timeout { .. } | HttpsError::Http { .. })
    }
}

/// Classifies an error raised while talking to `server` during `stage`: rustls certificate
/// errors become [`HttpsError::Verify`], other rustls errors [`HttpsError::Handshake`], the rest
/// `otherwise`.
pub(crate) fn classify(
    server: &str,
    err: &(dyn StdError + 'static),
    otherwise: impl FnOnce(String) -> HttpsError,
) -> HttpsError {
    match find_rustls(err) {
        Some(rustls::Error::InvalidCertificate(cert)) => {
            let kind = verify_kind(cert);
            HttpsError::Verify { server: server.to_string(), kind, detail: describe_certificate_error(cert) }
        }
        Some(other) => HttpsError::Handshake { server: server.to_string(), detail: describe_rustls(other) },
        None => otherwise(crate::text::error_chain(err)),
    }
}

/// Maps a rustls certificate error to the kinds callers act on.
pub(crate) fn verify_kind(err: &rustls::CertificateError) -> VerifyFailure {
    use rustls::CertificateError as C;
    match err {
        C::UnknownIssuer | C::BadSignature => VerifyFailure::UnknownCa,
        C::NotValidForName | C::NotValidForNameContext { .. } => VerifyFailure::NameMismatch,
        C::Expired | C::ExpiredContext { .. } => VerifyFailure::Expired,
        C::NotValidYet | C::NotValidYetContext { .. } => VerifyFailure::NotYetValid,
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => VerifyFailure::WrongUsage,
        _ => VerifyFailure::Other,
    }
}

/// A short text for a certificate error, naming the presented names on a mismatch (also what a
/// TLS server may tell a client whose certificate it rejects).
pub fn describe_certificate_error(err: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match err {
        C::UnknownIssuer => "certificate signed by unknown authority".to_string(),
        C::BadSignature => {
            "certificate signed by unknown authority (its signature does not verify with the CA's key)".to_string()
        }
        C::NotValidForNameContext { expected, presented } => {
            format!("certificate is valid for {}, not {}", presented.join(", "), expected.to_str())
        }
        other => other.to_string(),
    }
}

fn describe_rustls(err: &rustls::Error) -> String {
    match err {
        rustls::Error::AlertReceived(alert) => {
            format!("the peer refused the handshake (alert {alert:?}); check the client certificate and key")
        }
        other => other.to_string(),
    }
}

/// Finds a rustls error in an error's source chain (hyper and tokio-rustls wrap it in
/// `io::Error`s).
fn find_rustls<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a rustls::Error> {
    let mut current: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = find_rustls(inner)
        {
            return Some(found);
        }
        current = e.source();
    }
    None
}
