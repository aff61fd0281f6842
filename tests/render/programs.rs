//! Rendered files checked by the programs that read them: haproxy, keepalived, the health
//! script with curl, etcd 3.4 and Go's YAML reader (kubectl). Root and namespaces; see
//! `sandbox.rs`.

use std::collections::BTreeMap;

use kubeha::files::File;

use super::sandbox::{Sandbox, require_root, sh_quote};
use super::{Inventory, MINORS, command, example_plan, manifest, pod, render};

/// The kubelet reads manifests with Go's YAML library, not serde's: kubectl (same library) must
/// read every manifest to the same value. It runs `--local`, in a network namespace of its own
/// so it cannot reach any server.
#[test]
fn go_yaml_reads_the_manifests_as_serde_does() {
    if !require_root() {
        return;
    }
    // 1.36 adds named probe ports (`ports:` and `port: probe-port`).
    for plan in [example_plan(), Inventory::ipv6().plan(), Inventory::ipv6().versions("v1.36.3", "").plan()] {
        let with_manifests = |f: &Vec<File>| f.iter().any(|f| f.path.starts_with("/etc/kubernetes/manifests"));
        for (host, files) in render(&plan).iter().filter(|(_, f)| with_manifests(f)) {
            let dir = tempfile::tempdir().unwrap();
            let mut expected = BTreeMap::new();
            for f in files.iter().filter(|f| f.path.starts_with("/etc/kubernetes/manifests")) {
                let name = f.path.file_name().unwrap();
                std::fs::write(dir.path().join(name), &f.content).unwrap();
                let value = pod(std::str::from_utf8(&f.content).unwrap());
                expected.insert(value["metadata"]["name"].as_str().unwrap().to_string(), value);
            }
            let out = std::process::Command::new("unshare")
                .args(["--net", "kubectl", "label", "--local", "-o", "json", "kubeha-test-none-", "-f"])
                .arg(dir.path())
                .env("HOME", dir.path())
                .output()
                .expect("unshare and kubectl run");
            assert!(out.status.success(), "kubectl: {}", output_text(&out));
            // One JSON document per manifest, one after the other.
            let items: Vec<serde_json::Value> =
                serde_json::Deserializer::from_slice(&out.stdout).into_iter().collect::<Result<_, _>>().unwrap();
            assert_eq!(items.len(), expected.len(), "{host}");
            for item in &items {
                let name = item["metadata"]["name"].as_str().unwrap();
                assert_eq!(item, &expected[name], "{host}: Go YAML reads {name} differently");
            }
        }
    }
}

/// Writes `host`'s rendered files into a sandbox.
fn sandbox_with(files: &BTreeMap<String, Vec<File>>, host: &str) -> Sandbox {
    let sb = Sandbox::new();
    for f in &files[host] {
        sb.put(f);
    }
    sb
}

fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn haproxy_accepts_the_rendered_config() {
    if !require_root() {
        return;
    }
    for plan in [example_plan(), Inventory::ipv6().plan()] {
        let files = render(&plan);
        let sb = sandbox_with(&files, "cp2");
        let check = "haproxy -c -f /etc/kubernetes/haproxy/haproxy.cfg";
        // The health checks need no CA (they check health, not identity): the sandbox has none.
        assert!(!sb.path("/etc/kubernetes/pki/ca.crt").exists());
        let out = sb.run(check);
        assert!(out.status.success(), "haproxy -c failed:\n{}", output_text(&out));
        assert!(output_text(&out).contains("Configuration file is valid"));
    }
}

