//! Stand-ins for kube-apiserver, kube-controller-manager and kube-scheduler, whose binaries the
//! lab cannot run: they check what the real components would need and serve their TLS ports.
//!
//! (Interface stub: the implementation replaces the bodies.)

use std::process::ExitCode;

/// Runs the stand-in for `component` (e.g. `kube-apiserver`) with the flags its static pod gives.
pub fn run(component: &str, args: Vec<String>) -> ExitCode {
    eprintln!("{component}: stand-in not implemented ({} flags)", args.len());
    ExitCode::FAILURE
}
