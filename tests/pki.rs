//! The PKI against real programs: every certificate is checked with `openssl`, every kubeconfig
//! is read by `kubectl`, and `certs generate` runs as the built binary.

#[path = "support/pki_harness.rs"]
mod harness;
#[path = "pki/state_dir.rs"]
mod state_dir;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use harness::*;
use kubeha::pki;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

const DAY: i64 = 24 * 3600;
const BACKDATE: i64 = 300;

/// What a certificate says, read with x509-parser.
#[derive(Debug)]
struct Info {
    cn: Vec<String>,
    o: Vec<String>,
    issuer_cn: Vec<String>,
    server_auth: bool,
    client_auth: bool,
    sans: BTreeSet<String>,
    is_ca: bool,
    digital_signature: bool,
    key_encipherment: bool,
    cert_sign: bool,
    not_before: i64,
    not_after: i64,
    serial: Vec<u8>,
    spki: Vec<u8>,
}

fn info(pem: &[u8]) -> Info {
    let der = der(pem);
    let (_, c) = X509Certificate::from_der(&der).unwrap();
    let strings = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.map(|a| a.as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let eku = c.extended_key_usage().unwrap().map(|e| (e.value.server_auth, e.value.client_auth));
    let ku = c.key_usage().unwrap().expect("every certificate has a key usage").value;
    let sans = c
        .subject_alternative_name()
        .unwrap()
        .map(|s| {
            s.value
                .general_names
                .iter()
                .map(|n| match n {
                    GeneralName::DNSName(d) => d.to_string(),
                    GeneralName::IPAddress(b) if b.len() == 4 => {
                        std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()
                    }
                    GeneralName::IPAddress(b) => std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string(),
                    other => panic!("unexpected SAN {other}"),
                })
                .collect()
        })
        .unwrap_or_default();
    Info {
        cn: strings(&mut c.subject().iter_common_name()),
        o: strings(&mut c.subject().iter_organization()),
        issuer_cn: strings(&mut c.issuer().iter_common_name()),
        server_auth: eku.is_some_and(|e| e.0),
        client_auth: eku.is_some_and(|e| e.1),
        sans,
        is_ca: c.basic_constraints().unwrap().expect("basicConstraints is always present").value.ca,
        digital_signature: ku.digital_signature(),
        key_encipherment: ku.key_encipherment(),
        cert_sign: ku.key_cert_sign(),
        not_before: c.validity().not_before.timestamp(),
        not_after: c.validity().not_after.timestamp(),
        serial: c.raw_serial().to_vec(),
        spki: c.public_key().raw.to_vec(),
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A leaf the example inventory must have: file, CA file, CN, O, (serverAuth, clientAuth), SANs.
struct Expected {
    cert: String,
    ca: &'static str,
    cn: String,
    o: Vec<&'static str>,
    usage: (bool, bool),
    sans: BTreeSet<String>,
}

/// Written out from kubeadm's certlist for the example inventory (3 control planes,
/// endpoint 198.18.0.10, service subnet 10.96.0.0/12), independently of kubeha's table.
fn expected_leaves() -> Vec<Expected> {
    let shared = |cert: &str, ca, cn: &str, o: Vec<&'static str>| Expected {
        cert: cert.into(),
        ca,
        cn: cn.into(),
        o,
        usage: (false, true),
        sans: BTreeSet::new(),
    };
    let mut out = vec![
        shared(
            "pki/apiserver-kubelet-client.crt",
            "pki/ca.crt",
            "kube-apiserver-kubelet-client",
            vec!["kubeadm:cluster-admins"],
        ),
        shared("pki/front-proxy-client.crt", "pki/front-proxy-ca.crt", "front-proxy-client", vec![]),
        shared("pki/etcd/healthcheck-client.crt", "pki/etcd/ca.crt", "kube-etcd-healthcheck-client", vec![]),
        shared("pki/apiserver-etcd-client.crt", "pki/etcd/ca.crt", "kube-apiserver-etcd-client", vec![]),
    ];
    for i in 1..=3 {
        let (name, addr) = (format!("cp{i}"), format!("198.18.0.{}", 10 + i));
        let mut sans = set([
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "10.96.0.1",
            "198.18.0.10",
            "127.0.0.1",
        ]);
        sans.extend([name.clone(), addr.clone()]);
        out.push(Expected {
            cert: format!("nodes/{name}/pki/apiserver.crt"),
            ca: "pki/ca.crt",
            cn: "kube-apiserver".into(),
            o: vec![],
            usage: (true, false),
            sans,
        });
        for kind in ["server", "peer"] {
            let mut sans = set(["localhost", "127.0.0.1", "::1"]);
            sans.extend([name.clone(), addr.clone()]);
            out.push(Expected {
                cert: format!("nodes/{name}/pki/etcd/{kind}.crt"),
                ca: "pki/etcd/ca.crt",
                cn: name.clone(),
                o: vec![],
                usage: (true, true),
                sans,
            });
        }
    }
    out
}

/// Kubeconfig, expected server, CN, O.
fn expected_kubeconfigs() -> Vec<(String, String, String, Vec<&'static str>)> {
    let endpoint = "https://198.18.0.10:8443".to_string();
    let mut out = vec![
        ("admin.conf".into(), endpoint.clone(), "kubernetes-admin".into(), vec!["kubeadm:cluster-admins"]),
        ("super-admin.conf".into(), endpoint.clone(), "kubernetes-super-admin".into(), vec!["system:masters"]),
    ];
    for i in 1..=3 {
        let own = format!("https://198.18.0.{}:6443", 10 + i);
        out.push((
            format!("nodes/cp{i}/controller-manager.conf"),
            own.clone(),
            "system:kube-controller-manager".into(),
            vec![],
        ));
        out.push((format!("nodes/cp{i}/scheduler.conf"), own, "system:kube-scheduler".into(), vec![]));
        out.push((
            format!("nodes/cp{i}/kubelet.conf"),
            endpoint.clone(),
            format!("system:node:cp{i}"),
            vec!["system:nodes"],
        ));
    }
    out.push(("nodes/w1/kubelet.conf".into(), endpoint, "system:node:w1".into(), vec!["system:nodes"]));
    out
}

fn read(state: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(state.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn generated_example() -> (tempfile::TempDir, PathBuf, i64, i64) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let before = now();
    certs_generate(&example_inventory(), &state);
    (dir, state, before, now())
}

#[test]
fn every_certificate_verifies_against_its_own_ca_with_openssl() {
    let (_dir, state, _, _) = generated_example();
    for e in expected_leaves() {
        let purpose = match e.usage {
            (true, false) => "sslserver",
            (false, true) => "sslclient",
            _ => "any",
        };
        assert!(
            openssl_verifies(&state.join(e.ca), &state.join(&e.cert), Some(purpose)),
            "{} against {}",
            e.cert,
            e.ca
        );
        for wrong in ["pki/ca.crt", "pki/front-proxy-ca.crt", "pki/etcd/ca.crt"].into_iter().filter(|ca| *ca != e.ca) {
            assert!(
                !openssl_verifies(&state.join(wrong), &state.join(&e.cert), None),
                "{} must not verify against {wrong}",
                e.cert
            );
        }
    }
    for ca in ["pki/ca.crt", "pki/front-proxy-ca.crt", "pki/etcd/ca.crt"] {
        assert!(openssl_verifies(&state.join(ca), &state.join(ca), None), "{ca} is self-signed");
    }
    let extracted = tempfile::tempdir().unwrap();
    for (file, ..) in expected_kubeconfigs() {
        let view = kubectl_view(&state.join(&file));
        let cert = extracted.path().join(file.replace('/', "_") + ".crt");
        std::fs::write(&cert, &view.cert_pem).unwrap();
        assert!(openssl_verifies(&state.join("pki/ca.crt"), &cert, Some("sslclient")), "client certificate of {file}");
        assert!(!openssl_verifies(&state.join("pki/etcd/ca.crt"), &cert, None));
    }
}

#[test]
fn subjects_usages_sans_and_validity_are_kubeadms() {
    let (_dir, state, before, after) = generated_example();
    let check_validity = |name: &str, i: &Info, lifetime: i64| {
        assert!(
            i.not_before >= before - BACKDATE - 1 && i.not_before <= after - BACKDATE,
            "{name} notBefore is backdated 5m"
        );
        assert_eq!(i.not_after - (i.not_before + BACKDATE), lifetime, "{name} lifetime");
    };
    for (ca, cn) in
        [("pki/ca.crt", "kubernetes"), ("pki/front-proxy-ca.crt", "front-proxy-ca"), ("pki/etcd/ca.crt", "etcd-ca")]
    {
        let i = info(&read(&state, ca));
        assert_eq!(i.cn, [cn], "{ca}");
        assert!(i.o.is_empty() && i.is_ca, "{ca}");
        assert_eq!(i.issuer_cn, [cn], "{ca} is self-signed");
        assert_eq!(i.sans, set([cn]), "{ca} carries DNS:<CN> as kubeadm's CAs do");
        assert!(i.digital_signature && i.key_encipherment && i.cert_sign, "{ca} key usage");
        assert!(!i.server_auth && !i.client_auth, "{ca} has no extended key usage");
        check_validity(ca, &i, 10 * 365 * DAY);
    }
    for e in expected_leaves() {
        let i = info(&read(&state, &e.cert));
        assert_eq!(i.cn, [e.cn.as_str()], "{} CN", e.cert);
        assert_eq!(i.o, e.o, "{} O", e.cert);
        assert_eq!((i.server_auth, i.client_auth), e.usage, "{} extended key usage", e.cert);
        assert_eq!(i.sans, e.sans, "{} SANs", e.cert);
        assert!(!i.is_ca, "{} basicConstraints CA:FALSE", e.cert);
        assert!(i.digital_signature && i.key_encipherment && !i.cert_sign, "{} key usage", e.cert);
        check_validity(&e.cert, &i, 365 * DAY);
    }
    for (file, _, cn, o) in expected_kubeconfigs() {
        let i = info(&kubectl_view(&state.join(&file)).cert_pem);
        assert_eq!(
            (i.cn.clone(), i.o.clone()),
            (vec![cn], o.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            "{file}"
        );
        assert_eq!((i.server_auth, i.client_auth, i.is_ca), (false, true, false), "{file}");
        assert!(i.sans.is_empty(), "{file}");
        check_validity(&file, &i, 365 * DAY);
    }

    // The same facts as openssl prints them.
    let text = run_ok(
        "openssl",
        &["x509", "-noout", "-text", "-in", state.join("nodes/cp2/pki/apiserver.crt").to_str().unwrap()],
    );
    assert!(text.contains("Subject: CN = kube-apiserver"), "{text}");
    assert!(text.contains("DNS:cp2, DNS:kubernetes,"), "{text}");
    assert!(
        text.contains("IP Address:10.96.0.1, IP Address:198.18.0.12, IP Address:198.18.0.10, IP Address:127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication") && !text.contains("TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE") && text.contains("Digital Signature, Key Encipherment"), "{text}");
    let text = run_ok(
        "openssl",
        &[
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "extendedKeyUsage",
            "-in",
            state.join("pki/apiserver-kubelet-client.crt").to_str().unwrap(),
        ],
    );
    assert!(text.contains("subject=O = kubeadm:cluster-admins, CN = kube-apiserver-kubelet-client"), "{text}");
    let text = run_ok("openssl", &["x509", "-noout", "-text", "-in", state.join("pki/etcd/ca.crt").to_str().unwrap()]);
    assert!(
        text.contains("CA:TRUE") && text.contains("Certificate Sign") && text.contains("Subject: CN = etcd-ca"),
        "{text}"
    );
}

#[test]
fn keys_match_their_certificates_and_apiserver_certificates_are_per_host() {
    let (_dir, state, _, _) = generated_example();
    let s = |rel: &str| state.join(rel).to_str().unwrap().to_string();
    let mut certs: Vec<String> = expected_leaves().into_iter().map(|e| e.cert).collect();
    certs.extend(["pki/ca.crt", "pki/front-proxy-ca.crt", "pki/etcd/ca.crt"].map(String::from));
    for cert in &certs {
        let key = cert.replace(".crt", ".key");
        let from_cert = run_ok("openssl", &["x509", "-noout", "-pubkey", "-in", &s(cert)]);
        let from_key = run_ok("openssl", &["pkey", "-pubout", "-in", &s(&key)]);
        assert_eq!(from_cert, from_key, "{cert} and {key}");
    }
    let sa_pub = run_ok("openssl", &["pkey", "-pubin", "-in", &s("pki/sa.pub"), "-outform", "PEM"]);
    let sa_key = run_ok("openssl", &["pkey", "-pubout", "-in", &s("pki/sa.key")]);
    assert_eq!(sa_pub, sa_key, "sa.pub is the public half of sa.key");

    let apiservers: Vec<Info> =
        (1..=3).map(|i| info(&read(&state, &format!("nodes/cp{i}/pki/apiserver.crt")))).collect();
    for (i, a) in apiservers.iter().enumerate() {
        for (j, b) in apiservers.iter().enumerate() {
            let other = format!("198.18.0.{}", 11 + j);
            assert_eq!(a.sans.contains(&other), i == j, "cp{} apiserver SAN {other}", i + 1);
            if i != j {
                assert_ne!(a.spki, b.spki, "each control plane has its own apiserver key");
            }
        }
    }
}

#[test]
fn kubeconfigs_load_in_kubectl_with_the_right_server_and_identity() {
    let (_dir, state, _, _) = generated_example();
    let ca = read(&state, "pki/ca.crt");
    for (file, server, cn, o) in expected_kubeconfigs() {
        let view = kubectl_view(&state.join(&file));
        assert_eq!(view.server, server, "{file}");
        assert_eq!(view.cluster, "lab", "{file}: the cluster is named after metadata.name");
        assert_eq!(view.user, cn, "{file}");
        assert_eq!(view.context, format!("{cn}@lab"), "{file}");
        assert_eq!(der(&view.ca_pem), der(&ca), "{file} embeds pki/ca.crt");
        let i = info(&view.cert_pem);
        assert_eq!(i.cn, [cn.as_str()], "{file}");
        assert_eq!(i.o, o, "{file}");
        let cert = tempfile::NamedTempFile::new().unwrap();
        let key = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(cert.path(), &view.cert_pem).unwrap();
        std::fs::write(key.path(), &view.key_pem).unwrap();
        let from_cert = run_ok("openssl", &["x509", "-noout", "-pubkey", "-in", cert.path().to_str().unwrap()]);
        let from_key = run_ok("openssl", &["pkey", "-pubout", "-in", key.path().to_str().unwrap()]);
        assert_eq!(from_cert, from_key, "{file}: embedded certificate and key match");
    }
}

#[test]
fn second_run_changes_nothing_and_everything_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    certs_generate(&example_inventory(), &state);
    let first = tree(&state);
    let out = certs_generate_output(&example_inventory(), &state);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "nothing created or renewed");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("0 created, 0 renewed, 47 kept"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tree(&state), first, "every file byte-identical, same modes");

    for (path, (hash, mode)) in &first {
        let name = path.to_string_lossy();
        let expected = if hash == "<dir>" {
            0o700
        } else if name.ends_with(".crt") || name.ends_with(".pub") {
            0o644
        } else {
            let private = name.ends_with(".key") || name.ends_with(".conf") || name == "secrets/vrrp-password";
            assert!(private || name == ".lock" || name == "cluster.yaml", "{name}");
            0o600
        };
        assert_eq!(*mode, expected, "mode of {name}");
    }

    // Serials: distinct across every certificate, kubeconfigs included, and a second cluster.
    let other = dir.path().join("other");
    certs_generate(&example_inventory(), &other);
    let mut serials = BTreeMap::new();
    for root in [&state, &other] {
        for path in tree(root).keys() {
            let name = path.to_string_lossy();
            let pem = if name.ends_with(".crt") {
                read(root, &name)
            } else if name.ends_with(".conf") {
                kubectl_view(&root.join(path)).cert_pem
            } else {
                continue;
            };
            let i = info(&pem);
            assert_eq!(i.serial.len(), 16, "{name}: a 16-byte serial");
            assert!(i.serial[0] & 0x80 == 0, "{name}: top bit clear");
            if let Some(prev) = serials.insert(i.serial, format!("{}/{name}", root.display())) {
                panic!("{name} repeats the serial of {prev}");
            }
        }
    }
    // 3 CAs, 4 shared leaves, 3 per control plane; 2 shared kubeconfigs, 3 per control plane, 1 per worker.
    assert_eq!(serials.len(), 2 * (3 + 4 + 3 * 3 + 2 + 3 * 3 + 1));
}

#[test]
fn an_inventory_change_renews_only_what_it_affects() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut inv = Inventory::default();
    certs_generate(&inv.write(dir.path()), &state);
    let before = tree(&state);

    inv.extra_sans = vec!["api.example.test", "198.18.0.99"];
    inv.workers = 2;
    let out = certs_generate(&inv.write(dir.path()), &state);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 4, "{out}");
    assert_eq!(lines[0], "created nodes/w2/kubelet.conf");
    for (i, line) in lines[1..].iter().enumerate() {
        assert!(line.starts_with(&format!("renewed nodes/cp{}/pki/apiserver.crt (missing SANs ", i + 1)), "{line}");
        assert!(line.contains("198.18.0.99") && line.contains("api.example.test"), "{line}");
    }

    let after = tree(&state);
    for (path, entry) in &before {
        let name = path.to_string_lossy();
        if name.ends_with("pki/apiserver.crt") && name.starts_with("nodes/") {
            assert_ne!(after[path].0, entry.0, "{name} was re-issued");
            let i = info(&read(&state, &name));
            assert!(i.sans.contains("api.example.test") && i.sans.contains("198.18.0.99"), "{name}");
        } else {
            assert_eq!(&after[path], entry, "{name} is untouched");
        }
    }
    for i in 1..=3 {
        let s = |rel: String| state.join(rel).to_str().unwrap().to_string();
        let from_cert =
            run_ok("openssl", &["x509", "-noout", "-pubkey", "-in", &s(format!("nodes/cp{i}/pki/apiserver.crt"))]);
        let from_key = run_ok("openssl", &["pkey", "-pubout", "-in", &s(format!("nodes/cp{i}/pki/apiserver.key"))]);
        assert_eq!(from_cert, from_key, "cp{i}: re-issued with its existing key");
        assert!(openssl_verifies(
            &state.join("pki/ca.crt"),
            &state.join(format!("nodes/cp{i}/pki/apiserver.crt")),
            Some("sslserver")
        ));
    }

    // Removing a SAN renews too; moving the endpoint renews the apiserver certificates and
    // rewrites every kubeconfig that points at it, keeping the client certificates.
    let w1 = kubectl_view(&state.join("nodes/w1/kubelet.conf"));
    inv.extra_sans = vec!["api.example.test"];
    inv.endpoint = "198.18.0.20:8443";
    let report = pki::generate(&inv.plan(), &state).unwrap();
    assert!(report.created.is_empty());
    let renewed: BTreeMap<String, String> =
        report.renewed.iter().map(|r| (r.path.to_string_lossy().into_owned(), r.reason.clone())).collect();
    assert!(renewed["nodes/cp1/pki/apiserver.crt"].contains("unexpected SANs 198.18.0.10, 198.18.0.99"), "{renewed:?}");
    assert!(renewed["nodes/cp1/pki/apiserver.crt"].contains("missing SANs 198.18.0.20"), "{renewed:?}");
    assert_eq!(
        renewed["admin.conf"], "server is https://198.18.0.10:8443, expected https://198.18.0.20:8443",
        "only the server changed"
    );
    let mut expected: Vec<String> = vec!["admin.conf".into(), "super-admin.conf".into()];
    expected
        .extend((1..=3).flat_map(|i| [format!("nodes/cp{i}/pki/apiserver.crt"), format!("nodes/cp{i}/kubelet.conf")]));
    expected.extend((1..=2).map(|i| format!("nodes/w{i}/kubelet.conf")));
    expected.sort();
    assert_eq!(renewed.keys().cloned().collect::<Vec<_>>(), expected);
    let view = kubectl_view(&state.join("nodes/w1/kubelet.conf"));
    assert_eq!(view.server, "https://198.18.0.20:8443");
    assert_eq!((view.cert_pem, view.key_pem), (w1.cert_pem, w1.key_pem), "client certificate and key kept");
}

