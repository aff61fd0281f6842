//! Starting a container's process on the lab host.
//!
//! The first element of `command` is looked up on the container's PATH, as a runtime would;
//! `kube-apiserver`, `kube-controller-manager` and `kube-scheduler`, which the lab cannot run,
//! become `kubeha-lab stand-in <component> <flags...>` with the image in `KUBEHA_LAB_IMAGE`. The
//! environment is the container's alone (no variable of the supervisor leaks in). Each process
//! leads its own process group, so stopping the pod reaches everything it started.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::manifest::Container;
use super::volumes::Bind;

/// Components the lab replaces with `kubeha-lab stand-in`.
pub const STAND_INS: [&str; 3] = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"];

/// The PATH of every container unless its `env` sets one (a typical image's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment variable carrying the container image to a stand-in.
pub const IMAGE_ENV: &str = "KUBEHA_LAB_IMAGE";

/// What starting a container needs from its host.
pub struct Host<'a> {
    pub name: &'a str,
    /// The `kubeha-lab` binary (stand-ins and private mount namespaces).
    pub exe: &'a Path,
}

/// Starts `container`; returns its PID. `Err` is the runtime's start error.
pub fn spawn(host: &Host, container: &Container, binds: &[Bind], log: &std::fs::File) -> Result<u32, String> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOSTNAME".into(), host.name.into()),
        ("HOME".into(), "/root".into()),
    ];
    for var in &container.env {
        if let Some(value) = &var.value {
            env.retain(|(k, _)| *k != var.name);
            env.push((var.name.clone(), value.clone()));
        }
    }
    if let Some(image) = &container.image {
        env.push((IMAGE_ENV.into(), image.clone()));
    }
    let path = env.iter().rev().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone()).unwrap_or_default();
    let first = &container.command[0];
    let component = Path::new(first).file_name().and_then(|n| n.to_str()).filter(|n| STAND_INS.contains(n));
    let mut argv: Vec<String> = Vec::new();
    let program = match component {
        Some(c) => {
            argv.extend(["stand-in".to_string(), c.to_string()]);
            host.exe.to_path_buf()
        }
        None => lookup(first, &path)?,
    };
    argv.extend(container.command[1..].iter().cloned());
    argv.extend(container.args.iter().cloned());

    // Always through `kubeha-lab pod-exec`: it sets up the binds (if any) and execs the program
    // with a clean signal mask (the supervisor blocks the signals it reads from a signalfd, and a
    // blocked mask survives spawn).
    let mut cmd = Command::new(host.exe);
    cmd.arg("pod-exec");
    for b in binds {
        cmd.arg(if b.read_only { "--bind-ro" } else { "--bind" }).arg(&b.source).arg(&b.target);
    }
    cmd.arg("--").arg(&program).args(&argv);
    let out = log.try_clone().map_err(|e| format!("cannot open the pod log: {e}"))?;
    let err = log.try_clone().map_err(|e| format!("cannot open the pod log: {e}"))?;
    cmd.env_clear()
        .envs(env)
        .current_dir(container.working_dir.as_deref().unwrap_or("/"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    // The supervisor reaps its children itself (it is the host's subreaper), so the handle is
    // dropped without waiting.
    cmd.spawn().map(|child| child.id()).map_err(|e| format!("StartError: exec {}: {e}", program.display()))
}

/// `exec: "x": executable file not found in $PATH`, as containerd says it.
fn lookup(name: &str, path: &str) -> Result<PathBuf, String> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    path.split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
        })
        .ok_or_else(|| format!("StartError: exec: {name:?}: executable file not found in $PATH"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path() {
        assert_eq!(lookup("sh", DEFAULT_PATH).unwrap().file_name().unwrap(), "sh");
        assert!(lookup("no-such-program-here", DEFAULT_PATH).unwrap_err().contains("not found in $PATH"));
        assert_eq!(lookup("/x/y", DEFAULT_PATH).unwrap(), PathBuf::from("/x/y"));
    }

    fn container(yaml: &str) -> Container {
        let m =
            super::super::manifest::parse(&format!("metadata: {{name: p}}\nspec: {{containers: [{yaml}]}}")).unwrap();
        m.spec.containers[0].clone()
    }

    /// Runs `container` with a fake `kubeha-lab` that records how it was called: the program
    /// `pod-exec` was asked to run (`-` for itself), its arguments, then the environment.
    fn run(container: &Container) -> String {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("kubeha-lab");
        let out = dir.path().join("out");
        let script = format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"pod-exec --\" ] || exit 9\nshift 2\n\
             p=$1; [ \"$p\" = \"$0\" ] && p=-; shift\n{{ echo \"$p $*\"; env | sort; }} > {}\n",
            out.display()
        );
        std::fs::write(&exe, script).unwrap();
        std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let pid = spawn(&Host { name: "cp1", exe: &exe }, container, &[], &log).unwrap();
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None).unwrap();
        assert!(matches!(status, nix::sys::wait::WaitStatus::Exited(_, 0)), "{status:?}");
        std::fs::read_to_string(out).unwrap()
    }

    #[test]
    fn control_plane_components_run_their_stand_ins() {
        let c = container(
            "{name: c, image: registry.k8s.io/kube-apiserver:v1.31.4, command: [kube-apiserver, --secure-port=6443], \
             args: [--v=2], env: [{name: A, value: b}]}",
        );
        let out = run(&c);
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("- stand-in kube-apiserver --secure-port=6443 --v=2"));
        let env: Vec<&str> = lines.collect();
        assert!(env.contains(&"KUBEHA_LAB_IMAGE=registry.k8s.io/kube-apiserver:v1.31.4"), "{env:?}");
        assert!(env.contains(&"A=b") && env.contains(&"HOSTNAME=cp1"), "{env:?}");
        // Nothing of the supervisor's environment leaks into a container.
        assert!(!env.iter().any(|v| v.starts_with("CARGO")), "{env:?}");
        let c = container("{name: c, command: [/usr/local/bin/kube-scheduler, --leader-elect=false]}");
        assert_eq!(run(&c).lines().next(), Some("- stand-in kube-scheduler --leader-elect=false"));
        let c = container("{name: c, command: [sh, -c, 'exit 0'], args: [x]}");
        assert!(run(&c).lines().next().unwrap().ends_with("/sh -c exit 0 x"));
    }
}
