//! `kubeha-lab status`: the lab's hosts and their pods as a table.

use std::time::SystemTime;

use super::Lab;
use kubeha::text::table;

impl Lab {
    /// Hosts (address, role, supervisor, sshd) and each host's pods, as aligned text.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "lab {} in {}: bridge {} ({}/24), VIP {}\ninventory: {}\n\n",
            self.name(),
            self.dir().display(),
            self.bridge(),
            self.gateway(),
            self.vip(),
            self.inventory_path().display()
        );
        let mut rows = Vec::new();
        for h in self.hosts() {
            let status = self.node_status(&h.name).ok().flatten();
            let sup = self.supervisor(&h.name).ok().flatten().map_or("down".to_string(), |p| p.pid.to_string());
            let sshd = status.as_ref().and_then(|s| s.sshd).filter(|p| p.alive());
            let role = if h.control_plane { "control-plane" } else { "worker" };
            rows.push([
                h.name.clone(),
                h.address.to_string(),
                role.into(),
                sup,
                sshd.map_or("stopped".into(), |p| p.pid.to_string()),
            ]);
        }
        out.push_str(&table(["HOST", "ADDRESS", "ROLE", "SUPERVISOR", "SSHD"], &rows));
        let mut pods = Vec::new();
        for h in self.hosts() {
            for p in self.pods(&h.name).unwrap_or_default() {
                let age = p.started_at.and_then(|t| SystemTime::now().duration_since(t).ok()).map_or("-".into(), |d| {
                    humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string()
                });
                pods.push([
                    h.name.clone(),
                    p.name,
                    p.running.to_string(),
                    p.pid.map_or("-".into(), |p| p.to_string()),
                    p.restarts.to_string(),
                    age,
                    p.message.unwrap_or_default(),
                ]);
            }
        }
        if !pods.is_empty() {
            out.push('\n');
            out.push_str(&table(["HOST", "POD", "RUNNING", "PID", "RESTARTS", "AGE", "MESSAGE"], &pods));
        }
        out
    }
}
