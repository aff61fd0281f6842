//! `https://host:port/path` URLs, the only kind kubeha dials.
//!
//! A full URL parser would accept far more than kubeha ever meets (userinfo, fragments, IDNs);
//! etcd endpoints, kubeconfig servers and health URLs are all `https://` + host + optional port +
//! optional path, so this small type parses exactly that and rejects the rest.

use std::fmt;
use std::net::IpAddr;

use super::HttpsError;

/// A parsed `https://host[:port][/path]` URL. IPv6 hosts are written in brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsUrl {
    /// The host without brackets: a DNS name or an IP address. Also the TLS server name.
    pub host: String,
    pub port: u16,
    /// The path with its query, starting with `/`.
    pub path: String,
}

impl HttpsUrl {
    /// Parses `url`; the port defaults to 443 and the path to `/`.
    pub fn parse(url: &str) -> Result<Self, HttpsError> {
        let bad = |reason: &str| HttpsError::Url { url: url.to_string(), reason: reason.to_string() };
        let rest = url.strip_prefix("https://").ok_or_else(|| bad("only https:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(bad("user information is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '[' in the host"))?;
            host.parse::<std::net::Ipv6Addr>().map_err(|_| bad("invalid IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("unexpected text after the IPv6 address"))?),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("invalid port"))?,
            None => 443,
        };
        Ok(HttpsUrl { host: host.to_string(), port, path: path.to_string() })
    }

    /// `host:port` as a socket address string (IPv6 in brackets), for connecting and for the
    /// `Host` header.
    pub fn authority(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// The same server with another path.
    pub fn with_path(&self, path: &str) -> HttpsUrl {
        HttpsUrl { host: self.host.clone(), port: self.port, path: path.to_string() }
    }
}

impl fmt::Display for HttpsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The bare root path is left out so that URLs read as they were written in flags.
        let path = if self.path == "/" { "" } else { self.path.as_str() };
        write!(f, "https://{}{path}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_and_paths() {
        let u = HttpsUrl::parse("https://127.0.0.1:2379").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("127.0.0.1", 2379, "/"));
        let u = HttpsUrl::parse("https://api.example.test/healthz?verbose").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str()), ("api.example.test", 443, "/healthz?verbose"));
        let u = HttpsUrl::parse("https://[::1]:6443/livez").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.authority().as_str()), ("::1", 6443, "[::1]:6443"));
        assert_eq!(u.to_string(), "https://[::1]:6443/livez");
    }

    #[test]
    fn rejects_what_kubeha_never_dials() {
        for bad in
            ["http://127.0.0.1:2379", "https://:6443", "https://h:0", "https://h:x", "https://u@h", "https://[::1"]
        {
            assert!(matches!(HttpsUrl::parse(bad), Err(HttpsError::Url { .. })), "{bad} was accepted");
        }
    }
}
