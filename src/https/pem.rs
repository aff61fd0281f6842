//! PEM certificates and keys as rustls uses them, and the client identity built from them.
//!
//! Keys may be RSA (PKCS#1 `RSA PRIVATE KEY` as kubeadm writes it, or PKCS#8), EC (SEC1
//! `EC PRIVATE KEY`, possibly after an `EC PARAMETERS` block, or PKCS#8) or Ed25519. Every load
//! goes through the aws-lc-rs provider so that a key rustls cannot sign with is refused here,
//! not halfway through a handshake. Errors about keys say what is wrong with the file and never
//! quote it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::SigningKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, SubjectPublicKeyInfoDer};

use super::HttpsError;

/// The crypto provider every kubeha TLS configuration uses (aws-lc-rs).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parses every `CERTIFICATE` block of `pem`; `what` names the input in errors
/// (e.g. `--etcd-cafile /etc/kubernetes/pki/etcd/ca.crt`).
pub fn certificates(what: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, HttpsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| HttpsError::Pem { what: what.to_string(), reason: pem_reason(&e, "certificate") })?;
    if certs.is_empty() {
        return Err(HttpsError::Pem { what: what.to_string(), reason: "no PEM CERTIFICATE block found".into() });
    }
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| HttpsError::Pem {
            what: what.to_string(),
            reason: format!("not a valid X.509 certificate: {e}"),
        })?;
    }
    Ok(certs)
}

/// Parses the first private key of `pem` (PKCS#1, SEC1 or PKCS#8) and checks that rustls can
/// sign with it.
pub fn private_key(what: &str, pem: &[u8]) -> Result<PrivateKeyDer<'static>, HttpsError> {
    let key = PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| HttpsError::Pem { what: what.to_string(), reason: pem_reason(&e, "private key") })?;
    signing_key(what, &key)?;
    Ok(key)
}

/// Reads and parses a certificate file (see [`certificates`]); `what` names it in errors.
pub fn read_certificates(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpsError> {
    let bytes = read(what, path)?;
    certificates(what, &bytes)
}

/// Reads and parses a private key file (see [`private_key`]); `what` names it in errors.
pub fn read_private_key(what: &str, path: &Path) -> Result<PrivateKeyDer<'static>, HttpsError> {
    let bytes = read(what, path)?;
    private_key(what, &bytes)
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, HttpsError> {
    std::fs::read(path)
        .map_err(|e| HttpsError::Pem { what: what.to_string(), reason: format!("open {}: {e}", path.display()) })
}

/// The SubjectPublicKeyInfo (DER) of a private key.
pub fn public_key_of(what: &str, key: &PrivateKeyDer<'_>) -> Result<SubjectPublicKeyInfoDer<'static>, HttpsError> {
    let signer = signing_key(what, key)?;
    let spki = signer.public_key().ok_or_else(|| HttpsError::Pem {
        what: what.to_string(),
        reason: "the public key of this key type cannot be derived".into(),
    })?;
    Ok(spki.into_owned())
}

/// Whether `key` is the private key of `cert` (compares SubjectPublicKeyInfo bytes).
pub fn key_matches_certificate(
    what: &str,
    cert: &CertificateDer<'_>,
    key: &PrivateKeyDer<'_>,
) -> Result<bool, HttpsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| HttpsError::Pem {
        what: what.to_string(),
        reason: format!("not a valid X.509 certificate: {e}"),
    })?;
    let spki = public_key_of(what, key)?;
    Ok(parsed.tbs_certificate.subject_pki.raw == spki.as_ref())
}

pub(crate) fn signing_key(what: &str, key: &PrivateKeyDer<'_>) -> Result<Arc<dyn SigningKey>, HttpsError> {
    rustls::crypto::aws_lc_rs::sign::any_supported_type(&key.clone_key()).map_err(|_| HttpsError::Pem {
        what: what.to_string(),
        reason: "the private key is malformed or of an unsupported type (RSA, ECDSA P-256/P-384 and Ed25519 \
                 are supported)"
            .into(),
    })
}

/// A PEM error as text that never quotes the input (whose lines may be key material).
fn pem_reason(err: &pem::Error, expected: &str) -> String {
    match err {
        pem::Error::NoItemsFound => format!("no PEM {expected} block found"),
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line (file truncated?)".into(),
        pem::Error::IllegalSectionStart { .. } => "malformed PEM BEGIN line".into(),
        pem::Error::Base64Decode(_) => "a PEM block is not valid base64".into(),
        pem::Error::Io(e) => format!("read error: {e}"),
        _ => "malformed PEM".into(),
    }
}

/// A client certificate chain with its private key, presented to servers that ask for one.
///
/// `Debug` shows the certificate's subject only, never the key.
pub struct ClientIdentity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    subject: String,
}

impl ClientIdentity {
    /// Builds an identity from a certificate (chain) PEM and its key PEM, checking that the key
    /// belongs to the certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, HttpsError> {
        Self::from_pem_named("client certificate", cert_pem, "client key", key_pem)
    }

    /// Like [`ClientIdentity::from_pem`], naming the inputs in errors (file paths, flags).
    pub fn from_pem_named(
        cert_what: &str,
        cert_pem: &[u8],
        key_what: &str,
        key_pem: &[u8],
    ) -> Result<Self, HttpsError> {
        let chain = certificates(cert_what, cert_pem)?;
        let key = private_key(key_what, key_pem)?;
        Self::new(cert_what, chain, key)
    }

    /// Builds an identity from files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, HttpsError> {
        let cert_what = cert.display().to_string();
        let key_what = key.display().to_string();
        let chain = read_certificates(&cert_what, cert)?;
        let key = read_private_key(&key_what, key)?;
        Self::new(&cert_what, chain, key)
    }

    /// Builds an identity from parsed certificates (leaf first) and key, checking that the key
    /// belongs to the leaf.
    pub fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, HttpsError> {
        if chain.is_empty() {
            return Err(HttpsError::Pem { what: "client certificate".into(), reason: "no certificate".into() });
        }
        Self::new("client certificate", chain, key)
    }

    fn new(what: &str, chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, HttpsError> {
        if !key_matches_certificate(what, &chain[0], &key)? {
            return Err(HttpsError::Pem {
                what: what.to_string(),
                reason: "private key does not match public key".into(),
            });
        }
        let subject = x509_parser::parse_x509_certificate(chain[0].as_ref())
            .map(|(_, c)| c.subject().to_string())
            .unwrap_or_default();
        Ok(ClientIdentity { chain, key, subject })
    }

    /// The subject of the certificate, e.g. `O=kubeadm:cluster-admins, CN=kubernetes-admin`.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity { chain: self.chain.clone(), key: self.key.clone_key(), subject: self.subject.clone() }
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity").field("subject", &self.subject).field("key", &"<redacted>").finish()
    }
}
