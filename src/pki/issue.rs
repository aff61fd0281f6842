//! Signing certificates the way kubeadm 1.31/1.32 does (`pkiutil.NewSelfSignedCACert` and
//! `NewSignedCert`), with rcgen.
//!
//! - Every certificate gets a random 16-byte serial with the top bit clear and a non-zero
//!   first byte, so that its DER encoding is always 16 bytes (rcgen would otherwise derive the
//!   serial from the public key, repeating it when a certificate is re-issued with the same key).
//! - The subject is exactly `O=<orgs>, CN=<name>` in Go's attribute order, replacing rcgen's
//!   default subject.
//! - Key usage is digitalSignature + keyEncipherment (+ keyCertSign for CAs) whatever the key
//!   type: kubeadm 1.31/1.32 sets keyEncipherment on ECDSA certificates too.
//! - CAs carry `DNS:<CN>` as their only SAN, as kubeadm's do; leaves have basicConstraints
//!   CA:FALSE and an authority key identifier naming their CA. A CA's subject key identifier is
//!   rcgen's (truncated SHA-256 of the SubjectPublicKeyInfo), a function of the key alone.
//! - A CA certificate re-issued for an existing key ([`CaName::issuer_of`]) takes the subject
//!   and subject key identifier that certificates signed with the key already name their
//!   issuer by, byte for byte: Go chains a certificate to its CA by the exact subject bytes and
//!   OpenSSL also by the key identifier, and a CA made by OpenSSL or kubeadm may differ from
//!   kubeha's in either (OpenSSL writes names as UTF8String, for one).
//! - notBefore is backdated by 5 minutes (kubeadm's `CertificateBackdate`); every certificate of
//!   one run shares the same start time.

use rcgen::string::PrintableString;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;

use super::certlist::Identity;
use super::keys::Key;
use crate::plan::{Certificates, San};

/// kubeadm's `CertificateBackdate`: tolerates small clock differences between hosts.
const BACKDATE: time::Duration = time::Duration::minutes(5);

/// The validity window of everything issued in one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Validity {
    pub(crate) now: OffsetDateTime,
    not_before: OffsetDateTime,
    leaf_not_after: OffsetDateTime,
    ca_not_after: OffsetDateTime,
}

impl Validity {
    pub(crate) fn starting_now(certs: &Certificates) -> Self {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond");
        Validity {
            now,
            not_before: now - BACKDATE,
            leaf_not_after: after(now, certs.validity),
            ca_not_after: after(now, certs.ca_validity),
        }
    }
}

/// `start + lifetime`, capped at the last instant X.509 can express.
fn after(start: OffsetDateTime, lifetime: std::time::Duration) -> OffsetDateTime {
    let last = time::Date::from_calendar_date(9999, time::Month::December, 31)
        .expect("a valid date")
        .with_hms(23, 59, 59)
        .expect("a valid time")
        .assume_utc();
    time::Duration::try_from(lifetime).ok().and_then(|d| start.checked_add(d)).map_or(last, |t| t.min(last))
}

/// How a CA certificate names its CA: subject, subject key identifier, and the SAN.
pub(crate) struct CaName {
    subject: DistinguishedName,
    /// `None`: rcgen's, derived from the key.
    key_id: Option<Vec<u8>>,
    /// The CA's name in the plan, its only SAN (`DNS:<name>`).
    common_name: String,
}

impl CaName {
    /// `CN=<common_name>` and rcgen's key identifier: how kubeha names a CA it creates.
    pub(crate) fn new(common_name: &str) -> Self {
        CaName { subject: distinguished_name(common_name, &[]), key_id: None, common_name: common_name.to_string() }
    }

    /// The CA that issued `cert`, as `cert` names it (issuer name and authority key
    /// identifier), for the plan's CA `common_name`. `None` if rcgen cannot write that issuer
    /// name back byte for byte: only names of one attribute per RDN, no attribute type twice,
    /// and PrintableString or UTF8String values are taken.
    pub(crate) fn issuer_of(cert: &X509Certificate<'_>, common_name: &str) -> Option<Self> {
        let mut subject = DistinguishedName::new();
        let mut types = Vec::new();
        for rdn in cert.issuer().iter() {
            let mut attrs = rdn.iter();
            let (Some(attr), None) = (attrs.next(), attrs.next()) else { return None };
            let oid: Vec<u64> = attr.attr_type().iter()?.collect();
            if types.contains(&oid) {
                return None;
            }
            let text = std::str::from_utf8(attr.attr_value().data).ok()?;
            let value = match attr.attr_value().header.tag() {
                Tag::PrintableString => DnValue::PrintableString(text.try_into().ok()?),
                Tag::Utf8String => DnValue::Utf8String(text.to_string()),
                _ => return None,
            };
            subject.push(DnType::from_oid(&oid), value);
            types.push(oid);
        }
        if types.is_empty() {
            return None;
        }
        Some(CaName { subject, key_id: super::inspect::authority_key_id(cert), common_name: common_name.to_string() })
    }
}

/// A new self-signed CA certificate for `key`, named `name`.
pub(crate) fn ca(name: &CaName, key: &Key, validity: &Validity) -> Result<Certificate, rcgen::Error> {
    let mut params = base_params(&name.common_name, &[], validity.not_before, validity.ca_not_after);
    params.distinguished_name = name.subject.clone();
    if let Some(id) = &name.key_id {
        params.key_identifier_method = KeyIdMethod::PreSpecified(id.clone());
    }
    params.subject_alt_names = vec![SanType::DnsName(name.common_name.as_str().try_into()?)];
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages.push(KeyUsagePurpose::KeyCertSign);
    params.self_signed(key.pair())
}

