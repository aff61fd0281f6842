//! Signing certificates the way kubeadm 1.31/1.32 does (`pkiutil.NewSelfSignedCACert` and
//! `NewSignedCert`), with rcgen.
//!
//! - Every certificate gets a random 16-byte serial with the top bit clear (rcgen would
//!   otherwise derive it from the public key, repeating it when a certificate is re-issued
//!   with the same key).
//! - The subject is exactly `O=<orgs>, CN=<name>` in Go's attribute order, replacing rcgen's
//!   default subject.
//! - Key usage is digitalSignature + keyEncipherment (+ keyCertSign for CAs) whatever the key
//!   type: kubeadm 1.31/1.32 sets keyEncipherment on ECDSA certificates too.
//! - CAs carry `DNS:<CN>` as their only SAN, as kubeadm's do; leaves have basicConstraints
//!   CA:FALSE and an authority key identifier naming their CA.
//! - notBefore is backdated by 5 minutes (kubeadm's `CertificateBackdate`); every certificate of
//!   one run shares the same start time.

use rcgen::string::PrintableString;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, DnValue, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

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

/// A new self-signed CA certificate for `key`.
pub(crate) fn ca(common_name: &str, key: &Key, validity: &Validity) -> Result<Certificate, rcgen::Error> {
    let mut params = base_params(common_name, &[], validity.not_before, validity.ca_not_after);
    params.subject_alt_names = vec![SanType::DnsName(common_name.try_into()?)];
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

/// 16 random bytes, top bit clear: a positive serial of at most 128 bits.
fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}
