//! What `kubeha status` reads on a host: in one read-only command the clock, the addresses
//! (who holds the VIP), the static-pod manifests and what runs of them; and haproxy's backend
//! states from its stats socket on the host's loopback, through the SSH tunnel.
//!
//! Whether a static pod runs is found in one of two ways, and the report says which:
//! - **crictl**, where it is installed and answers: a running container with the manifest's
//!   container name;
//! - otherwise the **process table**: a process in the host's network namespace (static pods
//!   of the control plane use `hostNetwork`) whose command line starts with the manifest's
//!   program (`kube-apiserver`, `etcd`, `haproxy` …), or has it as its second or third word (a
//!   wrapper such as `kubeha-lab stand-in kube-apiserver`). It cannot tell a container started
//!   by the kubelet from the same program started by hand.
//!
//! haproxy's `show stat` comes from its stats socket ([`layout::HAPROXY_STATS_PORT`] on
//! loopback, `level user`: read-only), asked through an SSH tunnel like etcd and the apiserver,
//! so the host needs no tool for it. Everything here is parsed by pure functions, tested
//! without a host.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::SystemTime;

use super::layout;
use crate::transport::{Remote, TransportError};

/// The read-only script; `%…%` placeholders are the layout's paths.
const SCRIPT_TEMPLATE: &str = r#"# reading status
export LC_ALL=C
echo @@time; date +%s%N
echo @@addresses; ip -o addr show 2>/dev/null
for f in %MANIFESTS%/*; do
  [ -f "$f" ] || continue
  case "$f" in *.yaml|*.yml|*.json) ;; *) continue ;; esac
  echo "@@manifest $f"
  cat -- "$f"
  echo
done
echo @@processes
%PROCESSES%echo @@crictl
if command -v crictl >/dev/null 2>&1; then timeout 10 crictl ps -o json 2>/dev/null; fi
echo @@end
"#;

fn script() -> String {
    SCRIPT_TEMPLATE.replace("%MANIFESTS%", layout::MANIFESTS_DIR).replace("%PROCESSES%", PROCESSES)
}

/// Prints the first three words of the command line of every process in the host's network
/// namespace, one per line. Control-plane static pods run with `hostNetwork`, so theirs are
/// there; processes of other network namespaces (other containers' pods, or other hosts of a
/// lab sharing one kernel) are not.
pub const PROCESSES: &str = r#"me=$(readlink /proc/self/ns/net)
ls -l /proc/[0-9]*/ns/net 2>/dev/null | awk -v me="$me" '$NF == me { split($(NF-2), a, "/"); print a[3] }' |
  while read -r p; do { tr '\0' ' ' < "/proc/$p/cmdline"; echo; } 2>/dev/null; done | cut -d ' ' -f 1-3
"#;

/// How a static pod was found running (or not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Detection {
    Crictl,
    Process,
}

/// One static-pod manifest and whether its container runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StaticPod {
    /// The manifest's file name without its extension (`kube-apiserver`).
    pub name: String,
    /// The container's program (`kube-apiserver`); empty when the manifest could not be read.
    pub program: String,
    pub running: bool,
    pub detected_by: Detection,
}

/// One server of a haproxy backend as `show stat` reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendServer {
    pub backend: String,
    pub server: String,
    /// `UP`, `DOWN`, `MAINT`, `UP 1/2` (going down), `no check` …
    pub status: String,
    /// The last health check's result (`L7OK`, `L4CON` …), if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub check: String,
}

impl BackendServer {
    /// Whether haproxy sends it new connections and its checks pass (`UP 1/2` is up but
    /// failing checks: on its way down).
    pub fn is_up(&self) -> bool {
        self.status == "UP" || self.status == "no check"
    }
}

/// What the status script found on a host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostStatus {
    /// The host's clock minus this machine's, in seconds.
    pub clock_skew: Option<f64>,
    pub addresses: BTreeSet<IpAddr>,
    pub static_pods: Vec<StaticPod>,
}