#[test]
fn leaves_that_no_longer_fit_are_reissued_with_their_keys() {
    use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let plan = Inventory { control_planes: 1, workers: 0, ..Default::default() }.plan();
    pki::generate(&plan, &state).unwrap();

    let pem = |rel: &str| String::from_utf8(read(&state, rel)).unwrap();
    let ca_key = KeyPair::from_pem(&pem("pki/ca.key")).unwrap();
    let ca = Issuer::from_ca_cert_pem(&pem("pki/ca.crt"), &ca_key).unwrap();
    let stranger_key = KeyPair::generate().unwrap();
    let mut stranger = CertificateParams::default();
    stranger.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    stranger.distinguished_name = DistinguishedName::new();
    stranger.distinguished_name.push(DnType::CommonName, "front-proxy-ca");
    let stranger = Issuer::new(stranger, &stranger_key);

    // Expired, signed by a CA of the same name that is not ours, and a wrong subject.
    let sign = |rel: &str, cn: &str, issuer: &Issuer<'_, &KeyPair>, expired: bool| {
        let key = KeyPair::from_pem(&pem(&rel.replace(".crt", ".key"))).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        std::fs::write(state.join(rel), params.signed_by(&key, issuer).unwrap().pem()).unwrap();
    };
    sign("pki/apiserver-kubelet-client.crt", "kube-apiserver-kubelet-client", &ca, true);
    sign("pki/front-proxy-client.crt", "front-proxy-client", &stranger, false);
    sign("pki/etcd/healthcheck-client.crt", "somebody-else", &ca, false);

    let err = pki::load(&plan, &state).unwrap_err();
    assert!(matches!(err, pki::PkiError::Stale { .. }), "{err}");
    assert!(
        err.to_string().contains("apiserver-kubelet-client.crt")
            && err.to_string().contains("run `kubeha certs generate`"),
        "{err}"
    );

    let keys_before: Vec<Vec<u8>> =
        ["pki/apiserver-kubelet-client.key", "pki/front-proxy-client.key", "pki/etcd/healthcheck-client.key"]
            .iter()
            .map(|k| read(&state, k))
            .collect();
    let report = pki::generate(&plan, &state).unwrap();
    let renewed: BTreeMap<String, String> =
        report.renewed.iter().map(|r| (r.path.to_string_lossy().into_owned(), r.reason.clone())).collect();
    assert_eq!(renewed.len(), 3, "{renewed:?}");
    assert!(renewed["pki/apiserver-kubelet-client.crt"].contains("expired on"), "{renewed:?}");
    assert!(renewed["pki/apiserver-kubelet-client.crt"].contains("subject is CN=kube-apiserver-kubelet-client, expected O=kubeadm:cluster-admins, CN=kube-apiserver-kubelet-client"));
    assert_eq!(renewed["pki/front-proxy-client.crt"], "not signed by the current pki/front-proxy-ca.crt");
    assert!(renewed["pki/etcd/healthcheck-client.crt"].starts_with("subject is CN=somebody-else, expected CN=kube-etcd-healthcheck-client; not signed by the current pki/etcd/ca.crt"));
    for (key, before) in
        ["pki/apiserver-kubelet-client.key", "pki/front-proxy-client.key", "pki/etcd/healthcheck-client.key"]
            .iter()
            .zip(keys_before)
    {
        assert_eq!(read(&state, key), before, "{key} kept");
    }
    assert!(openssl_verifies(
        &state.join("pki/front-proxy-ca.crt"),
        &state.join("pki/front-proxy-client.crt"),
        Some("sslclient")
    ));
    assert!(openssl_verifies(
        &state.join("pki/etcd/ca.crt"),
        &state.join("pki/etcd/healthcheck-client.crt"),
        Some("sslclient")
    ));
    pki::load(&plan, &state).expect("everything fits again");
}

