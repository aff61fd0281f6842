//! Seeing static pods restart. The kubelet restarts a pod some time after its manifest changes
//! (at once when it watches the directory, at the latest after its `fileCheckFrequency`); until
//! then the old pod still answers the health checks. So before a rolling restart writes a host,
//! kubeha records which processes serve each pod that is to restart, and afterwards waits until
//! they have been replaced (or, for a pod whose manifest is removed, are gone) before the health
//! gates judge the host.
//!
//! A pod's processes are found by the TCP port it listens on (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler, haproxy) or, for keepalived, which listens on none,
//! by process name. Container processes are visible in the host's `/proc`, so this needs no
//! container runtime client; a process is its PID and start time, which together never repeat.
//! Where a host cannot tell (no `ss`), kubeha falls back to waiting the kubelet's sync period.

use std::collections::BTreeSet;
use std::time::Duration;

use super::layout::{CONTROLLER_MANAGER_PORT, ETCD_CLIENT_PORT, SCHEDULER_PORT};
use crate::plan::Plan;
use crate::transport::{Remote, TransportError};

/// How a pod's processes are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Whoever listens on this TCP port.
    Port(u16),
    /// Processes with this name (`/proc/<pid>/comm`).
    Name(&'static str),
}

/// A pod that is to restart (or stop), and how to see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub pod: String,
    pub probe: Probe,
    /// Its manifest is removed: the pod stops and nothing replaces it.
    pub stops: bool,
}

/// A process: PID and start time (clock ticks after boot).
pub type Process = (u32, u64);

/// How to see `pod` restart on a host of `plan`; `None` for a pod kubeha does not know.
pub fn probe(plan: &Plan, pod: &str) -> Option<Probe> {
    Some(match pod {
        "etcd" => Probe::Port(ETCD_CLIENT_PORT),
        "kube-apiserver" => Probe::Port(plan.api_server_bind_port),
        "kube-controller-manager" => Probe::Port(CONTROLLER_MANAGER_PORT),
        "kube-scheduler" => Probe::Port(SCHEDULER_PORT),
        "haproxy" => Probe::Port(plan.control_plane_endpoint.port),
        "keepalived" => Probe::Name("keepalived"),
        _ => return None,
    })
}

/// The read-only script that lists each probe's processes.
fn script(watched: &[Watched]) -> String {
    let mut s = String::from(
        "# listing pod processes\nexport LC_ALL=C\ncommand -v ss >/dev/null 2>&1 || { echo @@no-ss; exit 0; }\n\
         start() { sed 's/.*) //' \"/proc/$1/stat\" 2>/dev/null | cut -d' ' -f20; }\n\
         net=$(readlink /proc/self/ns/net)\n",
    );
    for (i, w) in watched.iter().enumerate() {
        s += &format!("echo @@probe {i}\n");
        match &w.probe {
            Probe::Port(port) => {
                s += &format!(
                    "for p in $(ss -Hltnp 'sport = :{port}' 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do \
                     echo \"$p $(start $p)\"; done\n"
                )
            }
            Probe::Name(name) => {
                s += &format!(
                    "for d in /proc/[0-9]*; do [ \"$(cat \"$d/comm\" 2>/dev/null)\" = {name} ] && \
                     [ \"$(readlink \"$d/ns/net\" 2>/dev/null)\" = \"$net\" ] && \
                     echo \"${{d#/proc/}} $(start ${{d#/proc/}})\"; done\n"
                )
            }
        }
    }
    s + "echo @@end\n"
}

/// Parses the script's output: per probe, its processes; `None` when the host cannot tell.
fn parse(text: &str, probes: usize) -> Option<Vec<BTreeSet<Process>>> {
    if text.lines().any(|l| l == "@@no-ss") || !text.lines().any(|l| l == "@@end") {
        return None;
    }
    let mut out = vec![BTreeSet::new(); probes];
    let mut current = None;
    for line in text.lines() {
        if let Some(i) = line.strip_prefix("@@probe ") {
            current = i.parse::<usize>().ok().filter(|i| *i < probes);
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(i), Some(pid), Some(start)) = (current, fields.next(), fields.next()) else { continue };
        if let (Ok(pid), Ok(start)) = (pid.parse(), start.parse()) {
            out[i].insert((pid, start));
        }
    }
    Some(out)
}

/// The processes serving each watched pod now; `None` when the host cannot tell.
pub async fn processes<R: Remote>(
    remote: &R,
    watched: &[Watched],
) -> Result<Option<Vec<BTreeSet<Process>>>, TransportError> {
    let out = remote.run(&script(watched), b"").await?;
    Ok(parse(&out.stdout_text(), watched.len()))
}

/// The pods not yet restarted (or stopped): a pod has restarted when none of its processes from
/// `before` remains and, unless it stops, a new one serves it.
pub fn pending<'w>(watched: &'w [Watched], before: &[BTreeSet<Process>], now: &[BTreeSet<Process>]) -> Vec<&'w str> {
    watched
        .iter()
        .zip(before.iter().zip(now))
        .filter(|(w, (before, now))| !(now.is_disjoint(before) && (w.stops || !now.is_empty())))
        .map(|(w, _)| w.pod.as_str())
        .collect()
}