/// Runs the status script on `remote`.
pub async fn gather<R: Remote>(remote: &R) -> Result<HostStatus, TransportError> {
    let before = SystemTime::now();
    let out = remote.run(&script(), b"").await?;
    let after = SystemTime::now();
    let text = out.stdout_text();
    let mut status = parse(&text);
    let ns = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
    if let Some(remote_ns) = lines(&text, "@@time").first().and_then(|t| t.trim().parse::<i128>().ok()) {
        status.clock_skew = Some((remote_ns - (ns(before) + ns(after)) / 2) as f64 / 1e9);
    }
    Ok(status)
}

/// Parses the script's output (all but the clock, which needs the local times).
pub fn parse(text: &str) -> HostStatus {
    let addresses = lines(text, "@@addresses")
        .iter()
        .filter_map(|l| l.split_whitespace().nth(3)?.split('/').next()?.parse().ok())
        .collect();
    let processes: Vec<Vec<&str>> = lines(text, "@@processes").iter().map(|l| l.split_whitespace().collect()).collect();
    let crictl = crictl_running(&lines(text, "@@crictl").join("\n"));
    let static_pods = manifests(text)
        .into_iter()
        .map(|(path, content)| {
            let name =
                std::path::Path::new(path).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let (container, program) = container_of(&content).unwrap_or_default();
            let (running, detected_by) = match &crictl {
                Some(names) => (names.contains(&container), Detection::Crictl),
                None => (!program.is_empty() && runs(&processes, &program), Detection::Process),
            };
            StaticPod { name, program, running, detected_by }
        })
        .collect();
    HostStatus { clock_skew: None, addresses, static_pods }
}

/// haproxy's servers from `show stat` on its stats socket on `address` (the host's loopback),
/// through the host's tunnel.
pub async fn haproxy_servers<R: Remote>(remote: &R, address: &str) -> Result<Vec<BackendServer>, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = layout::HAPROXY_STATS_PORT;
    let ask = async {
        let mut tunnel = remote.open_tcp(address, port).await.map_err(|e| e.to_string())?;
        tunnel.write_all(b"show stat\n").await.map_err(|e| format!("stats socket: {e}"))?;
        tunnel.flush().await.map_err(|e| format!("stats socket: {e}"))?;
        let mut answer = Vec::new();
        // haproxy closes the connection after answering one command.
        (&mut tunnel).take(16 << 20).read_to_end(&mut answer).await.map_err(|e| format!("stats socket: {e}"))?;
        Ok::<_, String>(answer)
    };
    let answer = tokio::time::timeout(std::time::Duration::from_secs(5), ask)
        .await
        .map_err(|_| format!("the stats socket on {address}:{port} did not answer within 5s"))??;
    parse_show_stat(&String::from_utf8_lossy(&answer))
}

/// The lines after `header` up to the next `@@` line.
fn lines<'t>(text: &'t str, header: &str) -> Vec<&'t str> {
    text.lines().skip_while(|l| l.trim() != header).skip(1).take_while(|l| !l.starts_with("@@")).collect()
}

/// Each `@@manifest PATH` section: the path and the file's text.
fn manifests(text: &str) -> Vec<(&str, String)> {
    let mut out = Vec::new();
    let mut it = text.lines().peekable();
    while let Some(line) = it.next() {
        if let Some(path) = line.strip_prefix("@@manifest ") {
            let mut content = String::new();
            while let Some(next) = it.peek().filter(|l| !l.starts_with("@@")) {
                content.push_str(next);
                content.push('\n');
                it.next();
            }
            out.push((path, content));
        }
    }
    out
}

/// The first container's name and program (the base name of `command[0]`, else of `args[0]`)
/// in a static-pod manifest (YAML or JSON).
pub fn container_of(manifest: &str) -> Option<(String, String)> {
    let pod: serde_json::Value = serde_saphyr::from_str(manifest).ok()?;
    let container = pod.get("spec")?.get("containers")?.get(0)?;
    let name = container.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
    let first = |key: &str| container.get(key)?.get(0)?.as_str().map(str::to_string);
    let program = first("command").or_else(|| first("args"))?;
    let base = program.rsplit('/').next().unwrap_or(&program).to_string();
    Some((name, base))
}

