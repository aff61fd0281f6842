//! The command line: a thin clap layer. Each command parses its arguments, calls the library,
//! and prints; all error printing and exit codes live here.

mod certs;
mod config;
mod etcd;
mod expiry;
mod generate;
mod init;
mod join;
mod kubeconfig;
mod membership;
mod output;
mod preflight;
mod remote;
mod remove;
mod render;
mod renew;
mod reset;
mod rotate;
mod status;
mod validate;
mod version;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::actions::error::ActionError;
use crate::actions::progress::Progress;
use crate::inventory::InventoryError;

/// Exit codes, part of kubeha's interface.
pub mod exit {
    /// Any failure not listed below.
    pub const FAILURE: u8 = 1;
    /// The inventory (or the command line) is invalid; nothing was changed.
    pub const INVALID_INPUT: u8 = 2;
    /// Preflight found a problem on a host, or another kubeha run holds a host's lock; nothing
    /// was changed.
    pub const PREFLIGHT_FAILED: u8 = 3;
    /// `certs check-expiration`: a certificate has expired or ends within the error threshold.
    pub const CERTIFICATES_EXPIRING: u8 = 4;
    /// `status`: the cluster is degraded (a host unreachable, a member or component unhealthy,
    /// the endpoint failing …); the report says what.
    pub const DEGRADED: u8 = 5;
    /// Interrupted (Ctrl-C); running the command again converges.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, Parser)]
#[command(name = "kubeha", version, about = "Bootstrap and run highly available Kubernetes control planes over SSH")]
struct Cli {
    /// More log detail on stderr: -v for each step's details, -vv for debugging (RUST_LOG
    /// overrides both).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    verbose: u8,
    /// Only errors on stderr: no progress lines, warnings or timings.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check an inventory and print the resolved plan, or every problem in it.
    #[command(after_help = "Examples:\n  \
        kubeha validate -i cluster.yaml\n  \
        kubeha validate -i cluster.yaml -o json | jq '.hosts[].name'\n  \
        kubeha config example | kubeha validate -i -")]
    Validate(validate::Args),
    /// Manage the cluster PKI in the local state directory.
    #[command(subcommand)]
    Certs(certs::Command),
    /// Write every file each host should receive under DIR/<host>/<absolute path>.
    #[command(after_help = "Examples:\n  \
        kubeha render -i cluster.yaml --out rendered/\n  \
        diff -r rendered/cp1 old-rendered/cp1")]
    Render(render::Args),
    /// Check every host before anything is written (exit code 3 when a check fails).
    #[command(after_help = "Examples:\n  \
        kubeha preflight -i cluster.yaml\n  \
        kubeha preflight -i cluster.yaml --accept-new-host-keys -o json")]
    Preflight(preflight::Args),
    /// Turn the inventory's hosts into a running HA control plane (or converge one).
    #[command(after_help = "Examples:\n  \
        kubeha init -i cluster.yaml\n  \
        kubeha init -i cluster.yaml --dry-run\n  \
        kubeha init -i cluster.yaml --parallel 20 --timeout 15m")]
    Init(init::Args),
    /// Join hosts of the inventory to the running cluster (control planes one at a time).
    #[command(after_help = "Examples:\n  \
        kubeha join-node -i cluster.yaml w2 w3 w4\n  \
        kubeha join-node -i cluster.yaml cp4 cp5 --dry-run\n  \
        kubeha join-node -i cluster.yaml cp4 --allow-even-members")]
    JoinNode(join::Args),
    /// Take one host out of the running cluster (etcd member removed first, quorum kept).
    #[command(after_help = "Examples:\n  \
        kubeha remove-node -i cluster.yaml w2\n  \
        kubeha remove-node -i cluster.yaml cp5 --dry-run")]
    RemoveNode(remove::Args),
    /// Remove everything kubeha wrote from hosts (lists it without --yes).
    #[command(after_help = "Examples:\n  \
        kubeha reset -i cluster.yaml w2\n  \
        kubeha reset -i cluster.yaml w2 --yes\n  \
        kubeha reset -i cluster.yaml --all --yes --delete-etcd-data")]
    Reset(reset::Args),
    /// Print a kubeconfig: the admin's, or a new client certificate for any user and group.
    #[command(after_help = "Examples:\n  \
        kubeha kubeconfig -i cluster.yaml > ~/.kube/config\n  \
        kubeha kubeconfig -i cluster.yaml --user alice --group devs --validity 8h > alice.conf\n  \
        kubeha kubeconfig -i cluster.yaml --server https://198.18.0.11:6443 > cp1-direct.conf")]
    Kubeconfig(kubeconfig::Args),
    /// Help with writing an inventory.
    #[command(subcommand)]
    Config(config::Command),
    /// Print kubeha's version and the Kubernetes and etcd versions it supports.
    #[command(after_help = "Examples:\n  \
        kubeha version\n  \
        kubeha version -o json | jq -r '.kubernetes[].minor'")]
    Version(version::Args),
    /// Print a shell completion script.
    #[command(after_help = "Examples:\n  \
        kubeha completion bash > /etc/bash_completion.d/kubeha\n  \
        kubeha completion zsh > \"${fpath[1]}/_kubeha\"\n  \
        kubeha completion fish > ~/.config/fish/completions/kubeha.fish")]
    Completion(generate::CompletionArgs),
    /// Print kubeha's man page, or write one page per command into a directory.
    #[command(after_help = "Examples:\n  \
        kubeha man | man -l -\n  \
        kubeha man --out /usr/local/share/man/man1")]
    Man(generate::ManArgs),
    /// The whole cluster on one screen: hosts, static pods, etcd, apiservers, VIP, haproxy,
    /// clocks and certificates (exit code 5 when degraded).
    #[command(after_help = "Examples:\n  \
        kubeha status -i cluster.yaml\n  \
        kubeha status -i cluster.yaml -o json | jq '.summary'\n  \
        kubeha status -i cluster.yaml --watch --interval 10s")]
    Status(status::Args),
    /// etcd backups: `etcd snapshot save` and `etcd snapshot restore`.
    #[command(subcommand)]
    Etcd(etcd::Command),
}

