//! Command line: every flag has an environment variable, so CI can configure `deployer` without flags.
//!
//! This module parses the top level (`--output`, `--log`, the subcommand) and runs the command.
//! The flags themselves are in one module per concern, each with what its flags mean for the
//! layers below (the plain inputs of `kube/` and `oci/`); [`crate::commands`] takes them as parsed:
//!
//! - [`command`]: the subcommands
//! - [`image`]: `build` and `push`, and how the image is built
//! - [`registry`]: registry credentials and transport (`build`, `push`, `release`)
//! - [`cluster`]: which cluster and manifests, and `diff`, `status`, `delete`
//! - [`apply`]: `apply` and `release`: waiting, checking, API keys and TLS
//! - [`canary`]: their `--canary` (the new model on a share of live traffic, judged)
//! - [`history`]: the release history they keep, `history` and `rollback`

use clap::{Parser, ValueEnum};

use crate::commands;
use crate::exit::ExitCode;
use crate::interrupt::Interrupt;
use crate::render::{Format, render};

pub mod apply;
pub mod canary;
pub mod cluster;
pub mod command;
pub mod history;
pub mod image;
pub mod registry;

use command::Command;

/// The exit codes, as `--help` lists them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  internal error (a bug or an unexpected I/O error)
  2  usage or configuration error (flags, malformed manifest, kubeconfig, registry configuration)
  3  the Kubernetes API refused the request or could not be reached (apply, diff, status, delete)
  4  rollout failed (pod reason or ProgressDeadlineExceeded), rolled back or not
  5  timed out (rollout, load-balancer address, deletion)
  6  smoke test through the public URL failed (and was not rolled back)
  7  image build, pull or push failed (registry unreachable after retries, credentials refused,
       base too old)
  8  the new model failed its checks (its self-check at start, the smoke test with
       --rollback-on-failure, --evaluate, --canary); the previous one serves
130  interrupted by SIGINT (Ctrl-C): stopped, printed the cluster's state and how to resume
143  terminated by SIGTERM: the same";

/// The default log filter: warnings, without the client libraries' own error lines.
pub const DEFAULT_LOG: &str = "warn,kube_client=off,oci_client=off";

/// Build and push the celestial-server image, apply the Kubernetes manifests, wait until it serves.
#[derive(Debug, Parser)]
#[command(name = "deployer", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// Output format: human-readable text, or one JSON document on stdout for CI (progress stays on stderr).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Text, env = "DEPLOYER_OUTPUT")]
    pub output: OutputFormat,

    /// Log filter for diagnostics on stderr (tracing syntax, e.g. `deployer=debug,kube=debug`).
    /// Errors are reported once by deployer itself, so library error logs are off by default.
    #[arg(long, global = true, default_value = DEFAULT_LOG, env = "DEPLOYER_LOG")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

/// Output format of a command's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable lines; live progress (a spinner on a terminal, plain lines otherwise).
    Text,
    /// One JSON object on stdout with the result or the error and its exit code.
    Json,
}

/// Runs the parsed command line: logging, the async runtime, the command, its output. Returns
/// the process exit code.
pub fn main_with(cli: Cli) -> std::process::ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG));
    // Err: a subscriber is already set (only when called twice in one process, as tests may).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(ExitCode::Internal.code());
        }
    };
    let format = match cli.output {
        OutputFormat::Text => Format::Text,
        OutputFormat::Json => Format::Json,
    };
    let result = runtime.block_on(async {
        let interrupt = Interrupt::install()
            .map_err(|e| anyhow::anyhow!("cannot install the SIGINT/SIGTERM handlers: {e}"))?;
        commands::run(cli.command, &interrupt).await
    });
    let out = render(&result, format);
    if let Some(s) = out.stdout {
        println!("{s}");
    }
    if let Some(s) = out.stderr {
        eprintln!("{s}");
    }
    std::process::ExitCode::from(out.code.code())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

    #[test]
    fn cli_is_consistent_and_every_flag_has_an_env_var() {
        Cli::command().debug_assert();
        fn check(cmd: &clap::Command, path: &str) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" || arg.is_positional() {
                    continue;
                }
                assert!(arg.get_env().is_some(), "{path} --{id} has no env var");
                assert!(arg.get_help().is_some(), "{path} --{id} has no doc");
            }
            for sub in cmd.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "deployer");
    }

    #[test]
    fn duration_flags_take_the_shared_syntax() {
        let c = Cli::try_parse_from([
            "deployer",
            "apply",
            "--timeout",
            "1m30s",
            "--lb-timeout",
            "1.5s",
            "--smoke-timeout",
            "90",
        ])
        .unwrap();
        let Command::Apply(a) = c.command else {
            panic!("not apply")
        };
        assert_eq!(a.wait.timeout, Duration::from_secs(90));
        assert_eq!(a.wait.lb_timeout, Duration::from_millis(1500));
        assert_eq!(a.wait.smoke_timeout, Duration::from_secs(90));
        let e = Cli::try_parse_from(["deployer", "delete", "--timeout", "5 minutes"]).unwrap_err();
        assert!(
            e.to_string().contains("invalid duration unit `minutes`"),
            "{e}"
        );
    }

    #[test]
    fn exit_codes_are_in_help() {
        for c in ExitCode::ALL {
            assert!(
                EXIT_CODES.contains(&format!("\n{:>3}  ", c.code())),
                "exit code {} not in --help",
                c.code()
            );
        }
    }

    /// docs/deploy.md's "Exit codes" table has exactly the codes there are.
    #[test]
    fn exit_codes_are_in_the_docs() {
        let docs = include_str!("../../../docs/deploy.md");
        let section = docs
            .split("### Exit codes")
            .nth(1)
            .and_then(|s| s.split("\n### ").next())
            .expect("docs/deploy.md has an \"Exit codes\" section");
        let documented: Vec<u8> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| ")?.split(" |").next()?.parse().ok())
            .collect();
        let codes: Vec<u8> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(documented, codes, "docs/deploy.md's exit codes");
    }

    #[test]
    fn smoke_flag_forms() {
        let c = Cli::try_parse_from(["deployer", "apply", "--smoke=false"]).unwrap();
        let Command::Apply(a) = c.command else {
            panic!()
        };
        assert!(!a.wait.smoke);
        let c = Cli::try_parse_from(["deployer", "apply"]).unwrap();
        let Command::Apply(a) = c.command else {
            panic!()
        };
        assert!(a.wait.smoke);
        assert!(Cli::try_parse_from(["deployer", "apply", "--registry-username", "x"]).is_err());
    }
}
