//! `deployer` binary: parses the command line and hands it to the library.
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = deployer::cli::Cli::parse();
    deployer::main_with(cli)
}
