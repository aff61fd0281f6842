//! `kubeha-lab`: builds and tears down the local lab (see `docs/lab.md`).

fn main() -> std::process::ExitCode {
    eprintln!("kubeha-lab: not implemented yet");
    std::process::ExitCode::FAILURE
}
