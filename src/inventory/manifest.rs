//! Reading a manifest the inventory names (a CNI plugin's): a multi-document YAML file of
//! Kubernetes objects, checked before any host is touched so a broken file is an inventory
//! error naming the file, not a failure halfway through `init`.

use std::path::Path;

use super::fields::Problems;
use crate::plan::Manifest;

/// A manifest larger than this is refused (CNI manifests are a few hundred KiB at most).
const MAX_MANIFEST_BYTES: u64 = 8 << 20;

/// Reads `file`; every problem is reported at `field`.
pub fn read(field: &str, file: &Path, p: &mut Problems) -> Option<Manifest> {
    let shown = file.display();
    let text = match std::fs::metadata(file) {
        Ok(meta) if meta.len() > MAX_MANIFEST_BYTES => {
            p.push(field, format!("{shown} is larger than {} MiB", MAX_MANIFEST_BYTES >> 20));
            return None;
        }
        Ok(_) => std::fs::read_to_string(file),
        Err(e) => Err(e),
    };
    let text = match text {
        Ok(text) => text,
        Err(e) => {
            p.push(field, format!("cannot read {shown}: {e}"));
            return None;
        }
    };
    let documents: Vec<serde_json::Value> = match serde_saphyr::from_multiple(&text) {
        Ok(docs) => docs,
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            p.push(field, format!("{shown} is not YAML: {first}"));
            return None;
        }
    };
    let mut objects = Vec::new();
    for (i, doc) in documents.into_iter().enumerate().filter(|(_, d)| !d.is_null()) {
        let missing: Vec<&str> =
            [("apiVersion", &doc["apiVersion"]), ("kind", &doc["kind"]), ("metadata.name", &doc["metadata"]["name"])]
                .iter()
                .filter(|(_, v)| !v.is_string())
                .map(|(name, _)| *name)
                .collect();
        if !missing.is_empty() {
            p.push(field, format!("{shown}: document {} has no {}", i + 1, missing.join(", ")));
            continue;
        }
        objects.push(doc);
    }
    if objects.is_empty() && !p.0.iter().any(|problem| problem.path == field) {
        p.push(field, format!("{shown} holds no Kubernetes objects"));
    }
    Some(Manifest { path: file.to_path_buf(), objects })
}
