//! Where things live on a host and which ports they use: the layout every part of kubeha agrees
//! on, in one place so manifests, configs, scripts and health checks cannot disagree. No other
//! module spells an on-host path or a component port.

/// kubeadm's configuration directory: kubeconfigs, `pki/`, `manifests/`.
pub const KUBERNETES_DIR: &str = "/etc/kubernetes";
/// kubeha's own files on a host (the marker, backups of replaced files).
pub const KUBEHA_DIR: &str = "/etc/kubernetes/kubeha";
/// Copies of the files a rollout replaced, under `<timestamp>/<their own path>`.
pub const BACKUP_DIR: &str = "/etc/kubernetes/kubeha/backup";
/// Static-pod manifests the kubelet runs.
pub const MANIFESTS_DIR: &str = "/etc/kubernetes/manifests";
/// kubeadm's certificate directory; mounted into the control-plane pods at the same path.
pub const PKI_DIR: &str = "/etc/kubernetes/pki";
pub const CA_CERT: &str = "/etc/kubernetes/pki/ca.crt";
pub const ETCD_PKI_DIR: &str = "/etc/kubernetes/pki/etcd";
pub const ETCD_DATA_DIR: &str = "/var/lib/etcd";
pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
pub const SUPER_ADMIN_CONF: &str = "/etc/kubernetes/super-admin.conf";
pub const KUBELET_CONF: &str = "/etc/kubernetes/kubelet.conf";
pub const CONTROLLER_MANAGER_CONF: &str = "/etc/kubernetes/controller-manager.conf";
pub const SCHEDULER_CONF: &str = "/etc/kubernetes/scheduler.conf";

pub const HAPROXY_DIR: &str = "/etc/kubernetes/haproxy";
pub const HAPROXY_CFG: &str = "/etc/kubernetes/haproxy/haproxy.cfg";
pub const KEEPALIVED_DIR: &str = "/etc/kubernetes/keepalived";
pub const KEEPALIVED_CONF: &str = "/etc/kubernetes/keepalived/keepalived.conf";
pub const CHECK_APISERVER_SH: &str = "/etc/kubernetes/keepalived/check_apiserver.sh";
/// Files the running load balancer takes up without its pod restarting, and which pod must be
/// told (`None`: read afresh on every use). A restarted haproxy or keepalived on the VIP holder
/// would move the VIP and cut the connections in flight; haproxy reloads gracefully (its master
/// starts new workers and the old ones finish their connections) and keepalived re-reads its
/// configuration keeping its VRRP state. So these files are left out of their pods' inputs
/// hash, and kubeha signals the pods after writing them.
pub const RELOADED_IN_PLACE: [(&str, Option<&str>); 3] =
    [(HAPROXY_CFG, Some("haproxy")), (KEEPALIVED_CONF, Some("keepalived")), (CHECK_APISERVER_SH, None)];

pub const KUBELET_DIR: &str = "/var/lib/kubelet";
pub const KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
/// The kubelet's per-node flags, read by kubeadm's systemd drop-in for the kubelet.
pub const KUBELET_FLAGS_ENV: &str = "/var/lib/kubelet/kubeadm-flags.env";
/// Static-pod manifests kubeha took out of the manifests directory to stop their pods (kept
/// here, outside the directory the kubelet reads, until they go back).
pub const STOPPED_MANIFESTS_DIR: &str = "/etc/kubernetes/kubeha/stopped";
/// Where `etcd snapshot restore` uploads the snapshot while it restores.
pub const RESTORE_DIR: &str = "/etc/kubernetes/kubeha/restore";
/// The lock a kubeha run holds on a host while it works there (see `host::lock`).
pub const HOST_LOCK: &str = "/etc/kubernetes/kubeha/lock";
/// Marks a host as managed by kubeha, for which cluster.
pub const CLUSTER_MARKER: &str = "/etc/kubernetes/kubeha/cluster.yaml";

/// Every directory kubeha writes files into, parents before children. Preflight refuses a host
/// where one of them is a symbolic link, is not root's, or is writable by group or others:
/// whoever controls such a directory controls what the kubelet runs.
pub const WRITTEN_DIRS: &[&str] =
    &[KUBERNETES_DIR, KUBEHA_DIR, MANIFESTS_DIR, PKI_DIR, ETCD_PKI_DIR, HAPROXY_DIR, KEEPALIVED_DIR, KUBELET_DIR];

/// The system CA bundle directory every control-plane component mounts.
pub const SYSTEM_CA_CERTS: &str = "/etc/ssl/certs";
/// Other system CA locations kubeadm mounts where the host has them (volume name, path): RHEL's
/// `/etc/pki` (ca-trust, tls/certs), and Debian's source and configuration directories.
pub const OPTIONAL_CA_DIRS: [(&str, &str); 4] = [
    ("etc-ca-certificates", "/etc/ca-certificates"),
    ("etc-pki", "/etc/pki"),
    ("usr-local-share-ca-certificates", "/usr/local/share/ca-certificates"),
    ("usr-share-ca-certificates", "/usr/share/ca-certificates"),
];

pub const KUBELET_PORT: u16 = 10250;
/// kube-apiserver's default secure port (the inventory's `apiServer.bindPort` overrides it).
pub const API_SERVER_PORT: u16 = 6443;
pub const ETCD_CLIENT_PORT: u16 = 2379;
pub const ETCD_PEER_PORT: u16 = 2380;
pub const ETCD_METRICS_PORT: u16 = 2381;
pub const CONTROLLER_MANAGER_PORT: u16 = 10257;
pub const SCHEDULER_PORT: u16 = 10259;
/// haproxy's stats socket (its runtime API at `level user`), on the host's loopback: what
/// `kubeha status` reads (`show stat`) through its SSH tunnel.
pub const HAPROXY_STATS_PORT: u16 = 8404;

/// Manifests hold flags only, but kubeadm writes them 0600 and kubelet does not care.
pub const MANIFEST_MODE: u32 = 0o600;

/// The manifest path of a static pod.
pub fn manifest(name: &str) -> String {
    format!("{MANIFESTS_DIR}/{name}.yaml")
}
