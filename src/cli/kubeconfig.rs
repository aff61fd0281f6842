//! `kubeha kubeconfig`: a kubeconfig on stdout, for the state directory's admin users or for any
//! user and group with a new client certificate from the cluster CA.

use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: super::ClusterArgs,
    /// `admin` (group kubeadm:cluster-admins, bound to cluster-admin) and `super-admin`
    /// (system:masters, for break-glass use) are the state directory's own kubeconfigs; any other
    /// name gets a new client certificate signed by the cluster CA (as `kubeadm kubeconfig user`).
    #[arg(long, default_value = "admin", value_parser = user_name)]
    user: String,
    /// The new certificate's group (its O=), as RBAC bindings name it.
    #[arg(long, value_parser = user_name)]
    group: Option<String>,
    /// The API server URL in the kubeconfig [default: the inventory's controlPlaneEndpoint].
    #[arg(long, value_name = "URL", value_parser = server_url)]
    server: Option<String>,
    /// How long a new certificate is valid (the stored admin kubeconfigs keep theirs).
    #[arg(long, default_value = "24h", value_name = "DURATION", value_parser = humantime::parse_duration)]
    validity: Duration,
}

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.cluster.inventory.load()?;
        let state_dir = self.cluster.state_dir(&plan, true)?;
        let which = crate::pki::UserKubeconfig::for_user(&self.user, self.group, self.validity);
        let text = crate::pki::user_kubeconfig(&plan, &state_dir, &which, self.server.as_deref())?;
        if let crate::pki::UserKubeconfig::Issued { user, validity, .. } = &which {
            tracing::info!(
                "issued a client certificate for {user}, valid for {}",
                humantime::format_duration(*validity)
            );
        }
        super::output::print(&text)?;
        Ok(())
    }
}

/// A user or group name: printable, no spaces at either end, not empty.
fn user_name(s: &str) -> Result<String, String> {
    if s.trim().is_empty() || s.trim() != s || s.chars().any(char::is_control) || s.len() > 256 {
        return Err(format!("{s:?} is not a usable name: printable, no leading or trailing spaces, 1 to 256 bytes"));
    }
    Ok(s.to_string())
}

/// An `https://host[:port]` URL.
fn server_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("https://").ok_or_else(|| format!("{s:?} is not an https:// URL"))?;
    if rest.is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!("{s:?} names no host"));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls_are_checked() {
        assert!(user_name("alice").is_ok());
        assert!(user_name(" alice").is_err());
        assert!(user_name("").is_err());
        assert!(user_name("a\nb").is_err());
        assert!(server_url("https://10.0.0.1:6443").is_ok());
        assert!(server_url("http://10.0.0.1:6443").unwrap_err().contains("not an https:// URL"));
        assert!(server_url("https://").is_err());
    }
}
