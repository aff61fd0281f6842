//! Tests of the lab itself, with real programs: network namespaces, sshd, sudo, etcd 3.4,
//! keepalived and haproxy. They need root (as the README's test command runs them; a normal user's
//! run skips them) and run one at a time. Labs are named `t*` on subnets 198.18.1-9.0/24, in `/tmp/kubeha-lab-tests/<name>`
//! (kept after a failure for its logs; a leftover lab there is taken down first).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kubeha_lab::{Lab, LabSpec, LabUser, ProcRef, wait_for};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn spec(name: &str, subnet: u8, control_planes: usize, workers: usize) -> LabSpec {
    assert!(nix::unistd::geteuid().is_root(), "the lab tests need root (network namespaces, bind mounts)");
    let mut s = LabSpec::new(name, subnet);
    s.dir = PathBuf::from("/tmp/kubeha-lab-tests").join(name);
    if s.dir.join("lab.json").exists() {
        Lab::open(&s.dir).unwrap().down().unwrap();
    }
    (s.control_planes, s.workers) = (control_planes, workers);
    s.exe = Some(env!("CARGO_BIN_EXE_kubeha-lab").into());
    s
}

/// What must be gone after `down`.
struct Snapshot {
    name: String,
    dir: PathBuf,
    procs: Vec<ProcRef>,
}

fn snapshot(lab: &Lab) -> Snapshot {
    let procs = lab.recorded_processes();
    assert!(procs.len() >= 2 * lab.hosts().len(), "supervisors and sshds are recorded: {procs:?}");
    Snapshot { name: lab.name().to_string(), dir: lab.dir().to_path_buf(), procs }
}

fn text(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_gone(s: &Snapshot) {
    let namespaces = text("ip", &["netns", "list"]);
    let ns = format!("kubeha-{}-", s.name);
    assert!(!namespaces.lines().any(|l| l.starts_with(&ns)), "namespaces left: {namespaces}");
    let links = text("ip", &["-o", "link", "show"]);
    let br = format!("kh-{}", s.name);
    for l in links.lines() {
        let name = l.split(": ").nth(1).unwrap_or("").split('@').next().unwrap_or("");
        assert!(name != br && !name.starts_with(&format!("{br}-")), "link left: {l}");
    }
    for p in &s.procs {
        assert!(!p.alive(), "process {} is still running", p.pid);
    }
    let dir = s.dir.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if entry.file_name().to_string_lossy().parse::<u32>().is_ok()
            && let Ok(info) = std::fs::read_to_string(entry.path().join("mountinfo"))
        {
            assert!(!info.contains(&dir), "{:?} still has lab mounts", entry.path());
        }
    }
    assert!(!s.dir.join("lab.json").exists());
}

fn ssh(lab: &Lab, host: &str, command: &str) -> Output {
    lab.ssh_command(host).unwrap().arg(command).stdin(Stdio::null()).output().unwrap()
}

fn ssh_ok(lab: &Lab, host: &str, command: &str) -> String {
    let out = ssh(lab, host, command);
    assert!(out.status.success(), "{host}: {command}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes a file on a host over SSH as kubeha does: content on stdin, a dot-named temporary file,
/// then a rename.
fn put(lab: &Lab, host: &str, path: &str, content: &str) {
    let (dir, name) = path.rsplit_once('/').unwrap();
    let mut command = format!("mkdir -p {dir} && cat > {dir}/.{name}.tmp && mv -f {dir}/.{name}.tmp {path}");
    if lab.ssh_user() != "root" {
        command = format!("sudo -n sh -c '{command}'");
    }
    let mut child = lab.ssh_command(host).unwrap().arg(command).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), content.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "writing {path} on {host}");
}