/// Waits until every watched pod has restarted, asking every `interval`, for at most `limit`.
/// Returns the pods still not seen restarting when the limit passed (empty: all restarted).
pub async fn wait_restarted<R: Remote>(
    remote: &R,
    watched: &[Watched],
    before: &[BTreeSet<Process>],
    limit: Duration,
    interval: Duration,
) -> Result<Vec<String>, TransportError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let now = processes(remote, watched).await?;
        let pending: Vec<String> = match &now {
            Some(now) => pending(watched, before, now).into_iter().map(str::to_string).collect(),
            None => watched.iter().map(|w| w.pod.clone()).collect(),
        };
        if pending.is_empty() || tokio::time::Instant::now() + interval > deadline {
            return Ok(pending);
        }
        tokio::time::sleep(interval).await;
    }
}

/// The signal that makes `pod`'s program take up its new configuration without restarting:
/// haproxy's master (`-W`) starts new workers on SIGUSR2, keepalived re-reads on SIGHUP.
fn reload_signal(pod: &str) -> Option<(&'static str, &'static str)> {
    match pod {
        "haproxy" => Some(("haproxy", "USR2")),
        "keepalived" => Some(("keepalived", "HUP")),
        _ => None,
    }
}

/// The script signalling the main process of each pod (the process of that name in this
/// network namespace whose parent is not one of its own), printing `@@reloaded <pod>` for each
/// it found.
fn reload_script(pods: &[&str]) -> String {
    let mut s = String::from(
        "# reloading load balancer\nexport LC_ALL=C\nnet=$(readlink /proc/self/ns/net)\n\
         parent() { sed 's/.*) //' \"/proc/$1/stat\" 2>/dev/null | cut -d' ' -f2; }\n",
    );
    for pod in pods {
        let Some((program, signal)) = reload_signal(pod) else { continue };
        s += &format!(
            "for d in /proc/[0-9]*; do p=${{d#/proc/}}; \
             [ \"$(cat \"$d/comm\" 2>/dev/null)\" = {program} ] || continue; \
             [ \"$(readlink \"$d/ns/net\" 2>/dev/null)\" = \"$net\" ] || continue; \
             [ \"$(cat /proc/$(parent $p)/comm 2>/dev/null)\" = {program} ] && continue; \
             kill -{signal} $p && echo \"@@reloaded {pod}\"; done\n"
        );
    }
    s + "echo @@end\n"
}

/// Tells the running `pods` (haproxy, keepalived) to take up their new configuration; returns
/// the pods that were running and were told. A pod that is not running has nothing to reload:
/// it reads its configuration when it starts.
pub async fn reload<R: Remote>(remote: &R, pods: &[&str]) -> Result<Vec<String>, TransportError> {
    let out = remote.run(&reload_script(pods), b"").await?;
    let text = out.stdout_text();
    let mut told: Vec<String> =
        text.lines().filter_map(|l| l.strip_prefix("@@reloaded ")).map(str::to_string).collect();
    told.dedup();
    Ok(told)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watched(pod: &str, stops: bool) -> Watched {
        Watched { pod: pod.into(), probe: Probe::Port(1), stops }
    }

    #[test]
    fn output_is_read_per_probe() {
        let text = "@@probe 0\n101 5000\n102 5001\n@@probe 1\n@@probe 2\n303 7\nnoise\n@@end\n";
        let got = parse(text, 3).unwrap();
        assert_eq!(got[0], BTreeSet::from([(101, 5000), (102, 5001)]));
        assert!(got[1].is_empty());
        assert_eq!(got[2], BTreeSet::from([(303, 7)]));
        assert_eq!(parse("@@no-ss\n", 1), None);
        assert_eq!(parse("@@probe 0\n1 2\n", 1), None, "a cut-off answer tells nothing");
    }

    #[test]
    fn a_pod_restarted_when_its_old_processes_are_gone_and_a_new_one_serves() {
        let w = [watched("etcd", false), watched("haproxy", true)];
        let before = [BTreeSet::from([(10, 1)]), BTreeSet::from([(20, 1)])];
        // Nothing happened yet.
        assert_eq!(pending(&w, &before, &before), ["etcd", "haproxy"]);
        // etcd is down between its old and new process; haproxy stopped.
        let between = [BTreeSet::new(), BTreeSet::new()];
        assert_eq!(pending(&w, &before, &between), ["etcd"]);
        // A new etcd (the same PID again, but started later, is a new process).
        let after = [BTreeSet::from([(10, 9)]), BTreeSet::new()];
        assert!(pending(&w, &before, &after).is_empty());
        // A pod that was not running counts as restarted once a process serves it.
        let w = [watched("kube-scheduler", false)];
        assert_eq!(pending(&w, &[BTreeSet::new()], &[BTreeSet::new()]), ["kube-scheduler"]);
        assert!(pending(&w, &[BTreeSet::new()], &[BTreeSet::from([(5, 5)])]).is_empty());
    }

    #[test]
    fn reloads_signal_the_main_process_of_each_known_pod_only() {
        let s = reload_script(&["haproxy", "keepalived", "etcd"]);
        assert!(s.contains("= haproxy ] && continue; kill -USR2 $p && echo \"@@reloaded haproxy\""), "{s}");
        assert!(s.contains("kill -HUP $p && echo \"@@reloaded keepalived\""), "{s}");
        assert!(!s.contains("etcd"), "{s}");
        assert!(s.contains("readlink \"$d/ns/net\""), "only this host's processes: {s}");
    }

    #[test]
    fn the_script_asks_each_probe_in_order() {
        let w =
            [watched("a", false), Watched { pod: "keepalived".into(), probe: Probe::Name("keepalived"), stops: false }];
        let s = script(&w);
        assert!(s.find("@@probe 0").unwrap() < s.find("sport = :1'").unwrap());
        assert!(s.find("@@probe 1").unwrap() < s.find("= keepalived ]").unwrap());
        assert!(s.trim_end().ends_with("echo @@end"));
    }
}
