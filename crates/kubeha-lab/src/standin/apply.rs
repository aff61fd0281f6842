//! Server-side apply, approximated: what the apiserver stand-in does with an applied object,
//! without I/O.
//!
//! The real server tracks, per field manager, the set of fields it applied (`managedFields`,
//! `fieldsV1`), merges by the schema (maps by key, lists by their merge keys or atomically) and
//! removes the fields a manager stops applying. The stand-in knows no schemas: maps merge
//! recursively, and every other value, lists included, is replaced whole (an atomic list). It
//! records the manager's fields as leaf paths in `fieldsV1` (lists as one leaf, no `.` entries,
//! no `k:`/`v:` keys) and, as the real one does, removes the fields the manager applied last
//! time and no longer applies unless another manager holds them. Conflicts between managers are
//! never reported (every apply behaves as `force=true`).
//!
//! An apply whose result equals the stored object, ignoring the managers' timestamps, is
//! [`Outcome::Unchanged`]: nothing is written and the resource version stays, which is how a
//! client (kubeha) tells "unchanged" from "updated".

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// A field path from the object's root, e.g. `["metadata", "labels", "app"]`.
type FieldPath = Vec<String>;

/// Metadata the server owns: an applied object's values for these are ignored.
const SERVER_METADATA: [&str; 7] =
    ["uid", "resourceVersion", "creationTimestamp", "managedFields", "generation", "selfLink", "deletionTimestamp"];

/// What an apply does to the stored object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The result equals what is stored: nothing to write.
    Unchanged,
    /// The object to store (created, or changed).
    Write(Value),
}

/// Applies `applied` (validated: an object with `apiVersion`, `kind`, `metadata.name`) for
/// `manager` onto `live` (the stored object without `resourceVersion`, or `None` to create one),
/// at time `now` (RFC 3339).
pub fn apply(live: Option<&Value>, applied: &Value, manager: &str, now: &str) -> Outcome {
    let applied = without_server_metadata(applied);
    let mut result = live.cloned().unwrap_or_else(|| skeleton(&applied));
    let entries = managed_fields(&result);
    let others: BTreeSet<FieldPath> =
        entries.iter().filter(|e| !is_own(e, manager)).flat_map(fields_of_entry).collect();
    let previous: BTreeSet<FieldPath> =
        entries.iter().filter(|e| is_own(e, manager)).flat_map(fields_of_entry).collect();
    let current = leaf_fields(&applied);
    for dropped in previous.difference(&current).filter(|p| !others.contains(*p)) {
        remove_path(&mut result, dropped);
    }
    merge(&mut result, &applied);
    let own = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": applied["apiVersion"],
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(&current),
    });
    let mut new_entries: Vec<Value> = entries.into_iter().filter(|e| !is_own(e, manager)).collect();
    new_entries.push(own);
    result["metadata"]["managedFields"] = Value::Array(new_entries);
    match live {
        Some(live) if same_ignoring_times(live, &result) => Outcome::Unchanged,
        _ => Outcome::Write(result),
    }
}

/// Merges `applied` into `live`: maps recursively, anything else replaced.
pub fn merge(live: &mut Value, applied: &Value) {
    match (live, applied) {
        (Value::Object(live), Value::Object(applied)) => {
            for (key, value) in applied {
                match live.get_mut(key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        live.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (live, applied) => *live = applied.clone(),
    }
}

/// Whether two objects are the same apart from the managers' `time` stamps.
pub fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    without_times(a) == without_times(b)
}

fn without_times(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(entries) = object["metadata"].get_mut("managedFields").and_then(Value::as_array_mut) {
        for entry in entries.iter_mut().filter_map(Value::as_object_mut) {
            entry.remove("time");
        }
    }
    object
}

fn without_server_metadata(applied: &Value) -> Value {
    let mut applied = applied.clone();
    if let Some(metadata) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_METADATA {
            metadata.remove(field);
        }
    }
    applied
}

/// A new object's identity, before the applied fields are merged in.
fn skeleton(applied: &Value) -> Value {
    let mut metadata = Map::new();
    for field in ["name", "namespace"] {
        if let Some(v) = applied["metadata"].get(field) {
            metadata.insert(field.into(), v.clone());
        }
    }
    json!({"apiVersion": applied["apiVersion"], "kind": applied["kind"], "metadata": metadata})
}

fn managed_fields(object: &Value) -> Vec<Value> {
    object["metadata"]["managedFields"].as_array().cloned().unwrap_or_default()
}

fn is_own(entry: &Value, manager: &str) -> bool {
    entry["manager"] == manager && entry["operation"] == "Apply"
}

/// The leaf paths a manager applied: every value that is not a non-empty map, leaving out the
/// identity fields the real server does not list either.
fn leaf_fields(applied: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    collect_leaves(applied, &mut Vec::new(), &mut out);
    for identity in [&["apiVersion"][..], &["kind"], &["metadata", "name"], &["metadata", "namespace"]] {
        out.remove(&identity.iter().map(|s| s.to_string()).collect::<FieldPath>());
    }
    out
}

fn collect_leaves(value: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                path.push(key.clone());
                collect_leaves(child, path, out);
                path.pop();
            }
        }
        _ if !path.is_empty() => {
            out.insert(path.clone());
        }
        _ => {}
    }
}

