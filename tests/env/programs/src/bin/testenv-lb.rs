//! The test environment's load-balancer stand-in (see `celestial_testenv::lb`). Started by
//! `tests/env/testenv up`; not a production component.

use clap::Parser;

/// Gives LoadBalancer Services an address on loopback and forwards it to a test-chosen backend,
/// or to the Service's node ports on the environment's real node.
#[derive(Parser, Debug)]
#[command(version)]
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
    /// Network namespace of the real node (e.g. /run/netns/celestial-testenv): Services without
    /// the backend annotation are forwarded to their node ports there.
    #[arg(long, requires = "node_address")]
    node_netns: Option<std::path::PathBuf>,
    /// The real node's address inside its namespace (its InternalIP).
    #[arg(long, requires = "node_netns")]
    node_address: Option<std::net::IpAddr>,
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
    celestial_testenv::lb::run(
        client,
        celestial_testenv::lb::LbConfig {
            field_manager: args.field_manager,
            node: args
                .node_netns
                .zip(args.node_address)
                .map(|(netns, address)| celestial_testenv::lb::NodeTarget { netns, address }),
        },
        shutdown,
    )
    .await?;
    Ok(())
}