fn sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn hosts_answer_ssh_with_their_own_keys_names_and_files() {
    if !support::require_root() {
        return;
    }
    let _g = serial();
    let mut spec = spec("t1", 1, 3, 1);
    spec.user = LabUser::Ops;
    let started = Instant::now();
    let lab = Lab::up(spec).unwrap();
    eprintln!("up of 3+1 hosts took {:?}", started.elapsed());
    let snap = snapshot(&lab);
    let names: Vec<&str> = lab.hosts().iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["cp1", "cp2", "cp3", "w1"]);
    assert_eq!(lab.vip().to_string(), "198.18.1.10");

    for h in lab.hosts() {
        // The inventory's user (ops): strict host-key checking against the lab's known_hosts.
        let out = ssh(&lab, &h.name, "hostname; id -un; sudo -n id -u");
        assert!(out.status.success(), "{}: {}", h.name, String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{}\nops\n0\n", h.name));
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "sudo says nothing on {}", h.name);
        let out = lab.ssh_command_as(&h.name, "root").unwrap().arg("hostname").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), h.name);
        let out = lab.exec(&h.name, &["hostname"]).unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), h.name);
    }
    // A host key that is not the one in known_hosts is refused.
    let mut kh = std::fs::read_to_string(lab.known_hosts_file()).unwrap();
    let (cp1, cp2) = (lab.hosts()[0].address.to_string(), lab.hosts()[1].address.to_string());
    kh = kh.replace(&format!("{cp1} "), "swapped ").replace(&format!("{cp2} "), &format!("{cp1} "));
    let wrong = lab.dir().join("wrong_known_hosts");
    std::fs::write(&wrong, kh).unwrap();
    let out = Command::new("/usr/bin/ssh")
        .args(["-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-i"])
        .arg(lab.identity_file())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", wrong.display()))
        .arg(format!("ops@{cp1}"))
        .arg("true")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"), "{out:?}");
    assert!(!out.status.success(), "cp1 accepted with cp2's key");

    // Each host has its own /etc/kubernetes, unseen by the others and by the machine.
    let machine_had = Path::new("/etc/kubernetes/lab-probe").exists();
    ssh_ok(&lab, "cp1", "echo cp1-secret | sudo -n tee /etc/kubernetes/lab-probe >/dev/null");
    assert_eq!(
        std::fs::read_to_string(lab.host_path("cp1", "/etc/kubernetes/lab-probe").unwrap()).unwrap(),
        "cp1-secret\n"
    );
    for other in ["cp2", "cp3", "w1"] {
        let out = ssh(&lab, other, "cat /etc/kubernetes/lab-probe");
        assert!(!out.status.success(), "{other} sees cp1's file");
    }
    assert!(!machine_had && !Path::new("/etc/kubernetes/lab-probe").exists(), "the machine sees cp1's file");
    assert_eq!(
        ssh_ok(
            &lab,
            "w1",
            "sudo -n ls -A /etc/kubernetes /var/lib/etcd /var/lib/kubelet | grep -v : | grep -c . || true"
        )
        .trim(),
        "0"
    );

    // The command log holds exactly what was sent, multi-line commands included.
    let multi = "printf '%s\\n' one\necho two";
    assert_eq!(ssh_ok(&lab, "cp3", multi), "one\ntwo\n");
    let log = lab.ssh_command_log("cp3").unwrap();
    assert_eq!(log.last().map(String::as_str), Some(multi));
    assert!(log.iter().any(|c| c == "hostname; id -un; sudo -n id -u"), "{log:?}");

    // direct-tcpip forwarding works through the command-recording sshd: cp1 opens a connection to
    // cp2's sshd, whose banner comes back.
    let mut fwd = lab.ssh_command("cp1").unwrap();
    fwd.arg("-W").arg(format!("{cp2}:22")).stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = fwd.spawn().unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut banner).unwrap();
    drop(child.stdin.take());
    let _ = child.wait();
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner:?}");

    // The written inventory is one kubeha accepts.
    let out = Command::new(support::kubeha_bin()).arg("validate").arg("-i").arg(lab.inventory_path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "validate: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("etcd 3.4.23") && stdout.contains("ops@198.18.1.101:22 (sudo)"), "{stdout}");

    // Stopping sshd ends its sessions too; starting it again serves the same host key.
    let mut session =
        lab.ssh_command("cp2").unwrap().arg("sleep 600").stdin(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let sleeper = wait_for(secs(10), "the sleep session on cp2", || {
        let sup = lab.supervisor("cp2").unwrap().unwrap();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read_to_string(e.path().join("cmdline")).ok()?;
            let netns = std::fs::read_link(e.path().join("ns/net")).ok()?;
            (cmd == "sleep\x00600\x00" && netns == std::fs::read_link(format!("/proc/{}/ns/net", sup.pid)).ok()?)
                .then_some(ProcRef::of(pid)?)
        })
    })
    .unwrap();
    lab.ssh_stop("cp2").unwrap();
    assert!(!sleeper.alive(), "the session's command outlived sshd");
    let status = session.wait().unwrap();
    assert!(!status.success());
    assert!(!ssh(&lab, "cp2", "true").status.success(), "cp2 answers SSH with sshd stopped");
    lab.ssh_start("cp2").unwrap();
    assert_eq!(ssh_ok(&lab, "cp2", "hostname").trim(), "cp2");

    let started = Instant::now();
    lab.down().unwrap();
    eprintln!("down of 3+1 hosts took {:?}", started.elapsed());
    assert_gone(&snap);
}

