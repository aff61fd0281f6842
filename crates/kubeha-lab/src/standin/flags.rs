//! Command-line flags parsed the way the real components' flag library (spf13/pflag) does.
//!
//! A stand-in is only useful if it refuses what the real binary refuses: a misspelt or removed
//! flag in a rendered manifest must crash the pod in the lab as it would on a real host. So the
//! parser knows each component's flags (see `flagset.rs`) and reproduces pflag's rules and its
//! error texts: `--name=value` or `--name value`, booleans that take no separate value,
//! `-v` as the only shorthand besides `-h`, `--` ending the flags, last value wins.

use std::collections::BTreeMap;
use std::time::Duration;

use super::flagset::{FlagKind, FlagSpec};

/// A flag error, worded like pflag's (printed after `Error: `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FlagError(pub String);

/// Parsed flags: the value each given flag had last, defaults for the rest.
#[derive(Debug, Clone)]
pub struct Flags {
    values: BTreeMap<&'static str, String>,
    given: BTreeMap<&'static str, String>,
    specs: &'static [FlagSpec],
    /// `-h`/`--help` was given.
    pub help: bool,
}

impl Flags {
    /// Parses `args` (without the program name) against `specs`; `command` names the program in
    /// the "does not take any arguments" error.
    pub fn parse(command: &str, specs: &'static [FlagSpec], args: &[String]) -> Result<Flags, FlagError> {
        let mut flags = Flags {
            values: specs.iter().map(|s| (s.name, s.default.to_string())).collect(),
            given: BTreeMap::new(),
            specs,
            help: false,
        };
        let mut positional = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let arg = &args[i];
            i += 1;
            if arg == "--" {
                positional.extend(args[i..].iter().cloned());
                break;
            }
            let (name, inline, long) = if let Some(rest) = arg.strip_prefix("--") {
                match rest.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string()), true),
                    None => (rest.to_string(), None, true),
                }
            } else if let Some(rest) = arg.strip_prefix('-').filter(|r| !r.is_empty()) {
                let mut chars = rest.chars();
                let short = chars.next().unwrap_or_default();
                let after = chars.as_str();
                let long = match short {
                    'v' => "v",
                    'h' => "help",
                    other => return Err(FlagError(format!("unknown shorthand flag: '{other}' in {arg}"))),
                };
                let inline = match after {
                    "" => None,
                    a => Some(a.strip_prefix('=').unwrap_or(a).to_string()),
                };
                (long.to_string(), inline, false)
            } else {
                positional.push(arg.clone());
                continue;
            };
            let shown = if long { format!("--{name}") } else { arg.clone() };
            if name == "help" {
                flags.help = true;
                continue;
            }
            let Some(spec) = specs.iter().find(|s| s.name == name) else {
                return Err(FlagError(format!("unknown flag: {shown}")));
            };
            let value = match (inline, spec.kind) {
                (Some(v), _) => v,
                (None, FlagKind::Bool) => "true".to_string(),
                (None, _) => match args.get(i) {
                    Some(next) => {
                        i += 1;
                        next.clone()
                    }
                    None => return Err(FlagError(format!("flag needs an argument: {shown}"))),
                },
            };
            let value = validate(spec, &value)?;
            flags.values.insert(spec.name, value.clone());
            flags.given.insert(spec.name, value);
        }
        if positional.iter().any(|a| !a.is_empty()) {
            return Err(FlagError(format!("{command:?} does not take any arguments, got {positional:?}")));
        }
        Ok(flags)
    }

    /// The value of a known flag (its default if not given).
    pub fn str(&self, name: &str) -> &str {
        self.values.get(name).map(String::as_str).unwrap_or_default()
    }

    /// The value of a flag if it was given and is not empty.
    pub fn nonempty(&self, name: &str) -> Option<&str> {
        Some(self.str(name)).filter(|v| !v.is_empty())
    }

    /// A boolean flag's value.
    pub fn bool(&self, name: &str) -> bool {
        parse_bool(self.str(name)).unwrap_or(false)
    }

    /// An integer flag's value.
    pub fn int(&self, name: &str) -> i64 {
        self.str(name).parse().unwrap_or_default()
    }

    /// The flags given on the command line, in name order, with their values.
    pub fn given(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.given.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// Every flag naming an input file, with its non-empty value, in name order.
    pub fn files(&self) -> Vec<(&'static str, &str)> {
        self.specs
            .iter()
            .filter(|s| s.kind == FlagKind::File)
            .filter_map(|s| self.nonempty(s.name).map(|v| (s.name, v)))
            .collect()
    }
}

