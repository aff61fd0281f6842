//! Client certificates as kube-apiserver treats them: requested, optional, judged per connection.
//!
//! kube-apiserver asks for a client certificate (hinting its client CA) but does not make the
//! handshake fail when a client presents one its CA did not sign: the handshake completes and
//! every request on that connection is answered 401 Unauthorized. A rustls verifier that rejects
//! in the handshake would turn that into a TLS alert, which clients report quite differently. So
//! this verifier accepts any chain during the handshake (still checking the handshake signature,
//! i.e. that the client holds the certificate's key) and [`ClientCertPolicy::judge`] verifies
//! the chain afterwards with webpki against the client CA.

use std::sync::Arc;

use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};

use kubeha::https::{HttpsError, describe_certificate_error, provider};

use super::Peer;

/// Requests client certificates, never requires them, and defers chain verification.
#[derive(Debug)]
pub(crate) struct ClientCertPolicy {
    /// webpki verification against the client CA (accepting anonymous clients).
    inner: Arc<dyn ClientCertVerifier>,
    hints: Vec<DistinguishedName>,
}

impl ClientCertPolicy {
    pub(crate) fn new(client_ca: Vec<CertificateDer<'static>>) -> Result<ClientCertPolicy, HttpsError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in client_ca {
            roots.add(cert).map_err(|e| HttpsError::Pem {
                what: "client CA".into(),
                reason: format!("not usable as a CA: {e}"),
            })?;
        }
        let hints = roots.subjects();
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| HttpsError::Config { detail: e.to_string() })?;
        Ok(ClientCertPolicy { inner, hints })
    }

    /// Who the client of a finished handshake is: anonymous (no certificate), authenticated by
    /// a certificate that chains to the client CA, or rejected with the reason.
    pub(crate) fn judge(&self, presented: Option<&[CertificateDer<'static>]>) -> Peer {
        let Some(chain) = presented.filter(|c| !c.is_empty()) else {
            return Peer::Anonymous;
        };
        match self.inner.verify_client_cert(&chain[0], &chain[1..], UnixTime::now()) {
            Ok(_) => Peer::from_certificate(&chain[0]),
            Err(rustls::Error::InvalidCertificate(e)) => Peer::Rejected(describe_certificate_error(&e)),
            Err(e) => Peer::Rejected(e.to_string()),
        }
    }
}

impl ClientCertVerifier for ClientCertPolicy {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Judged after the handshake (see the module docs).
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