fn pod_manifest(name: &str, command: &str, extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: kube-system}}\nspec:\n  hostNetwork: true\n  containers:\n  \
         - name: {name}\n    image: docker.io/library/busybox:1.36\n    command: [sh, -c, {command:?}]\n{extra}"
    )
}

#[test]
fn the_kubelet_stand_in_starts_restarts_and_stops_static_pods() {
    if !support::require_root() {
        return;
    }
    let _g = serial();
    let lab = Lab::up(spec("t2", 2, 1, 0)).unwrap();
    let snap = snapshot(&lab);
    let sup = lab.supervisor("cp1").unwrap().unwrap();
    let host_net = std::fs::read_link(format!("/proc/{}/ns/net", sup.pid)).unwrap();

    // A new manifest starts a pod, in the host's namespaces.
    let v1 = pod_manifest("app", "echo version one; exec sleep 1000", "");
    put(&lab, "cp1", "/etc/kubernetes/manifests/app.yaml", &v1);
    let p1 = lab.wait_pod("cp1", "app", secs(10), |p| p.running).unwrap();
    assert_eq!((p1.restarts, p1.manifest_sha256.as_str()), (0, sha256(&v1).as_str()));
    let pid1 = p1.pid.unwrap();
    assert_eq!(std::fs::read_link(format!("/proc/{pid1}/ns/net")).unwrap(), host_net);
    // The pod's process is the one the kubelet started: `pod-exec`, then the shell, then (once
    // it has run its `exec`) `sleep`, all the same PID; on a busy machine that takes a moment.
    let cmdline = || std::fs::read_to_string(format!("/proc/{pid1}/cmdline")).unwrap_or_default();
    let became =
        wait_for(secs(10), "the pod's command to exec sleep", || (cmdline() == "sleep\x001000\x00").then_some(()));
    assert!(became.is_ok(), "pod process {pid1} runs {:?}", cmdline());

    // A changed manifest restarts it: new process, restart counted, old process gone.
    let v2 = pod_manifest("app", "echo version $V; exec sleep 1000", "    env: [{name: V, value: two}]\n");
    put(&lab, "cp1", "/etc/kubernetes/manifests/app.yaml", &v2);
    let p2 = lab.wait_pod("cp1", "app", secs(15), |p| p.running && p.manifest_sha256 == sha256(&v2)).unwrap();
    assert_eq!(p2.restarts, 1);
    assert_eq!(p2.last_exit.as_deref(), Some("signal SIGTERM"), "the old process stopped on TERM, in its grace period");
    assert_ne!(p2.pid, Some(pid1));
    assert!(!Path::new(&format!("/proc/{pid1}")).exists(), "the old process still runs");
    let log = std::fs::read_to_string(lab.pod_log("cp1", "app").unwrap()).unwrap();
    assert!(log.contains("version one") && log.contains("version two"), "{log}");

    // Dot files are not manifests (temporary files of atomic writes); other names are, as for the
    // kubelet, which reads every file whose name does not start with a dot.
    put(&lab, "cp1", "/etc/kubernetes/manifests/.hidden.yaml", &pod_manifest("hidden", "exec sleep 1000", ""));
    put(&lab, "cp1", "/etc/kubernetes/manifests/app.yaml.bak", &pod_manifest("bak", "exec sleep 1000", ""));
    lab.wait_pod("cp1", "app.yaml.bak", secs(10), |p| p.running).unwrap();
    assert!(lab.pods("cp1").unwrap().iter().all(|p| !p.name.contains("hidden")));
    ssh_ok(&lab, "cp1", "rm /etc/kubernetes/manifests/app.yaml.bak /etc/kubernetes/manifests/.hidden.yaml");

    // staticPodPath in the kubelet configuration moves the static pod directory: pods of the old
    // one stop, pods of the new one start.
    put(&lab, "cp1", "/etc/kubernetes/other/o.yaml", &pod_manifest("o", "exec sleep 1000", ""));
    let config =
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: /etc/kubernetes/other\n";
    put(&lab, "cp1", "/var/lib/kubelet/config.yaml", config);
    lab.wait_pod("cp1", "o", secs(10), |p| p.running).unwrap();
    wait_for(secs(15), "app to stop", || (!lab.pod("cp1", "app").unwrap()?.running).then_some(())).unwrap();
    let config = config.replace("/etc/kubernetes/other", "/etc/kubernetes/manifests");
    put(&lab, "cp1", "/var/lib/kubelet/config.yaml", &config);
    let p3 = lab.wait_pod("cp1", "app", secs(15), |p| p.running).unwrap();
    assert_eq!(p3.manifest_sha256, sha256(&v2));
    wait_for(secs(15), "o to go", || lab.pod("cp1", "o").unwrap().is_none().then_some(())).unwrap();

    // A removed manifest stops its pod.
    ssh_ok(&lab, "cp1", "rm /etc/kubernetes/manifests/app.yaml");
    wait_for(secs(15), "app to go", || lab.pod("cp1", "app").unwrap().is_none().then_some(())).unwrap();
    assert!(!Path::new(&format!("/proc/{}", p3.pid.unwrap())).exists());

    // A process that exits is started again, later each time.
    let crash = pod_manifest("crash", "date +%s.%N >> /var/lib/kubelet/crash-starts; exit 3", "");
    put(&lab, "cp1", "/etc/kubernetes/manifests/crash.yaml", &crash);
    let p = lab.wait_pod("cp1", "crash", secs(30), |p| p.restarts >= 3).unwrap();
    assert_eq!(p.last_exit.as_deref(), Some("exit status 3"));
    let starts: Vec<f64> = std::fs::read_to_string(lab.host_path("cp1", "/var/lib/kubelet/crash-starts").unwrap())
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() >= 3 && gaps[0] >= 0.9 && gaps[1] > gaps[0] + 0.5 && gaps[2] > gaps[1] + 1.0, "gaps {gaps:?}");
    ssh_ok(&lab, "cp1", "rm /etc/kubernetes/manifests/crash.yaml");

    // A hostPath of type File that is missing keeps the pod from starting, reported as the
    // kubelet reports it; once the file is there the pod starts.
    let vol = "    volumeMounts: [{name: cfg, mountPath: /etc/kubernetes/needs.conf, readOnly: true}]\n  \
               volumes: [{name: cfg, hostPath: {path: /etc/kubernetes/needs.conf, type: File}}]\n";
    put(
        &lab,
        "cp1",
        "/etc/kubernetes/manifests/needs.yaml",
        &pod_manifest("needs", "cat /etc/kubernetes/needs.conf; exec sleep 1000", vol),
    );
    let p = lab.wait_pod("cp1", "needs", secs(10), |p| p.message.is_some()).unwrap();
    assert!(!p.running && p.pid.is_none());
    let expected = "hostPath type check failed: /etc/kubernetes/needs.conf is not a file";
    assert!(p.message.as_deref().unwrap().contains(expected), "{p:?}");
    let events = std::fs::read_to_string(lab.kubelet_log("cp1").unwrap()).unwrap();
    assert!(events.contains(expected), "{events}");
    std::thread::sleep(secs(2));
    assert!(!lab.pod("cp1", "needs").unwrap().unwrap().running);
    put(&lab, "cp1", "/etc/kubernetes/needs.conf", "needed-content\n");
    lab.wait_pod("cp1", "needs", secs(10), |p| p.running).unwrap();
    wait_for(secs(5), "the pod to read its file", || {
        std::fs::read_to_string(lab.pod_log("cp1", "needs").unwrap()).ok()?.contains("needed-content").then_some(())
    })
    .unwrap();

    // A hostPath mounted elsewhere is bind-mounted in a private mount namespace, read-only here.
    put(&lab, "cp1", "/etc/kubernetes/data/hello", "from the host\n");
    let vol = "    volumeMounts: [{name: d, mountPath: /mnt, readOnly: true}]\n  \
               volumes: [{name: d, hostPath: {path: /etc/kubernetes/data, type: DirectoryOrCreate}}]\n";
    let script =
        "cat /mnt/hello; if touch /mnt/x 2>/dev/null; then echo writable; else echo read-only; fi; exec sleep 1000";
    put(&lab, "cp1", "/etc/kubernetes/manifests/mnt.yaml", &pod_manifest("mnt", script, vol));
    lab.wait_pod("cp1", "mnt", secs(10), |p| p.running).unwrap();
    wait_for(secs(5), "the mnt pod's output", || {
        let log = std::fs::read_to_string(lab.pod_log("cp1", "mnt").unwrap()).ok()?;
        (log.contains("from the host") && log.contains("read-only")).then_some(())
    })
    .unwrap();
    assert!(!Path::new("/mnt/hello").exists(), "the machine's /mnt changed");
    // A mount point that does not exist on the host fails the pod with a clear reason.
    let vol = "    volumeMounts: [{name: d, mountPath: /no/such/dir}]\n  \
               volumes: [{name: d, hostPath: {path: /etc/kubernetes/data}}]\n";
    put(&lab, "cp1", "/etc/kubernetes/manifests/nomnt.yaml", &pod_manifest("nomnt", "exec sleep 1000", vol));
    let p = lab.wait_pod("cp1", "nomnt", secs(10), |p| p.message.is_some()).unwrap();
    assert!(p.message.unwrap().contains("mount point /no/such/dir"), "the reason names the mount point");

    // Components the lab cannot run become `kubeha-lab stand-in`, restarted when they exit.
    let api = "apiVersion: v1\nkind: Pod\nmetadata: {name: kube-apiserver}\nspec:\n  containers:\n  - name: kube-apiserver\n    \
               image: registry.k8s.io/kube-apiserver:v1.31.4\n    command: [kube-apiserver, --secure-port=6443]\n";
    put(&lab, "cp1", "/etc/kubernetes/manifests/kube-apiserver.yaml", api);
    let p = lab.wait_pod("cp1", "kube-apiserver", secs(10), |p| p.started_at.is_some()).unwrap();
    let events = std::fs::read_to_string(lab.kubelet_log("cp1").unwrap()).unwrap();
    assert!(events.contains("Started container kube-apiserver"), "{events}");
    assert!(p.message.as_deref().is_none_or(|m| !m.contains("StartError")), "{p:?}");

    let pods = snapshot(&lab);
    lab.down().unwrap();
    assert_gone(&snap);
    assert_gone(&pods);
}