/// Runs `certs generate` on a copy of `good` after `damage`, expecting a refusal that names `file`
/// and leaves the state directory as it was.
fn refused(good: &Path, damage: impl FnOnce(&Path), file: &str, says: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    run_ok("cp", &["-a", good.to_str().unwrap(), state.to_str().unwrap()]);
    damage(&state);
    let before = tree(&state);
    let out = certs_generate_output(&example_inventory(), &state);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(state.join(file).to_str().unwrap()), "names {file}: {stderr}");
    assert!(stderr.contains(says), "says {says:?}: {stderr}");
    assert_eq!(tree(&state), before, "a refused run changes nothing");
    stderr
}

#[test]
fn unusable_files_are_refused_with_the_file_named() {
    let (_dir, good, _, _) = generated_example();

    refused(
        &good,
        |s| {
            std::fs::write(
                s.join("pki/front-proxy-client.crt"),
                "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            )
            .unwrap()
        },
        "pki/front-proxy-client.crt",
        "is not a valid certificate",
    );
    refused(
        &good,
        |s| {
            std::fs::copy(s.join("nodes/cp2/pki/apiserver.key"), s.join("nodes/cp1/pki/apiserver.key"))
                .map(drop)
                .unwrap()
        },
        "nodes/cp1/pki/apiserver.crt",
        "does not match its private key",
    );
    refused(
        &good,
        |s| std::fs::remove_file(s.join("pki/etcd/healthcheck-client.key")).unwrap(),
        "pki/etcd/healthcheck-client.key",
        "is missing",
    );
    // A CA certificate without its key: the key may have been lost, kubeha does not guess.
    refused(
        &good,
        |s| std::fs::remove_file(s.join("pki/front-proxy-ca.key")).unwrap(),
        "pki/front-proxy-ca.key",
        "is missing; restore the key",
    );
    refused(&good, |s| std::fs::remove_file(s.join("pki/sa.key")).unwrap(), "pki/sa.key", "is missing");
    refused(
        &good,
        |s| {
            let admin = std::fs::read_to_string(s.join("admin.conf")).unwrap();
            let other = std::fs::read_to_string(s.join("super-admin.conf")).unwrap();
            let key = |t: &str| t.lines().find(|l| l.contains("client-key-data")).unwrap().to_string();
            std::fs::write(s.join("admin.conf"), admin.replace(&key(&admin), &key(&other))).unwrap();
        },
        "admin.conf",
        "does not match the client key",
    );

    // A damaged key: the error names it and shows none of its content.
    let key = std::fs::read_to_string(good.join("pki/etcd/ca.key")).unwrap();
    let lines: Vec<&str> = key.lines().collect();
    let damaged = format!("{}\n{}\n{}\n", lines[0], &lines[1][..lines[1].len() - 8], lines[lines.len() - 1]);
    let stderr = refused(
        &good,
        |s| std::fs::write(s.join("pki/etcd/ca.key"), &damaged).unwrap(),
        "pki/etcd/ca.key",
        "is not a valid private key",
    );
    for line in &lines[1..lines.len() - 1] {
        assert!(!stderr.contains(&line[..16]), "the error quotes the key: {stderr}");
    }
}

#[test]
fn a_kubeadm_made_pkcs1_rsa_ca_is_used_as_is() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("pki")).unwrap();
    let (key, crt) = (state.join("pki/ca.key"), state.join("pki/ca.crt"));
    run_ok("openssl", &["genrsa", "-traditional", "-out", key.to_str().unwrap(), "2048"]);
    run_ok(
        "openssl",
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            key.to_str().unwrap(),
            "-subj",
            "/CN=kubernetes",
            "-days",
            "3650",
            "-out",
            crt.to_str().unwrap(),
        ],
    );
    let (key_before, crt_before) = (std::fs::read(&key).unwrap(), std::fs::read(&crt).unwrap());
    assert!(key_before.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"), "openssl wrote PKCS#1");

    let out = certs_generate(&example_inventory(), &state);
    assert!(!out.contains("pki/ca.crt") && !out.contains("pki/ca.key"), "the CA is kept: {out}");
    assert_eq!((std::fs::read(&key).unwrap(), std::fs::read(&crt).unwrap()), (key_before.clone(), crt_before));
    for leaf in ["nodes/cp1/pki/apiserver.crt", "pki/apiserver-kubelet-client.crt"] {
        assert!(openssl_verifies(&crt, &state.join(leaf), None), "{leaf} is signed by the kubeadm CA");
    }
    let admin = kubectl_view(&state.join("admin.conf"));
    assert_eq!(der(&admin.ca_pem), der(&std::fs::read(&crt).unwrap()));

    // The discovery hash, as `openssl` computes it for `kubeadm join --discovery-token-ca-cert-hash`.
    let spki = dir.path().join("ca.spki");
    let pubkey = dir.path().join("ca.pub");
    std::fs::write(&pubkey, run_ok("openssl", &["x509", "-pubkey", "-noout", "-in", crt.to_str().unwrap()])).unwrap();
    run_ok(
        "openssl",
        &["pkey", "-pubin", "-in", pubkey.to_str().unwrap(), "-outform", "DER", "-out", spki.to_str().unwrap()],
    );
    let digest = run_ok("openssl", &["dgst", "-sha256", "-r", spki.to_str().unwrap()]);
    let plan = kubeha::inventory::load(&example_inventory()).unwrap();
    let loaded = pki::load(&plan, &state).unwrap();
    let id = format!("sha256:{}", digest.split_whitespace().next().unwrap());
    assert_eq!(loaded.cluster_id(), id);

    // Its certificate lost: re-issued from the key with the subject key identifier OpenSSL gave
    // it (which the leaves name as their authority key identifier), so the leaves still verify.
    let ski_before = ski(&crt);
    std::fs::remove_file(&crt).unwrap();
    assert_eq!(pki::existing_cluster_id(&state).unwrap(), Some(id.clone()), "the id is read from the RSA key");
    let out = certs_generate(&example_inventory(), &state);
    assert!(out.contains("renewed pki/ca.crt (certificate was missing; re-issued from the existing key)"), "{out}");
    assert_eq!(out.matches(".crt (").count(), 1, "no leaf is renewed: {out}");
    assert_eq!(std::fs::read(&key).unwrap(), key_before, "the key is untouched");
    assert_eq!(ski(&crt), ski_before);
    assert_eq!(pubkey_of_cert(&crt), pubkey_of_key(&key));
    for leaf in ["nodes/cp1/pki/apiserver.crt", "pki/apiserver-kubelet-client.crt"] {
        assert!(openssl_verifies(&crt, &state.join(leaf), None), "{leaf} verifies against the re-issued CA");
    }
    assert_eq!(pki::load(&plan, &state).unwrap().cluster_id(), id);
}