/// Leaf paths as `fieldsV1`: `{"f:data": {"f:Corefile": {}}}`.
fn fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Value::Object(Map::new());
    for path in paths {
        let mut node = &mut root;
        for key in path {
            node =
                node.as_object_mut().expect("fieldsV1 nodes are maps").entry(format!("f:{key}")).or_insert(json!({}));
        }
    }
    root
}

/// The leaf paths recorded in one `managedFields` entry (the inverse of [`fields_v1`]).
fn fields_of_entry(entry: &Value) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    collect_fields(&entry["fieldsV1"], &mut Vec::new(), &mut out);
    out
}

fn collect_fields(node: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let children: Vec<(&String, &Value)> = node.as_object().map(|m| m.iter().collect()).unwrap_or_default();
    let mut leaf = true;
    for (key, child) in children {
        let Some(name) = key.strip_prefix("f:") else { continue };
        leaf = false;
        path.push(name.to_string());
        collect_fields(child, path, out);
        path.pop();
    }
    if leaf && !path.is_empty() {
        out.insert(path.clone());
    }
}

/// Removes the field at `path`, if present.
fn remove_path(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = object;
    for key in parents {
        match node.get_mut(key) {
            Some(child) => node = child,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(last);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T1: &str = "2025-01-01T00:00:00Z";
    const T2: &str = "2025-01-02T00:00:00Z";

    fn cm(data: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"}, "data": data})
    }

    fn written(outcome: Outcome) -> Value {
        match outcome {
            Outcome::Write(v) => v,
            Outcome::Unchanged => panic!("expected a write"),
        }
    }

    #[test]
    fn merge_recurses_into_maps_and_replaces_lists() {
        let mut live = json!({"a": {"x": 1, "y": [1, 2]}, "b": "keep"});
        merge(&mut live, &json!({"a": {"y": [3], "z": true}}));
        assert_eq!(live, json!({"a": {"x": 1, "y": [3], "z": true}, "b": "keep"}));
    }

    #[test]
    fn create_records_the_manager_and_its_fields() {
        let object = written(apply(None, &cm(json!({"Corefile": "."})), "kubeha", T1));
        assert_eq!(object["data"]["Corefile"], ".");
        assert_eq!(object["metadata"]["name"], "coredns");
        let entry = &object["metadata"]["managedFields"][0];
        assert_eq!(
            (entry["manager"].as_str(), entry["operation"].as_str(), entry["time"].as_str()),
            (Some("kubeha"), Some("Apply"), Some(T1))
        );
        assert_eq!(entry["apiVersion"], "v1");
        assert_eq!(entry["fieldsV1"], json!({"f:data": {"f:Corefile": {}}}));
    }

    #[test]
    fn the_same_apply_later_is_unchanged() {
        let first = written(apply(None, &cm(json!({"Corefile": "."})), "kubeha", T1));
        assert_eq!(apply(Some(&first), &cm(json!({"Corefile": "."})), "kubeha", T2), Outcome::Unchanged);
        // Server-set metadata in the applied object is ignored, not a change.
        let mut with_server_fields = cm(json!({"Corefile": "."}));
        with_server_fields["metadata"]["uid"] = json!("other");
        with_server_fields["metadata"]["resourceVersion"] = json!("1");
        assert_eq!(apply(Some(&first), &with_server_fields, "kubeha", T2), Outcome::Unchanged);
    }

    #[test]
    fn changes_and_hand_edits_are_written_and_dropped_fields_removed() {
        let mut first = written(apply(None, &cm(json!({"Corefile": ".", "old": "x"})), "kubeha", T1));
        first["metadata"]["uid"] = json!("u-1");
        let second = written(apply(Some(&first), &cm(json!({"Corefile": ".:53"})), "kubeha", T2));
        assert_eq!(second["data"], json!({"Corefile": ".:53"}), "a field kubeha stopped applying is removed");
        assert_eq!(second["metadata"]["uid"], "u-1");
        assert_eq!(second["metadata"]["managedFields"][0]["time"], T2);

        let mut edited = second.clone();
        edited["data"]["Corefile"] = json!("edited");
        edited["data"]["extra"] = json!("someone else's");
        let back = written(apply(Some(&edited), &cm(json!({"Corefile": ".:53"})), "kubeha", T2));
        assert_eq!(back["data"], json!({"Corefile": ".:53", "extra": "someone else's"}));
    }

    #[test]
    fn fields_another_manager_holds_stay_and_its_entry_is_kept() {
        let base = written(apply(None, &cm(json!({"shared": "1", "mine": "2"})), "other", T1));
        let both = written(apply(Some(&base), &cm(json!({"shared": "1"})), "kubeha", T1));
        let entries = both["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        let dropped = written(apply(Some(&both), &cm(json!({"new": "3"})), "kubeha", T2));
        assert_eq!(dropped["data"], json!({"shared": "1", "mine": "2", "new": "3"}));
    }

    #[test]
    fn fields_v1_round_trips_leaf_paths() {
        let applied = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "cp1", "labels": {"a": "", "b": ""}}, "spec": {"list": [1], "empty": {}}});
        let leaves = leaf_fields(&applied);
        let v1 = fields_v1(&leaves);
        assert_eq!(
            v1,
            json!({"f:metadata": {"f:labels": {"f:a": {}, "f:b": {}}}, "f:spec": {"f:empty": {}, "f:list": {}}})
        );
        assert_eq!(fields_of_entry(&json!({"fieldsV1": v1})), leaves);
    }
}
