//! Stand-ins for kube-apiserver, kube-controller-manager and kube-scheduler, whose binaries the
//! lab cannot run: they check what the real components would need and serve their TLS ports.
//!
//! The lab's kubelet stand-in runs a static pod's `command:` as
//! `kubeha-lab stand-in <component> <flags...>` with the pod's image in `KUBEHA_LAB_IMAGE`.
//! Each stand-in parses the flags like the real binary (unknown flags are fatal), checks every
//! file and certificate relationship the real one depends on, and exits 1 with `Error: ...`
//! naming the flag and file when something is wrong, so a bad render crash-loops in the lab as
//! it would on a real host. Otherwise it serves what health checks, haproxy and kubectl need,
//! and the apiserver stores the API objects kubeha applies (in etcd, by server-side apply).
//! See `docs/lab-standins.md` for what is and is not simulated.

mod apiserver;
mod apply;
mod checks;
mod delegated;
mod etcd;
mod flags;
mod flagset;
mod health;
mod kubeconfig;
mod registry;
mod resources;
mod respond;
mod rest;
mod version;

use std::process::ExitCode;
use std::time::Duration;

use checks::StartupError;
use flags::Flags;
use version::KubeVersion;

/// The components that have a stand-in.
pub const COMPONENTS: [&str; 3] = ["kube-apiserver", "kube-controller-manager", "kube-scheduler"];

/// Runs the stand-in for `component` (e.g. `kube-apiserver`) with the flags its static pod gives.
///
/// Returns 0 after SIGTERM or SIGINT, 1 when the flags or a startup check fail (after printing
/// `Error: ...` to stderr), 0 for `--help` and `--version`.
pub fn run(component: &str, args: Vec<String>) -> ExitCode {
    let Some(specs) = flagset::for_component(component) else {
        eprintln!("Error: no stand-in for {component:?} (stand-ins exist for {})", COMPONENTS.join(", "));
        return ExitCode::FAILURE;
    };
    let flags = match Flags::parse(component, specs, &args) {
        Ok(flags) => flags,
        Err(e) => {
            // The real components print the usage, then the error, last.
            eprintln!("Usage:\n  {component} [flags]\n\nRun '{component} --help' for the flags.\n");
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if flags.help {
        println!("{component} (kubeha lab stand-in)\n\nUsage:\n  {component} [flags]\n\nFlags:");
        for spec in specs {
            println!("      --{} (default {:?})", spec.name, spec.default);
        }
        return ExitCode::SUCCESS;
    }
    let version = match KubeVersion::from_env(component) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if flags.bool("version") {
        println!("Kubernetes {}", version.git_version);
        return ExitCode::SUCCESS;
    }
    init_logging(flags.int("v"));
    tracing::info!("{component} stand-in, Version: {}", version.git_version);
    for (name, value) in flags.given() {
        tracing::info!("FLAG: --{name}={value:?}");
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(serve_until_signal(component, &flags, version));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve_until_signal(component: &str, flags: &Flags, version: KubeVersion) -> Result<(), StartupError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| StartupError(format!("installing a SIGTERM handler: {e}")))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| StartupError(format!("installing a SIGINT handler: {e}")))?;
    if component == "kube-apiserver" {
        // As the real one: on SIGTERM, fail /readyz but keep serving for
        // --shutdown-delay-duration, so load balancers stop sending new connections first.
        let server = apiserver::start(flags, version).await?;
        let health = server.health();
        let delay = flags::parse_go_duration(flags.str("shutdown-delay-duration")).unwrap_or_default();
        let run = server.run();
        tokio::pin!(run);
        let signal = tokio::select! {
            _ = &mut run => return Ok(()),
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if !delay.is_zero() {
            health.shutting_down();
            tracing::info!("Received {signal}: /readyz fails, serving for --shutdown-delay-duration={delay:?}");
            let _ = tokio::time::timeout(delay, &mut run).await;
        }
        tracing::info!("Received {signal}, shutting down");
        return Ok(());
    }
    let serve = async {
        delegated::start(component, flags).await?.run().await;
        Ok(())
    };
    tokio::select! {
        result = serve => result,
        _ = term.recv() => {
            tracing::info!("Received SIGTERM, shutting down");
            Ok(())
        }
        _ = int.recv() => {
            tracing::info!("Received SIGINT, shutting down");
            Ok(())
        }
    }
}

/// Logs to stderr (the pod's log); `-v=4` and above include debug lines such as failed TLS
/// handshakes.
fn init_logging(verbosity: i64) {
    let level = if verbosity >= 4 { tracing::Level::DEBUG } else { tracing::Level::INFO };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(level)
        .try_init();
}