fn etcd_manifest(lab: &Lab, host: &str) -> String {
    let addr = lab.host(host).unwrap().address;
    let cluster: Vec<String> = lab.hosts().iter().map(|h| format!("{}=http://{}:2380", h.name, h.address)).collect();
    let flags = [
        format!("--name={host}"),
        "--data-dir=/var/lib/etcd".into(),
        format!("--listen-client-urls=http://{addr}:2379,http://127.0.0.1:2379"),
        format!("--advertise-client-urls=http://{addr}:2379"),
        format!("--listen-peer-urls=http://{addr}:2380"),
        format!("--initial-advertise-peer-urls=http://{addr}:2380"),
        format!("--initial-cluster={}", cluster.join(",")),
        "--initial-cluster-state=new".into(),
        "--initial-cluster-token=t3".into(),
        "--snapshot-count=10000".into(),
    ];
    let command: Vec<String> = std::iter::once("etcd".to_string()).chain(flags).map(|f| format!("\"{f}\"")).collect();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: etcd, namespace: kube-system}}\nspec:\n  hostNetwork: true\n  containers:\n  \
         - name: etcd\n    image: registry.k8s.io/etcd:3.4.23-0\n    command: [{}]\n    \
         volumeMounts: [{{name: etcd-data, mountPath: /var/lib/etcd}}]\n  \
         volumes: [{{name: etcd-data, hostPath: {{path: /var/lib/etcd, type: DirectoryOrCreate}}}}]\n",
        command.join(", ")
    )
}

