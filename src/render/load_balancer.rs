//! The `keepalived-haproxy` load balancer: haproxy on every control plane balancing over all
//! apiservers, and keepalived moving the VIP to a control plane whose apiserver and haproxy work.
//!
//! Choices and why:
//! - haproxy passes TLS through (`mode tcp`) and checks each apiserver with `GET /readyz` over
//!   TLS (a stopping apiserver fails `/readyz` during its `--shutdown-delay-duration` while it
//!   still serves, so it leaves the rotation before it stops listening); a dead backend is
//!   skipped (`option redispatch`, retries);
//!   sessions on a backend marked down are left to finish (a stopping apiserver serves them
//!   during its shutdown delay), and TCP keepalive closes those to a host that is gone.
//! - Neither health check verifies the apiserver's certificate (as in kubeadm's HA guide): they
//!   only decide where connections go, and clients verify the apiserver themselves through the
//!   TLS haproxy passes on. So neither pod mounts a CA, and replacing the cluster CA (`certs
//!   rotate-ca`) never restarts them: the VIP stays where it is and no connection through it is
//!   cut, where a haproxy restart on the VIP holder would cut every one in flight.
//! - keepalived runs unicast VRRP between the control planes (works where multicast does not),
//!   every instance `BACKUP` with `nopreempt` and distinct priorities, so a recovered host does
//!   not take the VIP back. The health script has weight 0: a failing host goes to FAULT and
//!   releases the VIP instead of merely lowering its priority.
//! - Both pods mount their config *directory* and carry a hash of their config files as an
//!   annotation: a changed config changes the manifest, so the kubelet restarts the pod (a
//!   running container keeps the old inode of a file replaced by rename).

use std::net::IpAddr;

use serde::Serialize;

use super::RenderError;
use super::context::HostContext;
use super::engine::Engine;
use super::pod::{HostPathVolume, Probe, StaticPod};
use crate::files::File;
use crate::host::layout::{
    CHECK_APISERVER_SH, HAPROXY_CFG, HAPROXY_DIR, HAPROXY_STATS_PORT, KEEPALIVED_CONF, KEEPALIVED_DIR,
};
use crate::plan::{LoadBalancer, join_host_port};

/// A DNS name in every apiserver serving certificate; haproxy sends it as SNI on health checks.
const APISERVER_CERT_NAME: &str = "kubernetes";

/// keepalived's PASS authentication uses at most this many characters of the password.
const VRRP_PASSWORD_LEN: usize = 8;

/// The priority of the first control plane; each later one gets [`priority_step`] less.
const TOP_PRIORITY: usize = 250;

/// How far apart the control planes' priorities are: 10 while they fit. When the master
/// announces priority 0 (its keepalived stops), each backup takes over after
/// `(256 - priority) / 256` s; priorities 10 apart make that 39 ms apart, so the first backup's
/// advertisement reaches the others before they claim the VIP too (1 apart, 4 ms, loses that
/// race to scheduling jitter, and two hosts answer for the VIP for an instant).
fn priority_step(count: usize) -> usize {
    (TOP_PRIORITY / count.max(1)).clamp(1, 10)
}

#[derive(Serialize)]
struct HaproxyConfig<'a> {
    cluster: &'a str,
    host: &'a str,
    bind: String,
    sni: &'static str,
    stats_address: String,
    servers: Vec<Backend<'a>>,
}

#[derive(Serialize)]
struct Backend<'a> {
    name: &'a str,
    address: String,
}

#[derive(Serialize)]
struct KeepalivedConfig<'a> {
    cluster: &'a str,
    host: &'a str,
    script: &'static str,
    interface: &'a str,
    virtual_router_id: u8,
    priority: usize,
    source: String,
    peers: Vec<String>,
    /// `None` for IPv6: VRRPv3 has no authentication.
    auth_pass: Option<&'a str>,
    vip: String,
}

#[derive(Serialize)]
struct CheckScript<'a> {
    cluster: &'a str,
    host: &'a str,
    apiserver_url: String,
    haproxy_url: String,
}

