//! Lab tests of the control-plane stand-ins, with real programs: certificates made by openssl
//! the way kubeadm lays them out, a real etcd 3.4 with TLS and client-certificate auth, curl and
//! kubectl as clients, all inside network namespaces (`khsi*`, 198.18.240.0/24) created and
//! removed here. Needs root (skipped otherwise), `ip`, `openssl`, `etcd`, `curl` and `kubectl`.
//!
//! Every process is started with `ip netns exec` (which execs, so the PID is the program's) and
//! stopped by that PID when its test ends.

#[path = "standin/harness.rs"]
mod harness;
mod support;

use std::time::Duration;

use harness::{Lab, VERSION, expect_failure, expired_serving_cert, with_flag};
use kubeha::https::{HttpsError, HttpsUrl, Request, Response, VerifyFailure};
use kubeha::objects::Object;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// kube-apiserver

#[test]
fn apiserver_serves_health_version_and_api_and_follows_etcd() {
    if !support::require_root() {
        return;
    }
    let mut lab = Lab::new();
    let etcd = lab.start_etcd();

    // crate::https against real etcd (Go's TLS, client-cert-auth): a client certificate from
    // another CA, or none, is refused in the handshake, and the error says so.
    let etcd_url = format!("https://{}:2379/v3/kv/range", lab.ns.ip);
    let key = serde_json::json!({"key": "aGVhbHRo"});
    for identity in [Some("other-client"), None] {
        let client = lab.client("etcd-ca.crt", identity);
        let err = lab.rt.block_on(client.post_json(&etcd_url, &key)).unwrap_err();
        assert!(matches!(err, HttpsError::Handshake { .. }), "{identity:?}: {err}");
        assert!(!err.is_verification_failure() && !err.is_transient(), "{identity:?}: {err}");
    }

    let flags = lab.pki.apiserver_flags(lab.ns.ip);
    let api = lab.start_standin("kube-apiserver", "kube-apiserver", flags);

    // /healthz through crate::https, verifying the serving certificate against ca.crt for the
    // namespace's IP address.
    let anonymous = lab.client("ca.crt", None);
    let resp = lab.wait(api, "apiserver /healthz", Duration::from_secs(30), |lab| lab.get(&anonymous, "/healthz").ok());
    assert_eq!((resp.status, resp.text().as_str()), (200, "ok"));
    for path in ["/livez", "/readyz"] {
        let resp = lab.get(&anonymous, path).unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (200, "ok"), "{path}");
    }
    let verbose = lab.get(&anonymous, "/readyz?verbose").unwrap().text();
    assert!(verbose.contains("[+]etcd ok"), "{verbose}");

    // /version as kubectl expects it.
    let version: serde_json::Value = lab.get(&anonymous, "/version").unwrap().json().unwrap();
    assert_eq!((version["major"].as_str(), version["minor"].as_str()), (Some("1"), Some("31")));
    assert_eq!(version["gitVersion"], VERSION);

    // /api: only for verified client certificates.
    let resp = lab.get(&anonymous, "/api").unwrap();
    assert_eq!(resp.status, 403, "{}", resp.text());
    let status: serde_json::Value = resp.json().unwrap();
    assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("Forbidden")));
    let admin = lab.client("ca.crt", Some("admin"));
    let resp = lab.get(&admin, "/api").unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let api_versions: serde_json::Value = resp.json().unwrap();
    assert_eq!(api_versions["kind"], "APIVersions");
    assert_eq!(api_versions["serverAddressByClientCIDRs"][0]["serverAddress"], format!("{}:6443", lab.ns.ip));
    let foreign = lab.client("ca.crt", Some("other-client"));
    let resp = lab.get(&foreign, "/api").unwrap();
    assert_eq!(resp.status, 401, "a certificate from another CA must be refused: {}", resp.text());
    assert_eq!(resp.json::<serde_json::Value>().unwrap()["reason"], "Unauthorized");

    // A wrong CA, or a name not in the certificate, fails verification.
    let wrong_ca = lab.client("other-ca.crt", None);
    let err = lab.get(&wrong_ca, "/healthz").unwrap_err();
    assert_eq!(err.verify_failure(), Some(VerifyFailure::UnknownCa), "{err}");
    let url = HttpsUrl::parse(&format!("https://{}:6443/healthz", lab.ns.ip)).unwrap();
    let err = lab.rt.block_on(anonymous.send_as(&url, "etcd.example.test", &Request::get("/healthz"))).unwrap_err();
    assert_eq!(err.verify_failure(), Some(VerifyFailure::NameMismatch), "{err}");

    // curl (OpenSSL) inside the namespace, on the loopback address as kubelet probes use it.
    let ca = lab.pki.path("ca.crt");
    assert_eq!(lab.curl(&["--cacert", &ca, "https://127.0.0.1:6443/healthz"]), (0, "ok".to_string()));
    let (code, body) = lab.curl(&[
        "--cacert",
        &ca,
        "--cert",
        &lab.pki.path("admin.crt"),
        "--key",
        &lab.pki.path("admin.key"),
        "https://127.0.0.1:6443/api",
    ]);
    assert!(code == 0 && body.contains("APIVersions"), "{code}: {body}");
    let (code, body) = lab.curl(&["--cacert", &lab.pki.path("other-ca.crt"), "https://127.0.0.1:6443/healthz"]);
    assert_eq!(code, 60, "curl must fail verification with a wrong CA: {body}");

    // kubectl with an admin kubeconfig (the machine's kubectl picks a client by /version).
    let (ok, out, err) = lab.kubectl(&["get", "--raw", "/healthz"]);
    assert!(ok && out.trim() == "ok", "kubectl get --raw /healthz: {out}{err}");
    let (ok, out, err) = lab.kubectl(&["get", "--raw", "/api"]);
    assert!(ok && out.contains("\"APIVersions\""), "kubectl get --raw /api: {out}{err}");
    let (ok, out, err) = lab.kubectl(&["version", "-o", "json"]);
    assert!(ok && out.contains(VERSION), "kubectl version: {out}{err}");
    // kubectl (client-go) presents its certificate whatever CA the server hints, and a
    // certificate from another CA is refused with 401, not a TLS failure.
    let foreign_kubeconfig = lab.pki.path("scheduler-foreign.conf");
    let (ok, out, err) = lab.kubectl(&["--kubeconfig", &foreign_kubeconfig, "get", "--raw", "/api"]);
    assert!(!ok && err.contains("Unauthorized"), "kubectl with a foreign certificate: {out}{err}");

    // etcd down: readiness and health fail with etcd named; back up: ok again.
    lab.procs[etcd].stop();
    let body = lab.wait(api, "/readyz to fail without etcd", Duration::from_secs(30), |lab| {
        lab.get(&anonymous, "/readyz").ok().filter(|r| r.status == 500).map(|r| r.text())
    });
    assert!(body.contains("[-]etcd failed"), "{body}");
    for path in ["/healthz", "/livez"] {
        let resp = lab.get(&anonymous, path).unwrap();
        assert_eq!(resp.status, 500, "{path}");
        assert!(resp.text().contains("[-]etcd failed") && resp.text().contains("check failed"), "{}", resp.text());
    }
    let etcd_again = lab.start_etcd();
    lab.wait(api, "/readyz to recover with etcd", Duration::from_secs(30), |lab| {
        lab.get(&anonymous, "/readyz").ok().filter(|r| r.status == 200 && r.text() == "ok")
    });
    assert_eq!(lab.get(&anonymous, "/healthz").unwrap().text(), "ok");
    assert!(lab.procs[etcd_again].exited().is_none(), "etcd exited:\n{}", lab.procs[etcd_again].log());

    // SIGTERM stops it cleanly.
    let status = lab.procs[api].stop();
    assert!(status.success(), "stand-in exit after SIGTERM: {status}; log:\n{}", lab.procs[api].log());
    let log = lab.procs[api].log();
    assert!(log.contains("Received SIGTERM"), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "the log shows key material:\n{log}");
}

