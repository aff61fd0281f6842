//! Private keys: generated for `certificates.keyAlgorithm`, or read from PEM as kubeha and
//! kubeadm write them (PKCS#8 `PRIVATE KEY`, PKCS#1 `RSA PRIVATE KEY`, SEC1 `EC PRIVATE KEY`).
//!
//! A [`Key`] keeps the exact bytes it was read from: an existing key file is never re-encoded,
//! so a kubeadm-made `ca.key` stays byte-identical. Nothing here prints key material; parse
//! failures are reported with fixed texts.

use std::path::Path;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256, PublicKeyData, RsaKeySize};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::PkiError;
use crate::plan::KeyAlgorithm;

/// A private key and the PEM text it is stored as.
pub(crate) struct Key {
    pair: KeyPair,
    pem: Vec<u8>,
}

impl Key {
    /// A new random key of `algorithm` (RSA with the public exponent 65537).
    pub(crate) fn generate(algorithm: KeyAlgorithm) -> Result<Key, PkiError> {
        let pair = match algorithm {
            KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
            KeyAlgorithm::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
            KeyAlgorithm::Rsa3072 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_3072),
            KeyAlgorithm::Rsa4096 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_4096),
        }
        .map_err(|e| PkiError::KeyGeneration { algorithm: algorithm_name(algorithm), detail: e.to_string() })?;
        let pem = pair.serialize_pem().into_bytes();
        Ok(Key { pair, pem })
    }

    /// Reads a PEM private key; `path` only names the file in the error.
    pub(crate) fn from_pem(pem: Vec<u8>, path: &Path) -> Result<Key, PkiError> {
        let corrupt =
            |detail: &str| PkiError::Corrupt { path: path.to_path_buf(), what: "private key", detail: detail.into() };
        let der = PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|_| corrupt("no PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block"))?;
        let pair = KeyPair::try_from(&der).map_err(|_| corrupt("not an RSA or ECDSA key that kubeha can use"))?;
        Ok(Key { pair, pem })
    }

    /// The key as rcgen signs with it.
    pub(crate) fn pair(&self) -> &KeyPair {
        &self.pair
    }

    /// The PEM text, exactly as stored.
    pub(crate) fn pem(&self) -> &[u8] {
        &self.pem
    }

    /// Whether `spki` (from a certificate or a public key file) is this key's public half.
    pub(crate) fn matches(&self, spki: &SubjectPublicKeyInfo<'_>) -> bool {
        spki.subject_public_key.data.as_ref() == self.pair.der_bytes()
    }

    /// The public half as a DER SubjectPublicKeyInfo, as a certificate for this key carries it.
    pub(crate) fn spki_der(&self) -> Vec<u8> {
        self.pair.subject_public_key_info()
    }

    /// The public half as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as kubeadm writes `sa.pub`.
    pub(crate) fn public_pem(&self) -> String {
        self.pair.public_key_pem()
    }
}

/// Never prints the key.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("algorithm", &self.pair.algorithm()).finish_non_exhaustive()
    }
}

/// Whether the PEM public key in `pem` (e.g. `sa.pub`) is the public half of `key`.
pub(crate) fn public_pem_matches(pem: &[u8], key: &Key, path: &Path) -> Result<bool, PkiError> {
    let corrupt = |detail: String| PkiError::Corrupt { path: path.to_path_buf(), what: "public key", detail };
    let der =
        SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|e| corrupt(format!("no PEM PUBLIC KEY block: {e}")))?;
    let (_, spki) = SubjectPublicKeyInfo::from_der(der.as_ref()).map_err(|e| corrupt(e.to_string()))?;
    Ok(key.matches(&spki))
}

/// The inventory's spelling of an algorithm.
pub(crate) fn algorithm_name(algorithm: KeyAlgorithm) -> &'static str {
    match algorithm {
        KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
        KeyAlgorithm::Rsa2048 => "rsa-2048",
        KeyAlgorithm::Rsa3072 => "rsa-3072",
        KeyAlgorithm::Rsa4096 => "rsa-4096",
    }
}
