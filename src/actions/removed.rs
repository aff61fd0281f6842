//! Hosts `remove-node` took out of the cluster, recorded in the state directory
//! (`<state>/removed-hosts`, one name a line) rather than in the operator's inventory, which
//! kubeha never rewrites. While the inventory still lists such a host, `init` refuses (it would
//! set the host up again) and says to delete it from the inventory or join it again with
//! `join-node`, which forgets the record.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::checks::{Check, Status};
use crate::plan::Plan;

const FILE: &str = "removed-hosts";

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The recorded names, sorted.
pub fn list(state_dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path(state_dir)).unwrap_or_default();
    let mut names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    names.sort();
    names.dedup();
    names
}

fn write(state_dir: &Path, names: &[String]) -> std::io::Result<()> {
    let target = path(state_dir);
    if names.is_empty() {
        return match std::fs::remove_file(&target) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let tmp = state_dir.join(format!(".{FILE}.tmp"));
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    for n in names {
        writeln!(file, "{n}")?;
    }
    file.sync_all()?;
    std::fs::rename(&tmp, &target)
}

/// Records `name` as removed.
pub fn record(state_dir: &Path, name: &str) -> std::io::Result<()> {
    let mut names = list(state_dir);
    names.push(name.to_string());
    names.sort();
    names.dedup();
    write(state_dir, &names)
}

/// Forgets `names` (they joined again).
pub fn forget(state_dir: &Path, names: &[String]) -> std::io::Result<()> {
    let before = list(state_dir);
    let after: Vec<String> = before.iter().filter(|n| !names.contains(n)).cloned().collect();
    if after.len() == before.len() { Ok(()) } else { write(state_dir, &after) }
}

/// `init`'s refusal of hosts the inventory lists that were removed.
pub fn checks(plan: &Plan, state_dir: &Path) -> Vec<Check> {
    let removed = list(state_dir);
    plan.hosts
        .iter()
        .filter(|h| removed.contains(&h.name))
        .map(|h| {
            Check::new(
                &h.name,
                "membership",
                Status::Fail,
                format!(
                    "was removed from the cluster with `kubeha remove-node`: delete it from the inventory, or join it \
                     again with `kubeha join-node {}`",
                    h.name
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_are_recorded_refused_by_init_and_forgotten_on_join() {
        let dir = tempfile::tempdir().unwrap();
        let plan = crate::actions::fake::plan();
        assert!(checks(&plan, dir.path()).is_empty());
        record(dir.path(), "cp3").unwrap();
        record(dir.path(), "cp3").unwrap();
        assert_eq!(list(dir.path()), ["cp3"]);
        let rows = checks(&plan, dir.path());
        assert_eq!(rows.len(), 1);
        assert!(rows[0].detail.contains("delete it from the inventory") && rows[0].detail.contains("join-node cp3"));
        forget(dir.path(), &["cp3".into()]).unwrap();
        assert!(list(dir.path()).is_empty() && !path(dir.path()).exists());
    }
}