fn validate(spec: &FlagSpec, value: &str) -> Result<String, FlagError> {
    let invalid =
        |detail: String| FlagError(format!("invalid argument {value:?} for \"--{}\" flag: {detail}", spec.name));
    match spec.kind {
        FlagKind::Bool => parse_bool(value)
            .map(|b| b.to_string())
            .ok_or_else(|| invalid(format!("strconv.ParseBool: parsing {value:?}: invalid syntax"))),
        FlagKind::Int => value
            .parse::<i64>()
            .map(|n| n.to_string())
            .map_err(|_| invalid(format!("strconv.ParseInt: parsing {value:?}: invalid syntax"))),
        FlagKind::Duration => parse_go_duration(value)
            .map(|_| value.to_string())
            .ok_or_else(|| invalid(format!("time: invalid duration {value:?}"))),
        FlagKind::Str | FlagKind::File => Ok(value.to_string()),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `time.ParseDuration` (sequences of decimal numbers with units ns, us, µs, ms, s, m, h).
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let unsigned = text.strip_prefix('+').unwrap_or(text);
    if unsigned == "0" {
        return Some(Duration::ZERO);
    }
    if unsigned.is_empty() || unsigned.starts_with('-') {
        return None;
    }
    let mut rest = unsigned;
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    Some(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::standin::flagset;

    fn parse(args: &[&str]) -> Result<Flags, FlagError> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Flags::parse("kube-scheduler", flagset::for_component("kube-scheduler").unwrap(), &args)
    }

    #[test]
    fn accepts_both_value_forms_and_bare_booleans() {
        let f = parse(&["--bind-address", "127.0.0.1", "--kubeconfig=/k.conf", "--leader-elect", "-v=2"]).unwrap();
        assert_eq!(f.str("bind-address"), "127.0.0.1");
        assert_eq!(f.str("kubeconfig"), "/k.conf");
        assert!(f.bool("leader-elect"));
        assert_eq!(f.str("v"), "2");
        assert_eq!(f.int("secure-port"), 10259, "default applies");
        let f = parse(&["--leader-elect=false", "--secure-port=0"]).unwrap();
        assert!(!f.bool("leader-elect"));
        assert_eq!(f.int("secure-port"), 0);
    }

    #[test]
    fn errors_read_like_pflag() {
        assert_eq!(parse(&["--x"]).unwrap_err().0, "unknown flag: --x");
        assert_eq!(parse(&["--x=1"]).unwrap_err().0, "unknown flag: --x");
        assert_eq!(parse(&["-q"]).unwrap_err().0, "unknown shorthand flag: 'q' in -q");
        assert_eq!(parse(&["--kubeconfig"]).unwrap_err().0, "flag needs an argument: --kubeconfig");
        assert_eq!(
            parse(&["--secure-port=abc"]).unwrap_err().0,
            "invalid argument \"abc\" for \"--secure-port\" flag: strconv.ParseInt: parsing \"abc\": invalid syntax"
        );
        assert!(parse(&["--leader-elect=maybe"]).unwrap_err().0.contains("strconv.ParseBool"));
        assert!(parse(&["stray"]).unwrap_err().0.contains("does not take any arguments"));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("15s"), Some(Duration::from_secs(15)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("15"), None);
        assert_eq!(parse_go_duration("abc"), None);
    }
}