/// `openssl x509 -pubkey` of a certificate.
fn pubkey_of_cert(crt: &Path) -> String {
    run_ok("openssl", &["x509", "-noout", "-pubkey", "-in", crt.to_str().unwrap()])
}

/// `openssl pkey -pubout` of a private key.
fn pubkey_of_key(key: &Path) -> String {
    run_ok("openssl", &["pkey", "-pubout", "-in", key.to_str().unwrap()])
}

/// The subject key identifier of a certificate, as openssl prints it.
fn ski(crt: &Path) -> String {
    let text = run_ok("openssl", &["x509", "-noout", "-ext", "subjectKeyIdentifier", "-in", crt.to_str().unwrap()]);
    let id = text.lines().nth(1).unwrap_or("").trim().to_string();
    assert!(id.len() == 59, "a 20-byte identifier: {text}");
    id
}

/// The sorted lines `certs generate` printed.
fn sorted_lines(out: &str) -> Vec<String> {
    let mut lines: Vec<String> = out.lines().map(String::from).collect();
    lines.sort();
    lines
}

#[test]
fn a_ca_key_without_its_certificate_gets_the_certificate_reissued_from_the_key() {
    let (_dir, good, _, _) = generated_example();
    let plan = kubeha::inventory::load(&example_inventory()).unwrap();
    let id = pki::load(&plan, &good).unwrap().cluster_id();
    let kubeconfigs: Vec<String> = expected_kubeconfigs().into_iter().map(|(file, ..)| file).collect();
    for base in ["ca", "front-proxy-ca", "etcd/ca"] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        run_ok("cp", &["-a", good.to_str().unwrap(), state.to_str().unwrap()]);
        let (crt_rel, key_rel) = (format!("pki/{base}.crt"), format!("pki/{base}.key"));
        let (crt, key) = (state.join(&crt_rel), state.join(&key_rel));
        let old = info(&read(&state, &crt_rel));
        let old_ski = ski(&crt);
        std::fs::remove_file(&crt).unwrap();
        let before = tree(&state);

        // load writes nothing and asks for `certs generate`; preflight still knows the cluster.
        let err = pki::load(&plan, &state).unwrap_err();
        assert!(matches!(err, pki::PkiError::Missing { .. }), "{err}");
        assert!(err.to_string().contains(&format!("{crt_rel} is missing; run `kubeha certs generate`")), "{err}");
        assert_eq!(pki::existing_cluster_id(&state).unwrap(), Some(id.clone()), "{base}");
        assert_eq!(tree(&state), before);

        let started = now();
        let out = certs_generate(&example_inventory(), &state);
        let mut expected =
            vec![format!("renewed {crt_rel} (certificate was missing; re-issued from the existing key)")];
        if base == "ca" {
            // The kubeconfigs embed the CA certificate; their client certificates stay.
            expected.extend(kubeconfigs.iter().map(|f| format!("renewed {f} (its CA is not the current pki/ca.crt)")));
        }
        expected.sort();
        assert_eq!(sorted_lines(&out), expected, "{base}");

        let new = info(&read(&state, &crt_rel));
        assert_eq!(new.spki, old.spki, "{base}: same public key");
        assert_eq!(pubkey_of_cert(&crt), pubkey_of_key(&key), "{base}");
        assert_eq!(ski(&crt), old_ski, "{base}: same subject key identifier");
        assert_eq!((new.cn.clone(), new.issuer_cn.clone(), new.sans.clone()), (old.cn, old.issuer_cn, old.sans));
        assert!(new.is_ca && new.cert_sign, "{base}");
        assert_ne!(new.serial, old.serial, "{base}: a new certificate");
        assert!(new.not_before >= started - BACKDATE - 1, "{base}: validity from the plan");
        assert_eq!(new.not_after - (new.not_before + BACKDATE), 10 * 365 * DAY, "{base}");

        let after = tree(&state);
        for (path, entry) in &before {
            let name = path.to_string_lossy();
            if !name.ends_with(".conf") {
                assert_eq!(&after[path], entry, "{base}: {name} is untouched (keys byte-identical)");
            }
        }
        for e in expected_leaves().into_iter().filter(|e| e.ca == crt_rel) {
            assert!(openssl_verifies(&crt, &state.join(&e.cert), None), "{base}: {} signed earlier verifies", e.cert);
        }
        if base == "ca" {
            for file in &kubeconfigs {
                let (view, was) = (kubectl_view(&state.join(file)), kubectl_view(&good.join(file)));
                assert_eq!(der(&view.ca_pem), der(&read(&state, "pki/ca.crt")), "{file} embeds the new CA");
                assert_eq!((view.cert_pem, view.key_pem), (was.cert_pem, was.key_pem), "{file}");
            }
        }
        assert_eq!(pki::load(&plan, &state).unwrap().cluster_id(), id, "{base}: the cluster id stays");
        assert_eq!(certs_generate(&example_inventory(), &state), "", "{base}: converged");
    }
}