#[test]
fn real_etcd_forms_a_cluster_from_static_pods() {
    if !support::require_root() {
        return;
    }
    let _g = serial();
    let machine_etcd: Vec<_> =
        std::fs::read_dir("/var/lib/etcd").map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    let lab = Lab::up(spec("t3", 3, 3, 0)).unwrap();
    let snap = snapshot(&lab);
    for h in lab.hosts() {
        put(&lab, &h.name, "/etc/kubernetes/manifests/etcd.yaml", &etcd_manifest(&lab, &h.name));
    }
    let endpoints: Vec<String> = lab.hosts().iter().map(|h| format!("http://{}:2379", h.address)).collect();
    let status = wait_for(secs(60), "etcd to elect a leader", || {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--dial-timeout=2s",
                "--command-timeout=3s",
                "--endpoints",
                &endpoints.join(","),
                "endpoint",
                "status",
                "-w",
                "json",
            ])
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let list = v.as_array()?.clone();
        (list.len() == 3 && list.iter().all(|s| s["Status"]["leader"].as_u64().is_some_and(|l| l != 0))).then_some(list)
    })
    .unwrap();
    let cluster = status[0]["Status"]["header"]["cluster_id"].as_u64().unwrap();
    let leader = status[0]["Status"]["leader"].as_u64().unwrap();
    let members: Vec<u64> = status.iter().map(|s| s["Status"]["header"]["member_id"].as_u64().unwrap()).collect();
    for s in &status {
        assert_eq!(s["Status"]["header"]["cluster_id"].as_u64(), Some(cluster), "one cluster");
        assert_eq!(s["Status"]["leader"].as_u64(), Some(leader), "one leader");
        assert!(s["Status"]["version"].as_str().unwrap().starts_with("3.4."));
    }
    assert!(members.contains(&leader));
    let etcdctl = |endpoint: &str, args: &[&str]| {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoint)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    etcdctl(&endpoints[0], &["put", "lab-key", "written-on-cp1"]);
    assert_eq!(etcdctl(&endpoints[2], &["get", "--print-value-only", "lab-key"]).trim(), "written-on-cp1");
    // Each member keeps its data in its own host's /var/lib/etcd.
    for h in lab.hosts() {
        assert!(lab.host_path(&h.name, "/var/lib/etcd/member/wal").unwrap().is_dir(), "{}", h.name);
    }
    let after: Vec<_> =
        std::fs::read_dir("/var/lib/etcd").map(|d| d.flatten().map(|e| e.file_name()).collect()).unwrap_or_default();
    assert_eq!(machine_etcd, after, "the machine's /var/lib/etcd changed");
    lab.down().unwrap();
    assert_gone(&snap);
}

