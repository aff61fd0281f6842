//! kubeha's SSH transport against real sshd processes on lab hosts (network namespaces): tested
//! in the lab crate because it needs a lab.
//!
//! Needs root (skipped otherwise), OpenSSH (`sshd`, `ssh-keygen`, `ssh-keyscan`, `ssh-agent`, `ssh-add`), `sudo`,
//! and util-linux `script`/`setsid`. The hosts are described in
//! `tests/support/transport_fixture.rs`; tests run one at a time.

#[path = "support/transport_fixture.rs"]
mod fixture;
mod support;

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fixture::{Fixture, PASSPHRASE, serial};
use kubeha::files::File;
use kubeha::transport::{
    Credentials, DamagedFile, FileState, Output, PassphrasePrompt, Remote, SshHost, SshOptions, TransportError, Tunnel,
    put, shell,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

fn no_agent() -> Credentials {
    Credentials::new(None, PassphrasePrompt::Never)
}

fn options() -> SshOptions {
    SshOptions {
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(60),
        ..Default::default()
    }
}

/// Connects to fixture host `i` as `user` with `key`, checking against `known_hosts`.
async fn connect(
    fx: &Fixture,
    i: usize,
    user: &str,
    key: &Path,
    known_hosts: &Path,
    sudo: bool,
    creds: &Credentials,
) -> Result<SshHost, TransportError> {
    SshHost::connect(&fx.host(i, user, key, known_hosts, sudo), &options(), creds).await
}

/// Root on host `i` with the ed25519 key and both hosts in known_hosts.
async fn root(fx: &Fixture, i: usize) -> SshHost {
    let kh = fx.known_hosts("known_hosts", &[0, 1]);
    connect(fx, i, "root", &fx.keys.ed25519, &kh, false, &no_agent()).await.unwrap()
}

/// Names of kubeha temp files anywhere under `dir`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(temp_files(&path));
        } else if entry.file_name().to_string_lossy().starts_with(".kubeha-") {
            found.push(path);
        }
    }
    found
}

/// A [`Remote`] that forwards to an [`SshHost`], recording every command line and optionally
/// cutting stdin short (as a connection lost mid-upload would).
struct Recording<'a> {
    inner: &'a SshHost,
    commands: Mutex<Vec<String>>,
    truncate_stdin: bool,
}

impl<'a> Recording<'a> {
    fn new(inner: &'a SshHost, truncate_stdin: bool) -> Self {
        Recording { inner, commands: Mutex::new(Vec::new()), truncate_stdin }
    }
}