/// kubeha's own objects (RBAC, configuration, kube-proxy, CoreDNS) for a three-host plan, made
/// by kubeha's library from an inventory and a PKI it generates in `dir`.
fn kubeha_objects(dir: &std::path::Path) -> Vec<Object> {
    std::fs::write(dir.join("id_ed25519"), "").unwrap();
    let inventory = "apiVersion: kubeha/v1alpha1\nkind: Cluster\nmetadata: {name: ssa}\nspec:\n  \
        kubernetesVersion: v1.31.4\n  controlPlaneEndpoint: 198.18.0.10:8443\n  \
        loadBalancer: {type: keepalived-haproxy, vip: 198.18.0.10, interface: eth0}\n  \
        etcd: {version: 3.4.23}\n  certificates: {keyAlgorithm: ecdsa-p256}\n  \
        ssh: {user: root, identityFile: id_ed25519, knownHostsFile: known_hosts}\n  hosts:\n    \
        - {name: cp1, address: 198.18.0.11, role: control-plane}\n    \
        - {name: cp2, address: 198.18.0.12, role: control-plane}\n    \
        - {name: cp3, address: 198.18.0.13, role: control-plane}\n";
    let plan = kubeha::inventory::parse(inventory, dir).unwrap_or_else(|e| panic!("{e:?}"));
    let state = dir.join("state");
    kubeha::pki::generate(&plan, &state).unwrap();
    let pki = kubeha::pki::load(&plan, &state).unwrap();
    kubeha::objects::cluster_objects(&plan, &pki)
}

