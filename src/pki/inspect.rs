//! Reading existing certificates and deciding whether they still fit the plan.
//!
//! A leaf that no longer fits (subject, SANs, extended key usage, signer, dates) is not an
//! error: kubeha re-issues it with its existing key and reports why. Only unreadable files and
//! CAs that cannot be used are errors; a CA is never replaced.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::Digest;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_X509_COMMON_NAME, OID_X509_ORGANIZATION_NAME};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use super::PkiError;
use super::certlist::Identity;
use crate::plan::San;

/// The DER of the first certificate in a PEM file (the leaf, as kubeadm reads it); [`parse`]
/// tells whether it is a certificate.
pub(crate) fn pem_to_der(pem: &[u8], path: &Path) -> Result<Vec<u8>, PkiError> {
    let der = CertificateDer::from_pem_slice(pem).map_err(|e| PkiError::Corrupt {
        path: path.to_path_buf(),
        what: "certificate",
        detail: format!("no PEM CERTIFICATE block: {e}"),
    })?;
    Ok(der.to_vec())
}

/// The DER of every certificate in a PEM file (a CA bundle), in order; empty if one is not PEM.
pub(crate) fn all_ders(pem: &[u8]) -> Vec<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem).map(|c| c.map(|c| c.to_vec())).collect::<Result<_, _>>().unwrap_or_default()
}

/// Parses a DER certificate, or reports the file as corrupt.
pub(crate) fn parse<'a>(der: &'a [u8], path: &Path) -> Result<X509Certificate<'a>, PkiError> {
    match X509Certificate::from_der(der) {
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(PkiError::Corrupt { path: path.to_path_buf(), what: "certificate", detail: e.to_string() }),
    }
}

/// `sha256:<hex>` of a CA's SubjectPublicKeyInfo: kubeadm's discovery hash, kubeha's cluster id.
pub(crate) fn cluster_id(ca: &X509Certificate<'_>) -> String {
    cluster_id_of_spki(ca.public_key().raw)
}

/// [`cluster_id`] from the DER SubjectPublicKeyInfo of the CA key (e.g. read from `ca.key`
/// while its certificate is missing): a function of the key alone.
pub(crate) fn cluster_id_of_spki(spki_der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(spki_der)))
}

/// Whether `cert` was signed with the key whose DER SubjectPublicKeyInfo is `spki_der`.
pub(crate) fn signed_with(cert: &X509Certificate<'_>, spki_der: &[u8]) -> bool {
    SubjectPublicKeyInfo::from_der(spki_der).is_ok_and(|(_, spki)| cert.verify_signature(Some(&spki)).is_ok())
}

/// The key identifier of `cert`'s authority key identifier extension: the subject key
/// identifier of the CA certificate it was issued under.
pub(crate) fn authority_key_id(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.iter_extensions().find_map(|ext| match ext.parsed_extension() {
        ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|id| id.0.to_vec()),
        _ => None,
    })
}

/// Refuses a CA certificate that cannot sign for the cluster any more.
pub(crate) fn check_ca(cert: &X509Certificate<'_>, path: &Path, now: OffsetDateTime) -> Result<(), PkiError> {
    let is_ca = matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    if !is_ca {
        return Err(PkiError::NotCa { path: path.to_path_buf() });
    }
    let not_after = cert.validity().not_after;
    if not_after.timestamp() <= now.unix_timestamp() {
        return Err(PkiError::CaExpired { path: path.to_path_buf(), not_after: not_after.to_string() });
    }
    Ok(())
}

