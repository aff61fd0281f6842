//! `certs check-expiration`: every certificate on every host, read over SSH — PKI files, the
//! kubelet's, and the client certificates embedded in kubeconfigs — judged against thresholds.
//!
//! What the hosts really have is what expires, so nothing here trusts the local state
//! directory; it is only compared with (does the host have the certificate kubeha has?).
//! Gathering is one read-only command per host; judging is a pure function of what came back.

use std::path::Path;
use std::time::Duration;

use time::OffsetDateTime;

use super::session::Session;
use crate::host::certs::{self, Found};
use crate::pki::expiry::{Signers, describe, local_certificate, local_counterpart};
use crate::transport::Remote;

/// When a certificate is worth a warning, and when an error.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub warn: Duration,
    pub error: Duration,
}

/// A row's verdict, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    /// Expired, or ending within the error threshold.
    Error,
    /// The host could not be read.
    Unreachable,
}

/// One certificate on one host (or one host that could not be read).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub host: String,
    /// The file, e.g. `/etc/kubernetes/pki/apiserver.crt` or `/etc/kubernetes/admin.conf`.
    pub path: String,
    pub subject: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    /// Seconds until `not_after` (negative once expired).
    pub remaining_seconds: i64,
    /// `kubernetes`, `etcd`, `front-proxy`, `self` (a CA), or `unknown`.
    pub signer: String,
    /// Whether the host's certificate is the state directory's: `None` where the state
    /// directory has no counterpart (the kubelet's own certificates).
    pub matches_state: Option<bool>,
    pub level: Level,
    /// Why the host could not be read (unreachable rows only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
}