/// Whether every field `applied` sets is in `served` with the same value (maps compared by
/// key, everything else whole).
fn holds(served: &Value, applied: &Value) -> bool {
    match (served, applied) {
        (Value::Object(s), Value::Object(a)) => a.iter().all(|(k, v)| s.get(k).is_some_and(|sv| holds(sv, v))),
        _ => served == applied,
    }
}

fn rv(resp: &Response) -> String {
    let doc: Value = resp.json().unwrap_or_else(|e| panic!("{e}: {}", resp.text()));
    doc["metadata"]["resourceVersion"].as_str().unwrap_or_else(|| panic!("no resourceVersion: {doc}")).to_string()
}

#[test]
fn apiserver_stores_server_side_applies_in_etcd() {
    if !support::require_root() {
        return;
    }
    let mut lab = Lab::new();
    let etcd = lab.start_etcd();
    let flags = lab.pki.apiserver_flags(lab.ns.ip);
    let first = lab.start_standin("kube-apiserver", "kube-apiserver", flags.clone());
    // A second instance on the same etcd plays another control plane's apiserver.
    let second = lab.start_standin("kube-apiserver-2", "kube-apiserver", with_flag(&flags, "secure-port", "6444"));
    let masters = lab.client("ca.crt", Some("super-admin"));
    for (id, port) in [(first, 6443), (second, 6444)] {
        lab.wait(id, "apiserver to serve", Duration::from_secs(30), |lab| {
            let url = HttpsUrl::parse(&format!("https://{}:{port}", lab.ns.ip)).unwrap();
            lab.rt.block_on(masters.send(&url, &Request::get("/healthz"))).ok().filter(|r| r.status == 200)
        });
    }

    // What kubeha does for each of its objects: GET (404), apply (201 with a version).
    let objects = kubeha_objects(lab.dir.path());
    assert!(objects.len() >= 10, "{}", objects.len());
    let mut versions = Vec::new();
    for object in &objects {
        let resp = lab.send(&masters, 6443, &Request::get(&object.path()));
        assert_eq!(resp.status, 404, "{}: {}", object.describe(), resp.text());
        let status: Value = resp.json().unwrap();
        assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("NotFound")));
        let resp = lab.send(&masters, 6443, &Request::apply(&object.apply_path(), &object.body));
        assert_eq!(resp.status, 201, "{}: {}", object.describe(), resp.text());
        let created: Value = resp.json().unwrap();
        assert!(holds(&created, &object.body), "{}: {created}", object.describe());
        let metadata = &created["metadata"];
        assert!(metadata["uid"].as_str().is_some_and(|u| u.len() == 36), "{metadata}");
        assert!(metadata["creationTimestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{metadata}");
        let managed = &metadata["managedFields"][0];
        assert_eq!((managed["manager"].as_str(), managed["operation"].as_str()), (Some("kubeha"), Some("Apply")));
        versions.push(rv(&resp));
    }

    // The same applies again change nothing: 200 and the same versions.
    for (object, version) in objects.iter().zip(&versions) {
        let resp = lab.send(&masters, 6443, &Request::apply(&object.apply_path(), &object.body));
        assert_eq!((resp.status, rv(&resp)), (200, version.clone()), "{}: {}", object.describe(), resp.text());
    }

    // The other apiserver serves the same objects at the same versions (they live in etcd).
    for (object, version) in objects.iter().zip(&versions) {
        let resp = lab.send(&masters, 6444, &Request::get(&object.path()));
        assert_eq!((resp.status, rv(&resp)), (200, version.clone()), "{}: {}", object.describe(), resp.text());
        assert!(holds(&resp.json().unwrap(), &object.body), "{}", object.describe());
    }

    // A changed apply through the second apiserver: updated, new version, seen by the first.
    let coredns = objects.iter().find(|o| o.kind() == "ConfigMap" && o.name() == "coredns").expect("CoreDNS config");
    let mut changed = coredns.body.clone();
    changed["data"]["Corefile"] = json!(".:53 {\n    errors\n}\n");
    let resp = lab.send(&masters, 6444, &Request::apply(&coredns.apply_path(), &changed));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let updated = rv(&resp);
    let old = &versions[objects.iter().position(|o| o == coredns).unwrap()];
    assert!(updated.parse::<u64>().unwrap() > old.parse::<u64>().unwrap(), "{old} -> {updated}");
    let seen: Value = lab.send(&masters, 6443, &Request::get(&coredns.path())).json().unwrap();
    assert_eq!(
        (seen["data"]["Corefile"].clone(), seen["metadata"]["resourceVersion"].as_str()),
        (changed["data"]["Corefile"].clone(), Some(updated.as_str()))
    );
    // kubeha's apply brings it back.
    let resp = lab.send(&masters, 6443, &Request::apply(&coredns.apply_path(), &coredns.body));
    assert_eq!(resp.status, 200);
    assert_ne!(rv(&resp), updated);
    assert!(holds(&resp.json().unwrap(), &coredns.body));

    // A Node is created by an apply, as on a real server (kubeha GETs first to avoid that).
    let node = kubeha::objects::control_plane_node("cp1");
    assert_eq!(lab.send(&masters, 6443, &Request::get(&node.path())).status, 404);
    let resp = lab.send(&masters, 6443, &Request::apply(&node.apply_path(), &node.body));
    assert_eq!(resp.status, 201, "{}", resp.text());

    // etcd holds the object as JSON under the real server's key.
    let p = |n: &str| lab.pki.path(n);
    let out = lab.ns.run(
        "etcdctl",
        &[
            "--endpoints=https://127.0.0.1:2379",
            "--cacert",
            &p("etcd-ca.crt"),
            "--cert",
            &p("apiserver-etcd-client.crt"),
            "--key",
            &p("apiserver-etcd-client.key"),
            "get",
            "/registry/configmaps/kube-system/coredns",
            "--print-value-only",
        ],
        &[("ETCDCTL_API", "3")],
    );
    let stored: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    });
    assert!(holds(&stored, &coredns.body), "{stored}");

    // Only system:masters reads and writes objects: kubeadm:cluster-admins (admin.conf) is
    // refused, since RBAC is not evaluated; discovery is for every authenticated user.
    let admin = lab.client("ca.crt", Some("admin"));
    let resp = lab.send(&admin, 6443, &Request::get(&coredns.path()));
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert!(resp.text().contains(r#"User \"kubernetes-admin\" cannot get resource \"configmaps\""#), "{}", resp.text());
    let resp = lab.send(&admin, 6443, &Request::apply(&coredns.apply_path(), &changed));
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert_eq!(lab.send(&admin, 6443, &Request::get("/apis/apps/v1")).status, 200);
    let anonymous = lab.client("ca.crt", None);
    assert_eq!(lab.send(&anonymous, 6443, &Request::get(&coredns.path())).status, 403);

    // Other methods and patch types, unknown paths.
    let curl_as_masters = |args: &[&str]| {
        let (ca, cert, key) = (p("ca.crt"), p("super-admin.crt"), p("super-admin.key"));
        let mut all = vec!["-o", "/dev/null", "-w", "%{http_code}", "--cacert", &ca, "--cert", &cert, "--key", &key];
        all.extend_from_slice(args);
        lab.curl(&all)
    };
    let url = format!("https://127.0.0.1:6443{}", coredns.path());
    assert_eq!(curl_as_masters(&["-X", "POST", "-d", "{}", &url]), (0, "405".to_string()));
    // DELETE of one object (as remove-node deletes a worker's Node): gone afterwards, then 404.
    let doomed = "https://127.0.0.1:6443/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kubeadm:get-nodes";
    assert_eq!(curl_as_masters(&[doomed]), (0, "200".to_string()));
    assert_eq!(curl_as_masters(&["-X", "DELETE", doomed]), (0, "200".to_string()));
    assert_eq!(curl_as_masters(&[doomed]), (0, "404".to_string()));
    assert_eq!(curl_as_masters(&["-X", "DELETE", doomed]), (0, "404".to_string()));
    let merge = ["-X", "PATCH", "-H", "Content-Type: application/merge-patch+json", "-d", "{}", &url];
    assert_eq!(curl_as_masters(&merge), (0, "415".to_string()));
    let no_manager = ["-X", "PATCH", "-H", "Content-Type: application/apply-patch+yaml", "-d", "{}", &url];
    assert_eq!(curl_as_masters(&no_manager), (0, "422".to_string()));
    let unknown = "https://127.0.0.1:6443/api/v1/namespaces/kube-system/secrets/x";
    assert_eq!(curl_as_masters(&[unknown]), (0, "404".to_string()));

    // kubectl with the super-admin kubeconfig: raw paths, lists and kinds through discovery.
    let super_admin = p("super-admin.conf");
    let kubectl = |args: &[&str]| {
        let (ok, out, err) = lab.kubectl(&[&["--kubeconfig", &super_admin], args].concat());
        assert!(ok, "kubectl {args:?}: {out}{err}");
        out
    };
    let raw: Value = serde_json::from_str(&kubectl(&["get", "--raw", &coredns.path()])).unwrap();
    assert!(holds(&raw, &coredns.body), "{raw}");
    let crb = "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/kubeadm:cluster-admins";
    let raw: Value = serde_json::from_str(&kubectl(&["get", "--raw", crb])).unwrap();
    assert_eq!(raw["roleRef"]["name"], "cluster-admin", "{raw}");
    let list: Value =
        serde_json::from_str(&kubectl(&["get", "configmaps", "-n", "kube-system", "-o", "json"])).unwrap();
    let names: Vec<&str> =
        list["items"].as_array().unwrap().iter().filter_map(|i| i["metadata"]["name"].as_str()).collect();
    assert!(names.contains(&"coredns") && names.contains(&"kube-proxy"), "{names:?}");
    let table = kubectl(&["get", "configmaps", "-n", "kube-system"]);
    assert!(table.lines().any(|l| l.starts_with("coredns")), "{table}");
    let out = kubectl(&["get", "clusterrolebindings", "-o", "name"]);
    assert!(out.contains("clusterrolebinding.rbac.authorization.k8s.io/kubeadm:cluster-admins"), "{out}");
    let out = kubectl(&[
        "get",
        "daemonset",
        "kube-proxy",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.metadata.managedFields[0].manager}",
    ]);
    assert_eq!(out, "kubeha");

    for id in [first, second, etcd] {
        lab.procs[id].stop();
    }
}

