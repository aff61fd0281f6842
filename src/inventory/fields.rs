//! A small typed walker over the parsed YAML tree that records every problem it meets.
//!
//! serde's derive stops at the first unknown field or wrong type; operators want every mistake
//! in one run. The walker reads fields one by one, remembers which keys were read, and reports
//! the rest as unknown (with a suggestion when a known key is close), each with its field path.

use serde_json::{Map, Value};

/// One thing wrong with the inventory, at a field path such as `spec.hosts[2].address`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "the document {}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

#[derive(Debug, Default)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem { path: path.into(), message: message.into() });
    }
}

/// A mapping being read field by field.
pub struct Object<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Object<'a> {
    /// Starts reading `value` as a mapping; reports and returns `None` when it is something else.
    pub fn new(path: impl Into<String>, value: &'a Value, p: &mut Problems) -> Option<Self> {
        let path = path.into();
        match value {
            Value::Object(map) => Some(Object { path, map, known: Vec::new() }),
            other => {
                p.push(path, format!("must be a mapping, found {}", kind(other)));
                None
            }
        }
    }

    /// The path of `key` inside this mapping.
    pub fn child(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) }
    }

    /// Reads an optional field; `null` counts as absent.
    pub fn field(&mut self, key: &'static str) -> Option<(String, &'a Value)> {
        self.known.push(key);
        let value = self.map.get(key).filter(|v| !v.is_null())?;
        Some((self.child(key), value))
    }

    /// Reads a field that must be present.
    pub fn required(&mut self, key: &'static str, p: &mut Problems) -> Option<(String, &'a Value)> {
        let found = self.field(key);
        if found.is_none() {
            p.push(self.child(key), "is required");
        }
        found
    }

    pub fn string(&mut self, key: &'static str, p: &mut Problems) -> Option<String> {
        let (path, v) = self.field(key)?;
        as_string(&path, v, p)
    }

    pub fn required_string(&mut self, key: &'static str, p: &mut Problems) -> Option<String> {
        let (path, v) = self.required(key, p)?;
        as_string(&path, v, p)
    }

    pub fn bool(&mut self, key: &'static str, p: &mut Problems) -> Option<bool> {
        let (path, v) = self.field(key)?;
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                p.push(path, format!("must be true or false, found {}", kind(other)));
                None
            }
        }
    }

    /// Reads an integer in `range`; the message names the range.
    pub fn integer(
        &mut self,
        key: &'static str,
        range: std::ops::RangeInclusive<u64>,
        p: &mut Problems,
    ) -> Option<u64> {
        let (path, v) = self.field(key)?;
        match v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64)) {
            Some(n) if range.contains(&n) => Some(n),
            Some(n) => {
                p.push(path, format!("{n} is out of range {}-{}", range.start(), range.end()));
                None
            }
            None => {
                p.push(
                    path,
                    format!("must be a whole number from {} to {}, found {}", range.start(), range.end(), describe(v)),
                );
                None
            }
        }
    }

    pub fn object(&mut self, key: &'static str, p: &mut Problems) -> Option<Object<'a>> {
        let (path, v) = self.field(key)?;
        Object::new(path, v, p)
    }

    pub fn list(&mut self, key: &'static str, p: &mut Problems) -> Option<Vec<(String, &'a Value)>> {
        let (path, v) = self.field(key)?;
        match v {
            Value::Array(items) => Some(items.iter().enumerate().map(|(i, v)| (format!("{path}[{i}]"), v)).collect()),
            other => {
                p.push(path, format!("must be a list, found {}", kind(other)));
                None
            }
        }
    }

    /// Reports every key that no reader asked for.
    pub fn finish(mut self, p: &mut Problems) {
        let mut unknown: Vec<&String> = self.map.keys().filter(|k| !self.known.contains(&k.as_str())).collect();
        unknown.sort();
        self.known.sort_unstable();
        self.known.dedup();
        for key in unknown {
            let mut message = String::from("unknown field");
            match closest(key, &self.known) {
                Some(near) => message.push_str(&format!("; did you mean {near:?}?")),
                None => message.push_str(&format!("; expected one of: {}", self.known.join(", "))),
            }
            p.push(self.child(key), message);
        }
    }
}

pub fn as_string(path: &str, v: &Value, p: &mut Problems) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        other => {
            p.push(path, format!("must be a string, found {} (quote it)", describe(other)));
            None
        }
    }
}

/// The YAML kind of a value, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Bool(_) | Value::Number(_) => format!("{} ({v})", kind(v)),
        Value::String(s) => format!("a string ({s:?})"),
        _ => kind(v).to_string(),
    }
}

/// The known key nearest to a misspelt one, when it is plausibly a typo.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_keys_only() {
        assert_eq!(closest("adress", &["address", "name", "role"]), Some("address"));
        assert_eq!(closest("Name", &["address", "name", "role"]), Some("name"));
        assert_eq!(closest("colour", &["address", "name", "role"]), None);
    }

    #[test]
    fn reports_unknown_and_wrong_types_together() {
        let v: Value = serde_json::json!({"port": "x", "nmae": 1, "ok": true});
        let mut p = Problems::default();
        let mut o = Object::new("spec", &v, &mut p).unwrap();
        assert_eq!(o.integer("port", 1..=65535, &mut p), None);
        assert_eq!(o.bool("ok", &mut p), Some(true));
        o.string("name", &mut p);
        o.finish(&mut p);
        let text: Vec<String> = p.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "spec.port: must be a whole number from 1 to 65535, found a string (\"x\")",
                "spec.nmae: unknown field; did you mean \"name\"?",
            ]
        );
    }
}
