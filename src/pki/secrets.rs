//! Cluster secrets that are not certificates: the VRRP password keepalived instances share.
//!
//! keepalived's PASS authentication uses only the first 8 characters of `auth_pass`, so the
//! password is exactly 8 random alphanumerics (about 47 bits), generated once.

use std::path::Path;

use super::PkiError;

/// `<state>/secrets/vrrp-password`, one line, 0600.
pub(crate) const VRRP_PASSWORD: &str = "secrets/vrrp-password";

const LEN: usize = 8;
const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A new random password.
pub(crate) fn new_vrrp_password() -> String {
    let mut out = String::with_capacity(LEN);
    let mut buf = [0u8; 32];
    while out.len() < LEN {
        getrandom::fill(&mut buf).expect("the operating system's random source works");
        // 248 = 4 * 62: rejecting larger bytes keeps every character equally likely.
        for &b in buf.iter().filter(|&&b| b < 248) {
            if out.len() < LEN {
                out.push(ALPHABET[usize::from(b) % ALPHABET.len()] as char);
            }
        }
    }
    out
}

/// The password stored in a file's `content`.
pub(crate) fn parse_vrrp_password(content: &[u8], path: &Path) -> Result<String, PkiError> {
    let text = std::str::from_utf8(content).unwrap_or("").trim_end_matches('\n');
    if text.len() == LEN && text.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(text.to_string())
    } else {
        Err(PkiError::Corrupt {
            path: path.to_path_buf(),
            what: "VRRP password",
            detail: format!("expected one line of {LEN} letters or digits"),
        })
    }
}

/// The file content for `password`.
pub(crate) fn vrrp_password_file(password: &str) -> Vec<u8> {
    format!("{password}\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_eight_random_alphanumerics() {
        let a = new_vrrp_password();
        let b = new_vrrp_password();
        assert!(a.len() == LEN && a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        let path = Path::new("secrets/vrrp-password");
        assert_eq!(parse_vrrp_password(&vrrp_password_file(&a), path).unwrap(), a);
        assert!(parse_vrrp_password(b"short\n", path).is_err());
        assert!(parse_vrrp_password(b"abcd efg\n", path).is_err());
    }
}