/// Reads and judges every connected host; unreachable hosts get a row of their own.
pub async fn check<R: Remote>(session: &Session<'_, R>, thresholds: Thresholds, now: OffsetDateTime) -> Vec<Row> {
    let signers = Signers::read(session.state_dir());
    let per_host = session
        .each(&session.hosts, |(host, conn)| async move {
            session.progress.step(&host.name, "reading certificates");
            let result = match conn {
                Ok(remote) => certs::gather(remote).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            session.progress.finish(&host.name, if result.is_ok() { "certificates read" } else { "unreachable" });
            result
        })
        .await;
    let mut rows = Vec::new();
    for ((host, _), result) in per_host {
        match result {
            Ok(found) => rows.extend(judge(&host.name, &found, &signers, session.state_dir(), now, thresholds)),
            Err(error) => rows.push(Row { level: Level::Unreachable, error, ..Row::empty(&host.name, "") }),
        }
    }
    rows
}

/// The certificates on the connected hosts that end within `window` (or have ended): what
/// `init` warns about. One read-only command per host, in parallel; a host that cannot be read
/// is left out (preflight has already reached every host).
pub async fn within<R: Remote>(session: &Session<'_, R>, window: Duration, now: OffsetDateTime) -> Vec<Row> {
    let thresholds = Thresholds { warn: window, error: Duration::ZERO };
    let rows = check(session, thresholds, now).await;
    rows.into_iter().filter(|r| matches!(r.level, Level::Warn | Level::Error)).collect()
}

impl Row {
    /// `cp1: /etc/kubernetes/pki/apiserver.crt (CN=kube-apiserver) ends 2027-01-01T00:00:00Z (20d)`.
    pub fn expiring_line(&self) -> String {
        format!(
            "{}: {} ({}) ends {} ({})",
            self.host,
            self.path,
            self.subject,
            self.not_after,
            residual(self.remaining_seconds)
        )
    }

    fn empty(host: &str, path: &str) -> Row {
        Row {
            host: host.to_string(),
            path: path.to_string(),
            subject: String::new(),
            not_after: String::new(),
            remaining_seconds: 0,
            signer: String::new(),
            matches_state: None,
            level: Level::Ok,
            error: String::new(),
        }
    }
}

/// The rows for one host's certificates.
pub fn judge(
    host: &str,
    found: &[Found],
    signers: &Signers,
    state_dir: &Path,
    now: OffsetDateTime,
    thresholds: Thresholds,
) -> Vec<Row> {
    found
        .iter()
        .map(|f| {
            let path = f.path.display().to_string();
            let Some(info) = describe(&f.pem, signers) else {
                return Row {
                    subject: "(not a readable certificate)".into(),
                    level: Level::Error,
                    ..Row::empty(host, &path)
                };
            };
            let remaining = (info.not_after - now).whole_seconds();
            let level = if remaining < thresholds.error.as_secs() as i64 {
                Level::Error
            } else if remaining < thresholds.warn.as_secs() as i64 {
                Level::Warn
            } else {
                Level::Ok
            };
            let matches_state = local_counterpart(&f.path).map(|_| {
                let ours = local_certificate(state_dir, &f.path);
                ours.is_some() && ours == crate::pki::expiry::certificate_der(&f.pem)
            });
            Row {
                host: host.to_string(),
                path,
                subject: info.subject,
                not_after: info
                    .not_after
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_else(|_| info.not_after.to_string()),
                remaining_seconds: remaining,
                signer: info.signer.unwrap_or_else(|| "unknown".into()),
                matches_state,
                level,
                error: String::new(),
            }
        })
        .collect()
}

/// `364d`, `5h`, or `expired 3d ago`, for tables.
pub fn residual(seconds: i64) -> String {
    let text = |s: i64| {
        if s >= 86_400 {
            format!("{}d", s / 86_400)
        } else if s >= 3600 {
            format!("{}h", s / 3600)
        } else {
            format!("{}m", s / 60)
        }
    };
    if seconds < 0 { format!("expired {} ago", text(-seconds)) } else { text(seconds) }
}

/// The report as a table.
pub fn table(rows: &[Row]) -> String {
    let rows: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            if r.level == Level::Unreachable {
                return [
                    r.host.clone(),
                    "-".into(),
                    format!("unreachable: {}", r.error),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                ];
            }
            let state = match r.matches_state {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            };
            [
                r.host.clone(),
                r.path.clone(),
                r.subject.clone(),
                r.not_after.clone(),
                residual(r.remaining_seconds),
                r.signer.clone(),
                format!("{state} ({})", level_name(r.level)),
            ]
        })
        .collect();
    crate::text::table(
        ["HOST", "CERTIFICATE", "SUBJECT", "EXPIRES (UTC)", "RESIDUAL", "CA", "IN STATE (STATUS)"],
        &rows,
    )
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Ok => "ok",
        Level::Warn => "warn",
        Level::Error => "error",
        Level::Unreachable => "unreachable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::fake::{self, MemoryConnector};
    use crate::actions::progress::Progress;

    /// The test cluster with 5-day leaf certificates written to every host.
    fn cluster() -> (crate::plan::Plan, MemoryConnector, tempfile::TempDir) {
        let text = fake::INVENTORY.replace(
            "certificates: {keyAlgorithm: ecdsa-p256}",
            "certificates: {keyAlgorithm: ecdsa-p256, validity: 5d}",
        );
        let plan = crate::inventory::parse(&text, Path::new("/")).unwrap();
        let hosts = MemoryConnector::new(&plan);
        let state = tempfile::tempdir().unwrap();
        crate::pki::generate(&plan, state.path()).unwrap();
        let pki = crate::pki::load(&plan, state.path()).unwrap();
        for host in &plan.hosts {
            for file in pki.host_files(host) {
                hosts.host(&host.name).insert_file(&file.path, file.mode, 0, 0, file.content.clone());
            }
        }
        (plan, hosts, state)
    }

    #[tokio::test]
    async fn every_certificate_on_every_host_is_judged_and_compared_with_the_state() {
        let (plan, mut hosts, state) = cluster();
        // w1 holds a certificate kubeha did not make; cp3 cannot be reached.
        let stranger = std::fs::read(state.path().join("pki/front-proxy-client.crt")).unwrap();
        hosts.host("w1").insert_file("/etc/kubernetes/pki/ca.crt", 0o644, 0, 0, stranger);
        hosts.unreachable.push("cp3".into());
        let options = crate::actions::session::SessionOptions { dry_run: true, ..Default::default() };
        let progress = Progress::hidden();
        let session = Session::open(&plan, state.path(), options, &hosts, &progress).await.unwrap();
        let thresholds = Thresholds { warn: Duration::from_secs(30 * 86_400), error: Duration::from_secs(7 * 86_400) };
        let rows = check(&session, thresholds, OffsetDateTime::now_utc()).await;

        let row = |host: &str, path: &str| {
            rows.iter()
                .find(|r| r.host == host && r.path == path)
                .unwrap_or_else(|| panic!("no {host} {path}: {rows:#?}"))
        };
        let ca = row("cp1", "/etc/kubernetes/pki/ca.crt");
        assert_eq!((ca.signer.as_str(), ca.level, ca.matches_state), ("self", Level::Ok, Some(true)));
        let apiserver = row("cp1", "/etc/kubernetes/pki/apiserver.crt");
        assert_eq!((apiserver.signer.as_str(), apiserver.level), ("kubernetes", Level::Error), "{apiserver:?}");
        assert!(apiserver.remaining_seconds > 4 * 86_400 && apiserver.remaining_seconds <= 5 * 86_400);
        assert_eq!(apiserver.subject, "CN=kube-apiserver");
        assert_eq!(row("cp2", "/etc/kubernetes/pki/etcd/peer.crt").signer, "etcd");
        let admin = row("cp1", "/etc/kubernetes/admin.conf");
        assert!(admin.subject.contains("kubeadm:cluster-admins"), "{admin:?}");
        assert_eq!(admin.matches_state, Some(true));
        let kubelet = row("w1", "/etc/kubernetes/kubelet.conf");
        assert!(kubelet.subject.contains("CN=system:node:w1"), "{kubelet:?}");
        let stranger = row("w1", "/etc/kubernetes/pki/ca.crt");
        assert_eq!((stranger.matches_state, stranger.signer.as_str()), (Some(false), "front-proxy"));
        let cp3: Vec<&Row> = rows.iter().filter(|r| r.host == "cp3").collect();
        assert_eq!(cp3.len(), 1);
        assert_eq!(cp3[0].level, Level::Unreachable);
        assert!(cp3[0].error.contains("cp3"), "{:?}", cp3[0]);
        assert!(table(&rows).contains("unreachable: cp3"));
        // Every host's certificate files and kubeconfigs, each once.
        let cp1 = rows.iter().filter(|r| r.host == "cp1").count();
        let cp1_files = hosts
            .host("cp1")
            .paths()
            .iter()
            .filter(|p| {
                let p = p.to_string_lossy();
                (p.starts_with("/etc/kubernetes/pki") && p.ends_with(".crt")) || p.ends_with(".conf")
            })
            .count();
        assert_eq!(cp1, cp1_files);
        session.close(&hosts).await;
    }

    #[tokio::test]
    async fn within_a_window_lists_the_leaves_ending_in_it_and_nothing_else() {
        let (plan, hosts, state) = cluster();
        let options = crate::actions::session::SessionOptions { dry_run: true, ..Default::default() };
        let progress = Progress::hidden();
        let session = Session::open(&plan, state.path(), options, &hosts, &progress).await.unwrap();
        let now = OffsetDateTime::now_utc();
        let rows = within(&session, Duration::from_secs(30 * 86_400), now).await;
        assert!(rows.iter().any(|r| r.host == "w1" && r.path.ends_with("kubelet.conf")), "{rows:#?}");
        assert!(!rows.iter().any(|r| r.signer == "self"), "a 10-year CA is not within 30 days: {rows:#?}");
        assert!(rows[0].expiring_line().starts_with("cp1: /etc/kubernetes/"), "{}", rows[0].expiring_line());
        assert!(within(&session, Duration::from_secs(86_400), now).await.is_empty(), "5-day leaves are outside 1 day");
        session.close(&hosts).await;
    }

    #[test]
    fn residual_times_read_well() {
        assert_eq!(residual(400 * 86_400), "400d");
        assert_eq!(residual(5 * 3600 + 10), "5h");
        assert_eq!(residual(-3 * 86_400), "expired 3d ago");
        assert_eq!(residual(90), "1m");
    }
}