/// haproxy and keepalived for a control plane: their config files and static pods; none unless
/// the plan's load balancer is `keepalived-haproxy`.
pub fn files(ctx: &HostContext, password: &str, engine: &Engine) -> Result<(Vec<File>, Vec<StaticPod>), RenderError> {
    let plan = ctx.plan;
    let LoadBalancer::KeepalivedHaproxy { vip, interface, virtual_router_id, haproxy_image, keepalived_image } =
        &plan.load_balancer
    else {
        return Ok((Vec::new(), Vec::new()));
    };
    let index = ctx.control_plane_index().unwrap_or_default();
    let priority = TOP_PRIORITY
        .checked_sub(index * priority_step(plan.control_planes().count()))
        .filter(|p| *p > 0)
        .ok_or(RenderError::TooManyControlPlanes { count: plan.control_planes().count() })?;
    let endpoint_port = plan.control_plane_endpoint.port;
    let local = |port| format!("https://127.0.0.1:{port}/healthz");

    let haproxy_cfg = engine.render(
        "haproxy.cfg",
        &HaproxyConfig {
            cluster: &plan.name,
            host: &ctx.host.name,
            bind: match vip {
                IpAddr::V4(_) => format!("*:{endpoint_port}"),
                IpAddr::V6(_) => format!(":::{endpoint_port} v4v6"),
            },
            sni: APISERVER_CERT_NAME,
            stats_address: join_host_port(ctx.host.loopback(), HAPROXY_STATS_PORT),
            servers: plan
                .control_planes()
                .map(|h| Backend { name: &h.name, address: join_host_port(h.address, plan.api_server_bind_port) })
                .collect(),
        },
    )?;
    let keepalived_conf = engine.render(
        "keepalived.conf",
        &KeepalivedConfig {
            cluster: &plan.name,
            host: &ctx.host.name,
            script: CHECK_APISERVER_SH,
            interface,
            virtual_router_id: *virtual_router_id,
            priority,
            source: ctx.address().to_string(),
            peers: ctx.peers().map(|h| h.address.to_string()).collect(),
            auth_pass: vip.is_ipv4().then(|| vrrp_auth_pass(password)).transpose()?,
            vip: vip.to_string(),
        },
    )?;
    let check_script = engine.render(
        "check_apiserver.sh",
        &CheckScript {
            cluster: &plan.name,
            host: &ctx.host.name,
            apiserver_url: local(plan.api_server_bind_port),
            haproxy_url: local(endpoint_port),
        },
    )?;

    let haproxy_cfg = File::new(HAPROXY_CFG, 0o644, haproxy_cfg);
    let keepalived_conf = File::new(KEEPALIVED_CONF, 0o600, keepalived_conf);
    let check_script = File::new(CHECK_APISERVER_SH, 0o700, check_script);

    let mut haproxy = StaticPod::new(
        "haproxy",
        haproxy_image.clone(),
        ["haproxy", "-W", "-db", "-f", HAPROXY_CFG].map(String::from).to_vec(),
    )
    .mount([HostPathVolume::existing_dir("haproxy-config", HAPROXY_DIR)]);
    haproxy.liveness_probe = Some(Probe::tcp_liveness("127.0.0.1", endpoint_port));

    let mut keepalived = StaticPod::new(
        "keepalived",
        keepalived_image.clone(),
        ["keepalived", "--dont-fork", "--log-console", "--log-detail", &format!("--use-file={KEEPALIVED_CONF}")]
            .map(String::from)
            .to_vec(),
    )
    .mount([HostPathVolume::existing_dir("keepalived-config", KEEPALIVED_DIR)]);
    keepalived.capabilities = vec!["NET_ADMIN", "NET_BROADCAST", "NET_RAW"];

    Ok((vec![haproxy_cfg, keepalived_conf, check_script], vec![haproxy, keepalived]))
}

/// The part of the cluster's VRRP password keepalived uses, checked so it cannot break the
/// config syntax. Longer passwords are cut as keepalived itself would (it refuses the config
/// in test mode otherwise).
fn vrrp_auth_pass(password: &str) -> Result<&str, RenderError> {
    let usable = |c: char| c.is_ascii_alphanumeric() || "-_.+/=:@%^~".contains(c);
    if password.is_empty() || !password.chars().all(usable) {
        return Err(RenderError::VrrpPassword(
            "it must be non-empty and use only letters, digits and -_.+/=:@%^~".to_string(),
        ));
    }
    Ok(&password[..password.len().min(VRRP_PASSWORD_LEN)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vrrp_password_is_cut_to_what_keepalived_uses() {
        assert_eq!(vrrp_auth_pass("abcdefghijkl").unwrap(), "abcdefgh");
        assert_eq!(vrrp_auth_pass("abc").unwrap(), "abc");
        for bad in ["", "with space", "quote\"", "brace}", "hash#"] {
            assert!(vrrp_auth_pass(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn priorities_are_ten_apart_while_they_fit_and_always_distinct_and_positive() {
        assert_eq!((priority_step(1), priority_step(3), priority_step(25)), (10, 10, 10));
        assert_eq!((priority_step(26), priority_step(250)), (9, 1));
        for count in [3, 25, 26, 89, 250] {
            let last = TOP_PRIORITY - (count - 1) * priority_step(count);
            assert!(last >= 1, "{count} control planes: the last gets {last}");
        }
    }
}