/// Why `cert` no longer fits `identity` as issued by `ca` (named `ca_name` in the reason), or
/// `None` if it does.
pub(crate) fn leaf_mismatch(
    cert: &X509Certificate<'_>,
    identity: &Identity,
    ca: &X509Certificate<'_>,
    ca_name: &Path,
    now: OffsetDateTime,
) -> Option<String> {
    let mut reasons = Vec::new();

    let expected_subject = expected_subject(identity);
    let mut actual = subject(cert.subject());
    let mut wanted = expected_subject.clone();
    actual.sort();
    wanted.sort();
    if actual != wanted {
        reasons.push(format!(
            "subject is {}, expected {}",
            show_subject(&subject(cert.subject())),
            show_subject(&expected_subject)
        ));
    }

    let have = sans(cert);
    let want: BTreeSet<San> = identity.sans.iter().cloned().collect();
    let missing: Vec<String> = want.difference(&have).map(show_san).collect();
    let unexpected: Vec<String> = have.difference(&want).map(show_san).collect();
    if !missing.is_empty() {
        reasons.push(format!("missing SANs {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        reasons.push(format!("unexpected SANs {}", unexpected.join(", ")));
    }

    let (server, client, other) = match cert.extended_key_usage() {
        Ok(Some(eku)) => (eku.value.server_auth, eku.value.client_auth, eku.value.any || !eku.value.other.is_empty()),
        _ => (false, false, false),
    };
    if server != identity.usage.server() || client != identity.usage.client() || other {
        reasons.push(format!("extended key usage is not {}", show_usage(identity)));
    }
    if !matches!(cert.key_usage(), Ok(Some(ku)) if ku.value.digital_signature() && !ku.value.key_cert_sign()) {
        reasons.push("key usage lacks digitalSignature or allows certificate signing".into());
    }
    if matches!(cert.basic_constraints(), Ok(Some(bc)) if bc.value.ca) {
        reasons.push("it is a CA certificate".into());
    }

    let signed =
        cert.issuer().as_raw() == ca.subject().as_raw() && cert.verify_signature(Some(ca.public_key())).is_ok();
    if !signed {
        reasons.push(format!("not signed by the current {}", ca_name.display()));
    }

    let validity = cert.validity();
    if validity.not_after.timestamp() <= now.unix_timestamp() {
        reasons.push(format!("expired on {}", validity.not_after));
    } else if validity.not_before.timestamp() > (now + time::Duration::minutes(5)).unix_timestamp() {
        reasons.push(format!("not valid before {}", validity.not_before));
    }

    (!reasons.is_empty()).then(|| reasons.join("; "))
}

fn expected_subject(identity: &Identity) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = identity.organizations.iter().map(|o| ("O".into(), o.clone())).collect();
    out.push(("CN".into(), identity.common_name.clone()));
    out
}

fn subject(name: &X509Name<'_>) -> Vec<(String, String)> {
    name.iter_attributes()
        .map(|attr| {
            let kind = if *attr.attr_type() == OID_X509_COMMON_NAME {
                "CN".to_string()
            } else if *attr.attr_type() == OID_X509_ORGANIZATION_NAME {
                "O".to_string()
            } else {
                attr.attr_type().to_id_string()
            };
            (kind, attr.as_str().unwrap_or("<binary>").to_string())
        })
        .collect()
}

fn show_subject(attrs: &[(String, String)]) -> String {
    attrs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// The SANs of `cert`; names kubeha never issues (e-mail, URI, ...) show up as unexpected.
fn sans(cert: &X509Certificate<'_>) -> BTreeSet<San> {
    let Ok(Some(ext)) = cert.subject_alternative_name() else { return BTreeSet::new() };
    ext.value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::DNSName(dns) => San::Dns(dns.to_string()),
            GeneralName::IPAddress(bytes) => match <[u8; 4]>::try_from(*bytes) {
                Ok(v4) => San::Ip(IpAddr::from(v4)),
                Err(_) => match <[u8; 16]>::try_from(*bytes) {
                    Ok(v6) => San::Ip(IpAddr::from(v6)),
                    Err(_) => San::Dns(format!("<IP of {} bytes>", bytes.len())),
                },
            },
            other => San::Dns(format!("<{other}>")),
        })
        .collect()
}

pub(crate) fn show_san(san: &San) -> String {
    match san {
        San::Dns(name) => name.clone(),
        San::Ip(ip) => ip.to_string(),
    }
}

fn show_usage(identity: &Identity) -> &'static str {
    match (identity.usage.server(), identity.usage.client()) {
        (true, true) => "serverAuth+clientAuth",
        (true, false) => "serverAuth",
        _ => "clientAuth",
    }
}