impl Remote for Recording<'_> {
    fn host(&self) -> &str {
        self.inner.host()
    }

    async fn exec(&self, command: &str, stdin: &[u8]) -> Result<Output, TransportError> {
        self.commands.lock().unwrap().push(command.to_string());
        let stdin = if self.truncate_stdin { &stdin[..stdin.len() / 2] } else { stdin };
        self.inner.exec(command, stdin).await
    }

    async fn open_tcp(&self, address: &str, port: u16) -> Result<Tunnel, TransportError> {
        self.inner.open_tcp(address, port).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_passes_stdin_and_returns_status_and_stderr() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let host = root(&fx, 0).await;

    let out = host.exec("cat; echo to-stderr >&2; exit 3", b"hello\nworld").await.unwrap();
    assert_eq!(out.stdout, b"hello\nworld");
    assert_eq!(out.stderr_text(), "to-stderr\n");
    assert_eq!(out.status, 3);

    // More than the SSH window (2 MiB) in both directions at once.
    let big: Vec<u8> = (0..5 * 1024 * 1024u32).map(|i| (i.wrapping_mul(7) % 251) as u8).collect();
    let out = host.exec("cat", &big).await.unwrap();
    assert_eq!(out.status, 0);
    assert!(out.stdout == big, "5 MiB round trip differs ({} bytes back)", out.stdout.len());

    // The command runs in sh, whatever the login shell, with quoting intact. With input, the
    // script travels in the line and `$0` is the step's label made plain (see `shell::wrap`);
    // without, it travels on stdin (`shell::wrap_stdin`) and reads no input of its own.
    let script = "printf '%s|%s|' \"$0\" \"it's $((1 + 2))\"; readlink /proc/$$/exe; cat";
    let out = host.exec(script, b"in").await.unwrap();
    let text = out.stdout_text();
    assert!(text.starts_with("printf___s__s"), "{text}");
    assert!(text.contains("|it's 3|"), "{text}");
    assert!(text.trim_end().ends_with("sh\nin"), "not run by sh: {text}");
    let out = host.exec(script, b"").await.unwrap();
    let text = out.stdout_text();
    assert!(text.starts_with("sh|it's 3|"), "{text}");
    assert!(text.ends_with("sh\n"), "not run by sh, or read its own text: {text}");

    let err = host.run("# checking the thing\necho nope >&2; exit 4", b"").await.unwrap_err();
    assert_eq!(err.to_string(), "cp1: checking the thing failed with exit status 4: nope");
    let err = host.run("false", b"").await.unwrap_err();
    assert_eq!(err.to_string(), "cp1: command `false` failed with exit status 1");
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_channels_at_once_on_one_connection() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let mut fx = Fixture::up();
    fx.echo_server(0, 7000);
    let host = root(&fx, 0).await;
    let started = Instant::now();
    // More commands than OpenSSH's MaxSessions (10), plus tunnels, all at once.
    let commands = (0..24).map(|n| {
        let host = &host;
        async move { host.exec(&format!("sleep 0.3; echo {n}"), b"").await.unwrap().stdout_text() }
    });
    let tunnels = (0..4).map(|n| {
        let host = &host;
        async move {
            let mut t = host.open_tcp("127.0.0.1", 7000).await.unwrap();
            t.write_all(format!("tunnel {n}").as_bytes()).await.unwrap();
            let mut buf = vec![0u8; format!("echo:tunnel {n}").len()];
            t.read_exact(&mut buf).await.unwrap();
            String::from_utf8(buf).unwrap()
        }
    });
    let (outs, echoes) = tokio::join!(futures::future::join_all(commands), futures::future::join_all(tunnels));
    for (n, out) in outs.iter().enumerate() {
        assert_eq!(out, &format!("{n}\n"));
    }
    for (n, echo) in echoes.iter().enumerate() {
        assert_eq!(echo, &format!("echo:tunnel {n}"));
    }
    eprintln!("24 concurrent 0.3 s commands + 4 tunnels: {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sudo_user_runs_as_root_and_password_sudo_is_named() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let kh = fx.known_hosts("known_hosts", &[0, 1]);

    let ops = connect(&fx, 1, "ops", &fx.keys.ed25519, &kh, true, &no_agent()).await.unwrap();
    assert_eq!(ops.exec("id -u", b"").await.unwrap().stdout_text(), "0\n");
    assert_eq!(ops.exec("cat", b"through sudo").await.unwrap().stdout, b"through sudo");
    let target = fx.hosts[1].dir.join("files/sudo/owned-by-root.conf");
    ops.put(&File::new(&target, 0o640, "x\n")).await.unwrap();
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (0, 0, 0o640));
    assert!(ops.authenticated_with().contains("id_ed25519"), "{}", ops.authenticated_with());

    let plain = connect(&fx, 1, "ops", &fx.keys.ed25519, &kh, false, &no_agent()).await.unwrap();
    assert_eq!(plain.exec("id -u", b"").await.unwrap().stdout_text(), format!("{}\n", fx.ops_uid));

    let err = connect(&fx, 1, "ops2", &fx.keys.ed25519, &kh, true, &no_agent()).await.unwrap_err();
    assert!(matches!(err, TransportError::SudoPasswordRequired { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("cp2: sudo asks ops2 for a password") && text.contains("NOPASSWD"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_writes_atomically_with_mode_and_owner_and_file_states_read_back() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let host = root(&fx, 0).await;
    let base = fx.hosts[0].dir.join("files/put");
    let secret = std::fs::read_to_string(&fx.keys.stranger).unwrap();
    let files = [
        File::new(base.join("pki/etcd/peer.key"), 0o600, secret.clone()),
        File::new(base.join("pki/ca.crt"), 0o644, "certificate\n"),
        File::new(base.join("keepalived/check apiserver's.sh"), 0o700, "#!/bin/sh\nexit 0\n"),
        File::new(base.join("empty"), 0o644, ""),
    ];
    let recording = Recording::new(&host, false);
    for f in &files {
        recording.put(f).await.unwrap();
    }
    assert_eq!(recording.commands.lock().unwrap().len(), files.len(), "one remote command per put");
    for f in &files {
        assert_eq!(std::fs::read(&f.path).unwrap(), f.content, "{}", f.path.display());
        let meta = std::fs::metadata(&f.path).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (f.mode, 0, 0), "{}", f.path.display());
    }
    for dir in ["pki", "pki/etcd", "keepalived"] {
        assert_eq!(std::fs::metadata(base.join(dir)).unwrap().mode() & 0o7777, 0o755, "{dir}");
    }
    assert_eq!(temp_files(&base), Vec::<PathBuf>::new());
    // The key travelled on stdin only.
    let body: Vec<&str> = secret.lines().filter(|l| !l.starts_with("-----")).collect();
    for command in recording.commands.lock().unwrap().iter() {
        assert!(body.iter().all(|l| !command.contains(l)), "key material in a command line");
    }

    // Replacing a file: new content, new mode, still root's.
    let replaced = File::new(base.join("pki/ca.crt"), 0o444, "certificate v2\n");
    host.put(&replaced).await.unwrap();
    assert_eq!(std::fs::read(&replaced.path).unwrap(), replaced.content);
    assert_eq!(std::fs::metadata(&replaced.path).unwrap().mode() & 0o7777, 0o444);

    let mut paths: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    paths.insert(1, base.join("missing"));
    paths.push(base.join("pki/missing-too"));
    let states = host.file_states(&paths).await.unwrap();
    assert_eq!(states.len(), paths.len());
    assert_eq!(states[0], Some(FileState { sha256: files[0].sha256(), mode: 0o600, uid: 0, gid: 0 }));
    assert_eq!(states[1], None);
    assert_eq!(states[2], Some(FileState { sha256: replaced.sha256(), mode: 0o444, uid: 0, gid: 0 }));
    assert_eq!(states[3].as_ref().unwrap().mode, 0o700);
    assert_eq!(states[4].as_ref().unwrap().sha256, File::new("/e", 0o644, "").sha256());
    assert_eq!(states[5], None);

    let err = host.file_states(&[base.join("pki")]).await.unwrap_err();
    assert!(matches!(err, TransportError::NotAFile { .. }), "{err}");
    let err = host.put(&File::new("relative/x", 0o644, "x")).await.unwrap_err();
    assert!(matches!(err, TransportError::InvalidPath { .. }), "{err}");
    let err = host.file_states(&[base.join("empty"), "relative/y".into()]).await.unwrap_err();
    assert_eq!(err.to_string(), "cp1: \"relative/y\" is not an absolute path with a file name");
    // A directory where the file should go: refused, not moved into it.
    let err = host.put(&File::new(base.join("pki"), 0o644, "x")).await.unwrap_err();
    assert!(err.to_string().contains("cannot rename"), "{err}");
    assert!(base.join("pki").is_dir());
    assert_eq!(temp_files(&base), Vec::<PathBuf>::new());
}

/// The files of a batch whose stream is cut at byte `cut`, with the bytes each then receives:
/// every file not wholly before the cut.
fn damaged_by_cut(files: &[File], cut: usize) -> Vec<DamagedFile> {
    let mut offset = 0;
    let mut damaged = Vec::new();
    for f in files {
        let received = cut.saturating_sub(offset).min(f.content.len());
        if received < f.content.len() {
            damaged.push(DamagedFile {
                path: f.path.clone(),
                received: Some(received as u64),
                expected: f.content.len() as u64,
            });
        }
        offset += f.content.len();
    }
    damaged
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_refuses_content_that_arrives_short() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let host = root(&fx, 0).await;
    let dir = fx.hosts[0].dir.join("files/short");
    let content: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let file = File::new(dir.join("kube-apiserver.yaml"), 0o600, content);

    // At the script level: the script receives half the bytes (the stream was cut).
    let script = put::script(&[&file], &[shell::temp_name("kube-apiserver.yaml")]).unwrap();
    let out = host.exec(&script, &file.content[..50_000]).await.unwrap();
    assert_eq!(out.status, put::CHECKSUM_MISMATCH, "{}", out.stderr_text());
    assert!(out.stderr_text().contains("damaged file 0: received 50000 of 100000 bytes ("), "{}", out.stderr_text());
    assert!(!file.path.exists());
    assert_eq!(temp_files(&dir), Vec::<PathBuf>::new());

    // A batch cut inside its second file: the second and the third are named with what arrived.
    let batch = [
        File::new(dir.join("a.conf"), 0o600, vec![b'a'; 1000]),
        File::new(dir.join("b.conf"), 0o600, vec![b'b'; 3000]),
        File::new(dir.join("c.conf"), 0o600, vec![b'c'; 10]),
    ];
    let refs: Vec<&File> = batch.iter().collect();
    let temps: Vec<String> = ["a.conf", "b.conf", "c.conf"].map(shell::temp_name).to_vec();
    let stream: Vec<u8> = batch.iter().flat_map(|f| f.content.clone()).collect();
    let out = host.exec(&put::script(&refs, &temps).unwrap(), &stream[..2500]).await.unwrap();
    assert_eq!(out.status, put::CHECKSUM_MISMATCH, "{}", out.stderr_text());
    assert_eq!(put::parse_damaged(&out.stderr), vec![(1, Some(1500)), (2, Some(0))], "{}", out.stderr_text());
    assert!(batch.iter().all(|f| !f.path.exists()));
    assert_eq!(temp_files(&dir), Vec::<PathBuf>::new());

    // Through the trait, over an existing file: the old file stays.
    let old = File::new(&file.path, 0o600, "old content\n");
    host.put(&old).await.unwrap();
    let recording = Recording::new(&host, true);
    let err = recording.put(&file).await.unwrap_err();
    assert_eq!(recording.commands.lock().unwrap().len(), 1);
    let TransportError::ChecksumMismatch { files, .. } = &err else { panic!("{err:?}") };
    assert_eq!(files, &damaged_by_cut(std::slice::from_ref(&file), 50_000));
    assert_eq!(
        err.to_string(),
        format!(
            "cp1: {} did not arrive intact (received 50000 of 100000 bytes, sha256 mismatch); nothing was installed",
            file.path.display()
        )
    );
    assert_eq!(std::fs::read(&file.path).unwrap(), old.content);
    assert_eq!(temp_files(&dir), Vec::<PathBuf>::new());
}

/// A host whose `head -c` reads ahead (a stand-in for BusyBox's, bind-mounted over the host's
/// `head` in the host's own mount namespace) is refused with the reason, before anything is
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_refuses_a_host_whose_head_reads_ahead() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let host = root(&fx, 0).await;
    let h = &fx.hosts[0].dir;
    // One big read of the pipe, then the real head on what it got: a buffered head.
    let wrapper = format!(
        "#!/bin/sh\nb=$(mktemp) || exit 1\ndd bs=65536 count=1 of=\"$b\" 2>/dev/null\n{real} \"$@\" < \"$b\"\ns=$?\nrm -f \"$b\"\nexit $s\n",
        real = h.join("real-head").display()
    );
    std::fs::write(h.join("buffered-head"), wrapper).unwrap();
    std::fs::set_permissions(h.join("buffered-head"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let head = host.exec("command -v head", b"").await.unwrap().stdout_text().trim().to_string();
    assert!(head.starts_with('/'), "{head:?}");
    let setup = format!(
        "cp -- {head} {real} && mount --bind {wrapper} {head}",
        head = shell::quote(&head),
        real = shell::quote(h.join("real-head").to_str().unwrap()),
        wrapper = shell::quote(h.join("buffered-head").to_str().unwrap()),
    );
    host.run(&setup, b"").await.unwrap();

    let dir = h.join("files/buffered-head");
    let files = [File::new(dir.join("pki/ca.crt"), 0o644, "c\n"), File::new(dir.join("etcd.yaml"), 0o600, "e\n")];
    for result in [host.put(&files[0]).await, host.put_all(&files).await] {
        let err = result.unwrap_err();
        assert!(matches!(err, TransportError::HostUnsupported { .. }), "{err:?}");
        assert!(err.to_string().starts_with("cp1: head -c reads past N bytes: kubeha needs GNU coreutils"), "{err}");
    }
    assert!(!dir.exists(), "something was created");

    host.run(&format!("umount {}", shell::quote(&head)), b"").await.unwrap();
    host.put_all(&files).await.unwrap();
    for f in &files {
        assert_eq!(std::fs::read(&f.path).unwrap(), f.content);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn put_all_writes_many_files_in_one_command_and_nothing_when_cut_short() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let host = root(&fx, 0).await;
    let base = fx.hosts[0].dir.join("files/put-all");
    let secret = std::fs::read_to_string(&fx.keys.stranger).unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let files = vec![
        File::new(base.join("pki/etcd/peer.key"), 0o600, secret.clone()),
        File::new(base.join("pki/ca.crt"), 0o644, "certificate\n"),
        File::new(base.join("empty"), 0o644, ""),
        File::new(base.join("manifests/it's big.yaml"), 0o600, big),
        File::new(base.join("keepalived/check.sh"), 0o700, "#!/bin/sh\nexit 0\n"),
    ];
    let recording = Recording::new(&host, false);
    recording.put_all(&files).await.unwrap();
    let commands = recording.commands.lock().unwrap().clone();
    assert_eq!(commands.len(), 1, "one remote command for every file");
    let body: Vec<&str> = secret.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(body.iter().all(|l| !commands[0].contains(l)), "key material in a command line");
    for f in &files {
        assert_eq!(std::fs::read(&f.path).unwrap(), f.content, "{}", f.path.display());
        let meta = std::fs::metadata(&f.path).unwrap();
        assert_eq!((meta.mode() & 0o7777, meta.uid(), meta.gid()), (f.mode, 0, 0), "{}", f.path.display());
    }
    assert_eq!(temp_files(&base), Vec::<PathBuf>::new());

    // New versions whose stream is cut in the middle: every old file stays, no temp file left.
    let newer: Vec<File> =
        files.iter().map(|f| File::new(&f.path, f.mode, [f.content.as_slice(), b"v2"].concat())).collect();
    let recording = Recording::new(&host, true);
    let err = recording.put_all(&newer).await.unwrap_err();
    assert_eq!(recording.commands.lock().unwrap().len(), 1);
    let TransportError::ChecksumMismatch { files: damaged, .. } = &err else { panic!("{err:?}") };
    let total: usize = newer.iter().map(|f| f.content.len()).sum();
    let expected = damaged_by_cut(&newer, total / 2);
    // The cut falls inside the big manifest: it and the file after it are named, no other.
    let named: Vec<PathBuf> = expected.iter().map(|d| d.path.clone()).collect();
    assert_eq!(named, [files[3].path.clone(), files[4].path.clone()]);
    assert_eq!(damaged, &expected);
    let text = err.to_string();
    assert!(text.starts_with("cp1: 2 files did not arrive intact (sha256 mismatch): "), "{text}");
    let big = &expected[0];
    let big_text = format!("{} (received {} of 300002 bytes)", big.path.display(), big.received.unwrap());
    assert!(text.contains(&big_text), "{text}");
    assert!(text.contains(&format!("{} (received 0 of 19 bytes)", files[4].path.display())), "{text}");
    for f in &files {
        assert_eq!(std::fs::read(&f.path).unwrap(), f.content, "{} was replaced", f.path.display());
    }
    assert_eq!(temp_files(&base), Vec::<PathBuf>::new());
    host.put_all(&newer).await.unwrap();
    for f in &newer {
        assert_eq!(std::fs::read(&f.path).unwrap(), f.content, "{}", f.path.display());
    }
    host.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_connection_mid_upload_installs_nothing_and_stale_temp_files_are_removed() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let host = root(&fx, 0).await;
    let dir = fx.hosts[0].dir.join("files/cut");
    let file = File::new(dir.join("big.bin"), 0o600, vec![7u8; 256 * 1024 * 1024]);

    let upload = host.put(&file);
    let cut = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while temp_files(&dir).is_empty() {
            assert!(Instant::now() < deadline, "the upload never started");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fx.kill_sessions(0)
    };
    let (result, killed) = tokio::join!(upload, cut);
    assert!(killed > 0);
    let err = result.unwrap_err();
    assert!(matches!(err, TransportError::Disconnected { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cp1: connection lost during kubeha put "), "{err}");
    // The remote script sees end-of-input, fails its checksum and removes its temporary file.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !temp_files(&dir).is_empty() {
        assert!(Instant::now() < deadline, "temporary file left: {:?}", temp_files(&dir));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!file.path.exists());

    // What a killed script would leave behind: removed by the cleanup helper, nothing else.
    let host = root(&fx, 0).await;
    let stale = dir.join(".kubeha-etcd.yaml.0123456789abcdef.tmp");
    let keep = dir.join("etcd.yaml");
    std::fs::write(&stale, "partial").unwrap();
    std::fs::write(&keep, "keep").unwrap();
    let removed = host.remove_stale_temp_files(&[dir.clone(), dir.join("absent")]).await.unwrap();
    assert_eq!(removed, vec![stale.clone()]);
    assert!(!stale.exists() && keep.exists());
    // The same cleanup and the states of the files to write, in one command.
    std::fs::write(&stale, "partial").unwrap();
    let states = host
        .file_states_after_cleanup(std::slice::from_ref(&dir), &[keep.clone(), dir.join("new.yaml")])
        .await
        .unwrap();
    assert!(!stale.exists() && keep.exists());
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].as_ref().map(|s| s.sha256.as_str()), Some(File::new(&keep, 0o644, "keep").sha256().as_str()));
    assert_eq!(states[1], None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_host_key_is_refused_with_its_fingerprint_and_accept_new_records_it() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let kh = fx.dir.join("new/known_hosts");
    let err = connect(&fx, 0, "root", &fx.keys.ed25519, &kh, false, &no_agent()).await.unwrap_err();
    assert!(matches!(err, TransportError::UnknownHostKey { .. }), "{err:?}");
    let text = err.to_string();
    let keygen = Command::new("ssh-keygen").arg("-lf").arg(fx.host_key_pub(0)).output().unwrap();
    let fingerprint = String::from_utf8(keygen.stdout).unwrap().split_whitespace().nth(1).unwrap().to_string();
    assert!(fingerprint.starts_with("SHA256:"));
    assert!(text.contains(&fingerprint), "{text}");
    assert!(text.contains(&format!("ssh-keyscan -p 22 198.18.250.11 >> {}", kh.display())), "{text}");
    assert!(text.contains("--accept-new-host-keys"), "{text}");
    assert!(!kh.exists());

    let accept = SshOptions { accept_new_host_keys: true, ..options() };
    for i in [0, 1] {
        let host = fx.host(i, "root", &fx.keys.ed25519, &kh, false);
        SshHost::connect(&host, &accept, &no_agent()).await.unwrap();
    }
    let recorded = std::fs::read_to_string(&kh).unwrap();
    let host_key = std::fs::read_to_string(fx.host_key_pub(0)).unwrap();
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    assert!(recorded.contains(&format!("198.18.250.11 {} {}\n", host_key[0], host_key[1])), "{recorded}");
    assert!(recorded.contains("\n[198.18.250.12]:2222 "), "{recorded}");
    assert_eq!(std::fs::metadata(&kh).unwrap().permissions().mode() & 0o777, 0o600);
    // From now on the key is known: no accept-new needed, nothing appended.
    connect(&fx, 0, "root", &fx.keys.ed25519, &kh, false, &no_agent()).await.unwrap();
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), recorded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changed_host_key_is_always_refused_naming_file_and_line() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    // Host 1's name with host 2's key, after a comment line.
    let other = fx.keyscan(1, false);
    let other_ed25519 = other.lines().find(|l| l.contains("ssh-ed25519")).unwrap();
    let key = other_ed25519.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
    let kh = fx.dir.join("changed_known_hosts");
    std::fs::write(&kh, format!("# recorded long ago\n198.18.250.11 {key}\n")).unwrap();

    for accept_new in [false, true] {
        let options = SshOptions { accept_new_host_keys: accept_new, ..options() };
        let host = fx.host(0, "root", &fx.keys.ed25519, &kh, false);
        let err = SshHost::connect(&host, &options, &no_agent()).await.unwrap_err();
        assert!(matches!(err, TransportError::HostKeyChanged { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&format!("{} at line(s) 2", kh.display())), "{text}");
        assert!(text.starts_with("cp1: HOST KEY CHANGED"), "{text}");
    }
    assert_eq!(std::fs::read_to_string(&kh).unwrap().lines().count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyscan_output_works_hashed_and_with_one_key_type() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let hashed = fx.dir.join("hashed");
    std::fs::write(&hashed, fx.keyscan(1, true)).unwrap();
    assert!(std::fs::read_to_string(&hashed).unwrap().contains("|1|"));
    connect(&fx, 1, "root", &fx.keys.ed25519, &hashed, false, &no_agent()).await.unwrap();

    // Only host 2's ECDSA key recorded: kubeha asks for that type first, as ssh does.
    let ecdsa_only = fx.dir.join("ecdsa_only");
    let scan = fx.keyscan(1, false);
    std::fs::write(&ecdsa_only, scan.lines().filter(|l| l.contains("ecdsa-sha2")).collect::<Vec<_>>().join("\n"))
        .unwrap();
    connect(&fx, 1, "root", &fx.keys.ed25519, &ecdsa_only, false, &no_agent()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_types_and_auth_failures() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let kh = fx.known_hosts("known_hosts", &[0, 1]);
    for key in [&fx.keys.ed25519, &fx.keys.ecdsa, &fx.keys.rsa, &fx.keys.rsa_pem] {
        let host = connect(&fx, 0, "root", key, &kh, false, &no_agent()).await.unwrap();
        assert!(host.authenticated_with().starts_with(key.to_str().unwrap()), "{}", host.authenticated_with());
        assert_eq!(host.exec("id -un", b"").await.unwrap().stdout_text(), "root\n");
    }

    let err = connect(&fx, 0, "root", &fx.keys.stranger, &kh, false, &no_agent()).await.unwrap_err();
    assert!(matches!(err, TransportError::AuthFailed { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("cp1: SSH authentication as root@198.18.250.11:22 failed"), "{text}");
    assert!(text.contains(fx.keys.stranger.to_str().unwrap()), "{text}");

    let err = connect(&fx, 1, "nobody-here", &fx.keys.ed25519, &kh, false, &no_agent()).await.unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("cp2: SSH authentication as nobody-here@198.18.250.12:2222 failed"), "{text}");
    assert!(text.contains(fx.keys.ed25519.to_str().unwrap()), "{text}");

    let err = connect(&fx, 0, "root", &fx.dir.join("keys/absent"), &kh, false, &no_agent()).await.unwrap_err();
    assert!(matches!(err, TransportError::IdentityFile { .. }), "{err:?}");

    // An agent socket that leads nowhere is noted, and the identity file still works.
    let broken = Credentials::new(Some(fx.dir.join("no-agent.sock")), PassphrasePrompt::Never);
    connect(&fx, 0, "root", &fx.keys.ed25519, &kh, false, &broken).await.unwrap();
    let err = connect(&fx, 0, "root", &fx.keys.stranger, &kh, false, &broken).await.unwrap_err().to_string();
    assert!(err.contains("no-agent.sock (unusable: ") && err.contains("id_stranger"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passphrase_protected_key_through_ssh_agent() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let mut fx = Fixture::up();
    let kh = fx.known_hosts("known_hosts", &[0, 1]);
    let encrypted = fx.keys.encrypted.clone();

    let err = connect(&fx, 0, "root", &encrypted, &kh, false, &no_agent()).await.unwrap_err();
    assert!(matches!(err, TransportError::PassphraseNeeded { .. }), "{err:?}");
    assert!(err.to_string().contains(&format!("ssh-add {}", encrypted.display())), "{err}");

    let socket = fx.agent_with(&encrypted, PASSPHRASE);
    let creds = Credentials::new(Some(socket), PassphrasePrompt::Never);
    for i in [0, 1] {
        let host = connect(&fx, i, "root", &encrypted, &kh, false, &creds).await.unwrap();
        assert!(host.authenticated_with().starts_with("ssh-agent key SHA256:"), "{}", host.authenticated_with());
        assert_eq!(host.exec("id -u", b"").await.unwrap().stdout_text(), "0\n");
    }
    // The agent holds a key the user does not accept: the identity file is tried after it.
    let host = connect(&fx, 0, "ops", &fx.keys.ed25519, &kh, true, &creds).await.unwrap();
    assert!(host.authenticated_with().starts_with(fx.keys.ed25519.to_str().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passphrase_is_asked_once_per_key_file_for_all_hosts() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let kh = fx.known_hosts("known_hosts", &[0, 1]);
    let asked = Arc::new(AtomicU32::new(0));
    let counter = asked.clone();
    let prompt = PassphrasePrompt::Function(Arc::new(move |_path: &Path, _attempt| {
        counter.fetch_add(1, Ordering::SeqCst);
        Some(Zeroizing::new(PASSPHRASE.to_string()))
    }));
    let creds = Credentials::new(None, prompt);
    let (a, b) = tokio::join!(
        connect(&fx, 0, "root", &fx.keys.encrypted, &kh, false, &creds),
        connect(&fx, 1, "root", &fx.keys.encrypted, &kh, false, &creds),
    );
    a.unwrap();
    b.unwrap();
    connect(&fx, 0, "root", &fx.keys.encrypted, &kh, false, &creds).await.unwrap();
    assert_eq!(asked.load(Ordering::SeqCst), 1);

    let wrong = Arc::new(AtomicU32::new(0));
    let counter = wrong.clone();
    let prompt = PassphrasePrompt::Function(Arc::new(move |_path: &Path, _attempt| {
        counter.fetch_add(1, Ordering::SeqCst);
        Some(Zeroizing::new("not it".to_string()))
    }));
    let creds = Credentials::new(None, prompt);
    let err = connect(&fx, 0, "root", &fx.keys.encrypted, &kh, false, &creds).await.unwrap_err();
    assert!(matches!(err, TransportError::WrongPassphrase { attempts: 3, .. }), "{err:?}");
    // The failure is remembered: the second host does not ask again.
    connect(&fx, 1, "root", &fx.keys.encrypted, &kh, false, &creds).await.unwrap_err();
    assert_eq!(wrong.load(Ordering::SeqCst), 3);
}

const CHILD: &str = "child_connect_with_terminal_prompt";

fn child_command(fx: &Fixture, kh: &Path, mode: &str) -> Vec<(String, String)> {
    let h = &fx.hosts[0];
    vec![
        ("KHTR_CHILD_MODE".into(), mode.into()),
        ("KHTR_CHILD_ADDRESS".into(), h.address.to_string()),
        ("KHTR_CHILD_PORT".into(), h.port.to_string()),
        ("KHTR_CHILD_KEY".into(), fx.keys.encrypted.to_str().unwrap().into()),
        ("KHTR_CHILD_KNOWN_HOSTS".into(), kh.to_str().unwrap().into()),
    ]
}

/// The operator's case: a passphrase typed on a terminal (a pseudo-terminal made by `script`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passphrase_prompt_on_a_terminal() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let kh = fx.known_hosts("known_hosts", &[0]);
    let exe = std::env::current_exe().unwrap();
    let line =
        format!("{} --exact {CHILD} --ignored --nocapture --test-threads=1", shell::quote(exe.to_str().unwrap()));
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .envs(child_command(&fx, &kh, "terminal"))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.lock().unwrap().contains("Enter passphrase for key") {
        assert!(Instant::now() < deadline, "no prompt; output: {}", seen.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    stdin.write_all(format!("{PASSPHRASE}\n").as_bytes()).unwrap();
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "child still running; output: {}", seen.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(stdin);
    reader.join().unwrap();
    let output = seen.lock().unwrap().clone();
    assert!(output.contains("CHILD-OK uid=0"), "{output}");
    assert!(!output.contains(PASSPHRASE), "the passphrase was echoed: {output}");
    assert_eq!(output.matches("Enter passphrase for key").count(), 1, "{output}");
}

/// Without a controlling terminal (`setsid`), an encrypted key fails with advice to use ssh-agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passphrase_without_a_terminal_points_to_ssh_agent() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let kh = fx.known_hosts("known_hosts", &[0]);
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("setsid")
        .arg("-w")
        .arg(exe)
        .args(["--exact", CHILD, "--ignored", "--nocapture", "--test-threads=1"])
        .envs(child_command(&fx, &kh, "no-terminal"))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("CHILD-ERR"), "{stdout}");
    assert!(stdout.contains("there is no terminal to ask for it: load it into ssh-agent"), "{stdout}");
}

/// Run by the two tests above in a child process (with a terminal, or without one); it does
/// nothing when started any other way.
#[tokio::test]
#[ignore = "helper: started by passphrase_prompt_on_a_terminal and passphrase_without_a_terminal_points_to_ssh_agent"]
async fn child_connect_with_terminal_prompt() {
    let Ok(mode) = std::env::var("KHTR_CHILD_MODE") else {
        eprintln!("helper only; see passphrase_prompt_on_a_terminal");
        return;
    };
    let env = |k: &str| std::env::var(k).unwrap();
    let host = kubeha::plan::Host {
        name: "cp1".into(),
        address: env("KHTR_CHILD_ADDRESS").parse().unwrap(),
        role: kubeha::plan::Role::ControlPlane,
        ssh: kubeha::plan::Ssh {
            user: "root".into(),
            port: env("KHTR_CHILD_PORT").parse().unwrap(),
            identity_file: env("KHTR_CHILD_KEY").into(),
            known_hosts_file: env("KHTR_CHILD_KNOWN_HOSTS").into(),
            sudo: false,
            host: None,
            jumps: Vec::new(),
        },
        node: Default::default(),
    };
    let creds = Credentials::new(None, PassphrasePrompt::Terminal);
    match SshHost::connect(&host, &options(), &creds).await {
        Ok(h) => println!("CHILD-OK uid={}", h.exec("id -u", b"").await.unwrap().stdout_text().trim()),
        Err(e) => println!("CHILD-ERR ({mode}) {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tunnels_reach_host_ports_and_say_why_they_fail() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let mut fx = Fixture::up();
    fx.echo_server(0, 7000);
    let kh = fx.known_hosts("known_hosts", &[0, 1]);
    let host = root(&fx, 0).await;
    let mut tunnel = host.open_tcp("127.0.0.1", 7000).await.unwrap();
    let mut hello = [0u8; 5];
    tunnel.read_exact(&mut hello).await.unwrap();
    assert_eq!(&hello, b"echo:");
    let payload: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 249) as u8).collect();
    let (mut rd, mut wr) = tokio::io::split(tunnel);
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        wr.write_all(&sent).await.unwrap();
        wr.flush().await.unwrap();
        wr
    });
    let mut back = vec![0u8; payload.len()];
    rd.read_exact(&mut back).await.unwrap();
    assert!(back == payload, "3 MiB through the tunnel came back different");
    drop(writer.await.unwrap());

    let err = host.open_tcp("127.0.0.1", 7001).await.err().expect("a tunnel to a closed port");
    assert!(matches!(err, TransportError::TargetUnreachable { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cp1: the host could not connect to 127.0.0.1:7001"), "{err}");

    // ops has `AllowTcpForwarding no`.
    let ops = connect(&fx, 0, "ops", &fx.keys.ed25519, &kh, true, &no_agent()).await.unwrap();
    let err = ops.open_tcp("127.0.0.1", 7000).await.err().expect("a tunnel without forwarding");
    assert!(matches!(err, TransportError::ForwardingRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("AllowTcpForwarding no"), "{err}");
    // The connection is still fine afterwards.
    assert_eq!(host.exec("echo ok", b"").await.unwrap().stdout_text(), "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_timeout_and_refused_port() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let kh = fx.known_hosts("known_hosts", &[0]);
    let short = SshOptions { connect_timeout: Duration::from_secs(1), ..options() };
    let started = Instant::now();
    let err = SshHost::connect(&fx.missing_host(&kh), &short, &no_agent()).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, TransportError::Timeout { .. }), "{err:?}");
    assert_eq!(err.to_string(), "ghost: connecting to 198.18.250.99:22 timed out after 1s");
    assert!(took < Duration::from_secs(3), "{took:?}");

    let mut refused = fx.host(0, "root", &fx.keys.ed25519, &kh, false);
    refused.ssh.port = 2200;
    let err = SshHost::connect(&refused, &short, &no_agent()).await.unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot connect to 198.18.250.11:2200"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn command_timeout_leaves_the_connection_usable() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let host = root(&fx, 0).await;
    let started = Instant::now();
    let err = host.exec_with_timeout("# waiting for etcd\nsleep 30", b"", Duration::from_secs(1)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(err.to_string(), "cp1: waiting for etcd timed out after 1s");
    assert_eq!(host.exec("echo still here", b"").await.unwrap().stdout_text(), "still here\n");
    // The host ended the command itself (coreutils `timeout` on its process group).
    let sleepers = || {
        fx.session_processes(0)
            .into_iter()
            .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\x0030")))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(3);
    while sleepers() > 0 {
        assert!(Instant::now() < deadline, "the timed-out command is still running on the host");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A command that exits 124 by itself before its limit is not a timeout.
    assert_eq!(host.exec("exit 124", b"").await.unwrap().status, 124);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_sshd_gives_a_disconnected_error() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let host = root(&fx, 0).await;
    let running = host.exec("# long step\nsleep 20", b"");
    let kill = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        fx.kill_sessions(0)
    };
    let started = Instant::now();
    let (result, killed) = tokio::join!(running, kill);
    assert!(killed > 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = result.unwrap_err();
    assert!(matches!(err, TransportError::Disconnected { .. }), "{err:?}");
    assert!(err.to_string().starts_with("cp1: connection lost during long step"), "{err}");
    let err = host.exec("true", b"").await.unwrap_err();
    assert!(matches!(err, TransportError::Disconnected { .. }), "{err:?}");
    assert!(host.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keepalives_detect_a_host_that_stopped_answering() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let kh = fx.known_hosts("known_hosts", &[0]);
    let quick = SshOptions { keepalive_interval: Duration::from_secs(1), keepalive_max: 2, ..options() };
    let host = SshHost::connect(&fx.host(0, "root", &fx.keys.ed25519, &kh, false), &quick, &no_agent()).await.unwrap();
    assert!(fx.freeze_sessions(0) > 0);
    let started = Instant::now();
    // The command timeout (60 s) is far away: only keepalives can end this early.
    let err = host.exec("# a step\ntrue", b"").await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, TransportError::Disconnected { .. }), "{err:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    eprintln!("unanswered keepalives noticed after {took:?}: {err}");
    assert!(host.is_closed());
}

/// sshd 9.2 at LogLevel DEBUG3 logs the exec command line of non-root users (through its
/// monitor's audit hook: `mm_audit_run_command entering command ...`), not of root. Neither
/// shows key material after an upload of a private key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sshd_logs_hold_no_key_material() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let kh = fx.known_hosts("known_hosts", &[0, 1]);
    let secret = std::fs::read_to_string(&fx.keys.stranger).unwrap();
    let body: Vec<&str> = secret.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!body.is_empty());

    let ops = connect(&fx, 1, "ops", &fx.keys.ed25519, &kh, true, &no_agent()).await.unwrap();
    let root_host = root(&fx, 0).await;
    for (i, host) in [(1, &ops), (0, &root_host)] {
        let path = fx.hosts[i].dir.join("files/log/admin.key");
        host.put(&File::new(&path, 0o600, secret.clone())).await.unwrap();
        host.exec("echo khtr-log-marker", b"").await.unwrap();
    }
    drop(ops);
    drop(root_host);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let ops_log = fx.log(1);
    let logged: Vec<&str> = ops_log.lines().filter(|l| l.contains("mm_audit_run_command entering command ")).collect();
    // The scripts travel base64-encoded: decode each logged command line to see what ran. sshd
    // cuts long log lines, so a long script's encoding may end early: decode what is there.
    let decoded = |log: &str| -> Vec<String> {
        use base64::Engine;
        log.lines()
            .filter_map(|l| l.split_once("sh -c 'eval \"$(printf %s "))
            .map(|(_, rest)| {
                let encoded: String =
                    rest.chars().take_while(|c| c.is_ascii_alphanumeric() || "+/=".contains(*c)).collect();
                let whole = &encoded[..encoded.len() / 4 * 4];
                let bytes = base64::engine::general_purpose::STANDARD.decode(whole).unwrap_or_default();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect()
    };
    // A write (its contents on stdin) carries its script in the line; a command without input
    // sends its script on stdin, so its line is only `sh -s`.
    assert!(logged.iter().any(|l| l.contains("sudo -n -- timeout -k 5 60.000 sh -c 'eval ")), "{logged:#?}");
    assert!(logged.iter().any(|l| l.ends_with("sudo -n -- timeout -k 5 60.000 sh -s")), "{logged:#?}");
    let ops_scripts = decoded(&ops_log);
    assert!(ops_scripts.iter().any(|s| s.starts_with("# kubeha put ")), "{logged:#?}");
    let root_log = fx.log(0);
    let root_scripts = decoded(&root_log);
    eprintln!("root's command lines in the sshd log: {}", root_scripts.iter().any(|s| s.starts_with("# kubeha put ")));
    for (name, log, scripts) in [("ops", &ops_log, &ops_scripts), ("root", &root_log, &root_scripts)] {
        for line in &body {
            assert!(!log.contains(line), "key material in the sshd log of the {name} host");
            assert!(scripts.iter().all(|s| !s.contains(line)), "key material in a command of the {name} host");
        }
    }
}

/// Round-trip timings (printed, not asserted): run with `--nocapture` to see them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn timings() {
    if !support::require_root() {
        return;
    }
    let _serial = serial();
    let fx = Fixture::up();
    let kh = fx.known_hosts("known_hosts", &[0, 1]);
    let started = Instant::now();
    let root_host = connect(&fx, 0, "root", &fx.keys.ed25519, &kh, false, &no_agent()).await.unwrap();
    eprintln!("connect + auth (root): {:?}", started.elapsed());
    let started = Instant::now();
    let ops = connect(&fx, 1, "ops", &fx.keys.ed25519, &kh, true, &no_agent()).await.unwrap();
    eprintln!("connect + auth + sudo check (ops): {:?}", started.elapsed());

    for (name, host, i) in [("root", &root_host, 0), ("ops+sudo", &ops, 1)] {
        let n = 50;
        let started = Instant::now();
        for _ in 0..n {
            assert_eq!(host.exec("true", b"").await.unwrap().status, 0);
        }
        eprintln!("{name}: exec `true` x{n} sequential: {:?} each", started.elapsed() / n);

        let started = Instant::now();
        let all = futures::future::join_all((0..n).map(|_| host.exec("true", b""))).await;
        assert!(all.iter().all(|o| o.as_ref().unwrap().status == 0));
        eprintln!("{name}: exec `true` x{n} concurrent: {:?} total", started.elapsed());

        let dir = fx.hosts[i].dir.join("files/timing");
        let small: Vec<File> =
            (0..n).map(|k| File::new(dir.join(format!("f{k}.yaml")), 0o600, vec![b'x'; 4096])).collect();
        let started = Instant::now();
        for f in &small {
            host.put(f).await.unwrap();
        }
        eprintln!("{name}: put 4 KiB x{n} sequential: {:?} each", started.elapsed() / n);

        let big = File::new(dir.join("big.bin"), 0o600, vec![1u8; 32 * 1024 * 1024]);
        let started = Instant::now();
        host.put(&big).await.unwrap();
        eprintln!("{name}: put 32 MiB: {:?}", started.elapsed());
        let states = host.file_states(&small.iter().map(|f| f.path.clone()).collect::<Vec<_>>()).await.unwrap();
        assert!(states.iter().zip(&small).all(|(s, f)| s.as_ref().unwrap().sha256 == f.sha256()));
    }
}
