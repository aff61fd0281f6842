//! Progress per host: one live line per host on a terminal, plain log lines otherwise.
//!
//! Progress goes to stderr; stdout stays for results (tables, JSON).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

pub struct Progress {
    live: Option<(MultiProgress, BTreeMap<String, ProgressBar>)>,
    width: usize,
}

impl Progress {
    /// Lines for `hosts`; live only when stderr is a terminal.
    pub fn new<'a>(hosts: impl IntoIterator<Item = &'a str>) -> Self {
        let hosts: Vec<&str> = hosts.into_iter().collect();
        let width = hosts.iter().map(|h| h.len()).max().unwrap_or(0);
        if !std::io::stderr().is_terminal() {
            return Progress { live: None, width };
        }
        let multi = MultiProgress::new();
        let style = ProgressStyle::with_template("{spinner:.cyan} {prefix:.bold}  {wide_msg}")
            .expect("static template")
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏✓");
        let bars = hosts
            .iter()
            .map(|h| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                bar.set_prefix(format!("{h:width$}"));
                bar.enable_steady_tick(Duration::from_millis(120));
                (h.to_string(), bar)
            })
            .collect();
        Progress { live: Some((multi, bars)), width }
    }

    /// Whether progress is drawn as live lines (stderr is a terminal).
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// A guard for terminal prompts (SSH key passphrases): live lines pause while it runs.
    pub fn terminal_guard(&self) -> Option<std::sync::Arc<crate::transport::TerminalGuard>> {
        let (multi, _) = self.live.as_ref()?;
        let multi = multi.clone();
        Some(std::sync::Arc::new(move |prompt: &mut dyn FnMut()| multi.suspend(prompt)))
    }

    /// A progress line that never shows anything (for library callers and tests).
    pub fn hidden() -> Self {
        Progress { live: None, width: 0 }
    }

    /// What `host` is doing now.
    pub fn step(&self, host: &str, message: impl AsRef<str>) {
        match &self.live {
            Some((_, bars)) => {
                if let Some(bar) = bars.get(host) {
                    bar.set_message(message.as_ref().to_string());
                }
            }
            None if self.width > 0 => eprintln!("{host:w$}  {}", message.as_ref(), w = self.width),
            None => {}
        }
    }

    /// A passing detail (a file being written, the last answer while waiting): shown on the
    /// live line only, so plain logs stay one line per step.
    pub fn detail(&self, host: &str, message: impl AsRef<str>) {
        if self.live.is_some() {
            self.step(host, message);
        }
    }

    /// `host` is finished with this command, successfully or not.
    pub fn finish(&self, host: &str, message: impl AsRef<str>) {
        match &self.live {
            Some((_, bars)) => {
                if let Some(bar) = bars.get(host) {
                    bar.finish_with_message(message.as_ref().to_string());
                }
            }
            None => self.step(host, message),
        }
    }

    /// A line about the whole run.
    pub fn note(&self, message: impl AsRef<str>) {
        match &self.live {
            Some((multi, _)) => {
                let _ = multi.println(message.as_ref());
            }
            None if self.width > 0 => eprintln!("{}", message.as_ref()),
            None => {}
        }
    }

    /// Removes live lines that are still spinning (e.g. after an error elsewhere).
    pub fn clear(&self) {
        if let Some((_, bars)) = &self.live {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
        }
    }
}
