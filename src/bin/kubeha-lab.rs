//! `kubeha-lab`: builds and tears down the local lab (see `docs/lab.md`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("stand-in") {
        // Flags are passed through untouched: the stand-in parses them like the real binary.
        let Some(component) = args.next() else {
            eprintln!("usage: kubeha-lab stand-in <component> [flags...]");
            return ExitCode::from(2);
        };
        return kubeha::lab::standin::run(&component, args.collect());
    }
    eprintln!("kubeha-lab: not implemented yet");
    ExitCode::FAILURE
}