fn keepalived_conf(lab: &Lab, priority: u32) -> String {
    format!(
        "global_defs {{\n  router_id lab\n}}\nvrrp_instance VI_1 {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  \
         priority {priority}\n  advert_int 1\n  authentication {{\n    auth_type PASS\n    auth_pass t4pass\n  }}\n  \
         virtual_ipaddress {{\n    {}/24\n  }}\n}}\n",
        lab.vip()
    )
}

const KEEPALIVED_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: keepalived, namespace: kube-system}\nspec:\n  hostNetwork: true\n  \
    containers:\n  - name: keepalived\n    image: docker.io/osixia/keepalived:2.0.20\n    \
    command: [keepalived, --dont-fork, --log-console, --log-detail, --use-file=/etc/kubernetes/keepalived/keepalived.conf]\n    \
    volumeMounts: [{name: conf, mountPath: /etc/kubernetes/keepalived/keepalived.conf, readOnly: true}]\n  \
    volumes: [{name: conf, hostPath: {path: /etc/kubernetes/keepalived/keepalived.conf, type: File}}]\n";

fn haproxy_cfg(host: &str) -> String {
    format!(
        "global\n  log stderr format raw local0\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 10s\n  \
         timeout server 10s\nfrontend who\n  bind *:8080\n  http-request return status 200 content-type text/plain string \"{host}\"\n"
    )
}

const HAPROXY_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: haproxy, namespace: kube-system}\nspec:\n  hostNetwork: true\n  \
    containers:\n  - name: haproxy\n    image: docker.io/library/haproxy:2.8\n    \
    command: [haproxy, -W, -db, -f, /etc/kubernetes/haproxy/haproxy.cfg]\n    \
    volumeMounts: [{name: cfg, mountPath: /etc/kubernetes/haproxy/haproxy.cfg, readOnly: true}]\n  \
    volumes: [{name: cfg, hostPath: {path: /etc/kubernetes/haproxy/haproxy.cfg, type: FileOrCreate}}]\n";

fn vip_holders(lab: &Lab) -> Vec<String> {
    let vip = format!(" {}/", lab.vip());
    lab.hosts()
        .iter()
        .filter(|h| {
            let out = lab.exec(&h.name, &["ip", "-4", "-o", "addr", "show", "dev", "eth0"]).unwrap();
            String::from_utf8_lossy(&out.stdout).contains(&vip)
        })
        .map(|h| h.name.clone())
        .collect()
}