#[test]
fn apiserver_refuses_what_the_real_one_refuses() {
    if !support::require_root() {
        return;
    }
    let mut lab = Lab::new();
    let good = lab.pki.apiserver_flags(lab.ns.ip);
    let pki_dir = lab.pki.dir.clone();
    let p = |n: &str| pki_dir.join(n).display().to_string();
    let quick = Duration::from_secs(10);

    let missing = "/nonexistent/pki/apiserver.crt";
    expect_failure(
        &mut lab,
        "missing-file",
        "kube-apiserver",
        with_flag(&good, "tls-cert-file", missing),
        None,
        quick,
        &["--tls-cert-file", missing, "no such file or directory"],
    );

    let wrong_key = p("front-proxy-client.key");
    expect_failure(
        &mut lab,
        "mismatched-pair",
        "kube-apiserver",
        with_flag(&good, "tls-private-key-file", &wrong_key),
        None,
        quick,
        &["--tls-cert-file", "--tls-private-key-file", &wrong_key, "private key does not match public key"],
    );

    let foreign =
        with_flag(&with_flag(&good, "etcd-certfile", &p("other-client.crt")), "etcd-keyfile", &p("other-client.key"));
    expect_failure(
        &mut lab,
        "etcd-client-wrong-ca",
        "kube-apiserver",
        foreign,
        None,
        quick,
        &["--etcd-certfile", &p("other-client.crt"), "--etcd-cafile", "signed by unknown authority"],
    );

    let foreign = with_flag(
        &with_flag(&good, "kubelet-client-certificate", &p("other-client.crt")),
        "kubelet-client-key",
        &p("other-client.key"),
    );
    expect_failure(
        &mut lab,
        "kubelet-client-wrong-ca",
        "kube-apiserver",
        foreign,
        None,
        quick,
        &["--kubelet-client-certificate", "--client-ca-file", "signed by unknown authority"],
    );

    expect_failure(
        &mut lab,
        "proxy-client-wrong-ca",
        "kube-apiserver",
        with_flag(&good, "requestheader-client-ca-file", &p("etcd-ca.crt")),
        None,
        quick,
        &["--proxy-client-cert-file", "--requestheader-client-ca-file", "signed by unknown authority"],
    );

    expect_failure(
        &mut lab,
        "sa-keys-mismatch",
        "kube-apiserver",
        with_flag(&good, "service-account-key-file", &p("other-sa.pub")),
        None,
        quick,
        &["--service-account-key-file", &p("other-sa.pub"), "--service-account-signing-key-file"],
    );

    let log = expect_failure(
        &mut lab,
        "unknown-flag",
        "kube-apiserver",
        with_flag(&good, "insecure-port", "0"),
        None,
        quick,
        &["Error: unknown flag: --insecure-port"],
    );
    assert!(!log.contains("Serving"), "{log}");

    expect_failure(
        &mut lab,
        "wrong-image",
        "kube-apiserver",
        good.clone(),
        Some("registry.k8s.io/kube-scheduler:v1.31.4"),
        quick,
        &["kube-scheduler"],
    );

    let expired = expired_serving_cert(&lab.pki);
    expect_failure(
        &mut lab,
        "expired-serving-cert",
        "kube-apiserver",
        with_flag(&good, "tls-cert-file", &expired),
        None,
        quick,
        &["--tls-cert-file", &expired, "expired"],
    );

    // No etcd in this namespace: the real server gives up after its etcd dial timeout.
    expect_failure(
        &mut lab,
        "etcd-down",
        "kube-apiserver",
        good,
        None,
        Duration::from_secs(40),
        &["--etcd-servers https://127.0.0.1:2379:", "Connection refused"],
    );
}