#[test]
fn a_run_stopped_after_any_key_converges_on_the_next_run() {
    // The worst place to stop: every key written, nothing else (each CA's certificate,
    // sa.pub, every leaf certificate, the kubeconfigs and the password are written after a key).
    let (_dir, good, _, _) = generated_example();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    run_ok("cp", &["-a", good.to_str().unwrap(), state.to_str().unwrap()]);
    let keys: BTreeMap<PathBuf, (String, u32)> = tree(&state)
        .into_iter()
        .filter(|(path, (hash, _))| hash != "<dir>" && path.extension().is_some_and(|e| e == "key"))
        .collect();
    for path in tree(&state).keys() {
        let full = state.join(path);
        if full.is_file() && !keys.contains_key(path) {
            std::fs::remove_file(full).unwrap();
        }
    }
    // ... and a temporary file a killed write left behind.
    std::fs::write(state.join("pki/.ca.crt.tmp.1.0"), "partial").unwrap();

    let out = certs_generate(&example_inventory(), &state);
    let lines = sorted_lines(&out);
    for base in ["ca", "front-proxy-ca", "etcd/ca"] {
        assert!(
            lines.contains(&format!(
                "renewed pki/{base}.crt (certificate was missing; re-issued from the existing key)"
            )),
            "{out}"
        );
    }
    assert!(lines.iter().all(|l| !l.ends_with(".key")), "no key is created or changed: {out}");
    assert!(lines.contains(&"created pki/sa.pub".to_string()) && lines.contains(&"created admin.conf".to_string()));
    let after = tree(&state);
    for (path, entry) in &keys {
        assert_eq!(&after[path], entry, "{} byte-identical", path.display());
    }
    for e in expected_leaves() {
        assert!(openssl_verifies(&state.join(e.ca), &state.join(&e.cert), None), "{}", e.cert);
        let key = state.join(e.cert.replace(".crt", ".key"));
        assert_eq!(pubkey_of_cert(&state.join(&e.cert)), pubkey_of_key(&key), "{} has its old key", e.cert);
    }
    assert_eq!(
        run_ok("openssl", &["pkey", "-pubin", "-in", state.join("pki/sa.pub").to_str().unwrap()]),
        pubkey_of_key(&state.join("pki/sa.key"))
    );
    let plan = kubeha::inventory::load(&example_inventory()).unwrap();
    assert_eq!(pki::load(&plan, &state).unwrap().cluster_id(), pki::load(&plan, &good).unwrap().cluster_id());
    assert_eq!(certs_generate(&example_inventory(), &state), "", "converged");
}

