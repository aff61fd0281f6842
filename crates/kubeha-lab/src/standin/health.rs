//! Health state shared by the stand-ins' background checks and their `/healthz`, `/livez` and
//! `/readyz` endpoints, answered in the format of Kubernetes' healthz package.
//!
//! A check starts failing ("not checked yet") and is updated by a background task; changes are
//! logged with their reason, while the HTTP body withholds reasons as the real components do.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::respond::{self, Reply};

/// A check's name and its last result (the error is the reason it fails).
type Check = (&'static str, Result<(), String>);

/// Named checks and their last results.
#[derive(Clone, Debug)]
pub struct Health {
    checks: Arc<Mutex<Vec<Check>>>,
    /// Set when the process got SIGTERM and waits out `--shutdown-delay-duration`: `/readyz`
    /// fails its `shutdown` check, `/healthz` and `/livez` do not (as the real apiserver).
    shutting_down: Arc<AtomicBool>,
}

impl Health {
    /// Checks named `names`, all failing until first set. `ping` and `log` are always added as
    /// passing, as in the real components.
    pub fn new(names: &[&'static str]) -> Health {
        let mut checks: Vec<Check> = vec![("ping", Ok(())), ("log", Ok(()))];
        checks.extend(names.iter().map(|n| (*n, Err("not checked yet".to_string()))));
        Health { checks: Arc::new(Mutex::new(checks)), shutting_down: Arc::new(AtomicBool::new(false)) }
    }

    /// From now on `/readyz` fails: the process is shutting down.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// Records the result of check `name`, logging when it changes.
    pub fn set(&self, name: &'static str, result: Result<(), String>) {
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = checks.iter_mut().find(|(n, _)| *n == name) else {
            return;
        };
        if entry.1 != result {
            match &result {
                Ok(()) => tracing::info!("health check {name:?} is passing"),
                Err(reason) => tracing::warn!("health check {name:?} is failing: {reason}"),
            }
            entry.1 = result;
        }
    }

    /// The answer to `/<endpoint>?<query>` (`endpoint` is `healthz`, `livez` or `readyz`):
    /// `ok` or, with `verbose` or on failure, one `[+]`/`[-]` line per check.
    pub fn respond(&self, endpoint: &str, query: Option<&str>) -> Reply {
        let mut verbose = false;
        let mut excluded = Vec::new();
        for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("exclude", name)) => excluded.push(name.to_string()),
                Some(("verbose", v)) => verbose = v != "false" && v != "0",
                None if pair == "verbose" => verbose = true,
                _ => {}
            }
        }
        let mut checks = self.checks.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if endpoint == "readyz" && self.shutting_down.load(Ordering::Relaxed) {
            checks.push(("shutdown", Err("process is shutting down".to_string())));
        }
        let mut body = String::new();
        let mut failed = false;
        for (name, result) in checks.iter().filter(|(n, _)| !excluded.iter().any(|e| e == n)) {
            match result {
                Ok(()) => body.push_str(&format!("[+]{name} ok\n")),
                Err(_) => {
                    failed = true;
                    body.push_str(&format!("[-]{name} failed: reason withheld\n"));
                }
            }
        }
        if failed {
            body.push_str(&format!("{endpoint} check failed\n"));
            respond::text(500, body)
        } else if verbose {
            body.push_str(&format!("{endpoint} check passed\n"));
            respond::text(200, body)
        } else {
            respond::text(200, "ok".to_string())
        }
    }
}
