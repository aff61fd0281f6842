//! State directories kubeha must not use: links, foreign owners, writable paths, wrong file
//! types, and another cluster's PKI. Each is refused by `certs generate` and `render` with exit
//! code 2 and a message naming the path and the fix, and nothing is written anywhere (the
//! state directory, a link's target, the render output).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::harness::*;

/// Everything under `root` as (kind, mode, owner, content hash or link target), links not
/// followed.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let what = if meta.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            for entry in std::fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            "dir".to_string()
        } else if meta.is_file() {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()))
        } else {
            "other".to_string()
        };
        out.insert(rel, format!("{what} {:o} {}", meta.mode() & 0o7777, meta.uid()));
    }
    out
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(65534), Some(65534)).unwrap();
}

/// Moves `rel` out of the state directory to `outside` and links it back.
fn link_away(state: &Path, rel: &str, outside: &Path) {
    let path = if rel.is_empty() { state.to_path_buf() } else { state.join(rel) };
    std::fs::rename(&path, outside).unwrap();
    std::os::unix::fs::symlink(outside, &path).unwrap();
}

struct Case {
    name: &'static str,
    /// Damages a generated state directory `state`; `scratch` is a directory beside it.
    damage: fn(state: &Path, scratch: &Path),
    /// The path the message must name, relative to the state directory.
    names: &'static str,
    says: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "state directory is a link",
        damage: |s, x| link_away(s, "", &x.join("real")),
        names: "",
        says: &["is a symbolic link", "point --state-dir at the real directory"],
    },
    Case {
        name: "state directory owned by another user",
        damage: |s, _| chown_nobody(s),
        names: "",
        says: &["is owned by nobody, not by you (root)", "chown -R root"],
    },
    Case {
        name: "state directory world-writable",
        damage: |s, _| chmod(s, 0o777),
        names: "",
        says: &["is writable by other users (mode 0777)", "chmod 700"],
    },
    Case {
        name: "state directory group-writable",
        damage: |s, _| chmod(s, 0o770),
        names: "",
        says: &["(mode 0770)", "chmod 700"],
    },
    Case {
        name: "state directory is a file",
        damage: |s, _| {
            std::fs::remove_dir_all(s).unwrap();
            std::fs::write(s, "not a directory").unwrap();
        },
        names: "",
        says: &["is not a directory"],
    },
    Case {
        name: "secrets is a link",
        damage: |s, x| link_away(s, "secrets", &x.join("secrets")),
        names: "secrets",
        says: &["is a symbolic link"],
    },
    Case {
        name: "pki is a link",
        damage: |s, x| link_away(s, "pki", &x.join("pki")),
        names: "pki",
        says: &["is a symbolic link"],
    },
    Case {
        name: "pki/etcd is a link",
        damage: |s, x| link_away(s, "pki/etcd", &x.join("etcd")),
        names: "pki/etcd",
        says: &["is a symbolic link"],
    },
    Case {
        name: "a node directory is a link",
        damage: |s, x| link_away(s, "nodes/cp2", &x.join("cp2")),
        names: "nodes/cp2",
        says: &["is a symbolic link"],
    },
    Case {
        name: ".lock is a link",
        damage: |s, x| {
            std::fs::remove_file(s.join(".lock")).unwrap();
            std::os::unix::fs::symlink(x.join("created-by-kubeha"), s.join(".lock")).unwrap();
        },
        names: ".lock",
        says: &["is a symbolic link"],
    },
    Case {
        name: "the CA key is a link",
        damage: |s, x| link_away(s, "pki/ca.key", &x.join("ca.key")),
        names: "pki/ca.key",
        says: &["is a symbolic link"],
    },
    Case {
        name: "a certificate is a link",
        damage: |s, x| link_away(s, "pki/front-proxy-ca.crt", &x.join("front-proxy-ca.crt")),
        names: "pki/front-proxy-ca.crt",
        says: &["is a symbolic link"],
    },
    Case {
        name: "the VRRP password is a link",
        damage: |s, x| link_away(s, "secrets/vrrp-password", &x.join("vrrp-password")),
        names: "secrets/vrrp-password",
        says: &["is a symbolic link"],
    },
    Case {
        name: "admin.conf is a link",
        damage: |s, x| link_away(s, "admin.conf", &x.join("admin.conf")),
        names: "admin.conf",
        says: &["is a symbolic link"],
    },
    Case {
        name: "the CA key owned by another user",
        damage: |s, _| chown_nobody(&s.join("pki/ca.key")),
        names: "pki/ca.key",
        says: &["is owned by nobody"],
    },
    Case {
        name: "pki owned by another user",
        damage: |s, _| chown_nobody(&s.join("pki")),
        names: "pki",
        says: &["is owned by nobody"],
    },
    Case {
        name: "a node directory owned by another user",
        damage: |s, _| chown_nobody(&s.join("nodes/cp1")),
        names: "nodes/cp1",
        says: &["is owned by nobody"],
    },
    Case {
        name: "the CA certificate world-writable",
        damage: |s, _| chmod(&s.join("pki/ca.crt"), 0o666),
        names: "pki/ca.crt",
        says: &["(mode 0666)", "chmod go-w"],
    },
    Case {
        name: "a key group-writable",
        damage: |s, _| chmod(&s.join("pki/sa.key"), 0o620),
        names: "pki/sa.key",
        says: &["(mode 0620)"],
    },
    Case {
        name: "secrets group-writable",
        damage: |s, _| chmod(&s.join("secrets"), 0o770),
        names: "secrets",
        says: &["(mode 0770)", "chmod 700"],
    },
    Case {
        name: "the CA key is a directory",
        damage: |s, _| {
            std::fs::remove_file(s.join("pki/ca.key")).unwrap();
            std::fs::create_dir(s.join("pki/ca.key")).unwrap();
        },
        names: "pki/ca.key",
        says: &["is not a regular file"],
    },
    Case {
        name: "another cluster's state directory",
        damage: |s, _| {
            let text = std::fs::read_to_string(s.join("cluster.yaml")).unwrap();
            std::fs::write(s.join("cluster.yaml"), text.replace("cluster: lab", "cluster: prod")).unwrap();
        },
        names: "",
        says: &["holds the PKI of cluster \"prod\"", "not of this inventory's cluster \"lab\"", "--force-state-dir"],
    },
    Case {
        name: "a CA that is not the recorded one",
        damage: |s, _| {
            let text = std::fs::read_to_string(s.join("cluster.yaml")).unwrap();
            let (head, _) = text.split_once("caFingerprint").unwrap();
            std::fs::write(s.join("cluster.yaml"), format!("{head}caFingerprint: \"sha256:{}\"\n", "0".repeat(64)))
                .unwrap();
        },
        names: "pki/ca.crt",
        says: &["is not the one recorded in", "cluster.yaml", "--force-state-dir"],
    },
    Case {
        name: "an unreadable cluster record",
        damage: |s, _| std::fs::write(s.join("cluster.yaml"), "name: [lab\n").unwrap(),
        names: "cluster.yaml",
        says: &["is not a kubeha cluster record"],
    },
    Case {
        name: "the cluster record is a link",
        damage: |s, x| link_away(s, "cluster.yaml", &x.join("cluster.yaml")),
        names: "cluster.yaml",
        says: &["is a symbolic link"],
    },
];

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn unsafe_or_foreign_state_directories_are_refused_with_exit_2_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    certs_generate(&example_inventory(), &good);
    assert!(good.join("cluster.yaml").is_file(), "generate records the cluster");
    let inventory = example_inventory();
    let mut failures = Vec::new();
    for (i, case) in CASES.iter().enumerate() {
        for command in ["certs generate", "render"] {
            if command == "render" && case.names == ".lock" {
                continue; // render reads the PKI without taking the lock
            }
            let root = dir.path().join(format!("case{i}-{}", command.replace(' ', "-")));
            let (state, scratch, out_dir) = (root.join("state"), root.join("scratch"), root.join("out"));
            std::fs::create_dir_all(&scratch).unwrap();
            run_ok("cp", &["-a", good.to_str().unwrap(), state.to_str().unwrap()]);
            (case.damage)(&state, &scratch);
            let before = snapshot(&root);
            let mut args: Vec<&str> = command.split(' ').collect();
            args.extend(["-i", inventory.to_str().unwrap(), "--state-dir", state.to_str().unwrap()]);
            if command == "render" {
                args.extend(["--out", out_dir.to_str().unwrap()]);
            }
            let out = kubeha(&args);
            let stderr = stderr_of(&out);
            let named = if case.names.is_empty() { state.clone() } else { state.join(case.names) };
            let mut problems = Vec::new();
            if out.status.code() != Some(2) {
                problems.push(format!("exit {:?}", out.status.code()));
            }
            if !stderr.contains(&format!("{} ", named.display())) {
                problems.push(format!("does not name {}", named.display()));
            }
            problems.extend(case.says.iter().filter(|s| !stderr.contains(*s)).map(|s| format!("does not say {s:?}")));
            if stderr.lines().count() != 1 {
                problems.push("not one line".into());
            }
            if snapshot(&root) != before {
                problems.push("something was written".into());
            }
            if !problems.is_empty() {
                failures.push(format!("{} ({command}): {}:\n{stderr}", case.name, problems.join(", ")));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_fresh_state_directory_inside_a_foreign_one_is_not_created() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    chown_nobody(&foreign);
    let out = certs_generate_output(&example_inventory(), &foreign);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("is owned by nobody"), "{}", stderr_of(&out));
    assert_eq!(std::fs::read_dir(&foreign).unwrap().count(), 0, "nothing created in it");
}

#[test]
fn force_state_dir_takes_over_another_clusters_directory_and_old_directories_get_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    certs_generate(&example_inventory(), &state);
    let record = std::fs::read_to_string(state.join("cluster.yaml")).unwrap();
    assert!(record.contains("cluster: lab\n") && record.contains("caFingerprint: \"sha256:"), "{record}");
    assert_eq!(std::fs::metadata(state.join("cluster.yaml")).unwrap().permissions().mode() & 0o777, 0o600);

    // An inventory of another cluster is refused, then accepted when forced.
    let prod = Inventory { name: "prod", ..Inventory::default() }.write(dir.path());
    let out = certs_generate_output(&prod, &state);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    let forced = kubeha(&[
        "certs",
        "generate",
        "-i",
        prod.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--force-state-dir",
    ]);
    assert!(forced.status.success(), "{}", stderr_of(&forced));
    let record = std::fs::read_to_string(state.join("cluster.yaml")).unwrap();
    assert!(record.contains("cluster: prod\n") && record.contains("caFingerprint"), "{record}");
    // Now the lab inventory is the stranger.
    assert_eq!(certs_generate_output(&example_inventory(), &state).status.code(), Some(2));

    // A state directory of an older kubeha (no record) is used, and gets its record.
    std::fs::remove_file(state.join("cluster.yaml")).unwrap();
    certs_generate(&prod, &state);
    assert!(std::fs::read_to_string(state.join("cluster.yaml")).unwrap().contains("cluster: prod\n"));

    // Force never overrides the safety checks.
    chmod(&state, 0o777);
    let forced = kubeha(&[
        "certs",
        "generate",
        "-i",
        prod.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--force-state-dir",
    ]);
    assert_eq!(forced.status.code(), Some(2), "{}", stderr_of(&forced));
}

#[test]
fn init_and_preflight_refuse_a_foreign_or_unsafe_state_directory_before_any_connection() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    certs_generate(&example_inventory(), &state);
    let prod = Inventory { name: "prod", ..Inventory::default() }.write(dir.path());
    let inventory = prod.to_str().unwrap();
    for command in ["init", "preflight"] {
        let out = kubeha(&[command, "-i", inventory, "--state-dir", state.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{command}: {}", stderr_of(&out));
        assert!(stderr_of(&out).contains("holds the PKI of cluster \"lab\""), "{command}: {}", stderr_of(&out));
    }
    chmod(&state, 0o777);
    let out = kubeha(&["init", "-i", inventory, "--state-dir", state.to_str().unwrap(), "--force-state-dir"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("is writable by other users"), "{}", stderr_of(&out));
}
