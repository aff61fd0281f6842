//! Reading every certificate a host has: the PEM files under `/etc/kubernetes/pki` and the
//! kubelet's, and the client certificates embedded in the kubeconfigs in `/etc/kubernetes`.
//!
//! One read-only command per host. Only certificate blocks leave the host: PEM files are
//! filtered to their `CERTIFICATE` blocks (a file holding a key too, like the kubelet's
//! `kubelet-client-current.pem`, never sends the key), and kubeconfigs to their
//! `client-certificate-data` line.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::layout::{KUBELET_DIR, KUBERNETES_DIR, PKI_DIR};
use crate::transport::{Remote, TransportError};

/// A certificate as found on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The file it is in.
    pub path: PathBuf,
    /// Whether it is a kubeconfig's embedded client certificate (else a PEM file).
    pub in_kubeconfig: bool,
    /// The certificate, PEM.
    pub pem: Vec<u8>,
}

/// The read-only script; `%PKI%`, `%KUBELET_PKI%` and `%KUBERNETES%` are the layout's paths.
const SCRIPT_TEMPLATE: &str = r#"# reading certificates
export LC_ALL=C
{ find %PKI% %KUBELET_PKI% -type f \( -name '*.crt' -o -name '*.pem' \) 2>/dev/null | sort; } | while IFS= read -r f; do
  echo "@@file $f"
  sed -n '/^-----BEGIN CERTIFICATE-----$/,/^-----END CERTIFICATE-----$/p' "$f"
done
for f in %KUBERNETES%/*.conf; do
  [ -f "$f" ] || continue
  echo "@@kubeconfig $f"
  grep -E '^[[:space:]]*client-certificate-data:' "$f"
done
echo @@end
"#;

fn script() -> String {
    SCRIPT_TEMPLATE
        .replace("%PKI%", PKI_DIR)
        .replace("%KUBELET_PKI%", &format!("{KUBELET_DIR}/pki"))
        .replace("%KUBERNETES%", KUBERNETES_DIR)
}

/// Every certificate on `remote`, in path order (PEM files first, then kubeconfigs).
pub async fn gather<R: Remote>(remote: &R) -> Result<Vec<Found>, TransportError> {
    let out = remote.run(&script(), b"").await?;
    Ok(parse(&out.stdout_text()))
}

/// Parses the script's output.
pub fn parse(text: &str) -> Vec<Found> {
    let mut found = Vec::new();
    let mut current: Option<(PathBuf, bool, Vec<u8>)> = None;
    let mut finish = |current: &mut Option<(PathBuf, bool, Vec<u8>)>| {
        if let Some((path, in_kubeconfig, pem)) = current.take()
            && !pem.is_empty()
        {
            found.push(Found { path, in_kubeconfig, pem });
        }
    };
    for line in text.lines() {
        if let Some(path) = line.strip_prefix("@@file ") {
            finish(&mut current);
            current = Some((PathBuf::from(path), false, Vec::new()));
        } else if let Some(path) = line.strip_prefix("@@kubeconfig ") {
            finish(&mut current);
            current = Some((PathBuf::from(path), true, Vec::new()));
        } else if line == "@@end" {
            finish(&mut current);
        } else if let Some((_, in_kubeconfig, pem)) = current.as_mut() {
            if *in_kubeconfig {
                let data = line.trim().trim_start_matches("client-certificate-data:").trim();
                if let Ok(decoded) = STANDARD.decode(data) {
                    pem.extend(decoded);
                }
            } else {
                pem.extend_from_slice(line.as_bytes());
                pem.push(b'\n');
            }
        }
    }
    finish(&mut current);
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_kubeconfigs_are_split_and_decoded() {
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        let encoded = STANDARD.encode(format!("{cert}\n"));
        let text = format!(
            "@@file /etc/kubernetes/pki/ca.crt\n{cert}\n@@file /etc/kubernetes/pki/empty.crt\n\
             @@kubeconfig /etc/kubernetes/admin.conf\n    client-certificate-data: {encoded}\n\
             @@kubeconfig /etc/kubernetes/other.conf\n@@end\n"
        );
        let found = parse(&text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].path, PathBuf::from("/etc/kubernetes/pki/ca.crt"));
        assert!(!found[0].in_kubeconfig);
        assert_eq!(found[0].pem, format!("{cert}\n").into_bytes());
        assert_eq!(found[1].path, PathBuf::from("/etc/kubernetes/admin.conf"));
        assert!(found[1].in_kubeconfig);
        assert_eq!(found[1].pem, format!("{cert}\n").into_bytes());
    }

    #[test]
    fn the_script_sends_only_certificate_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("kubelet-client-current.pem");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN EC PRIVATE KEY-----\nSECRET\n\
             -----END EC PRIVATE KEY-----\n",
        )
        .unwrap();
        let conf = dir.path().join("admin.conf");
        std::fs::write(&conf, "users:\n- user:\n    client-certificate-data: QUJD\n    client-key-data: U0VDUkVU\n")
            .unwrap();
        let script = SCRIPT_TEMPLATE
            .replace("%PKI%", &dir.path().display().to_string())
            .replace("%KUBELET_PKI%", "/nonexistent")
            .replace("%KUBERNETES%", &dir.path().display().to_string());
        let out = std::process::Command::new("sh").arg("-c").arg(&script).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains("SECRET") && !text.contains("U0VDUkVU"), "{text}");
        assert!(text.contains("AAAA") && text.contains("QUJD"), "{text}");
    }
}
