//! `kubeha-lab`: builds and tears down the local lab (see `docs/lab.md`).

fn main() -> std::process::ExitCode {
    kubeha_lab::cli::main()
}
