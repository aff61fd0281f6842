//! `kubeha render`: every file each host receives, written under DIR/<host>/<absolute path>.
//!
//! The output holds private keys, so directories are created 0700 and every file gets the mode
//! it will have on the host. Each host's tree is written beside the old one and swapped in, so
//! a re-run leaves exactly what the current plan renders (files the plan no longer produces
//! disappear) and an interrupted run never leaves a half-written tree in place. The directory
//! of a host no longer in the inventory is removed when it is an earlier render. A directory
//! that is not an earlier render (it lacks the host marker) is never replaced or removed.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::files::File;
use crate::render::CLUSTER_MARKER;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    cluster: super::ClusterArgs,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

impl Args {
    pub fn exec(self) -> anyhow::Result<()> {
        let plan = self.cluster.inventory.load()?;
        let state_dir = self.cluster.state_dir(&plan, false)?;
        let pki = crate::pki::load(&plan, &state_dir)
            .with_context(|| format!("cannot load the cluster PKI from {}", state_dir.display()))?;
        let hosts = crate::render::render(&plan, &pki)?;
        write_hosts(&self.out, &hosts)?;
        let count: usize = hosts.values().map(Vec::len).sum();
        let objects = crate::objects::cluster_objects(&plan, &pki);
        write_objects(&self.out, &objects)?;
        eprintln!(
            "{count} files for {} hosts and {} cluster objects ({OBJECTS_DIR}/) written to {}",
            hosts.len(),
            objects.len(),
            self.out.display()
        );
        Ok(())
    }
}

/// Where the cluster objects go under `--out`: a name no host can have (host names are
/// DNS labels, without underscores).
const OBJECTS_DIR: &str = "_cluster";
/// The file that marks an objects directory as kubeha's own render.
const OBJECTS_MARKER: &str = "/.kubeha-cluster-objects";

/// Writes each cluster object as YAML under `out/_cluster/<kind>-<namespace>-<name>.yaml`,
/// replacing an earlier render of them.
fn write_objects(out: &Path, objects: &[crate::objects::Object]) -> anyhow::Result<()> {
    let mut files = vec![File::new(OBJECTS_MARKER, 0o600, "")];
    for object in objects {
        let yaml = serde_saphyr::to_string(&object.body)?;
        files.push(File::new(format!("/{}", object.file_name()), 0o600, yaml));
    }
    write_trees(out, &BTreeMap::from([(OBJECTS_DIR.to_string(), files)]), OBJECTS_MARKER)
}

/// Writes each host's files under `out/<host>`, replacing an earlier render of that host.
fn write_hosts(out: &Path, hosts: &BTreeMap<String, Vec<File>>) -> anyhow::Result<()> {
    write_trees(out, hosts, CLUSTER_MARKER)?;
    remove_departed(out, hosts)
}

/// Writes each tree's files under `out/<name>`, replacing an earlier render of it: a directory
/// that holds `marker`.
fn write_trees(out: &Path, trees: &BTreeMap<String, Vec<File>>, marker: &str) -> anyhow::Result<()> {
    create_private_dir(out)?;
    for (host, files) in trees {
        if host.is_empty() || host.starts_with('.') || host.contains('/') {
            bail!("host name {host:?} cannot be used as a directory name");
        }
        let target = out.join(host);
        let staging = out.join(format!(".{host}.new"));
        let old = out.join(format!(".{host}.old"));
        for leftover in [&staging, &old] {
            remove_if_present(leftover)?;
        }
        for f in files {
            write_file(&staging, f).with_context(|| format!("cannot write {}", staging.display()))?;
        }
        if target.exists() {
            if !target.join(marker.trim_start_matches('/')).is_file() {
                remove_if_present(&staging)?;
                bail!(
                    "{} exists and is not an earlier kubeha render (no {marker}); \
                     remove it or choose another --out",
                    target.display()
                );
            }
            fs::rename(&target, &old).with_context(|| format!("cannot move {} aside", target.display()))?;
        }
        fs::rename(&staging, &target).with_context(|| format!("cannot rename {}", staging.display()))?;
        remove_if_present(&old)?;
    }
    Ok(())
}

/// Removes the earlier renders of hosts that are no longer in the plan; anything else in `out`
/// stays.
fn remove_departed(out: &Path, hosts: &BTreeMap<String, Vec<File>>) -> anyhow::Result<()> {
    let entries = fs::read_dir(out).with_context(|| format!("cannot list {}", out.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", out.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || name.starts_with('.') || hosts.contains_key(&name) {
            continue;
        }
        if entry.path().join(CLUSTER_MARKER.trim_start_matches('/')).is_file() {
            remove_if_present(&entry.path())?;
        }
    }
    Ok(())
}

/// Writes `file` at `root/<absolute path>` with its mode, creating parents 0700.
fn write_file(root: &Path, file: &File) -> anyhow::Result<()> {
    let relative = file.path.strip_prefix("/").with_context(|| format!("{} is not absolute", file.path.display()))?;
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        create_private_dir(parent)?;
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(file.mode)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(&file.content).with_context(|| format!("cannot write {}", path.display()))?;
    // The umask may have cleared bits of the requested mode.
    f.set_permissions(fs::Permissions::from_mode(file.mode))?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn remove_if_present(dir: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(marker: &str, extra: &str) -> BTreeMap<String, Vec<File>> {
        let files = vec![
            File::new("/etc/kubernetes/pki/ca.key", 0o600, "key"),
            File::new(CLUSTER_MARKER, 0o644, marker),
            File::new(extra, 0o700, "#!/bin/sh\n"),
        ];
        BTreeMap::from([("cp1".to_string(), files)])
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn writes_modes_replaces_earlier_renders_and_refuses_foreign_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        write_hosts(&out, &tree("one", "/etc/kubernetes/keepalived/check_apiserver.sh")).unwrap();
        let host = out.join("cp1");
        assert_eq!(mode(&out), 0o700);
        assert_eq!(mode(&host.join("etc/kubernetes/pki")), 0o700);
        assert_eq!(mode(&host.join("etc/kubernetes/pki/ca.key")), 0o600);
        assert_eq!(mode(&host.join("etc/kubernetes/keepalived/check_apiserver.sh")), 0o700);

        // A re-render replaces the tree: files no longer rendered are gone.
        write_hosts(&out, &tree("two", "/usr/local/bin/other")).unwrap();
        assert_eq!(fs::read_to_string(host.join(CLUSTER_MARKER.trim_start_matches('/'))).unwrap(), "two");
        assert!(!host.join("etc/kubernetes/keepalived").exists());
        assert_eq!(fs::read_dir(&out).unwrap().count(), 1, "no staging directories left behind");

        // A directory that is not a render is left alone.
        let foreign = dir.path().join("foreign");
        fs::create_dir_all(foreign.join("cp1/data")).unwrap();
        let err = write_hosts(&foreign, &tree("x", "/x")).unwrap_err();
        assert!(format!("{err:#}").contains("not an earlier kubeha render"), "{err:#}");
        assert!(foreign.join("cp1/data").exists());
    }

    #[test]
    fn renders_of_departed_hosts_are_removed_and_other_directories_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut two = tree("one", "/x");
        two.insert("cp2".to_string(), two["cp1"].clone());
        write_hosts(&out, &two).unwrap();
        fs::create_dir_all(out.join("notes")).unwrap();
        write_hosts(&out, &tree("one", "/x")).unwrap();
        assert!(out.join("cp1").is_dir() && !out.join("cp2").exists() && out.join("notes").is_dir());
    }
}