/// Who answers on the VIP, asked from the machine.
fn vip_answer(lab: &Lab) -> Option<String> {
    let url = format!("http://{}:8080/", lab.vip());
    let out = Command::new("curl").args(["-s", "--noproxy", "*", "--max-time", "2", &url]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn a_keepalived_vip_moves_when_its_holder_is_cut_off() {
    if !support::require_root() {
        return;
    }
    let _g = serial();
    let lab = Lab::up(spec("t4", 4, 3, 0)).unwrap();
    let snap = snapshot(&lab);
    for (i, h) in lab.hosts().iter().enumerate() {
        put(&lab, &h.name, "/etc/kubernetes/keepalived/keepalived.conf", &keepalived_conf(&lab, 150 - 10 * i as u32));
        put(&lab, &h.name, "/etc/kubernetes/haproxy/haproxy.cfg", &haproxy_cfg(&h.name));
        put(&lab, &h.name, "/etc/kubernetes/manifests/keepalived.yaml", KEEPALIVED_POD);
        put(&lab, &h.name, "/etc/kubernetes/manifests/haproxy.yaml", HAPROXY_POD);
    }
    for h in lab.hosts() {
        lab.wait_pod(&h.name, "keepalived", secs(10), |p| p.running).unwrap();
        lab.wait_pod(&h.name, "haproxy", secs(10), |p| p.running).unwrap();
    }
    wait_for(secs(20), "cp1 to hold the VIP", || (vip_holders(&lab) == ["cp1"]).then_some(())).unwrap();
    wait_for(secs(10), "the VIP to answer from cp1", || (vip_answer(&lab)? == "cp1").then_some(())).unwrap();

    lab.cut("cp1").unwrap();
    let started = Instant::now();
    wait_for(secs(20), "cp2 to take the VIP", || vip_holders(&lab).contains(&"cp2".to_string()).then_some(())).unwrap();
    eprintln!("the VIP moved to cp2 {:?} after cp1 was cut off", started.elapsed());
    assert!(!vip_holders(&lab).contains(&"cp3".to_string()));
    wait_for(secs(15), "the VIP to answer from cp2", || (vip_answer(&lab)? == "cp2").then_some(())).unwrap();
    assert!(ssh(&lab, "cp1", "true").status.code() != Some(0), "a cut host still answers SSH");

    lab.reconnect("cp1").unwrap();
    wait_for(secs(20), "cp1 to take the VIP back", || (vip_holders(&lab) == ["cp1"]).then_some(())).unwrap();
    assert_eq!(ssh_ok(&lab, "cp1", "hostname").trim(), "cp1");
    // Each host's keepalived keeps its pid file in the host's own /run.
    for h in lab.hosts() {
        assert!(lab.host_path(&h.name, "/run/keepalived.pid").unwrap().exists(), "{}", h.name);
    }
    let pods = snapshot(&lab);
    lab.down().unwrap();
    assert_gone(&snap);
    assert_gone(&pods);
}

#[test]
fn dropping_a_lab_after_a_panic_tears_it_down() {
    if !support::require_root() {
        return;
    }
    let _g = serial();
    let spec = spec("t5", 5, 1, 1);
    let snap = std::thread::spawn(move || {
        let lab = Lab::up(spec).unwrap();
        put(&lab, "w1", "/etc/kubernetes/manifests/s.yaml", &pod_manifest("s", "exec sleep 1000", ""));
        lab.wait_pod("w1", "s", secs(10), |p| p.running).unwrap();
        // A daemon started over SSH and detached from its session is stopped with its host too.
        ssh_ok(&lab, "cp1", "setsid sleep 1001 </dev/null >/dev/null 2>&1 & echo started");
        let snap = snapshot(&lab);
        let daemon = wait_for(secs(5), "the detached sleep", || {
            std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
                let cmd = std::fs::read_to_string(e.path().join("cmdline")).ok()?;
                (cmd == "sleep\x001001\x00").then(|| ProcRef::of(e.file_name().to_str()?.parse().ok()?)).flatten()
            })
        })
        .unwrap();
        let mut procs = snap.procs;
        procs.push(daemon);
        std::panic::panic_any(Snapshot { procs, ..snap });
    })
    .join()
    .expect_err("the thread panics");
    let snap = snap.downcast::<Snapshot>().unwrap();
    assert_gone(&snap);
}