#[test]
fn private_files_open_to_others_are_restricted_by_generate_and_refused_by_load() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let inv = Inventory::default();
    let plan = inv.plan();
    pki::generate(&plan, &good).unwrap();
    let chmod = |state: &Path, rel: &str, mode: u32| {
        std::fs::set_permissions(state.join(rel), std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let open_files = [
        ("pki/ca.key", 0o644),
        ("pki/sa.key", 0o604),
        ("nodes/cp1/pki/apiserver.key", 0o640),
        ("admin.conf", 0o644),
        ("nodes/w1/kubelet.conf", 0o640),
        ("secrets/vrrp-password", 0o644),
    ];

    // load writes nothing: it refuses each one, naming it and saying what to do.
    for (rel, mode) in open_files {
        let state = dir.path().join(format!("load-{}", rel.replace('/', "_")));
        run_ok("cp", &["-a", good.to_str().unwrap(), state.to_str().unwrap()]);
        chmod(&state, rel, mode);
        let before = tree(&state);
        let err = pki::load(&plan, &state).unwrap_err();
        assert!(matches!(err, pki::PkiError::TooOpen { .. }), "{rel}: {err}");
        let text = err.to_string();
        assert!(text.contains(state.join(rel).to_str().unwrap()), "{text}");
        assert!(text.contains(&format!("(mode {mode:04o})")), "{text}");
        assert!(text.contains("run `kubeha certs generate`") && text.contains("chmod 600"), "{text}");
        assert_eq!(tree(&state), before, "{rel}");
    }

    // generate restricts them all, and the directories, changing no content.
    let state = dir.path().join("state");
    run_ok("cp", &["-a", good.to_str().unwrap(), state.to_str().unwrap()]);
    for (rel, mode) in open_files {
        chmod(&state, rel, mode);
    }
    let open_dirs = [("", 0o755), ("pki/etcd", 0o755), ("nodes/cp2", 0o750)];
    for (rel, mode) in open_dirs {
        chmod(&state, rel, mode);
    }
    chmod(&state, "nodes/cp3/pki/etcd/peer.key", 0o400);
    let before = tree(&state);
    let out = certs_generate(&inv.write(dir.path()), &state);
    let mut expected: Vec<String> =
        open_files.iter().map(|(rel, mode)| format!("renewed {rel} (mode was {mode:04o}; now 0600)")).collect();
    expected
        .extend(["renewed . (mode was 0755; now 0700)".into(), "renewed pki/etcd (mode was 0755; now 0700)".into()]);
    expected.push("renewed nodes/cp2 (mode was 0750; now 0700)".into());
    expected.sort();
    assert_eq!(sorted_lines(&out), expected);
    let after = tree(&state);
    for (path, (hash, mode)) in &before {
        let rel = path.to_string_lossy();
        let fixed = open_files.iter().any(|(f, _)| *f == rel) || open_dirs.iter().any(|(d, _)| *d == rel);
        let expected_mode = match (fixed, hash.as_str()) {
            (false, _) => *mode,
            (true, "<dir>") => 0o700,
            (true, _) => 0o600,
        };
        assert_eq!(after[path], (hash.clone(), expected_mode), "{rel}: same content, mode {expected_mode:04o}");
    }
    assert_eq!(after[Path::new("nodes/cp3/pki/etcd/peer.key")].1, 0o400, "a stricter mode is left alone");
    pki::load(&plan, &state).unwrap();
    assert_eq!(certs_generate(&inv.write(dir.path()), &state), "", "converged");

    // A kubeconfig rewritten for another reason says both.
    chmod(&state, "super-admin.conf", 0o644);
    let moved = Inventory { endpoint: "198.18.0.20:8443", ..Inventory::default() };
    let report = pki::generate(&moved.plan(), &state).unwrap();
    let reason = &report.renewed.iter().find(|r| r.path == Path::new("super-admin.conf")).unwrap().reason;
    assert_eq!(
        reason,
        "server is https://198.18.0.10:8443, expected https://198.18.0.20:8443; mode was 0644; now 0600"
    );
    assert_eq!(std::fs::metadata(state.join("super-admin.conf")).unwrap().permissions().mode() & 0o7777, 0o600);
}

#[test]
fn every_key_algorithm_works() {
    for (algorithm, openssl_says, signature) in [
        ("ecdsa-p256", "Private-Key: (256 bit)", "ecdsa-with-SHA256"),
        ("rsa-2048", "Private-Key: (2048 bit, 2 primes)", "sha256WithRSAEncryption"),
        ("rsa-3072", "Private-Key: (3072 bit, 2 primes)", "sha256WithRSAEncryption"),
        ("rsa-4096", "Private-Key: (4096 bit, 2 primes)", "sha256WithRSAEncryption"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let plan = Inventory { algorithm, control_planes: 1, workers: 1, ..Default::default() }.plan();
        pki::generate(&plan, &state).unwrap();
        let s = |rel: &str| state.join(rel).to_str().unwrap().to_string();
        for key in [
            "pki/ca.key",
            "pki/sa.key",
            "pki/etcd/ca.key",
            "nodes/cp1/pki/apiserver.key",
            "nodes/cp1/pki/etcd/peer.key",
        ] {
            let text = run_ok("openssl", &["pkey", "-noout", "-text", "-in", &s(key)]);
            assert!(text.starts_with(openssl_says), "{algorithm} {key}: {}", text.lines().next().unwrap_or(""));
        }
        let kubelet = kubectl_view(&state.join("nodes/w1/kubelet.conf"));
        let key = dir.path().join("kubelet.key");
        std::fs::write(&key, &kubelet.key_pem).unwrap();
        assert!(
            run_ok("openssl", &["pkey", "-noout", "-text", "-in", key.to_str().unwrap()]).starts_with(openssl_says)
        );
        for (ca, leaf) in
            [("pki/ca.crt", "nodes/cp1/pki/apiserver.crt"), ("pki/etcd/ca.crt", "nodes/cp1/pki/etcd/server.crt")]
        {
            assert!(openssl_verifies(&state.join(ca), &state.join(leaf), None), "{algorithm} {leaf}");
            let text = run_ok("openssl", &["x509", "-noout", "-text", "-in", &s(leaf)]);
            assert!(text.contains(&format!("Signature Algorithm: {signature}")), "{algorithm} {leaf}");
        }
        pki::load(&plan, &state).unwrap();
    }
}

#[test]
fn load_checks_the_state_and_hands_each_host_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let inv = Inventory::default();
    let plan = inv.plan();
    let err = pki::load(&plan, &state).unwrap_err();
    assert!(matches!(err, pki::PkiError::Missing { .. }) && err.to_string().contains("pki/ca.crt"), "{err}");

    pki::generate(&plan, &state).unwrap();
    let before = tree(&state);
    let loaded = pki::load(&plan, &state).unwrap();
    assert_eq!(tree(&state), before, "load writes nothing");

    let cp2 = plan.host("cp2").unwrap();
    let files = loaded.host_files(cp2);
    let paths: Vec<String> = files.iter().map(|f| f.path.to_string_lossy().into_owned()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "sorted by path");
    let mut expected: Vec<String> = [
        "ca",
        "front-proxy-ca",
        "etcd/ca",
        "apiserver",
        "apiserver-kubelet-client",
        "apiserver-etcd-client",
        "front-proxy-client",
        "etcd/server",
        "etcd/peer",
        "etcd/healthcheck-client",
    ]
    .iter()
    .flat_map(|b| [format!("/etc/kubernetes/pki/{b}.crt"), format!("/etc/kubernetes/pki/{b}.key")])
    .collect();
    expected.extend(["/etc/kubernetes/pki/sa.key", "/etc/kubernetes/pki/sa.pub"].map(String::from));
    expected
        .extend(["admin", "controller-manager", "scheduler", "kubelet"].map(|k| format!("/etc/kubernetes/{k}.conf")));
    expected.sort();
    assert_eq!(paths, expected);
    let on_host =
        |files: &[kubeha::files::File], path: &str| files.iter().find(|f| f.path == Path::new(path)).unwrap().clone();
    for (host_path, state_file) in [
        ("/etc/kubernetes/pki/apiserver.crt", "nodes/cp2/pki/apiserver.crt"),
        ("/etc/kubernetes/pki/etcd/peer.key", "nodes/cp2/pki/etcd/peer.key"),
        ("/etc/kubernetes/pki/ca.key", "pki/ca.key"),
        ("/etc/kubernetes/pki/sa.pub", "pki/sa.pub"),
        ("/etc/kubernetes/scheduler.conf", "nodes/cp2/scheduler.conf"),
        ("/etc/kubernetes/admin.conf", "admin.conf"),
    ] {
        assert_eq!(on_host(&files, host_path).content, read(&state, state_file), "{host_path}");
    }
    for f in &files {
        let name = f.path.to_string_lossy();
        let mode = if name.ends_with(".crt") || name.ends_with(".pub") { 0o644 } else { 0o600 };
        assert_eq!(f.mode, mode, "{name}");
    }

    let worker = loaded.host_files(plan.host("w1").unwrap());
    assert_eq!(worker.len(), 2, "{worker:?}");
    assert_eq!(on_host(&worker, "/etc/kubernetes/pki/ca.crt").content, read(&state, "pki/ca.crt"));
    let kubelet = on_host(&worker, "/etc/kubernetes/kubelet.conf");
    assert_eq!((kubelet.mode, kubelet.content.clone()), (0o600, read(&state, "nodes/w1/kubelet.conf")));

    assert_eq!(loaded.ca_cert_pem(), read(&state, "pki/ca.crt"));
    assert_eq!(loaded.etcd_ca_cert_pem(), read(&state, "pki/etcd/ca.crt"));
    let hc = loaded.etcd_healthcheck_client();
    assert_eq!(
        (hc.cert_pem.clone(), hc.key_pem.clone()),
        (read(&state, "pki/etcd/healthcheck-client.crt"), read(&state, "pki/etcd/healthcheck-client.key"))
    );
    let ec = loaded.apiserver_etcd_client();
    assert_eq!(ec.cert_pem, read(&state, "pki/apiserver-etcd-client.crt"));
    assert_eq!(loaded.admin_kubeconfig_path(), state.join("admin.conf"));
    let password = loaded.vrrp_password();
    assert!(password.len() == 8 && password.bytes().all(|b| b.is_ascii_alphanumeric()), "{password}");
    assert_eq!(read(&state, "secrets/vrrp-password"), format!("{password}\n").as_bytes());
    assert!(loaded.cluster_id().starts_with("sha256:") && loaded.cluster_id().len() == 7 + 64);

    // No Debug output carries key material or the password.
    let key_body: Vec<String> =
        String::from_utf8(hc.key_pem.clone()).unwrap().lines().skip(1).map(String::from).collect();
    for shown in [format!("{loaded:?}"), format!("{hc:?}"), format!("{files:?}")] {
        assert!(!shown.contains(&key_body[0]) && !shown.contains(password), "{shown}");
    }

    // An inventory change makes load refuse until `certs generate` ran.
    let grown = Inventory { workers: 2, ..Inventory::default() }.plan();
    let err = pki::load(&grown, &state).unwrap_err();
    assert!(err.to_string().contains("nodes/w2/kubelet.conf is missing"), "{err}");
}

#[test]
fn leaves_ending_within_the_window_and_named_ones_are_renewed_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let text =
        Inventory::default().text().replace("keyAlgorithm: ecdsa-p256", "keyAlgorithm: ecdsa-p256, validity: 10d");
    let plan = kubeha::inventory::parse(&text, Path::new("/")).unwrap();
    assert_eq!(plan.certificates.renew_before, std::time::Duration::from_secs(10 * DAY as u64 / 3), "a third of 10d");
    pki::generate(&plan, &state).unwrap();
    let before = tree(&state);
    assert!(pki::generate(&plan, &state).unwrap().renewed.is_empty(), "10d leaves are outside a 3d window");

    // A window longer than what is left: every leaf and kubeconfig client certificate, no CA.
    let window = pki::Renew { window: std::time::Duration::from_secs(11 * DAY as u64), ..pki::Renew::default() };
    let report = pki::generate_with(&plan, &state, &window).unwrap();
    let renewed: BTreeMap<String, String> =
        report.renewed.iter().map(|r| (r.path.to_string_lossy().into_owned(), r.reason.clone())).collect();
    assert_eq!(renewed.len(), 4 + 3 * 3 + 2 + 3 * 3 + 1, "{renewed:#?}");
    assert!(renewed["pki/apiserver-etcd-client.crt"].contains("within the renewal window of 11d"), "{renewed:?}");
    assert!(renewed["admin.conf"].starts_with("client certificate: expires on "), "{renewed:?}");
    assert!(!renewed.keys().any(|p| p.ends_with("ca.crt")), "a CA was renewed: {renewed:?}");
    let after = tree(&state);
    for (path, entry) in &before {
        let name = path.to_string_lossy();
        if name.ends_with(".key") {
            assert_eq!(&after[path], entry, "{name}: keys are kept");
        }
    }

    // Named ones, on one host, with new keys; the rest is kept.
    let names = ["apiserver".to_string(), "admin.conf".into(), "kubelet.conf".into()];
    let targets = pki::renewal_targets(&plan, &names, &["cp2".into()]).unwrap();
    let targets: Vec<String> = targets.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    assert_eq!(targets, ["nodes/cp2/pki/apiserver.crt", "admin.conf", "nodes/cp2/kubelet.conf"]);
    assert_eq!(pki::renewal_targets(&plan, &["apiserver.crt".into()], &[]), Err("apiserver.crt".into()));
    assert_eq!(pki::renewal_targets(&plan, &["all".into()], &[]).unwrap().len(), 4 + 3 * 3 + 2 + 3 * 3 + 1);
    let old_key = read(&state, "nodes/cp2/pki/apiserver.key");
    let old_admin = kubectl_view(&state.join("admin.conf"));
    let force =
        pki::Renew { force: targets.iter().map(PathBuf::from).collect(), new_keys: true, ..pki::Renew::default() };
    let report = pki::generate_with(&plan, &state, &force).unwrap();
    let renewed: BTreeMap<String, String> =
        report.renewed.iter().map(|r| (r.path.to_string_lossy().into_owned(), r.reason.clone())).collect();
    assert_eq!(
        renewed.keys().cloned().collect::<Vec<_>>(),
        ["admin.conf", "nodes/cp2/kubelet.conf", "nodes/cp2/pki/apiserver.crt", "nodes/cp2/pki/apiserver.key"]
    );
    assert_eq!(renewed["nodes/cp2/pki/apiserver.crt"], "renewal requested, with a new key");
    assert_ne!(read(&state, "nodes/cp2/pki/apiserver.key"), old_key, "a new key");
    let admin = kubectl_view(&state.join("admin.conf"));
    assert_ne!(admin.key_pem, old_admin.key_pem, "admin.conf has a new key");
    assert!(openssl_verifies(&state.join("pki/ca.crt"), &state.join("nodes/cp2/pki/apiserver.crt"), Some("sslserver")));
    pki::load(&plan, &state).unwrap();
}
