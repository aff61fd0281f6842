//! The apiserver stand-in's object store: API objects in etcd, as the real apiserver keeps them,
//! so every control plane's stand-in (each with its own `--etcd-servers`) serves the same objects.
//!
//! Keys are the real server's (`/registry/configmaps/kube-system/coredns`, see
//! `resources::Resource::key`); values are the object as JSON (the real server writes protobuf
//! for built-in kinds), stored without `metadata.resourceVersion`: the resource version is the
//! key's `mod_revision`, added when the object is read, as the real server does. Writes are
//! etcd transactions conditioned on the revision read, so two concurrent applies cannot lose
//! each other's changes: the loser gets [`Written::Conflict`] and tries again.
//!
//! Everything goes through etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`), where keys and
//! values are base64 and 64-bit numbers are strings.

use base64::Engine as _;
use serde_json::{Value, json};

use super::etcd::{EtcdError, EtcdProbe};

/// The objects in etcd.
#[derive(Debug, Clone)]
pub struct Registry {
    etcd: EtcdProbe,
}

/// An object read from etcd, and the revision that last wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// The object as stored, without `metadata.resourceVersion`.
    pub object: Value,
    pub mod_revision: i64,
}

impl Stored {
    /// The object as served: with `metadata.resourceVersion` set to its revision.
    pub fn served(&self) -> Value {
        with_version(self.object.clone(), self.mod_revision)
    }
}

/// What a write expects to replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Nothing: the key must not exist.
    Absent,
    /// The object last written at this revision.
    Revision(i64),
}

/// What a conditional write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored; the object's new resource version.
    Stored(i64),
    /// Someone else wrote the key since it was read: nothing was written.
    Conflict,
}

/// Sets `metadata.resourceVersion` to `revision`.
pub fn with_version(mut object: Value, revision: i64) -> Value {
    object["metadata"]["resourceVersion"] = json!(revision.to_string());
    object
}

impl Registry {
    pub fn new(etcd: EtcdProbe) -> Registry {
        Registry { etcd }
    }

    /// The object at `key`, if there is one.
    pub async fn get(&self, key: &str) -> Result<Option<Stored>, EtcdError> {
        let answer = self.etcd.call("/v3/kv/range", &json!({"key": b64(key.as_bytes())})).await?;
        Ok(stored_items(&answer)?.into_iter().next())
    }

    /// Every object under `prefix`, in key order, and the store's revision (a list's
    /// resource version).
    pub async fn list(&self, prefix: &str) -> Result<(Vec<Stored>, i64), EtcdError> {
        let request = json!({"key": b64(prefix.as_bytes()), "range_end": b64(&range_end(prefix))});
        let answer = self.etcd.call("/v3/kv/range", &request).await?;
        Ok((stored_items(&answer)?, revision(&answer["header"]["revision"])))
    }

    /// Deletes the object at `key`; whether there was one.
    pub async fn delete(&self, key: &str) -> Result<bool, EtcdError> {
        let answer = self.etcd.call("/v3/kv/deleterange", &json!({"key": b64(key.as_bytes())})).await?;
        Ok(revision(&answer["deleted"]) > 0)
    }

    /// Writes `object` (without `resourceVersion`) at `key` if the key still is as `expected`.
    pub async fn put(&self, key: &str, object: &Value, expected: Expected) -> Result<Written, EtcdError> {
        let mut object = object.clone();
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("resourceVersion");
        }
        let key64 = b64(key.as_bytes());
        let compare = match expected {
            Expected::Absent => json!({"key": key64, "result": "EQUAL", "target": "CREATE", "create_revision": "0"}),
            Expected::Revision(rev) => {
                json!({"key": key64, "result": "EQUAL", "target": "MOD", "mod_revision": rev.to_string()})
            }
        };
        let put = json!({"request_put": {"key": key64, "value": b64(object.to_string().as_bytes())}});
        let answer = self.etcd.call("/v3/kv/txn", &json!({"compare": [compare], "success": [put]})).await?;
        if answer["succeeded"].as_bool() == Some(true) {
            Ok(Written::Stored(revision(&answer["header"]["revision"])))
        } else {
            Ok(Written::Conflict)
        }
    }
}

/// The objects in a range answer.
fn stored_items(answer: &Value) -> Result<Vec<Stored>, EtcdError> {
    let kvs = answer["kvs"].as_array().cloned().unwrap_or_default();
    kvs.iter()
        .map(|kv| {
            let invalid = |detail: String| EtcdError::InvalidAnswer { path: "/v3/kv/range".into(), detail };
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(kv["value"].as_str().unwrap_or_default())
                .map_err(|e| invalid(format!("value of {}: {e}", kv["key"])))?;
            let object: Value =
                serde_json::from_slice(&bytes).map_err(|e| invalid(format!("value of {}: {e}", kv["key"])))?;
            Ok(Stored { object, mod_revision: revision(&kv["mod_revision"]) })
        })
        .collect()
}

/// A gateway int64: a string, or a number.
fn revision(value: &Value) -> i64 {
    match value {
        Value::String(s) => s.parse().unwrap_or_default(),
        other => other.as_i64().unwrap_or_default(),
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The end of the key range holding every key that starts with `prefix` (etcd's prefix rule:
/// the prefix with its last byte incremented).
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_after_their_last_key() {
        assert_eq!(range_end("/registry/configmaps/"), b"/registry/configmaps0".to_vec());
        assert_eq!(range_end("a\u{7f}"), vec![b'a', 0x80]);
    }

    #[test]
    fn range_answers_give_objects_with_their_revisions() {
        let value = b64(br#"{"kind":"ConfigMap","metadata":{"name":"x"}}"#);
        let answer =
            json!({"header": {"revision": "9"}, "kvs": [{"key": "eA==", "mod_revision": "7", "value": value}]});
        let items = stored_items(&answer).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].mod_revision, 7);
        assert_eq!(items[0].served()["metadata"]["resourceVersion"], "7");
        assert!(stored_items(&json!({"header": {"revision": "9"}})).unwrap().is_empty());
        let bad = json!({"kvs": [{"key": "eA==", "value": b64(b"not json")}]});
        assert!(matches!(stored_items(&bad), Err(EtcdError::InvalidAnswer { .. })));
    }
}
