//! `kubeha version`: this build and what it supports (Kubernetes minors with kubeadm's image
//! tags, etcd releases), as text or for scripts.

use serde::Serialize;

use crate::version::RELEASES;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = super::Format::Text)]
    output: super::Format,
}

#[derive(Debug, Serialize)]
struct Report {
    kubeha: &'static str,
    kubernetes: Vec<Minor>,
    /// etcd minors kubeha renders flags for.
    etcd: &'static [&'static str],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Minor {
    minor: String,
    /// kubeadm's default etcd image tag from the patch release on: `(first patch, tag)`.
    default_etcd: Vec<Tagged>,
    coredns: Vec<Tagged>,
    pause: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Tagged {
    from_patch: u32,
    tag: &'static str,
}

fn report() -> Report {
    let tagged =
        |rows: &[(u32, &'static str)]| rows.iter().map(|&(from_patch, tag)| Tagged { from_patch, tag }).collect();
    Report {
        kubeha: env!("CARGO_PKG_VERSION"),
        kubernetes: RELEASES
            .iter()
            .map(|r| Minor {
                minor: format!("v1.{}", r.minor),
                default_etcd: tagged(r.etcd_tags()),
                coredns: tagged(r.coredns_tags()),
                pause: r.pause,
            })
            .collect(),
        etcd: &["3.4", "3.5", "3.6"],
    }
}

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let report = report();
        super::print_report(self.output, &report, || text(&report))
    }
}

fn text(r: &Report) -> String {
    let minors: Vec<&str> = r.kubernetes.iter().map(|m| m.minor.as_str()).collect();
    let mut out = format!("kubeha {}\nKubernetes: {}\netcd: {}\n", r.kubeha, minors.join(", "), r.etcd.join(", "));
    for m in &r.kubernetes {
        let mut etcd = m.default_etcd.iter().map(|t| match t.from_patch {
            0 => t.tag.to_string(),
            p => format!("{} from {}.{p}", t.tag, m.minor),
        });
        let etcd: Vec<String> = etcd.by_ref().collect();
        out.push_str(&format!("  {}: etcd {}; pause {}\n", m.minor, etcd.join(", "), m.pause));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_supported_minor_is_listed_with_its_etcd() {
        let r = report();
        assert_eq!(r.kubernetes.len(), RELEASES.len());
        assert!(r.kubernetes.iter().all(|m| !m.default_etcd.is_empty() && !m.coredns.is_empty()));
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["kubernetes"][0]["minor"], "v1.31");
        assert_eq!(json["kubernetes"][0]["defaultEtcd"][0]["tag"], "3.5.15-0");
        assert!(text(&r).contains("Kubernetes: v1.31, v1.32"));
    }
}
