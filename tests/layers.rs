//! kubeha's modules form layers: each may use the ones below it, never one above. This test
//! reads every source file (code only: comments and the test modules at the end of files are
//! skipped) and fails on an import that points up, so a cycle cannot creep in.

use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of its own layer or lower ones.
const LAYERS: &[&[&str]] = &[
    &["files", "text", "version", "https", "host::layout", "ssh_config"],
    &["plan", "inventory"],
    &["pki", "marker"],
    &["render", "objects"],
    &["transport"],
    &["host"],
    &["actions"],
    &["cli"],
];

/// The layer of a module path such as `host::etcd` or `render` (the longest listed prefix).
fn layer(module: &str) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for (i, names) in LAYERS.iter().enumerate() {
        for name in *names {
            let matches = module == *name || module.starts_with(&format!("{name}::"));
            if matches && best.is_none_or(|(len, _)| name.len() > len) {
                best = Some((name.len(), i));
            }
        }
    }
    best.map(|(_, i)| i)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a source file belongs to, e.g. `src/host/etcd.rs` → `host::etcd`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).filter(|p| p != "mod").collect();
    parts.join("::")
}

/// `crate::a::b` paths used by `code`, as `a::b` (or `a` alone).
fn imports(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
        let parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).take(2).collect();
        out.push(parts.join("::"));
    }
    out
}

/// The lines of `text` that are code: no comments, and no `#[cfg(test)]` item (a `mod x;`
/// line, or an inline module, which runs to the end of the file by convention).
fn code_of(text: &str) -> String {
    let mut code = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            match lines.next() {
                Some(item) if item.trim_end().ends_with(';') => continue,
                _ => break,
            }
        }
        if !line.trim_start().starts_with("//") {
            code.push(line);
        }
    }
    code.join("\n")
}

/// Every import in `code` of a layer above `own`.
fn violations(module: &str, own: usize, code: &str) -> Vec<String> {
    imports(code)
        .into_iter()
        .filter_map(|used| match layer(&used) {
            Some(l) if l > own => Some(format!("{module} (layer {own}) uses {used} (layer {l})")),
            _ => None,
        })
        .collect()
}

#[test]
fn no_module_uses_one_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut problems = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = layer(&module) else {
            problems.push(format!("{}: module {module} is in no layer; add it to LAYERS", file.display()));
            continue;
        };
        problems.extend(violations(&module, own, &code_of(&std::fs::read_to_string(file).unwrap())));
    }
    problems.sort();
    problems.dedup();
    assert!(problems.is_empty(), "imports that point up a layer:\n{}", problems.join("\n"));
    assert!(files.len() > 50, "found only {} source files", files.len());
}

#[test]
fn the_layer_check_sees_upward_imports() {
    assert_eq!(layer("host::layout"), Some(0));
    assert_eq!(layer("host::etcd"), Some(5));
    assert_eq!(layer("actions::init"), Some(6));
    assert_eq!(imports("use crate::host::layout::X;\nlet y = crate::plan::Plan;"), ["host::layout", "plan::Plan"]);
    let code = code_of(
        "use crate::host::layout;\n// crate::actions in a comment\nuse crate::host::files;\n#[cfg(test)]\nmod tests { use crate::cli; }",
    );
    assert_eq!(violations("pki::store", 2, &code), ["pki::store (layer 2) uses host::files (layer 5)"]);
}
