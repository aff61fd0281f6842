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
use kubeha::https::{HttpsError, HttpsUrl, Request, VerifyFailure};

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
