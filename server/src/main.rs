//! `celestial-server`: parse flags, set up logging, bind, and hand over to the library.

use std::path::Path;
use std::process::ExitCode;

use celestial_server::config::LogFormat;
use celestial_server::server::{EXIT_FAILURE as FAILURE, write_termination_message};
use celestial_server::{Cli, Command, ServerError};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck(args)) = &cli.command {
        return match celestial_server::server::probe(&args.address, args.timeout, args.tls) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => {
                eprintln!(
                    "celestial-server healthcheck: {} is not ready",
                    args.address
                );
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("celestial-server healthcheck: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let config = cli.config;
    let termination_log = std::path::PathBuf::from(&config.termination_log);
    init_tracing(config.log_format, &config.log_filter);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(config.effective_http_threads());
    // Answers first: a job's completion wakes its request from an inference thread, through the
    // runtime's global queue, from which tokio otherwise takes one task per ~200 us of other work
    // while its local queue is not empty. Under a flood of new requests the answers (and the
    // prediction slots they free) then waited behind them, and with `--max-queue` goodput fell to
    // 4-7 % of the peak at 4x offered load; checked first, 11-20 % (bench/README.md, "Answers
    // before new requests").
    builder.global_queue_interval(1);
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            return fail(
                &format!("cannot start the async runtime: {e}"),
                FAILURE,
                &termination_log,
            );
        }
    };
    let result = runtime.block_on(async move {
        let signal = celestial_server::shutdown_signal()
            .map_err(|e| (format!("cannot install signal handlers: {e}"), FAILURE))?;
        let serve = async {
            let config = celestial_server::CheckedConfig::new(config)?;
            let listeners = celestial_server::bind(&config).await?;
            celestial_server::run(config, listeners, signal).await
        };
        serve
            .await
            .map_err(|e: ServerError| (e.to_string(), e.exit_code()))
    });
    // Do not wait for worker threads blocked on the job queue.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((message, code)) => fail(&message, code, &termination_log),
    }
}

/// `message` as one line on stderr and in the termination log; exit with `code`.
fn fail(message: &str, code: u8, termination_log: &Path) -> ExitCode {
    let line = format!("celestial-server: error: {message}");
    eprintln!("{line}");
    write_termination_message(termination_log, &line);
    ExitCode::from(code)
}

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: logs redirected to a file or collected by a container runtime
    // stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}
