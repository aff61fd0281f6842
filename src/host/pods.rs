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

/// Shell functions the scripts share, builtins only (a host runs hundreds of processes, and a
/// fork per process looked at would make a scan take seconds): `comm PID` sets `c` to the
/// process's name; `stat_field PID N` sets `f` to field N of `/proc/PID/stat` after the
/// parenthesised name (2: parent PID, 20: start time); `net` is this shell's network namespace.
const SHELL_HELPERS: &str = "export LC_ALL=C\n\
    comm() { c=; { IFS= read -r c < \"/proc/$1/comm\"; } 2>/dev/null; }\n\
    stat_field() { f=; l=; { IFS= read -r l < \"/proc/$1/stat\"; } 2>/dev/null || return 0; \
    set -- $2 ${l##*) }; [ $# -gt \"$1\" ] || return 0; shift \"$1\"; f=$1; }\n\
    net=$(readlink /proc/self/ns/net)\n";

/// The read-only script that lists each probe's processes: `PID START` lines after
/// `@@probe <index>`. Listening sockets come from one `ss` for every port.
fn script(watched: &[Watched]) -> String {
    let mut s = format!(
        "# listing pod processes\n{SHELL_HELPERS}command -v ss >/dev/null 2>&1 || {{ echo @@no-ss; exit 0; }}\n\
         listening=$(ss -Hltnp 2>/dev/null)\n"
    );
    for (i, w) in watched.iter().enumerate() {
        s += &format!("echo @@probe {i}\n");
        match &w.probe {
            Probe::Port(port) => {
                // The local address ends in `:PORT` (`0.0.0.0:2379`, `[::1]:6443`, `*:8443`);
                // the users column names every process holding the socket as `pid=N`.
                s += &format!(
                    "printf '%s\\n' \"$listening\" | while read -r _ _ _ local _ users; do \
                     case $local in *:{port}) ;; *) continue ;; esac; \
                     while :; do case $users in *pid=*) users=${{users#*pid=}}; p=${{users%%[!0-9]*}}; \
                     stat_field \"$p\" 20; echo \"$p $f\";; *) break ;; esac; done; done\n"
                )
            }
            Probe::Name(name) => {
                s += &format!(
                    "for d in /proc/[0-9]*; do p=${{d#/proc/}}; comm \"$p\"; [ \"$c\" = {name} ] || continue; \
                     [ \"$(readlink \"$d/ns/net\" 2>/dev/null)\" = \"$net\" ] || continue; \
                     stat_field \"$p\" 20; echo \"$p $f\"; done\n"
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
    let mut s = format!("# reloading load balancer\n{SHELL_HELPERS}");
    for pod in pods {
        let Some((program, signal)) = reload_signal(pod) else { continue };
        s += &format!(
            "for d in /proc/[0-9]*; do p=${{d#/proc/}}; comm \"$p\"; [ \"$c\" = {program} ] || continue; \
             [ \"$(readlink \"$d/ns/net\" 2>/dev/null)\" = \"$net\" ] || continue; \
             stat_field \"$p\" 2; comm \"$f\"; [ \"$c\" = {program} ] && continue; \
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
        assert!(!s.contains("$(cat"), "no process forked per process looked at: {s}");
        assert!(s.contains("kill -HUP $p && echo \"@@reloaded keepalived\""), "{s}");
        assert!(!s.contains("etcd"), "{s}");
        assert!(s.contains("readlink \"$d/ns/net\""), "only this host's processes: {s}");
    }

    /// This process's PID and start time, as `/proc` says.
    fn own_process() -> Process {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let rest: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        (std::process::id(), rest[19].parse().unwrap())
    }

    #[test]
    fn the_listing_script_finds_processes_by_port_and_by_name() {
        if std::process::Command::new("ss").arg("-V").output().is_err() {
            panic!("ss (iproute2) is needed: scripts/setup installs it");
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let name: &'static str = std::fs::read_to_string("/proc/self/comm").unwrap().trim().to_string().leak();
        let w = [
            watched("by-port", false),
            Watched { pod: "by-port".into(), probe: Probe::Port(port), stops: false },
            Watched { pod: "by-name".into(), probe: Probe::Name(name), stops: false },
        ];
        let out = std::process::Command::new("sh").arg("-c").arg(script(&w)).output().unwrap();
        let found = parse(&String::from_utf8_lossy(&out.stdout), 3).unwrap();
        let me = own_process();
        assert!(!found[0].contains(&me), "port 1 is not ours: {found:?}");
        assert_eq!(found[1], BTreeSet::from([me]), "by port {port}");
        assert!(found[2].contains(&me), "by name {name}: {found:?}");
        drop(listener);
    }

    /// Processes of this network namespace named `name`.
    fn named(name: &str) -> usize {
        let net = std::fs::read_link("/proc/self/ns/net").unwrap();
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == name))
            .filter(|e| std::fs::read_link(e.path().join("ns/net")).is_ok_and(|n| n == net))
            .count()
    }

    #[test]
    fn a_reload_signals_the_master_and_not_its_workers() {
        if named("haproxy") > 0 {
            eprintln!("skipped: an haproxy runs in this network namespace, and the test must not signal it");
            return;
        }
        // A master `haproxy` (a copy of sh) that records SIGUSR2, with a worker `haproxy` (a copy
        // of sleep, which SIGUSR2 would end).
        let dir = tempfile::tempdir().unwrap();
        for (program, sub) in [("/bin/sh", "master"), ("/bin/sleep", "worker")] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::copy(program, dir.path().join(sub).join("haproxy")).unwrap();
        }
        let got = dir.path().join("got");
        let script = format!(
            "trap 'echo usr2 >> {got}' USR2; {worker} 30 & echo ready >> {got}; while :; do wait; done",
            got = got.display(),
            worker = dir.path().join("worker/haproxy").display()
        );
        let mut master =
            std::process::Command::new(dir.path().join("master/haproxy")).arg("-c").arg(script).spawn().unwrap();
        while named("haproxy") < 2 || !std::fs::read_to_string(&got).unwrap_or_default().contains("ready") {
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = std::process::Command::new("sh").arg("-c").arg(reload_script(&["haproxy"])).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        std::thread::sleep(Duration::from_millis(200));
        let (recorded, workers) = (std::fs::read_to_string(&got).unwrap(), named("haproxy"));
        let _ = master.kill();
        let _ = master.wait();
        let _ = std::process::Command::new("pkill").arg("-f").arg(dir.path().join("worker/haproxy")).status();
        assert_eq!(text.matches("@@reloaded haproxy").count(), 1, "{text}");
        assert!(recorded.contains("usr2"), "the master was not signalled: {recorded}");
        assert_eq!(workers, 2, "the worker was signalled too");
    }

    #[test]
    fn the_script_asks_each_probe_in_order() {
        let w =
            [watched("a", false), Watched { pod: "keepalived".into(), probe: Probe::Name("keepalived"), stops: false }];
        let s = script(&w);
        assert!(s.find("@@probe 0").unwrap() < s.find("*:1)").unwrap());
        assert!(s.find("@@probe 1").unwrap() < s.find("= keepalived ]").unwrap());
        assert!(s.trim_end().ends_with("echo @@end"));
    }
}