/// A new leaf certificate for `key` saying `identity`, signed by `issuer`.
pub(crate) fn leaf(
    identity: &Identity,
    key: &Key,
    issuer: &Issuer<'_, &KeyPair>,
    validity: &Validity,
) -> Result<Certificate, rcgen::Error> {
    let mut params =
        base_params(&identity.common_name, &identity.organizations, validity.not_before, validity.leaf_not_after);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    if identity.usage.server() {
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if identity.usage.client() {
        params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    for san in &identity.sans {
        params.subject_alt_names.push(match san {
            San::Dns(name) => SanType::DnsName(name.as_str().try_into()?),
            San::Ip(ip) => SanType::IpAddress(*ip),
        });
    }
    params.signed_by(key.pair(), issuer)
}

fn base_params(
    common_name: &str,
    organizations: &[String],
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name, organizations);
    params.serial_number = Some(random_serial());
    params.not_before = not_before;
    params.not_after = not_after;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params
}

/// `O=..., CN=...` in the order Go's `pkix.Name` writes them, each value a PrintableString when
/// it fits (as Go encodes it) and UTF8String otherwise.
fn distinguished_name(common_name: &str, organizations: &[String]) -> DistinguishedName {
    let value = |s: &str| match PrintableString::try_from(s) {
        Ok(p) => DnValue::PrintableString(p),
        Err(_) => DnValue::Utf8String(s.to_string()),
    };
    let mut dn = DistinguishedName::new();
    // rcgen keeps one value per attribute type; every subject kubeha issues has at most one O.
    debug_assert!(organizations.len() <= 1);
    for org in organizations {
        dn.push(DnType::OrganizationName, value(org));
    }
    dn.push(DnType::CommonName, value(common_name));
    dn
}

/// 16 random bytes, top bit clear (a positive number) and first byte non-zero (DER drops
/// leading zero bytes, which would make the serial shorter): about 127 bits of randomness.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    while bytes[0] == 0 {
        getrandom::fill(&mut bytes).expect("the operating system's random source works");
        bytes[0] &= 0x7f;
    }
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Certificates, KeyAlgorithm};
    use x509_parser::prelude::FromDer;

    fn parse(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).unwrap().1
    }

    #[test]
    fn a_reissued_ca_names_itself_as_its_leaves_name_their_issuer() {
        let certs = Certificates {
            key_algorithm: KeyAlgorithm::EcdsaP256,
            validity: std::time::Duration::from_secs(3600),
            ca_validity: std::time::Duration::from_secs(7200),
            renew_before: std::time::Duration::ZERO,
            extra_sans: Vec::new(),
        };
        let validity = Validity::starting_now(&certs);
        let key = Key::generate(KeyAlgorithm::EcdsaP256).unwrap();
        // A CA as OpenSSL writes one: UTF8String names, another key identifier, two attributes.
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::OrganizationName, DnValue::Utf8String("Example".into()));
        params.distinguished_name.push(DnType::CommonName, DnValue::Utf8String("kubernetes".into()));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_identifier_method = KeyIdMethod::PreSpecified(vec![7; 20]);
        let original = params.self_signed(key.pair()).unwrap();
        let issuer = Issuer::from_ca_cert_der(original.der(), key.pair()).unwrap();
        let identity = Identity {
            common_name: "x".into(),
            organizations: Vec::new(),
            usage: crate::pki::certlist::Usage::Client,
            sans: Vec::new(),
            signer: crate::pki::certlist::Authority::Kubernetes,
        };
        let leaf = leaf(&identity, &Key::generate(KeyAlgorithm::EcdsaP256).unwrap(), &issuer, &validity).unwrap();

        let name = CaName::issuer_of(&parse(leaf.der()), "kubernetes").unwrap();
        let reissued = ca(&name, &key, &validity).unwrap();
        let (leaf, reissued, original) = (parse(leaf.der()), parse(reissued.der()), parse(original.der()));
        assert_eq!(reissued.subject().as_raw(), original.subject().as_raw());
        assert_eq!(reissued.subject().as_raw(), leaf.issuer().as_raw());
        let ski = |c: &X509Certificate<'_>| {
            c.iter_extensions().find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
        };
        assert_eq!(ski(&reissued), Some(vec![7; 20]));
        assert_eq!(crate::pki::inspect::authority_key_id(&leaf), Some(vec![7; 20]));
        assert!(leaf.verify_signature(Some(reissued.public_key())).is_ok());

        // kubeha's own name for a CA it creates.
        let fresh = ca(&CaName::new("etcd-ca"), &key, &validity).unwrap();
        let fresh = parse(fresh.der());
        assert_eq!(fresh.subject().to_string(), "CN=etcd-ca");
        assert_eq!(ski(&fresh).map(|id| id.len()), Some(20));
    }

    #[test]
    fn serials_are_sixteen_bytes_in_der() {
        // A zero first byte comes up once in 128 draws; 2000 draws meet it about 16 times.
        for _ in 0..2000 {
            let serial = random_serial();
            let bytes = serial.as_ref();
            assert_eq!(bytes.len(), 16);
            assert!(bytes[0] != 0 && bytes[0] & 0x80 == 0, "{bytes:02x?}");
        }
    }
}
