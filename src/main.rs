use std::process::ExitCode;

fn main() -> ExitCode {
    kubeha::cli::main()
}