#[test]
fn keepalived_accepts_the_rendered_config() {
    if !require_root() {
        return;
    }
    for plan in [example_plan(), Inventory::ipv6().plan()] {
        let files = render(&plan);
        for host in ["cp1", "cp3"] {
            let sb = sandbox_with(&files, host);
            // The instance's interface must exist: give the sandbox an eth0.
            let test = "ip link add eth0 type veth peer name peer0 && \
                        keepalived -t -f /etc/kubernetes/keepalived/keepalived.conf";
            let out = sb.run(test);
            let text = output_text(&out);
            assert!(out.status.success(), "keepalived -t failed for {host}:\n{text}");
            assert!(!text.contains("Disabling track script"), "{text}");
            // The same check fails when the script is writable by others (script security).
            std::fs::set_permissions(
                sb.path("/etc/kubernetes/keepalived/check_apiserver.sh"),
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            )
            .unwrap();
            let out = sb.run(test);
            assert!(!out.status.success(), "keepalived accepted a world-writable check script");
        }
    }
}

#[test]
fn check_script_needs_a_healthy_apiserver_and_haproxy() {
    if !require_root() {
        return;
    }
    let files = render(&example_plan());
    let sb = sandbox_with(&files, "cp1");
    sb.make_certs("/etc/kubernetes/pki", "kubernetes-ca", &[("apiserver", "IP:127.0.0.1,DNS:kubernetes")]);
    // A second CA: the script checks health, not identity (clients verify the apiserver), so
    // an apiserver with a certificate of another CA (as during a CA rotation) is healthy.
    sb.make_certs("/tmp/rogue", "rogue-ca", &[("apiserver", "IP:127.0.0.1")]);
    sb.write("/tmp/ok/healthz", 0o644, "ok");
    sb.write("/tmp/bad/healthz", 0o644, "[-]etcd failed: reason withheld\nhealthz check failed");
    // openssl s_server -WWW serves files from its working directory over TLS.
    let serve = |dir: &str, pki: &str, port: u16| {
        format!(
            "(cd {dir} && exec openssl s_server -quiet -WWW -accept 127.0.0.1:{port} \
             -cert {pki}/apiserver.crt -key {pki}/apiserver.key) >/dev/null 2>&1 & pids=\"$pids $!\"; "
        )
    };
    let wait = "for i in $(seq 50); do curl -sk https://127.0.0.1:6443/healthz -o /dev/null && \
                curl -sk https://127.0.0.1:8443/healthz -o /dev/null && break; sleep 0.1; done; ";
    let cases = [
        (
            "both healthy",
            serve("/tmp/ok", "/etc/kubernetes/pki", 6443) + &serve("/tmp/ok", "/etc/kubernetes/pki", 8443),
            true,
        ),
        (
            "apiserver unhealthy",
            serve("/tmp/bad", "/etc/kubernetes/pki", 6443) + &serve("/tmp/ok", "/etc/kubernetes/pki", 8443),
            false,
        ),
        ("haproxy down", serve("/tmp/ok", "/etc/kubernetes/pki", 6443), false),
        (
            "certificate of another CA",
            serve("/tmp/ok", "/tmp/rogue", 6443) + &serve("/tmp/ok", "/etc/kubernetes/pki", 8443),
            true,
        ),
    ];
    for (name, servers, healthy) in cases {
        let wait = if name == "haproxy down" { "sleep 1; " } else { wait };
        let script = format!(
            "pids=; {servers}{wait} /etc/kubernetes/keepalived/check_apiserver.sh; rc=$?; kill $pids; echo \"rc=$rc\""
        );
        let out = sb.run(&script);
        let text = output_text(&out);
        let rc = text.lines().find_map(|l| l.strip_prefix("rc=")).unwrap_or_else(|| panic!("{name}: {text}"));
        assert_eq!(rc == "0", healthy, "{name}: check_apiserver.sh exited {rc}:\n{text}");
    }
}