/// The operator pressed Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted: every file written so far is complete; run the command again to converge")]
struct Interrupted;

/// Output formats of commands that print a report.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Yaml,
}

/// Prints `value` as JSON or YAML, or `text()` as is.
fn print_report<T: serde::Serialize>(format: Format, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    match format {
        Format::Text => output::print(&text())?,
        Format::Json => output::println(serde_json::to_string_pretty(value)?)?,
        Format::Yaml => output::print(&serde_saphyr::to_string(value)?)?,
    }
    Ok(())
}

/// What every command that changes hosts reports with `-o json|yaml`: per host the files written
/// and removed (or, in a dry run, to be), and its timings; `extra` adds the command's own fields.
fn change_report(
    dry_run: bool,
    pushed: &[(String, crate::host::files::PushReport)],
    timings: (std::time::Duration, std::time::Duration, &[(&'static str, std::time::Duration)]),
    extra: serde_json::Value,
) -> serde_json::Value {
    let (work, waited, phases) = timings;
    let hosts: Vec<serde_json::Value> = pushed
        .iter()
        .map(|(name, p)| serde_json::json!({"name": name, "written": p.written, "removed": p.removed, "unchanged": p.unchanged}))
        .collect();
    let phases: serde_json::Map<String, serde_json::Value> =
        phases.iter().map(|(name, d)| (name.to_string(), serde_json::json!(d.as_secs_f64()))).collect();
    let mut out = serde_json::json!({
        "dryRun": dry_run,
        "hosts": hosts,
        "workSeconds": work.as_secs_f64(),
        "waitedSeconds": waited.as_secs_f64(),
        "phases": phases,
    });
    if let (Some(out), serde_json::Value::Object(extra)) = (out.as_object_mut(), extra) {
        out.extend(extra);
    }
    out
}

/// The inventory file and how strictly to read it.
#[derive(Debug, clap::Args)]
struct InventoryArgs {
    /// The inventory file.
    #[arg(short, long, value_name = "FILE")]
    inventory: PathBuf,
    /// Accept a kubernetesVersion outside the supported minors and render it with the nearest
    /// supported minor's kubeadm rules (with a warning).
    #[arg(long)]
    allow_unsupported_version: bool,
    /// The OpenSSH client configuration for host aliases, users, ports, identity files and
    /// jump hosts (`none`: read none); overrides spec.ssh.configFile [default: ~/.ssh/config
    /// when it exists]
    #[arg(long, value_name = "PATH")]
    ssh_config: Option<PathBuf>,
}

impl InventoryArgs {
    /// The validated plan; warns when it is rendered with another minor's rules.
    fn load(&self) -> Result<crate::plan::Plan, InventoryError> {
        let ssh_config = match &self.ssh_config {
            Some(path) if path.as_os_str() == "none" => crate::inventory::SshConfigChoice::Off,
            Some(path) => crate::inventory::SshConfigChoice::File(path.clone()),
            None => crate::inventory::SshConfigChoice::UserDefault,
        };
        let options = crate::inventory::ParseOptions { allow_unsupported_version: self.allow_unsupported_version };
        let plan = crate::inventory::load_with_ssh_config(&self.inventory, options, &ssh_config)?;
        if let Some(unsupported) = plan.unsupported_version() {
            tracing::warn!("{}", unsupported.warning());
        }
        Ok(plan)
    }
}

/// Arguments shared by commands that read an inventory and the state directory.
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    #[command(flatten)]
    inventory: InventoryArgs,
    /// Where kubeha keeps the cluster PKI and kubeconfigs
    /// [default: $XDG_STATE_HOME/kubeha/<cluster name>, else ~/.local/state/kubeha/<cluster name>].
    #[arg(long, value_name = "DIR", env = "KUBEHA_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Use the state directory even though it records another cluster (or another cluster CA):
    /// its record is rewritten for this inventory's cluster. Owner, mode and link checks still
    /// apply.
    #[arg(long)]
    force_state_dir: bool,
}

impl ClusterArgs {
    /// The state directory, checked: safe to use, and this cluster's (or adopted for it with
    /// `--force-state-dir`, unless `dry_run`, which writes nothing and so only skips the check).
    fn state_dir(&self, plan: &crate::plan::Plan, dry_run: bool) -> Result<PathBuf, crate::pki::PkiError> {
        let dir = self.state_dir.clone().unwrap_or_else(|| crate::pki::default_state_dir(&plan.name));
        match (self.force_state_dir, dry_run) {
            (true, true) => {}
            (true, false) => {
                if crate::pki::adopt_state_dir(plan, &dir)? {
                    tracing::warn!("{} now records cluster {} (--force-state-dir)", dir.display(), plan.name);
                }
            }
            (false, _) => crate::pki::check_state_dir(plan, &dir)?,
        }
        Ok(dir)
    }
}

/// Set by `--quiet`: progress lines are not shown.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Progress lines for the plan's hosts (none under `--quiet`).
fn progress(plan: &crate::plan::Plan) -> Progress {
    if QUIET.load(std::sync::atomic::Ordering::Relaxed) {
        return Progress::hidden();
    }
    Progress::new(plan.hosts.iter().map(|h| h.name.as_str()))
}

/// Logs to stderr: warnings by default (an accepted host key, say), more with `-v`.
fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("kubeha={level}")));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(verbose >= 2)
        .without_time()
        .try_init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    init_logging(cli.verbose, cli.quiet);
    let result = match cli.command {
        Command::Validate(args) => args.exec(),
        Command::Certs(cmd) => cmd.exec(),
        Command::Render(args) => args.exec(),
        Command::Preflight(args) => args.exec(),
        Command::Init(args) => args.exec(),
        Command::JoinNode(args) => args.exec(),
        Command::RemoveNode(args) => args.exec(),
        Command::Reset(args) => args.exec(),
        Command::Kubeconfig(args) => args.exec(),
        Command::Config(cmd) => cmd.exec(),
        Command::Version(args) => args.exec(),
        Command::Completion(args) => args.exec(),
        Command::Man(args) => args.exec(),
        Command::Status(args) => args.exec(),
        Command::Etcd(cmd) => cmd.exec(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The error and its causes on one line.
pub fn describe(e: &anyhow::Error) -> String {
    crate::text::error_chain(e.as_ref())
}

/// Whether `c` says the input (inventory, command line or state directory) is unusable.
fn invalid_input(c: &(dyn std::error::Error + 'static)) -> bool {
    use crate::actions::lock::LockError;
    use crate::pki::{PkiError, StateDirError};
    c.downcast_ref::<InventoryError>().is_some()
        || c.downcast_ref::<renew::BadTarget>().is_some()
        || c.downcast_ref::<membership::UnknownHost>().is_some()
        || c.downcast_ref::<crate::actions::restore::SnapshotError>().is_some()
        || c.downcast_ref::<StateDirError>().is_some()
        || matches!(c.downcast_ref::<PkiError>(), Some(PkiError::StateDir(_)))
        || matches!(c.downcast_ref::<LockError>(), Some(LockError::StateDir(_)))
        || matches!(c.downcast_ref::<ActionError>(), Some(e) if state_dir_action_error(e))
}

fn state_dir_action_error(e: &ActionError) -> bool {
    use crate::actions::lock::LockError;
    use crate::pki::PkiError;
    matches!(e, ActionError::Pki(PkiError::StateDir(_)) | ActionError::Lock(LockError::StateDir(_)))
}

fn exit_code(e: &anyhow::Error) -> u8 {
    let preflight = |c: &(dyn std::error::Error + 'static)| {
        c.downcast_ref::<preflight::PreflightFailed>().is_some()
            || matches!(
                c.downcast_ref::<ActionError>(),
                Some(ActionError::Preflight { .. } | ActionError::HostsLocked { .. })
            )
    };
    if e.chain().any(invalid_input) {
        exit::INVALID_INPUT
    } else if e.chain().any(preflight) {
        exit::PREFLIGHT_FAILED
    } else if e.chain().any(|c| c.downcast_ref::<expiry::Expiring>().is_some()) {
        exit::CERTIFICATES_EXPIRING
    } else if e.chain().any(|c| c.downcast_ref::<status::Degraded>().is_some()) {
        exit::DEGRADED
    } else if e.chain().any(|c| c.downcast_ref::<Interrupted>().is_some()) {
        exit::INTERRUPTED
    } else {
        exit::FAILURE
    }
}

#[cfg(test)]
mod conventions {
    use clap::CommandFactory;

    /// Every command operators run (not the groups) shows examples in its `--help`.
    #[test]
    fn every_command_has_an_example() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            let subcommands: Vec<_> = cmd.get_subcommands().filter(|c| c.get_name() != "help").collect();
            if subcommands.is_empty() {
                let help = cmd.get_after_help().map(|h| h.to_string()).unwrap_or_default();
                if !help.contains("Examples:\n  kubeha ") {
                    missing.push(path.clone());
                }
            }
            for sub in subcommands {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no examples in --help of: {missing:?}");
    }

    #[test]
    fn the_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
