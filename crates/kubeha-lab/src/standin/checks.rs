//! Startup checks on the files a component's flags name: readable, parsable, key matching
//! certificate, certificate chaining to the CA that will judge it, certificate valid now.
//!
//! Each failure is a [`StartupError`] whose text names the flag and the file, in the words the
//! real component (Go's crypto/tls and crypto/x509) would use where it has them, so a broken
//! rendered manifest fails in the lab the way it would fail on a real host. Successful checks
//! are logged with what was checked (subjects, expiry), never with key bytes.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use super::flags::Flags;
use kubeha::https::{self, HttpsError};

/// A failed startup check; printed as `Error: {0}` before exiting 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

/// Formats an I/O error the way Go's `os` package does (`open /x: no such file or directory`).
pub fn go_io_error(op: &str, path: &Path, err: &io::Error) -> String {
    format!("{op} {}: {}", path.display(), go_reason(err))
}

/// Listens on the secure port, failing as the real components do when the address is taken.
pub async fn listen_securely(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, StartupError> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        StartupError(format!(
            "failed to create listener: failed to listen on {addr}: listen tcp {addr}: bind: {}",
            go_reason(&e)
        ))
    })?;
    tracing::info!("Serving securely on {addr}");
    Ok(listener)
}

/// An I/O error's reason as Go words it (`no such file or directory`, `address already in use`).
pub fn go_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::NotFound => "no such file or directory".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::IsADirectory => "is a directory".to_string(),
        _ => {
            let text = err.to_string();
            let text = text.split(" (os error").next().unwrap_or_default().to_string();
            let mut chars = text.chars();
            chars.next().map(|c| c.to_lowercase().collect::<String>() + chars.as_str()).unwrap_or_default()
        }
    }
}

/// Reads the file a flag names.
pub fn read_flag_file(flag: &str, path: &str) -> Result<Vec<u8>, StartupError> {
    std::fs::read(path).map_err(|e| StartupError(format!("--{flag}: {}", go_io_error("open", Path::new(path), &e))))
}

/// Checks that every file-valued flag names a readable file.
pub fn check_files_readable(flags: &Flags) -> Result<(), StartupError> {
    for (flag, path) in flags.files() {
        read_flag_file(flag, path)?;
    }
    tracing::info!("all {} files named by flags are readable", flags.files().len());
    Ok(())
}

fn pem_error(flag: &str, path: &str, err: HttpsError) -> StartupError {
    match err {
        HttpsError::Pem { reason, .. } => StartupError(format!("--{flag} {path}: {reason}")),
        other => StartupError(format!("--{flag} {path}: {other}")),
    }
}

/// Loads the certificates of a file named by a flag.
pub fn load_certificates(flag: &str, path: &str) -> Result<Vec<CertificateDer<'static>>, StartupError> {
    let bytes = read_flag_file(flag, path)?;
    https::certificates(&format!("--{flag} {path}"), &bytes).map_err(|e| pem_error(flag, path, e))
}

/// Loads the private key of a file named by a flag.
pub fn load_private_key(flag: &str, path: &str) -> Result<PrivateKeyDer<'static>, StartupError> {
    let bytes = read_flag_file(flag, path)?;
    https::private_key(&format!("--{flag} {path}"), &bytes).map_err(|e| pem_error(flag, path, e))
}

/// A certificate file and its key, checked to belong together.
pub struct Pair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Loads a certificate/key pair named by two flags and checks that the key matches.
pub fn load_pair(flags: &Flags, cert_flag: &str, key_flag: &str) -> Result<Option<Pair>, StartupError> {
    let (cert_path, key_path) = match (flags.nonempty(cert_flag), flags.nonempty(key_flag)) {
        (None, None) => return Ok(None),
        (Some(_), None) => return Err(StartupError(format!("--{cert_flag} is set but --{key_flag} is not"))),
        (None, Some(_)) => return Err(StartupError(format!("--{key_flag} is set but --{cert_flag} is not"))),
        (Some(c), Some(k)) => (c, k),
    };
    let chain = load_certificates(cert_flag, cert_path)?;
    let key = load_private_key(key_flag, key_path)?;
    let matches =
        https::key_matches_certificate(cert_path, &chain[0], &key).map_err(|e| pem_error(cert_flag, cert_path, e))?;
    if !matches {
        return Err(StartupError(format!(
            "--{cert_flag} {cert_path} and --{key_flag} {key_path}: tls: private key does not match public key"
        )));
    }
    tracing::info!("--{cert_flag} {cert_path}: {}; --{key_flag} {key_path} matches it", describe(&chain[0]));
    Ok(Some(Pair { chain, key }))
}

