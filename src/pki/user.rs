//! Kubeconfigs for people and tools (`kubeha kubeconfig`): the state directory's own admin
//! kubeconfigs, or a new client certificate for any user and group signed by the cluster CA, as
//! `kubeadm kubeconfig user` issues them. Nothing is written to the state directory: the
//! kubeconfig (with its new key) goes to the caller only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::Issuer;
use rustls_pki_types::CertificateDer;

use super::PkiError;
use super::certlist::{Authority, Identity, Usage};
use super::issue::{self, Validity};
use super::keys::Key;
use super::kubeconfig::{self, Contents};
use super::{inspect, store::Store};
use crate::plan::{Certificates, Plan};

/// Which kubeconfig to make.
#[derive(Debug, Clone)]
pub enum UserKubeconfig {
    /// A kubeconfig the state directory holds (`admin.conf`, `super-admin.conf`), as it is.
    Stored(&'static str),
    /// A new client certificate for `user` in `group` (its `O=`), valid for `validity`.
    Issued { user: String, group: Option<String>, validity: Duration },
}

impl UserKubeconfig {
    /// `admin` and `super-admin` (with no group) are the stored kubeconfigs kubeha keeps up to
    /// date; any other user gets a new certificate.
    pub fn for_user(user: &str, group: Option<String>, validity: Duration) -> UserKubeconfig {
        match (user, &group) {
            ("admin", None) => UserKubeconfig::Stored("admin.conf"),
            ("super-admin", None) => UserKubeconfig::Stored("super-admin.conf"),
            _ => UserKubeconfig::Issued { user: user.to_string(), group, validity },
        }
    }
}

/// The kubeconfig `which` asks for, pointing at `server` (default: the plan's endpoint).
pub fn user_kubeconfig(
    plan: &Plan,
    state_dir: &Path,
    which: &UserKubeconfig,
    server: Option<&str>,
) -> Result<String, PkiError> {
    let store = Store::new(state_dir);
    let server = server.map_or_else(|| plan.endpoint_url(), str::to_string);
    match which {
        UserKubeconfig::Stored(name) => {
            let rel = Path::new(name);
            let bytes = store.read(rel)?.ok_or_else(|| PkiError::Missing { path: store.path(rel) })?;
            let mut contents = kubeconfig::parse(&bytes).map_err(|detail| PkiError::Corrupt {
                path: store.path(rel),
                what: "kubeconfig",
                detail: detail.into(),
            })?;
            contents.server = server;
            Ok(kubeconfig::render(&contents))
        }
        UserKubeconfig::Issued { user, group, validity } => {
            issued(plan, &store, user, group.as_deref(), *validity, server)
        }
    }
}

fn issued(
    plan: &Plan,
    store: &Store,
    user: &str,
    group: Option<&str>,
    validity: Duration,
    server: String,
) -> Result<String, PkiError> {
    let (crt, key_rel) = (PathBuf::from("pki/ca.crt"), PathBuf::from("pki/ca.key"));
    let ca_pem = store.read(&crt)?.ok_or_else(|| PkiError::Missing { path: store.path(&crt) })?;
    let ca_key_pem = store.read(&key_rel)?.ok_or_else(|| PkiError::Missing { path: store.path(&key_rel) })?;
    let ca_key = Key::from_pem(ca_key_pem, &store.path(&key_rel))?;
    let der = inspect::pem_to_der(&ca_pem, &store.path(&crt))?;
    let ca = inspect::parse(&der, &store.path(&crt))?;
    if !ca_key.matches(ca.public_key()) {
        return Err(PkiError::KeyMismatch { cert: store.path(&crt), key: store.path(&key_rel) });
    }
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(der.as_slice()), ca_key.pair()).map_err(|e| {
        PkiError::Corrupt { path: store.path(&crt), what: "CA certificate for rcgen", detail: e.to_string() }
    })?;
    let identity = Identity {
        common_name: user.to_string(),
        organizations: group.map(str::to_string).into_iter().collect(),
        usage: Usage::Client,
        sans: Vec::new(),
        signer: Authority::Kubernetes,
    };
    let certificates = Certificates { validity, ..plan.certificates.clone() };
    let key = Key::generate(plan.certificates.key_algorithm)?;
    let cert = issue::leaf(&identity, &key, &issuer, &Validity::starting_now(&certificates)).map_err(|e| {
        PkiError::Sign { path: PathBuf::from(format!("<kubeconfig of {user}>")), detail: e.to_string() }
    })?;
    let contents = Contents {
        cluster: plan.name.clone(),
        server,
        user: user.to_string(),
        ca_pem,
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.pem().to_vec(),
    };
    Ok(kubeconfig::render(&contents))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        crate::inventory::parse(include_str!("../../inventories/example.yaml"), Path::new(".")).unwrap()
    }

    #[test]
    fn a_new_user_gets_a_client_certificate_from_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan();
        crate::pki::generate(&plan, dir.path()).unwrap();
        let which = UserKubeconfig::for_user("alice", Some("devs".into()), Duration::from_secs(3600));
        let text = user_kubeconfig(&plan, dir.path(), &which, Some("https://lb.example:6443")).unwrap();
        let parsed = kubeconfig::parse(text.as_bytes()).unwrap();
        assert_eq!((parsed.user.as_str(), parsed.server.as_str()), ("alice", "https://lb.example:6443"));
        let der = inspect::pem_to_der(&parsed.cert_pem, Path::new("x")).unwrap();
        let cert = inspect::parse(&der, Path::new("x")).unwrap();
        assert_eq!(cert.subject().to_string(), "O=devs, CN=alice");
        let ca_pem = std::fs::read(dir.path().join("pki/ca.crt")).unwrap();
        let ca_der = inspect::pem_to_der(&ca_pem, Path::new("ca")).unwrap();
        let ca = inspect::parse(&ca_der, Path::new("ca")).unwrap();
        assert_eq!(cert.issuer(), ca.subject());
        assert!(cert.verify_signature(Some(ca.public_key())).is_ok());
        let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 3600 + 300, "an hour plus the 5-minute backdate");
        let key = Key::from_pem(parsed.key_pem.clone(), Path::new("k")).unwrap();
        assert!(key.matches(cert.public_key()));
        // Nothing new in the state directory.
        assert!(!text.is_empty() && !dir.path().join("alice.conf").exists());
    }

    #[test]
    fn admin_is_the_stored_kubeconfig_with_the_server_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan();
        crate::pki::generate(&plan, dir.path()).unwrap();
        let which = UserKubeconfig::for_user("admin", None, Duration::from_secs(1));
        let text = user_kubeconfig(&plan, dir.path(), &which, None).unwrap();
        assert_eq!(text, std::fs::read_to_string(dir.path().join("admin.conf")).unwrap());
        let moved = user_kubeconfig(&plan, dir.path(), &which, Some("https://10.0.0.1:6443")).unwrap();
        assert!(moved.contains("server: https://10.0.0.1:6443"), "{moved}");
    }

    #[test]
    fn a_missing_state_directory_says_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let which = UserKubeconfig::for_user("bob", None, Duration::from_secs(60));
        let err = user_kubeconfig(&plan(), dir.path(), &which, None).unwrap_err().to_string();
        assert!(err.contains("pki/ca.crt is missing; run `kubeha certs generate`"), "{err}");
    }
}
