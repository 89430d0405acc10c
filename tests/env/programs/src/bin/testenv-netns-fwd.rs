//! The test environment's forwarder into the real node's network namespace (started by
//! `tests/env/testenv` as the node part `node-fwd`; see `tests/env/node.sh`).
//!
//! The control plane and the registries listen on the host's loopback (127.0.0.1:6443, :5000,
//! :5001), which a network namespace cannot see: its own `lo` is another device. For each
//! `--into LISTEN=TARGET` this listens on LISTEN *inside* the namespace (the socket is created by
//! a thread that joined it) and forwards every connection to TARGET in the forwarder's own
//! namespace. So the kubelet, kube-proxy and containerd inside use the same addresses as the
//! host side: `https://127.0.0.1:6443`, image names `127.0.0.1:5000/...`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tokio::net::{TcpListener, TcpStream};

/// Forwards addresses inside a network namespace to addresses outside it.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The network namespace to listen in, e.g. /run/netns/celestial-testenv.
    #[arg(long)]
    netns: PathBuf,
    /// LISTEN=TARGET: listen on LISTEN inside the namespace, connect to TARGET outside it.
    #[arg(long = "into", value_parser = parse_pair, required = true)]
    into: Vec<(SocketAddr, SocketAddr)>,
}

fn parse_pair(s: &str) -> Result<(SocketAddr, SocketAddr), String> {
    let (l, t) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not LISTEN=TARGET"))?;
    let l = l.parse().map_err(|e| format!("{l:?}: {e}"))?;
    let t = t.parse().map_err(|e| format!("{t:?}: {e}"))?;
    Ok((l, t))
}

async fn serve(listener: TcpListener, front: SocketAddr, target: SocketAddr) {
    loop {
        let (mut inbound, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("testenv-netns-fwd: accept on {front}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            match TcpStream::connect(target).await {
                Ok(mut outbound) => {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => eprintln!("testenv-netns-fwd: {front} -> {target}: {e}"),
            }
        });
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for (front, target) in &args.into {
        let listener = celestial_testenv::netns::listen(&args.netns, *front)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {front} in the namespace: {e}"))?;
        tokio::spawn(serve(listener, *front, *target));
        eprintln!(
            "testenv-netns-fwd: {front} in {} -> {target}",
            args.netns.display()
        );
    }
    eprintln!("testenv-netns-fwd: forwarding");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
    Ok(())
}