/// Checks that a client certificate chains to the CA that will verify it, with the client-auth
/// usage, as the peer (etcd, a kubelet, an aggregated apiserver) would check it.
pub fn check_client_chain(
    cert_flag: &str,
    cert_path: &str,
    chain: &[CertificateDer<'static>],
    ca_flag: &str,
    ca_path: &str,
) -> Result<(), StartupError> {
    let ca = load_certificates(ca_flag, ca_path)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in ca {
        roots
            .add(cert)
            .map_err(|e| StartupError(format!("--{ca_flag} {ca_path}: not usable as a CA certificate: {e}")))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), https::provider())
        .build()
        .map_err(|e| StartupError(format!("--{ca_flag} {ca_path}: {e}")))?;
    match verifier.verify_client_cert(&chain[0], &chain[1..], UnixTime::now()) {
        Ok(_) => {
            tracing::info!("--{cert_flag} {cert_path} is signed by the CA in --{ca_flag} {ca_path}");
            Ok(())
        }
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
        )) => Err(StartupError(format!(
            "--{cert_flag} {cert_path}: x509: certificate signed by unknown authority (not signed by the CA in \
             --{ca_flag} {ca_path})"
        ))),
        Err(e) => Err(StartupError(format!(
            "--{cert_flag} {cert_path}: not a valid client certificate for the CA in --{ca_flag} {ca_path}: {e}"
        ))),
    }
}

/// Checks that a certificate is within its validity period now.
pub fn check_valid_now(flag: &str, path: &str, cert: &CertificateDer<'_>) -> Result<(), StartupError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| StartupError(format!("--{flag} {path}: not a valid X.509 certificate: {e}")))?;
    let validity = parsed.validity();
    if validity.is_valid() {
        return Ok(());
    }
    let now = time::OffsetDateTime::now_utc();
    Err(StartupError(format!(
        "--{flag} {path}: x509: certificate has expired or is not yet valid: current time {} is outside {} .. {}",
        rfc3339(now),
        validity.not_before,
        validity.not_after
    )))
}

/// Checks that a file holds a public key (PEM `PUBLIC KEY`, a certificate or a private key, as
/// `--service-account-key-file` allows) equal to `expected` (SubjectPublicKeyInfo DER).
pub fn file_holds_public_key(flag: &str, path: &str, expected: &[u8]) -> Result<bool, StartupError> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    let bytes = read_flag_file(flag, path)?;
    let mut found_any = false;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(&bytes) {
        let (kind, der) = section.map_err(|_| StartupError(format!("--{flag} {path}: malformed PEM")))?;
        let spki = match kind {
            SectionKind::PublicKey => Some(der),
            SectionKind::Certificate => {
                x509_parser::parse_x509_certificate(&der).ok().map(|(_, c)| c.tbs_certificate.subject_pki.raw.to_vec())
            }
            SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey | SectionKind::PrivateKey => {
                let key = match kind {
                    SectionKind::RsaPrivateKey => PrivateKeyDer::Pkcs1(der.into()),
                    SectionKind::EcPrivateKey => PrivateKeyDer::Sec1(der.into()),
                    _ => PrivateKeyDer::Pkcs8(der.into()),
                };
                https::public_key_of(path, &key).ok().map(|k| k.as_ref().to_vec())
            }
            _ => None,
        };
        if let Some(spki) = spki {
            found_any = true;
            if spki == expected {
                return Ok(true);
            }
        }
    }
    if !found_any {
        return Err(StartupError(format!("--{flag} {path}: no public key, certificate or private key found")));
    }
    Ok(false)
}

/// A one-line description of a certificate for logs: subject, issuer and expiry.
pub fn describe(cert: &CertificateDer<'_>) -> String {
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, c)) => format!(
            "certificate \"{}\" issued by \"{}\", valid until {}",
            c.subject(),
            c.issuer(),
            c.validity().not_after
        ),
        Err(e) => format!("unparsable certificate ({e})"),
    }
}

/// `2026-11-23T18:07:18Z`.
pub fn rfc3339(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
