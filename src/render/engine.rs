//! The template engine: kubeha's tera templates, compiled into the binary.
//!
//! Templates are embedded with `include_str!` so a kubeha binary renders the same files
//! wherever it runs. Autoescaping is off (the output is YAML and config files, not HTML); the
//! `yaml` filter quotes a string only when YAML would otherwise read it as something else, so
//! manifests look like kubeadm's (plain scalars) yet stay correct for any value.

use serde::Serialize;
use tera::{Context, Kwargs, State, Tera};

use super::RenderError;

/// Every template, by the name renderers use.
const TEMPLATES: [(&str, &str); 7] = [
    ("static-pod.yaml", include_str!("../../templates/static-pod.yaml.tera")),
    ("probe.yaml", include_str!("../../templates/probe.yaml.tera")),
    ("haproxy.cfg", include_str!("../../templates/haproxy.cfg.tera")),
    ("keepalived.conf", include_str!("../../templates/keepalived.conf.tera")),
    ("check_apiserver.sh", include_str!("../../templates/check_apiserver.sh.tera")),
    ("kubelet-config.yaml", include_str!("../../templates/kubelet-config.yaml.tera")),
    ("cluster-marker.yaml", include_str!("../../templates/cluster-marker.yaml.tera")),
];

/// The compiled templates.
pub struct Engine {
    tera: Tera,
}

impl Engine {
    pub fn new() -> Result<Self, RenderError> {
        let mut tera = Tera::new();
        tera.autoescape_on(Vec::<&'static str>::new());
        tera.register_filter("yaml", |s: &str, _: Kwargs, _: &State| yaml_scalar(s));
        // The files' final newline is dropped so an included partial ends where its last line
        // does; `render` ends every output with exactly one newline instead.
        let sources = TEMPLATES.map(|(name, text)| (name, text.strip_suffix('\n').unwrap_or(text)));
        tera.add_raw_templates(sources).map_err(|source| RenderError::Template { name: "(all templates)", source })?;
        Ok(Engine { tera })
    }

    /// Renders `name` with the fields of `data` as variables.
    pub fn render(&self, name: &'static str, data: &impl Serialize) -> Result<String, RenderError> {
        let context = Context::from_serialize(data).map_err(|source| RenderError::Template { name, source })?;
        let mut text = self.tera.render(name, &context).map_err(|source| RenderError::Template { name, source })?;
        text.push('\n');
        Ok(text)
    }
}

/// `s` as a YAML scalar: plain when YAML reads it back as the same string, else double-quoted
/// (a JSON string is a valid YAML double-quoted scalar). Catches numbers, booleans, `null`,
/// `: ` and ` #` inside values, leading indicators and surrounding spaces alike.
pub fn yaml_scalar(s: &str) -> String {
    let plain_ok = !s.is_empty()
        && !s.contains(['\n', '\r', '\t'])
        && matches!(serde_saphyr::from_str::<serde_json::Value>(s), Ok(serde_json::Value::String(ref back)) if back == s);
    if plain_ok { s.to_string() } else { serde_json::Value::String(s.to_string()).to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        Engine::new().unwrap();
    }

    #[test]
    fn yaml_scalars_are_quoted_only_when_needed() {
        for plain in ["--advertise-address=10.0.0.1", "/health?exclude=NOSPACE&serializable=true", "100m", "10.96.0.10"]
        {
            assert_eq!(yaml_scalar(plain), plain);
        }
        for (raw, quoted) in [
            ("6443", "\"6443\""),
            ("true", "\"true\""),
            ("", "\"\""),
            ("a: b", "\"a: b\""),
            ("x #y", "\"x #y\""),
            ("*alias", "\"*alias\""),
            (" padded", "\" padded\""),
        ] {
            assert_eq!(yaml_scalar(raw), quoted, "{raw}");
        }
    }
}
