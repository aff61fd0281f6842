//! The `kubeha-lab` command line: builds and tears down the local lab (see `docs/lab.md`).
//!
//! A thin layer: parse the command line, call the lab library, print errors, return an exit code.
//! `node`, `pod-exec` and `stand-in` are internal: the lab runs them inside its hosts
//! (`kubeha-lab stand-in COMPONENT FLAGS...` runs a component stand-in by hand too).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use crate as lab;
use crate::{Lab, LabSpec, LabUser};
use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kubeha-lab",
    version,
    about = "Local test hosts for kubeha: network namespaces with sshd and a kubelet stand-in"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

/// Which lab: by name (in its default directory) or by directory.
#[derive(Debug, clap::Args)]
struct Which {
    /// The lab's name; its directory is /tmp/kubeha-lab/<name>.
    #[arg(long, default_value = "lab")]
    name: String,
    /// The lab's directory (overrides --name).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl Which {
    fn open(&self) -> anyhow::Result<Lab> {
        Ok(Lab::open(&self.dir.clone().unwrap_or_else(|| lab::default_dir(&self.name)))?)
    }
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Create the hosts and write an inventory for them (needs root).
    Up {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(long, default_value_t = 3)]
        control_planes: usize,
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Hosts get 198.18.<SUBNET>.0/24.
        #[arg(long, default_value_t = 0)]
        subnet: u8,
        /// Where the lab keeps its files [default: /tmp/kubeha-lab/<name>].
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        #[arg(long, default_value = lab::DEFAULT_KUBERNETES_VERSION)]
        kubernetes_version: String,
        /// etcd version for the inventory [default: the installed etcd's].
        #[arg(long)]
        etcd_version: Option<String>,
        /// The SSH user the inventory names (ops logs in with passwordless sudo).
        #[arg(long, value_enum, default_value = "root")]
        user: User,
        /// Let sshd run commands directly, without the wrapper that records every command line a
        /// host receives (benchmarks: the wrapper costs two shells per command).
        #[arg(long)]
        no_command_log: bool,
    },
    /// Stop everything the lab started and remove its namespaces and links.
    Down {
        #[command(flatten)]
        which: Which,
        /// Also delete the lab directory (logs, keys, inventory).
        #[arg(long)]
        purge: bool,
    },
    /// Show the hosts and their static pods.
    Status {
        #[command(flatten)]
        which: Which,
    },
    /// Run a command inside a host's namespaces (as root, not over SSH).
    Exec {
        #[command(flatten)]
        which: Which,
        host: String,
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
    /// Stop a host's sshd (listener and sessions).
    SshStop {
        #[command(flatten)]
        which: Which,
        host: String,
    },
    /// Start a fresh sshd on a host.
    SshStart {
        #[command(flatten)]
        which: Which,
        host: String,
    },
    /// Detach a host from the lab bridge.
    Cut {
        #[command(flatten)]
        which: Which,
        host: String,
    },
    /// Attach a cut host to the bridge again.
    Reconnect {
        #[command(flatten)]
        which: Which,
        host: String,
    },
    #[command(hide = true)]
    Node {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        host: String,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum User {
    Root,
    Ops,
}

/// Runs `kubeha-lab` with the process arguments.
pub fn main() -> ExitCode {
    // `pod-exec` and `stand-in` pass their arguments on untouched (a parser would take a `--`
    // or a flag that belongs to the program).
    let mut raw = std::env::args_os().skip(1);
    match raw.next().as_ref().and_then(|a| a.to_str()) {
        Some("pod-exec") => {
            let e = match lab::podexec::parse_args(raw.collect()) {
                Ok((mounts, program, args)) => lab::podexec::exec(&mounts, &program, &args),
                Err(e) => e,
            };
            eprintln!("error: pod-exec: {e}");
            return ExitCode::FAILURE;
        }
        Some("stand-in") => {
            let mut args = raw.map(|a| a.to_string_lossy().into_owned());
            let Some(component) = args.next() else {
                eprintln!("error: stand-in needs a COMPONENT (e.g. kube-apiserver)");
                return ExitCode::FAILURE;
            };
            return lab::standin::run(&component, args.collect());
        }
        _ => {}
    }
    let cli = Cli::parse();
    let result = match cli.command {
        // The supervisor reports in its own log and exits with its own code.
        Cmd::Node { dir, host } => return lab::node::run(&dir, &host),
        Cmd::Exec { which, host, command } => exec(&which, &host, &command),
        cmd => run(cmd).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", kubeha::cli::describe(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Up {
            name,
            control_planes,
            workers,
            subnet,
            dir,
            kubernetes_version,
            etcd_version,
            user,
            no_command_log,
        } => {
            let mut spec = LabSpec::new(&name, subnet);
            spec.ssh.record_commands = !no_command_log;
            spec.control_planes = control_planes;
            spec.workers = workers;
            spec.kubernetes_version = kubernetes_version;
            spec.etcd_version = etcd_version;
            spec.user = match user {
                User::Root => LabUser::Root,
                User::Ops => LabUser::Ops,
            };
            if let Some(dir) = dir {
                spec.dir = std::path::absolute(dir)?;
            }
            let mut lab = Lab::up(spec)?;
            lab.keep();
            print!("{}", next_steps(&lab));
        }
        Cmd::Down { which, purge } => {
            let lab = which.open()?;
            let dir = lab.dir().to_path_buf();
            lab.down()?;
            if purge {
                std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            }
            eprintln!("lab in {} is down", dir.display());
        }
        Cmd::Status { which } => print!("{}", which.open()?.describe()),
        Cmd::SshStop { which, host } => which.open()?.ssh_stop(&host)?,
        Cmd::SshStart { which, host } => which.open()?.ssh_start(&host)?,
        Cmd::Cut { which, host } => which.open()?.cut(&host)?,
        Cmd::Reconnect { which, host } => which.open()?.reconnect(&host)?,
        Cmd::Node { .. } | Cmd::Exec { .. } => {
            unreachable!("dispatched in main")
        }
    }
    Ok(())
}

fn exec(which: &Which, host: &str, command: &[OsString]) -> anyhow::Result<ExitCode> {
    let lab = which.open()?;
    let status = lab.exec_command(host)?.args(command).status().context("running nsenter")?;
    Ok(ExitCode::from(status.code().map_or(1, |c| c as u8)))
}

fn next_steps(lab: &Lab) -> String {
    let cps = lab.hosts().iter().filter(|h| h.control_plane).count();
    let first = &lab.hosts()[0];
    let name = lab.name();
    let which = if lab.dir() == lab::default_dir(name) {
        format!("--name {name}")
    } else {
        format!("--dir {}", lab.dir().display())
    };
    format!(
        "lab {name} is up: {cps} control plane(s), {} worker(s) on bridge {} ({}/24), VIP {}\n\
         inventory: {inv}\n\n\
         next:\n\
         \x20 kubeha validate -i {inv}\n\
         \x20 ssh -i {id} -o UserKnownHostsFile={kh} {user}@{addr}\n\
         \x20 kubeha-lab status {which}\n\
         \x20 kubeha-lab down {which}\n",
        lab.hosts().len() - cps,
        lab.bridge(),
        lab.gateway(),
        lab.vip(),
        inv = lab.inventory_path().display(),
        id = lab.identity_file().display(),
        kh = lab.known_hosts_file().display(),
        user = lab.ssh_user(),
        addr = first.address,
    )
}
