//! Kubeconfig files with embedded certificate data, laid out as kubeadm's `CreateWithCerts`
//! writes them: one cluster named after the kubeha cluster, one user named after the client
//! certificate's CN, and the context `<user>@<cluster>`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

/// What a kubeconfig says; the key is kept out of `Debug`.
pub(crate) struct Contents {
    pub(crate) cluster: String,
    pub(crate) server: String,
    pub(crate) user: String,
    pub(crate) ca_pem: Vec<u8>,
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: Vec<u8>,
}

/// The key is wiped from memory when dropped.
impl Drop for Contents {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.key_pem.zeroize();
    }
}

/// Renders `contents` as kubeconfig YAML.
pub(crate) fn render(c: &Contents) -> String {
    let context = format!("{}@{}", c.user, c.cluster);
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: {cluster}\n\
         contexts:\n\
         - context:\n    cluster: {cluster}\n    user: {user}\n  name: {context}\n\
         current-context: {context}\n\
         kind: Config\n\
         users:\n\
         - name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = STANDARD.encode(&c.ca_pem),
        server = scalar(&c.server),
        cluster = scalar(&c.cluster),
        user = scalar(&c.user),
        context = scalar(&context),
        cert = STANDARD.encode(&c.cert_pem),
        key = STANDARD.encode(&c.key_pem),
    )
}

/// A YAML scalar: plain when it cannot be misread (the names kubeha writes always are),
/// double-quoted otherwise.
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._:/@[]".contains(c))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !s.contains(": ");
    if plain { s.to_string() } else { serde_json::to_string(s).expect("strings serialize") }
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    users: Vec<NamedUser>,
    #[serde(rename = "current-context", default)]
    current_context: String,
}

#[derive(Deserialize)]
struct NamedCluster {
    name: String,
    cluster: Cluster,
}

#[derive(Deserialize)]
struct Cluster {
    #[serde(default)]
    server: String,
    #[serde(rename = "certificate-authority-data")]
    ca_data: Option<String>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize)]
struct Context {
    cluster: String,
    user: String,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    user: User,
}

#[derive(Deserialize)]
struct User {
    #[serde(rename = "client-certificate-data")]
    cert_data: Option<String>,
    #[serde(rename = "client-key-data")]
    key_data: Option<String>,
}

/// Reads the current context of a kubeconfig with embedded data. Errors are fixed texts: the
/// file holds a private key, and a parser's message could quote it.
pub(crate) fn parse(bytes: &[u8]) -> Result<Contents, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text")?;
    let file: File = serde_saphyr::from_str(text).map_err(|_| "not a kubeconfig YAML document")?;
    let context = file
        .contexts
        .iter()
        .find(|c| c.name == file.current_context)
        .ok_or("current-context does not name a context")?;
    let cluster = file
        .clusters
        .iter()
        .find(|c| c.name == context.context.cluster)
        .ok_or("the current context's cluster is missing")?;
    let user =
        file.users.iter().find(|u| u.name == context.context.user).ok_or("the current context's user is missing")?;
    let decode = |field: &Option<String>, missing: &'static str, bad: &'static str| {
        let text = field.as_deref().ok_or(missing)?;
        STANDARD.decode(text.trim()).map_err(|_| bad)
    };
    Ok(Contents {
        cluster: cluster.name.clone(),
        server: cluster.cluster.server.clone(),
        user: user.name.clone(),
        ca_pem: decode(
            &cluster.cluster.ca_data,
            "certificate-authority-data is missing",
            "certificate-authority-data is not base64",
        )?,
        cert_pem: decode(
            &user.user.cert_data,
            "client-certificate-data is missing",
            "client-certificate-data is not base64",
        )?,
        key_pem: decode(&user.user.key_data, "client-key-data is missing", "client-key-data is not base64")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents() -> Contents {
        Contents {
            cluster: "lab".into(),
            server: "https://[fd00::10]:6443".into(),
            user: "system:node:cp1".into(),
            ca_pem: b"ca".to_vec(),
            cert_pem: b"cert".to_vec(),
            key_pem: b"secret key bytes".to_vec(),
        }
    }

    #[test]
    fn rendered_kubeconfigs_parse_back() {
        let text = render(&contents());
        assert!(text.contains("  name: system:node:cp1@lab\n"), "{text}");
        let back = parse(text.as_bytes()).unwrap();
        let c = contents();
        assert_eq!(
            (&back.cluster, &back.server, &back.user, &back.ca_pem, &back.cert_pem, &back.key_pem),
            (&c.cluster, &c.server, &c.user, &c.ca_pem, &c.cert_pem, &c.key_pem)
        );
    }

    #[test]
    fn odd_names_are_quoted() {
        assert_eq!(scalar("kubernetes-admin"), "kubernetes-admin");
        assert_eq!(scalar("a: b"), "\"a: b\"");
        assert_eq!(scalar("-x"), "\"-x\"");
        assert_eq!(scalar(""), "\"\"");
    }

    #[test]
    fn broken_kubeconfigs_are_described_without_their_content() {
        let text = render(&contents()).replace("client-key-data: ", "client-key-data: x%");
        assert_eq!(parse(text.as_bytes()).err(), Some("client-key-data is not base64"));
        let text = render(&contents()).replace("current-context: system:node:cp1@lab", "current-context: other");
        assert_eq!(parse(text.as_bytes()).err(), Some("current-context does not name a context"));
        assert_eq!(parse(b"users: [").err(), Some("not a kubeconfig YAML document"));
    }
}
