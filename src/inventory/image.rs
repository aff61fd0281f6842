//! Image references as container runtimes parse them (the grammar of the distribution
//! project's `reference` package, which containerd and CRI-O use): a check here means the
//! rendered `image:` is one the kubelet can pull, not a string that fails on every host.
//!
//! ```text
//! reference  := name [ ":" tag ] [ "@" digest ]
//! name       := [ domain "/" ] path-component { "/" path-component }     (at most 255 bytes)
//! domain     := host [ ":" port ]       host := label { "." label } | "[" IPv6 "]"
//! path-comp  := [a-z0-9]+ { separator [a-z0-9]+ }     separator := "." | "_" | "__" | "-"+
//! tag        := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
//! digest     := algorithm ":" hex{32,}
//! ```
//! The first component is a domain when it contains `.` or `:`, or is `localhost`.

const MAX_NAME: usize = 255;

/// A repository such as `registry.k8s.io` or `registry.local:5000/k8s`, to which kubeha appends
/// `/kube-apiserver:<version>`.
pub fn repository(s: &str) -> Result<(), String> {
    let ok = !s.contains('@') && name(s, true) && s.len() + "/kube-controller-manager".len() <= MAX_NAME;
    ok.then_some(()).ok_or_else(|| {
        format!(
            "{s:?} is not a registry path such as registry.example.com/k8s (lowercase path, no scheme, tag or trailing '/')"
        )
    })
}

/// A complete image reference such as `docker.io/library/haproxy:2.8`.
pub fn reference(s: &str) -> Result<(), String> {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, d)) => (rest, Some(d)),
        None => (s, None),
    };
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name_part, tag) = match rest[slash..].rfind(':') {
        Some(i) => (&rest[..slash + i], Some(&rest[slash + i + 1..])),
        None => (rest, None),
    };
    let ok = name(name_part, false) && tag.is_none_or(is_tag) && digest.is_none_or(is_digest);
    ok.then_some(()).ok_or_else(|| {
        format!("{s:?} is not an image reference such as docker.io/library/haproxy:2.8 (lowercase name, optional :tag or @sha256:digest)")
    })
}

fn name(s: &str, allow_bare_domain: bool) -> bool {
    if s.is_empty() || s.len() > MAX_NAME {
        return false;
    }
    let mut parts: Vec<&str> = s.split('/').collect();
    let first = parts[0];
    let has_domain = parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain || (allow_bare_domain && parts.len() == 1 && (first.contains('.') || first.contains(':'))) {
        if !domain(first) {
            return false;
        }
        parts.remove(0);
    }
    parts.iter().all(|c| path_component(c))
}

fn domain(s: &str) -> bool {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        (None, after.strip_prefix(':').map(Some).unwrap_or(if after.is_empty() { None } else { Some("x") }))
    } else {
        match s.split_once(':') {
            Some((h, port)) => (Some(h), Some(port)),
            None => (Some(s), None),
        }
    };
    let host_ok = host.is_none_or(|h| !h.is_empty() && h.split('.').all(label));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

fn label(l: &str) -> bool {
    !l.is_empty()
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

fn path_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator: ".", "_", "__" or a run of "-", between alphanumerics.
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-')) {
            return false;
        }
    }
    true
}

fn alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn is_digest(d: &str) -> bool {
    let Some((algorithm, hex)) = d.split_once(':') else { return false };
    let algorithm_ok = algorithm.split(['+', '.', '_', '-']).all(|part| {
        part.as_bytes().first().is_some_and(u8::is_ascii_alphabetic) && part.bytes().all(|b| b.is_ascii_alphanumeric())
    });
    algorithm_ok && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let digest = format!("@sha256:{}", "a".repeat(64));
        for good in [
            "docker.io/library/haproxy:2.8",
            "haproxy",
            "haproxy:2.8-alpine",
            "osixia/keepalived:2.0.20",
            "registry.local:5000/lb/haproxy:v1",
            "localhost/haproxy:x",
            "[fd00::1]:5000/haproxy:2.8",
            "quay.io/a__b/c-d/e.f_g:T_1.2",
            &format!("haproxy{digest}"),
            &format!("haproxy:2.8{digest}"),
        ] {
            assert!(reference(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ":::",
            "haproxy:",
            "Haproxy:2.8",
            "docker.io/library/",
            "docker.io//haproxy",
            "https://docker.io/haproxy",
            "haproxy:-x",
            "haproxy@sha256:abc",
            "-haproxy",
            "a..b/haproxy:1",
            "reg:port/haproxy",
            "haproxy:2.8 ",
            &format!("haproxy:{}", "t".repeat(129)),
        ] {
            assert!(reference(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repositories() {
        for good in ["registry.k8s.io", "registry.local:5000/k8s", "localhost:5000", "example.com/a/b", "k8s"] {
            assert!(repository(good).is_ok(), "{good}");
        }
        for bad in
            [":::", "registry.k8s.io/", "https://registry.k8s.io", "Registry.io/K8s", "r.io/k8s:v1", "r.io@x", ""]
        {
            assert!(repository(bad).is_err(), "{bad}");
        }
    }
}