/// Runs the real etcd (3.4 on this machine) with `host`'s rendered command line in a sandbox
/// holding certificates for it, and probes it the way the kubelet would. Returns the output.
fn run_etcd(files: &BTreeMap<String, Vec<File>>, host: &str, address: &str, wait_for_probes: bool) -> String {
    let sb = sandbox_with(files, host);
    let sans = format!("IP:127.0.0.1,IP:{address},DNS:localhost");
    sb.make_certs("/etc/kubernetes/pki/etcd", "etcd-ca", &[("server", &sans), ("peer", &sans)]);
    std::fs::create_dir_all(sb.path("/var/lib/etcd")).unwrap();
    std::fs::set_permissions(sb.path("/var/lib/etcd"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let etcd = manifest(files, host, "etcd");
    let argv: Vec<String> = command(&etcd).iter().map(|a| sh_quote(a)).collect();
    let container = &etcd["spec"]["containers"][0];
    // A named port (kubeadm 1.34+) is looked up in the container's ports, as the kubelet does.
    let port = |g: &serde_json::Value| match g["port"].as_str() {
        Some(name) => {
            container["ports"].as_array().unwrap().iter().find(|p| p["name"] == name).unwrap()["containerPort"].clone()
        }
        None => g["port"].clone(),
    };
    let url = |probe: &str| {
        let g = &container[probe]["httpGet"];
        format!("http://{}:{}{}", g["host"].as_str().unwrap(), port(g), g["path"].as_str().unwrap())
    };
    let probes = if wait_for_probes {
        format!(
            "for i in $(seq 100); do kill -0 $pid 2>/dev/null || break; \
               curl -fs {live} >/dev/null && curl -fs {start} >/dev/null && break; sleep 0.2; done; \
             echo \"liveness=$(curl -s -o /dev/null -w '%{{http_code}}' {live})\"; \
             echo \"startup=$(curl -s -o /dev/null -w '%{{http_code}}' {start})\"; ",
            live = sh_quote(&url("livenessProbe")),
            start = sh_quote(&url("startupProbe")),
        )
    } else {
        "sleep 3; ".to_string()
    };
    let script = format!(
        "ip addr add {address}/32 dev lo; {} >/tmp/etcd.log 2>&1 & pid=$!; {probes}\
         if kill -0 $pid 2>/dev/null; then echo running; kill $pid; wait $pid; else echo exited; fi; cat /tmp/etcd.log",
        argv.join(" ")
    );
    output_text(&sb.run(&script))
}

#[test]
fn etcd_34_runs_with_the_rendered_flags_and_answers_its_probes() {
    if !require_root() {
        return;
    }
    let version = std::process::Command::new("etcd").arg("--version").output().expect("etcd is installed");
    let version = String::from_utf8_lossy(&version.stdout).to_string();
    assert!(version.contains("etcd Version: 3.4."), "this test needs the lab's etcd 3.4, found {version}");

    // One member: it forms a cluster alone, so its probes must answer 200 (numeric ports before
    // 1.34, the named probe port after).
    for kubernetes in ["v1.31.4", "v1.36.3"] {
        let single = Inventory { hosts: vec![("cp1", "198.18.0.11", "control-plane")], ..Inventory::ipv4() }
            .versions(kubernetes, "3.4.23");
        let out = run_etcd(&render(&single.plan()), "cp1", "198.18.0.11", true);
        assert!(
            out.contains("liveness=200") && out.contains("startup=200"),
            "{kubernetes}: etcd probes failed:\n{out}"
        );
        assert!(out.lines().any(|l| l == "running"), "{kubernetes}: etcd exited:\n{out}");
    }

    // Three members: cp1 alone has no quorum but must accept its flags and keep running, with
    // every supported minor's rules (the flags follow the etcd release).
    for minor in &MINORS {
        let three = render(&Inventory::ipv4().versions(minor.version, "3.4.23").plan());
        let out = run_etcd(&three, "cp1", "198.18.0.11", false);
        assert!(out.lines().any(|l| l == "running"), "{}: etcd exited:\n{out}", minor.version);
        assert!(!out.contains("flag provided but not defined"), "{}: {out}", minor.version);
    }

    // The detection works: the 3.6 flags (kubeadm 1.34+ with etcd 3.6) make etcd 3.4 exit at once.
    let v36 = render(&Inventory::ipv4().versions("v1.34.1", "3.6.1-0").plan());
    let out = run_etcd(&v36, "cp1", "198.18.0.11", false);
    assert!(out.lines().any(|l| l == "exited") && out.contains("flag provided but not defined"), "{out}");
}
