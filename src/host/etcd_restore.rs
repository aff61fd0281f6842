//! Restoring one etcd member's data directory from a snapshot on its host, with the tool the
//! host has: `etcdutl snapshot restore` (etcd 3.5 and later) or `etcdctl snapshot restore`
//! (etcd 3.4 and 3.5; removed in 3.6). Either checks the SHA-256 etcd appended to the
//! snapshot before it writes anything.
//!
//! The member's current data is never deleted: its `member` directory is moved aside within
//! the data directory (`.kubeha-before-restore-<stamp>/member`, one rename on the same file
//! system), and the restored `member` directory, built beside it in a dot-named directory,
//! is renamed into its place.

use super::layout::ETCD_DATA_DIR;
use crate::transport::shell::quote;
use crate::transport::{Remote, TransportError};

/// What one member is restored as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// The member's name (`--name`), the host's inventory name.
    pub name: String,
    pub peer_url: String,
    /// `name=peer-url,...` of every member.
    pub initial_cluster: String,
    pub token: String,
    /// The snapshot on the host.
    pub snapshot: String,
    /// Where the current `member` directory goes.
    pub aside: String,
}

/// The directory the current data is moved to, for a restore at `at`.
pub fn aside_dir(at: &str) -> String {
    format!("{ETCD_DATA_DIR}/.kubeha-before-restore-{at}")
}

/// The restore tool the host has (`etcdutl` preferred), or `None`.
pub async fn tool<R: Remote>(remote: &R) -> Result<Option<String>, TransportError> {
    let out = remote.exec("# looking for etcdutl or etcdctl\ncommand -v etcdutl || command -v etcdctl\n", b"").await?;
    Ok(out.stdout_text().lines().next().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()))
}

/// Restores the member (etcd must not be running on the host).
pub async fn restore<R: Remote>(remote: &R, member: &Member) -> Result<(), TransportError> {
    remote.run(&script(member), b"").await.map(drop)
}

/// The restore script.
pub fn script(m: &Member) -> String {
    let data = quote(ETCD_DATA_DIR);
    let tmp = quote(&format!("{ETCD_DATA_DIR}/.kubeha-restore"));
    let aside = quote(&m.aside);
    format!(
        r#"# restoring etcd member {name}
set -e
export LC_ALL=C
if command -v etcdutl >/dev/null 2>&1; then set -- etcdutl
elif command -v etcdctl >/dev/null 2>&1; then set -- env ETCDCTL_API=3 etcdctl
else echo 'neither etcdutl nor etcdctl is installed' >&2; exit 3
fi
# A directory a previous, interrupted attempt left is only ever restored data.
rm -rf -- {tmp}
"$@" snapshot restore {snapshot} --name {qname} --initial-cluster {cluster} \
  --initial-cluster-token {token} --initial-advertise-peer-urls {peer} --data-dir {tmp} >&2
mkdir -p -m 0700 {aside}
if [ -e {data}/member ]; then mv -- {data}/member {aside}/member; fi
mv -- {tmp}/member {data}/member
rmdir -- {tmp}
chmod 0700 {data} {data}/member
sync
"#,
        name = m.name,
        qname = quote(&m.name),
        snapshot = quote(&m.snapshot),
        cluster = quote(&m.initial_cluster),
        token = quote(&m.token),
        peer = quote(&m.peer_url),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_names_the_member_and_never_deletes_data() {
        let m = Member {
            name: "cp1".into(),
            peer_url: "https://198.18.0.11:2380".into(),
            initial_cluster: "cp1=https://198.18.0.11:2380,cp2=https://198.18.0.12:2380".into(),
            token: "lab-restore-20261130T125300Z".into(),
            snapshot: "/etc/kubernetes/kubeha/restore/lab.db".into(),
            aside: aside_dir("20261130T125300Z"),
        };
        let s = script(&m);
        assert!(s.starts_with("# restoring etcd member cp1\n"));
        assert!(
            s.contains("--name 'cp1' --initial-cluster 'cp1=https://198.18.0.11:2380,cp2=https://198.18.0.12:2380'")
        );
        assert!(s.contains("--initial-cluster-token 'lab-restore-20261130T125300Z'"));
        assert!(
            s.contains("mv -- '/var/lib/etcd'/member '/var/lib/etcd/.kubeha-before-restore-20261130T125300Z'/member")
        );
        // The only removal is of kubeha's own temporary directory.
        let removals: Vec<&str> = s.lines().filter(|l| l.contains("rm ")).collect();
        assert_eq!(removals, ["rm -rf -- '/var/lib/etcd/.kubeha-restore'"]);
    }
}
