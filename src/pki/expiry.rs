//! What a certificate found on a host is: whom it names, when it ends, which of the cluster's CAs
//! signed it, and whether it is the one the state directory holds.
//!
//! Pure functions of the PEM text and the state directory's files, read as raw files (not
//! through [`super::load`], which refuses expired certificates — exactly what this must report).

use std::path::{Path, PathBuf};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::inspect::signed_with;

/// The cluster's CAs as the state directory names them: (name, path relative to it).
const CAS: [(&str, &str); 3] =
    [("kubernetes", "pki/ca.crt"), ("etcd", "pki/etcd/ca.crt"), ("front-proxy", "pki/front-proxy-ca.crt")];

/// One certificate, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject, e.g. `CN=kube-apiserver` or `CN=system:node:w1,O=system:nodes`.
    pub subject: String,
    pub not_after: OffsetDateTime,
    /// The CA that signed it (`kubernetes`, `etcd`, `front-proxy`), `self` for a CA itself, or
    /// `None` when no CA of the state directory did.
    pub signer: Option<String>,
    pub serial: String,
}

/// The state directory's CAs, for telling signers apart: name and DER SubjectPublicKeyInfo.
#[derive(Debug, Default)]
pub struct Signers {
    cas: Vec<(&'static str, Vec<u8>)>,
}

impl Signers {
    /// Reads whichever of the cluster's CA certificates exist in `state_dir`.
    pub fn read(state_dir: &Path) -> Signers {
        let cas = CAS
            .iter()
            .filter_map(|(name, rel)| {
                let der = certificate_der(&std::fs::read(state_dir.join(rel)).ok()?)?;
                let (_, cert) = X509Certificate::from_der(&der).ok()?;
                Some((*name, cert.public_key().raw.to_vec()))
            })
            .collect();
        Signers { cas }
    }
}

/// The DER of the first certificate in `pem`.
pub fn certificate_der(pem: &[u8]) -> Option<Vec<u8>> {
    CertificateDer::from_pem_slice(pem).ok().map(|d| d.to_vec())
}

/// Describes the first certificate in `pem`; `None` when there is none or it does not parse.
pub fn describe(pem: &[u8], signers: &Signers) -> Option<CertInfo> {
    let der = certificate_der(pem)?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    let not_after = OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp()).ok()?;
    let own_key = cert.public_key().raw;
    let signer = signers
        .cas
        .iter()
        .find(|(_, spki)| signed_with(&cert, spki))
        .map(|(name, spki)| if spki.as_slice() == own_key { "self".to_string() } else { name.to_string() });
    Some(CertInfo {
        subject: cert.subject().to_string().replace(", ", ","),
        not_after,
        signer,
        serial: cert.raw_serial_as_string(),
    })
}

/// Where the state directory keeps the counterpart of a host's file: `pki/…` for files under
/// `/etc/kubernetes/pki`, `<name>.conf` for kubeconfigs in `/etc/kubernetes`.
pub fn local_counterpart(host_path: &Path) -> Option<PathBuf> {
    let rel = host_path.strip_prefix(crate::host::layout::KUBERNETES_DIR).ok()?;
    (rel.starts_with("pki") || rel.extension().is_some_and(|e| e == "conf")).then(|| rel.to_path_buf())
}

/// The certificate the state directory has for `host_path` (a PEM file, or a kubeconfig's
/// client certificate), as DER.
pub fn local_certificate(state_dir: &Path, host_path: &Path) -> Option<Vec<u8>> {
    let rel = local_counterpart(host_path)?;
    let bytes = std::fs::read(state_dir.join(&rel)).ok()?;
    if rel.extension().is_some_and(|e| e == "conf") {
        let contents = super::kubeconfig::parse(&bytes).ok()?;
        certificate_der(&contents.cert_pem)
    } else {
        certificate_der(&bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counterparts_are_found_under_the_state_directory() {
        assert_eq!(local_counterpart(Path::new("/etc/kubernetes/pki/etcd/peer.crt")), Some("pki/etcd/peer.crt".into()));
        assert_eq!(local_counterpart(Path::new("/etc/kubernetes/admin.conf")), Some("admin.conf".into()));
        assert_eq!(local_counterpart(Path::new("/var/lib/kubelet/pki/kubelet.crt")), None);
        assert_eq!(local_counterpart(Path::new("/etc/kubernetes/manifests/etcd.yaml")), None);
    }
}