// ---------------------------------------------------------------------------------------------
// kube-controller-manager and kube-scheduler

#[test]
fn controller_manager_and_scheduler_authenticate_against_the_apiserver() {
    if !support::require_root() {
        return;
    }
    let mut lab = Lab::new();
    let etcd = lab.start_etcd();

    // Started before the apiserver: they keep retrying, unhealthy, as the real ones keep running.
    let cm_flags = lab.pki.controller_manager_flags("controller-manager.conf");
    let cm = lab.start_standin("kube-controller-manager", "kube-controller-manager", cm_flags.clone());
    let sched = lab.start_standin("kube-scheduler", "kube-scheduler", lab.pki.scheduler_flags("scheduler.conf", 10259));
    let foreign = lab.start_standin(
        "scheduler-foreign",
        "kube-scheduler",
        lab.pki.scheduler_flags("scheduler-foreign.conf", 10261),
    );
    let health = |lab: &Lab, port: u16| lab.curl(&["-k", &format!("https://127.0.0.1:{port}/healthz")]);
    let body = lab.wait(cm, "controller-manager to serve", Duration::from_secs(20), |lab| {
        Some(health(lab, 10257)).filter(|(code, _)| *code == 0).map(|(_, b)| b)
    });
    assert!(body.contains("[-]kubeconfig failed"), "healthy without an apiserver: {body}");

    let api_flags = lab.pki.apiserver_flags(lab.ns.ip);
    let api = lab.start_standin("kube-apiserver", "kube-apiserver", api_flags);
    let anonymous = lab.client("ca.crt", None);
    lab.wait(api, "apiserver", Duration::from_secs(30), |lab| {
        lab.get(&anonymous, "/healthz").ok().filter(|r| r.status == 200)
    });

    for (id, port) in [(cm, 10257), (sched, 10259)] {
        lab.wait(id, "component /healthz ok", Duration::from_secs(30), |lab| {
            Some(health(lab, port)).filter(|r| r.1 == "ok")
        });
        assert_eq!(health(&lab, port).1, "ok");
        let (_, livez) = lab.curl(&["-k", &format!("https://127.0.0.1:{port}/livez")]);
        assert_eq!(livez, "ok");
    }

    // The scheduler whose client certificate another CA signed stays up and unhealthy, as the
    // real one keeps running and retrying with its requests refused.
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        lab.procs[foreign].exited().is_none(),
        "the real scheduler keeps running; log:\n{}",
        lab.procs[foreign].log()
    );
    let (code, body) = health(&lab, 10261);
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("[-]kubeconfig failed") && body.contains("healthz check failed"), "{body}");
    let log = lab.procs[foreign].log();
    assert!(log.contains("401 Unauthorized") && log.contains("scheduler-foreign.conf"), "{log}");

    // Health follows the apiserver: stopping it makes the controller-manager unhealthy again.
    lab.procs[api].stop();
    lab.wait(cm, "controller-manager unhealthy without apiserver", Duration::from_secs(30), |lab| {
        Some(health(lab, 10257)).filter(|(_, b)| b.contains("[-]kubeconfig failed"))
    });

    for id in [cm, sched, foreign] {
        let status = lab.procs[id].stop();
        assert!(status.success(), "{}: {status}; log:\n{}", lab.procs[id].name, lab.procs[id].log());
        assert!(!lab.procs[id].log().contains("PRIVATE KEY"));
    }
    lab.procs[etcd].stop();
}

