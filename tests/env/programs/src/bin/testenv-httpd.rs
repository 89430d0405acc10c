//! A tiny static HTTP server for container smoke tests (see `celestial_testenv::httpd`).

use clap::Parser;

/// Serves a directory over HTTP/1.1 (GET/HEAD), plus `/healthz`.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "HTTPD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Directory to serve.
    #[arg(long, env = "HTTPD_ROOT", default_value = "/srv/www")]
    root: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    eprintln!(
        "testenv-httpd: serving {} on http://{}",
        args.root.display(),
        args.listen
    );
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
    };
    celestial_testenv::httpd::run(args.root, listener, shutdown).await?;
    Ok(())
}