/// Whether one of `processes` (the first words of each command line) runs `program`.
pub fn runs(processes: &[Vec<&str>], program: &str) -> bool {
    let base = |w: &str| w.rsplit('/').next().unwrap_or(w).to_string();
    processes.iter().any(|words| {
        words.first().is_some_and(|w| base(w) == program) || words.iter().skip(1).take(2).any(|w| *w == program)
    })
}

/// The names of the running containers `crictl ps -o json` lists; `None` when there is no
/// answer to read (no crictl, or no runtime behind it).
pub fn crictl_running(json: &str) -> Option<BTreeSet<String>> {
    let value: serde_json::Value = serde_json::from_str(json.trim()).ok()?;
    let containers = value.get("containers")?.as_array()?;
    Some(
        containers
            .iter()
            .filter(|c| c.get("state").and_then(|s| s.as_str()).is_none_or(|s| s == "CONTAINER_RUNNING"))
            .filter_map(|c| c.get("metadata")?.get("name")?.as_str().map(str::to_string))
            .collect(),
    )
}

/// The servers of every backend in haproxy's `show stat` CSV (the frontend and backend
/// summary rows are left out). A text that is not the CSV (an error from the socket) is `Err`.
pub fn parse_show_stat(csv: &str) -> Result<Vec<BackendServer>, String> {
    let mut rows = csv.lines().filter(|l| !l.trim().is_empty());
    let header = rows.next().ok_or("haproxy sent nothing")?;
    let Some(header) = header.strip_prefix("# ") else {
        return Err(format!("haproxy answered: {}", header.trim()));
    };
    let columns: Vec<&str> = header.split(',').collect();
    let column = |name: &str| columns.iter().position(|c| *c == name).ok_or(format!("no {name} column in show stat"));
    let (px, sv, status, check) = (column("pxname")?, column("svname")?, column("status")?, column("check_status")?);
    Ok(rows
        .map(|row| row.split(',').collect::<Vec<_>>())
        .filter(|f| f.len() > px.max(sv).max(status) && !matches!(f[sv], "FRONTEND" | "BACKEND"))
        .map(|f| BackendServer {
            backend: f[px].to_string(),
            server: f[sv].to_string(),
            status: f[status].to_string(),
            check: f.get(check).unwrap_or(&"").trim_start_matches('*').trim().to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `show stat` of haproxy 2.6 (columns cut after check_status's neighbours, which the
    /// parser finds by name).
    pub(crate) const SHOW_STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,
apiserver,FRONTEND,,,0,2,8000,14,1,2,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,2,,,,
apiserver,cp1,0,0,0,1,,5,1,2,,0,,0,0,0,0,UP,1,1,0,0,0,30,0,,1,3,1,,5,,2,0,,1,L7OK,200,3,
apiserver,cp2,0,0,0,1,,5,1,2,,0,,0,0,0,0,DOWN,1,1,0,2,1,5,5,,1,3,2,,5,,2,0,,1,* L4CON,,1,
apiserver,cp3,0,0,0,1,,4,1,2,,0,,0,0,0,0,UP 1/2,1,1,0,0,0,30,0,,1,3,3,,4,,2,0,,1,L7OK,200,2,
apiserver,BACKEND,0,0,0,2,800,14,1,2,0,0,,0,0,0,0,UP,2,2,0,,0,30,0,,1,3,0,,14,,1,0,,2,,,,
";

    #[test]
    fn show_stat_gives_each_server_and_its_state() {
        let servers = parse_show_stat(SHOW_STAT).unwrap();
        let states: Vec<(&str, &str, bool)> =
            servers.iter().map(|s| (s.server.as_str(), s.check.as_str(), s.is_up())).collect();
        assert_eq!(states, [("cp1", "L7OK", true), ("cp2", "L4CON", false), ("cp3", "L7OK", false)]);
        assert_eq!(servers[1].status, "DOWN");
        assert!(servers.iter().all(|s| s.backend == "apiserver"));
        assert!(parse_show_stat("Permission denied.\n").unwrap_err().contains("Permission denied"));
        assert!(parse_show_stat("").is_err());
        assert!(parse_show_stat("# pxname,svname\n").unwrap_err().contains("status"));
    }

    const APISERVER: &str = "apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  containers:
  - name: kube-apiserver
    command:
    - kube-apiserver
    - --advertise-address=198.18.0.11
";

    fn output(processes: &str, crictl: &str) -> String {
        format!(
            "@@time\n1\n@@addresses\n1: lo    inet 127.0.0.1/8 scope host lo\n2: eth0    inet 198.18.0.11/24 brd x\n\
             2: eth0    inet 198.18.0.10/32 scope global eth0\n\
             @@manifest /etc/kubernetes/manifests/kube-apiserver.yaml\n{APISERVER}\n\
             @@manifest /etc/kubernetes/manifests/etcd.yaml\n{{\"spec\":{{\"containers\":[{{\"name\":\"etcd\",\"command\":[\"/usr/local/bin/etcd\",\"--name=cp1\"]}}]}}}}\n\
             @@manifest /etc/kubernetes/manifests/broken.yaml\nnot: [a pod\n\
             @@processes\n{processes}@@crictl\n{crictl}@@end\n"
        )
    }

    #[test]
    fn static_pods_are_found_in_the_process_table_without_crictl() {
        let status = parse(&output("/sbin/init\nkubeha-lab stand-in kube-apiserver\nsh -c echo\n", ""));
        let pods: Vec<(&str, &str, bool, Detection)> = status
            .static_pods
            .iter()
            .map(|p| (p.name.as_str(), p.program.as_str(), p.running, p.detected_by))
            .collect();
        assert_eq!(
            pods,
            [
                ("kube-apiserver", "kube-apiserver", true, Detection::Process),
                ("etcd", "etcd", false, Detection::Process),
                ("broken", "", false, Detection::Process),
            ]
        );
        let status = parse(&output("/usr/local/bin/etcd --name=cp1 --data-dir=/var/lib/etcd\n", ""));
        assert!(status.static_pods[1].running);
        assert!(!status.static_pods[0].running, "etcd is not kube-apiserver");
        let ips: Vec<String> = status.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(ips, ["127.0.0.1", "198.18.0.10", "198.18.0.11"]);
    }

    #[test]
    fn crictl_decides_where_it_answers() {
        let crictl = r#"{"containers":[{"id":"1","metadata":{"name":"etcd","attempt":0},"state":"CONTAINER_RUNNING"}]}
"#;
        let status = parse(&output("kube-apiserver --x\n", crictl));
        let pods: Vec<(bool, Detection)> = status.static_pods.iter().map(|p| (p.running, p.detected_by)).collect();
        assert_eq!(pods[..2], [(false, Detection::Crictl), (true, Detection::Crictl)]);
        assert_eq!(crictl_running("FATA[0000] connect: no such file"), None);
    }

    #[tokio::test]
    async fn show_stat_is_asked_through_the_tunnel() {
        let remote = crate::transport::MemoryRemote::new("cp1");
        remote.listen_tcp("127.0.0.1", layout::HAPROXY_STATS_PORT, |mut stream| {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut line = [0u8; 10];
                stream.read_exact(&mut line).await.unwrap();
                assert_eq!(&line, b"show stat\n");
                stream.write_all(SHOW_STAT.as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        });
        let servers = haproxy_servers(&remote, "127.0.0.1").await.unwrap();
        assert_eq!(servers.len(), 3);
        let err = haproxy_servers(&remote, "::1").await.unwrap_err();
        assert!(err.contains("cp1"), "{err}");
    }
}
