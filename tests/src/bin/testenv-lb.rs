//! The test environment's load-balancer stand-in (see `celestial_e2e::lb`). Started by
//! `tests/env/testenv up`; not a production component.

use clap::Parser;

/// Gives LoadBalancer Services an address on loopback and forwards it to a test-chosen backend.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Kubeconfig of the test cluster.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: std::path::PathBuf,
    /// Field manager recorded on the status patches.
    #[arg(long, env = "TESTENV_LB_FIELD_MANAGER", default_value = "testenv-lb")]
    field_manager: String,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(args.log.as_str())
        .with_ansi(false)
        .init();
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        tracing::info!("shutting down");
    };
    celestial_e2e::lb::run(
        client,
        celestial_e2e::lb::LbConfig {
            field_manager: args.field_manager,
        },
        shutdown,
    )
    .await?;
    Ok(())
}
