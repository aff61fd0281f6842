//! The command line's conventions, on the built binary: completions that the shells accept, man
//! pages that groff renders, `version -o json`, and the sample inventory `config example` prints.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn kubeha(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubeha")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Whether `program` is installed (the tests that need a shell say so and skip when it is not).
fn installed(program: &str) -> bool {
    let found = Command::new("sh").arg("-c").arg(format!("command -v {program}")).output().unwrap().status.success();
    if !found {
        eprintln!("skipping the {program} check: {program} is not installed");
    }
    found
}

/// `shell -n` (parse without running) on `script`.
fn parses(shell: &str, script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("completion");
    std::fs::write(&file, script).unwrap();
    let out = Command::new(shell).arg("-n").arg(&file).output().unwrap();
    assert!(out.status.success(), "{shell} -n refused the completion: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn completions_parse_in_their_shells_and_know_every_command() {
    for (shell, program) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        let script = ok(&kubeha(&["completion", shell]));
        for command in ["validate", "init", "certs", "check-expiration", "kubeconfig"] {
            assert!(script.contains(command), "the {shell} completion lacks {command}");
        }
        if installed(program) {
            parses(program, &script);
        }
    }
    // bash: completing `kubeha ce` offers `certs`.
    if installed("bash") {
        let script = ok(&kubeha(&["completion", "bash"]));
        let probe = format!(
            "{script}\nCOMP_WORDS=(kubeha ce); COMP_CWORD=1; COMP_LINE='kubeha ce'; COMP_POINT=9; _kubeha kubeha ce kubeha; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let out = Command::new("bash").arg("-c").arg(probe).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "certs", "{}", String::from_utf8_lossy(&out.stderr));
    }
    let bad = kubeha(&["completion", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn man_pages_render_for_every_command() {
    let page = ok(&kubeha(&["man"]));
    assert!(page.contains(".TH kubeha 1"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let out = kubeha(&["man", "--out", dir.path().to_str().unwrap()]);
    ok(&out);
    for name in ["kubeha.1", "kubeha-init.1", "kubeha-certs.1", "kubeha-certs-renew.1", "kubeha-kubeconfig.1"] {
        assert!(dir.path().join(name).is_file(), "no {name}");
    }
    if installed("groff") {
        let rendered = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww"])
            .arg(dir.path().join("kubeha-init.1"))
            .output()
            .unwrap();
        assert!(rendered.status.success(), "{}", String::from_utf8_lossy(&rendered.stderr));
        let text = String::from_utf8_lossy(&rendered.stdout);
        assert!(text.contains("--dry-run"), "{text}");
    }
}

#[test]
fn version_reports_the_supported_versions_as_json() {
    let json: serde_json::Value = serde_json::from_str(&ok(&kubeha(&["version", "-o", "json"]))).unwrap();
    assert_eq!(json["kubeha"], env!("CARGO_PKG_VERSION"));
    let minors: Vec<&str> =
        json["kubernetes"].as_array().unwrap().iter().map(|m| m["minor"].as_str().unwrap()).collect();
    assert!(minors.contains(&"v1.31") && minors.len() >= 6, "{minors:?}");
    assert!(ok(&kubeha(&["version"])).starts_with(&format!("kubeha {}\n", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn the_sample_inventory_validates_from_stdin() {
    let sample = ok(&kubeha(&["config", "example"]));
    assert!(sample.lines().filter(|l| l.trim_start().starts_with('#')).count() > 10, "hardly commented");
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubeha"))
        .args(["validate", "-i", "-", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(sample.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let plan: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(plan["name"], "prod-eu1");
}

#[test]
fn validate_warns_about_hosts_remove_node_took_out() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("cluster.yaml");
    std::fs::write(&inventory, ok(&kubeha(&["config", "example"]))).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let args = ["validate", "-i", inventory.to_str().unwrap(), "--state-dir", state.to_str().unwrap()];
    let out = kubeha(&args);
    ok(&out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"), "{}", String::from_utf8_lossy(&out.stderr));
    // What `remove-node cp3` records; the inventory still lists cp3.
    std::fs::write(state.join("removed-hosts"), "cp3\nold-host\n").unwrap();
    let out = kubeha(&args);
    ok(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: cp3: was removed from the cluster with `kubeha remove-node`"), "{err}");
    assert!(err.contains("`kubeha join-node cp3`") && !err.contains("old-host"), "{err}");
}

#[test]
fn kubeconfig_refuses_a_bad_server_and_a_missing_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("cluster.yaml");
    std::fs::write(&inventory, ok(&kubeha(&["config", "example"]))).unwrap();
    let inv = inventory.to_str().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let out = kubeha(&["kubeconfig", "-i", inv, "--state-dir", state, "--server", "http://x:6443"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an https:// URL"));
    let out = kubeha(&["kubeconfig", "-i", inv, "--state-dir", state]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run `kubeha certs generate`"), "{err}");
    // Once generated: a kubeconfig for a new user, which nothing else keeps.
    ok(&kubeha(&["certs", "generate", "-i", inv, "--state-dir", state]));
    let conf = ok(&kubeha(&["kubeconfig", "-i", inv, "--state-dir", state, "--user", "alice", "--group", "devs"]));
    assert!(conf.contains("user: alice") && conf.contains("client-key-data: "), "{conf}");
    let admin = ok(&kubeha(&["kubeconfig", "-i", inv, "--state-dir", state]));
    assert_eq!(admin, std::fs::read_to_string(dir.path().join("state/admin.conf")).unwrap());
}
