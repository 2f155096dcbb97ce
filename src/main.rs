//! The `imgbuild` binary: everything is in the library; see `cli`.
mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