#[test]
fn controller_manager_and_scheduler_refuse_bad_files() {
    if !support::require_root() {
        return;
    }
    let mut lab = Lab::new();
    let quick = Duration::from_secs(10);
    let cm_flags = lab.pki.controller_manager_flags("controller-manager.conf");
    let sched_flags = lab.pki.scheduler_flags("scheduler.conf", 10259);
    let sched_mismatch = lab.pki.scheduler_flags("scheduler-mismatch.conf", 10259);
    let pki_dir = lab.pki.dir.clone();
    let p = |n: &str| pki_dir.join(n).display().to_string();

    let missing = "/nonexistent/ca.crt";
    expect_failure(
        &mut lab,
        "cm-missing-root-ca",
        "kube-controller-manager",
        with_flag(&cm_flags, "root-ca-file", missing),
        None,
        quick,
        &["--root-ca-file", missing, "no such file or directory"],
    );

    let wrong_key = p("sa.key");
    expect_failure(
        &mut lab,
        "cm-signing-mismatch",
        "kube-controller-manager",
        with_flag(&cm_flags, "cluster-signing-key-file", &wrong_key),
        None,
        quick,
        &[
            "--cluster-signing-cert-file",
            "--cluster-signing-key-file",
            &wrong_key,
            "private key does not match public key",
        ],
    );

    let mismatch = p("scheduler-mismatch.conf");
    expect_failure(
        &mut lab,
        "sched-kubeconfig-mismatch",
        "kube-scheduler",
        sched_mismatch,
        None,
        quick,
        &["--kubeconfig", &mismatch, "private key does not match public key"],
    );

    let not_yaml = p("sa.pub");
    expect_failure(
        &mut lab,
        "sched-kubeconfig-not-yaml",
        "kube-scheduler",
        with_flag(&sched_flags, "kubeconfig", &not_yaml),
        None,
        quick,
        &["--kubeconfig", &not_yaml, "invalid configuration"],
    );

    expect_failure(
        &mut lab,
        "sched-removed-flag",
        "kube-scheduler",
        with_flag(&sched_flags, "port", "10251"),
        None,
        quick,
        &["Error: unknown flag: --port"],
    );

    expect_failure(
        &mut lab,
        "cm-bad-bool",
        "kube-controller-manager",
        with_flag(&cm_flags, "leader-elect", "yes"),
        None,
        quick,
        &["invalid argument \"yes\" for \"--leader-elect\" flag"],
    );
}