#[test]
fn two_labs_run_side_by_side() {
    if !support::require_root() {
        return;
    }
    let _g = serial();
    let machine_had: Vec<bool> =
        ["/etc/kubernetes", "/var/lib/kubelet"].iter().map(|d| Path::new(d).exists()).collect();
    let a = Lab::up(spec("t6", 6, 1, 0)).unwrap();
    let b = Lab::up(spec("t7", 7, 1, 1)).unwrap();
    let (sa, sb) = (snapshot(&a), snapshot(&b));
    assert_ne!(a.bridge(), b.bridge());
    put(&a, "cp1", "/etc/kubernetes/which", "a\n");
    put(&b, "cp1", "/etc/kubernetes/which", "b\n");
    assert_eq!(ssh_ok(&a, "cp1", "cat /etc/kubernetes/which; hostname -I").trim(), "a\n198.18.6.11");
    assert_eq!(ssh_ok(&b, "cp1", "cat /etc/kubernetes/which; hostname -I").trim(), "b\n198.18.7.11");
    // A host of one lab cannot reach the other lab.
    let out = a.exec("cp1", &["curl", "-s", "--max-time", "1", "http://198.18.7.11:22/"]).unwrap();
    assert!(!out.status.success());
    a.down().unwrap();
    assert_gone(&sa);
    assert_eq!(ssh_ok(&b, "w1", "hostname").trim(), "w1", "b keeps running");
    b.down().unwrap();
    assert_gone(&sb);
    // Mount points the first lab created outlive it while the second uses them, and go with it.
    let now: Vec<bool> = ["/etc/kubernetes", "/var/lib/kubelet"].iter().map(|d| Path::new(d).exists()).collect();
    assert_eq!(machine_had, now);
}

#[test]
fn the_cli_brings_a_lab_up_and_down() {
    if !support::require_root() {
        return;
    }
    let _g = serial();
    let dir = spec("t8", 8, 1, 0).dir;
    /// The CLI leaves its lab running; take it down even when an assertion fails.
    struct Guard(PathBuf);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Ok(lab) = Lab::open(&self.0) {
                let _ = lab.down();
            }
        }
    }
    let _guard = Guard(dir.clone());
    let lab_cli = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_kubeha-lab")).args(args).output().unwrap();
    let dir_s = dir.to_string_lossy().into_owned();
    let out = lab_cli(&[
        "up",
        "--name",
        "t8",
        "--subnet",
        "8",
        "--control-planes",
        "1",
        "--workers",
        "1",
        "--dir",
        &dir_s,
        "--user",
        "ops",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("inventory: {dir_s}/inventory.yaml")), "{stdout}");
    let lab = Lab::open(&dir).unwrap();
    let snap = snapshot(&lab);
    assert_eq!(lab.ssh_user(), "ops");

    let out = lab_cli(&["exec", "--dir", &dir_s, "w1", "--", "sh", "-c", "hostname; exit 7"]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stdout).trim()), (Some(7), "w1"));
    put(&lab, "cp1", "/etc/kubernetes/manifests/s.yaml", &pod_manifest("s", "exec sleep 1000", ""));
    lab.wait_pod("cp1", "s", secs(10), |p| p.running).unwrap();
    let out = lab_cli(&["status", "--dir", &dir_s]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("198.18.8.101") && status.lines().any(|l| l.starts_with("cp1   s    true")), "{status}");

    assert!(lab_cli(&["cut", "--dir", &dir_s, "w1"]).status.success());
    assert!(!ssh(&lab, "w1", "true").status.success());
    assert!(lab_cli(&["reconnect", "--dir", &dir_s, "w1"]).status.success());
    assert_eq!(ssh_ok(&lab, "w1", "hostname").trim(), "w1");
    assert!(lab_cli(&["ssh-stop", "--dir", &dir_s, "w1"]).status.success());
    assert!(!ssh(&lab, "w1", "true").status.success());
    assert!(lab_cli(&["ssh-start", "--dir", &dir_s, "w1"]).status.success());
    assert_eq!(ssh_ok(&lab, "w1", "hostname").trim(), "w1");

    let out = lab_cli(&["up", "--name", "t8", "--subnet", "8", "--dir", &dir_s]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("already up"));
    let out = lab_cli(&["down", "--dir", &dir_s]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_gone(&snap);
    let out = lab_cli(&["down", "--dir", &dir_s]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no lab"));
}
