//! `kubeha validate`: the resolved plan as a table (or JSON), or every problem in the inventory.

use std::fmt::Write;

use crate::plan::{LoadBalancer, Plan};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    inventory: super::InventoryArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = super::Format::Text)]
    output: super::Format,
    /// The cluster's state directory, only read: hosts `remove-node` took out of the cluster and
    /// the inventory still lists are warned about
    /// [default: $XDG_STATE_HOME/kubeha/<cluster name>, else ~/.local/state/kubeha/<cluster name>].
    #[arg(long, value_name = "DIR", env = "KUBEHA_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
}

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.inventory.load()?;
        let state_dir = self.state_dir.clone().unwrap_or_else(|| crate::pki::default_state_dir(&plan.name));
        // Valid as an inventory, but `init` would refuse these hosts: say so now.
        for row in crate::actions::removed::checks(&plan, &state_dir) {
            eprintln!("warning: {}: {}", row.host, row.detail);
        }
        super::print_report(self.output, &plan, || describe(&plan))
    }
}

/// A human summary of what kubeha will build.
pub fn describe(plan: &Plan) -> String {
    let mut out = String::new();
    let net = &plan.networking;
    let certs = &plan.certificates;
    let _ = writeln!(out, "cluster {}: Kubernetes {}, etcd {}", plan.name, plan.kubernetes_version, plan.etcd_version);
    if plan.unsupported_version().is_some() {
        let _ = writeln!(
            out,
            "rendered with kubeadm v1.{}'s rules (not a supported version)",
            plan.kubeadm_release().minor
        );
    }
    let lb = match &plan.load_balancer {
        LoadBalancer::KeepalivedHaproxy { vip, interface, virtual_router_id, .. } => {
            format!("keepalived VIP {vip} on {interface} (VRRP id {virtual_router_id}), haproxy on every control plane")
        }
        LoadBalancer::External => "external load balancer".to_string(),
        LoadBalancer::Dns => "DNS name over every apiserver".to_string(),
    };
    let _ = writeln!(out, "endpoint: {} via {lb}", plan.endpoint_url());
    let _ = writeln!(out, "apiserver port: {}", plan.api_server_bind_port);
    let pods = net.pod_subnet.map_or_else(|| "not set (no node CIDR allocation)".to_string(), |p| p.to_string());
    let _ = writeln!(
        out,
        "services: {} (kubernetes service {}), pods: {pods}, DNS domain: {}",
        net.service_subnet,
        plan.kubernetes_service_ip(),
        net.dns_domain
    );
    let _ = writeln!(
        out,
        "certificates: {}, leaves valid {}, CAs valid {}",
        crate::plan::KeyAlgorithm::NAMES[certs.key_algorithm as usize],
        crate::plan::format_duration(certs.validity),
        crate::plan::format_duration(certs.ca_validity)
    );
    let members: Vec<String> = plan
        .etcd_members()
        .map(|h| {
            format!(
                "{}=https://{}",
                h.name,
                crate::plan::join_host_port(h.address, crate::host::layout::ETCD_PEER_PORT)
            )
        })
        .collect();
    let _ = writeln!(out, "etcd members ({}): {}", members.len(), members.join(", "));
    let _ = writeln!(out);
    let rows: Vec<[String; 4]> = plan
        .hosts
        .iter()
        .map(|h| {
            let sudo = if h.ssh.sudo { " (sudo)" } else { "" };
            [h.name.clone(), h.address.to_string(), h.role.to_string(), format!("{}{sudo}", h.ssh.describe(h.address))]
        })
        .collect();
    out.push_str(&crate::text::table(["HOST", "ADDRESS", "ROLE", "SSH"], &rows));
    out
}
