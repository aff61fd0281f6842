//! Stopping and starting a static pod without the API: its manifest is moved out of the
//! manifests directory (the kubelet stops the pod) into kubeha's own directory, and back (the
//! kubelet starts it again). Both moves are renames within `/etc/kubernetes`, so the manifest
//! is always whole in one place or the other, and both are repeatable: a run interrupted in
//! between finds the manifest where it left it.
//!
//! Whether a pod's processes are gone is read from the process table, as `kubeha status`
//! does (see [`super::status`]).

use super::layout::{MANIFESTS_DIR, STOPPED_MANIFESTS_DIR};
use crate::transport::shell::quote;
use crate::transport::{Remote, TransportError};

/// Moves `<pod>.yaml` from the manifests directory to kubeha's stopped directory. Fails when
/// the manifest is in neither.
pub async fn stop<R: Remote>(remote: &R, pod: &str) -> Result<(), TransportError> {
    remote.run(&move_script("stopping", pod, MANIFESTS_DIR, STOPPED_MANIFESTS_DIR), b"").await.map(drop)
}

/// Moves `<pod>.yaml` back into the manifests directory.
pub async fn start<R: Remote>(remote: &R, pod: &str) -> Result<(), TransportError> {
    remote.run(&move_script("starting", pod, STOPPED_MANIFESTS_DIR, MANIFESTS_DIR), b"").await.map(drop)
}

/// The script moving `<pod>.yaml` from `from` to `to` (done already when it is in `to`).
pub fn move_script(verb: &str, pod: &str, from: &str, to: &str) -> String {
    let (src, dst) = (quote(&format!("{from}/{pod}.yaml")), quote(&format!("{to}/{pod}.yaml")));
    format!(
        "# {verb} static pod {pod}\n\
         if [ -f {src} ]; then\n\
         \x20 mkdir -p -m 0700 {to} && mv -f -- {src} {dst} && sync -- {dst} 2>/dev/null; exit $?\n\
         fi\n\
         [ -f {dst} ] || {{ echo 'no manifest {pod}.yaml in {from} or {to}' >&2; exit 3; }}\n",
        to = quote(to),
    )
}

/// Which of `programs` still run on the host (see [`super::status`] for how processes are
/// matched to programs).
pub async fn running<R: Remote>(remote: &R, programs: &[&str]) -> Result<Vec<String>, TransportError> {
    let script = format!("# listing processes\n{}", super::status::PROCESSES);
    let out = remote.run(&script, b"").await?;
    let text = out.stdout_text();
    let processes: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    Ok(programs.iter().filter(|p| super::status::runs(&processes, p)).map(|p| p.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a move script under a local `sh` with the directories under `root`.
    fn run(script: &str) -> std::process::Output {
        std::process::Command::new("sh").arg("-c").arg(script).output().unwrap()
    }

    #[test]
    fn moves_are_repeatable_and_refuse_a_missing_manifest() {
        let root = tempfile::tempdir().unwrap();
        let (manifests, stopped) = (root.path().join("manifests"), root.path().join("kubeha/stopped"));
        std::fs::create_dir_all(&manifests).unwrap();
        std::fs::write(manifests.join("etcd.yaml"), "pod").unwrap();
        let (m, s) = (manifests.to_str().unwrap(), stopped.to_str().unwrap());
        for _ in 0..2 {
            let out = run(&move_script("stopping", "etcd", m, s));
            assert!(out.status.success(), "{out:?}");
            assert!(!manifests.join("etcd.yaml").exists() && stopped.join("etcd.yaml").exists());
        }
        let out = run(&move_script("starting", "etcd", s, m));
        assert!(out.status.success() && manifests.join("etcd.yaml").exists(), "{out:?}");
        let out = run(&move_script("stopping", "kube-apiserver", m, s));
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no manifest kube-apiserver.yaml"));
    }
}
