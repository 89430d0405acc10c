//! The stand-in's listeners: one per front address (`ADDRESS:servicePort`), each forwarding every
//! connection to its current backend, which can be swapped without rebinding.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::desired::Target;

/// A running listener on `ADDRESS:port`; the backend can be swapped without rebinding.
pub(super) struct Listener {
    backend: Arc<RwLock<Target>>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(to: &Target) -> std::io::Result<TcpStream> {
    match to {
        Target::Host(a) => TcpStream::connect(a).await,
        Target::Node { netns, addr } => {
            crate::netns::connect(netns, *addr, Duration::from_secs(5)).await
        }
    }
}

async fn proxy(front: SocketAddr, listener: TcpListener, backend: Arc<RwLock<Target>>) {
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%front, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let to = backend.read().expect("backend lock").clone();
        tokio::spawn(async move {
            match connect(&to).await {
                Ok(mut outbound) => {
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    if let Err(e) = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await
                    {
                        tracing::debug!(%front, %peer, backend = %to, error = %e, "connection ended with an error");
                    }
                }
                Err(e) => {
                    tracing::warn!(%front, %peer, backend = %to, error = %e, "backend unreachable; closing the connection")
                }
            }
        });
    }
}

/// Makes the Service `key`'s listeners (`current`) match `backends` on address `ip`: one per TCP
/// port with a backend; listeners of ports without one close, changed backends are swapped in.
/// Returns the front addresses it could not listen on, with why.
pub(super) async fn sync(
    key: &str,
    current: &mut HashMap<SocketAddr, Listener>,
    ip: Ipv4Addr,
    backends: &BTreeMap<u16, Target>,
) -> Vec<(SocketAddr, std::io::Error)> {
    let fronts: HashMap<SocketAddr, Target> = backends
        .iter()
        .map(|(port, to)| (SocketAddr::new(IpAddr::V4(ip), *port), to.clone()))
        .collect();
    current.retain(|front, _| {
        let keep = fronts.contains_key(front);
        if !keep {
            tracing::info!(service = %key, %front, "stopped forwarding");
        }
        keep
    });
    let mut failed = Vec::new();
    for (front, to) in fronts {
        if let Some(l) = current.get(&front) {
            let mut b = l.backend.write().expect("backend lock");
            if *b != to {
                tracing::info!(service = %key, %front, backend = %to, "backend changed");
                *b = to;
            }
            continue;
        }
        match TcpListener::bind(front).await {
            Ok(listener) => {
                tracing::info!(service = %key, %front, backend = %to, "forwarding");
                let backend = Arc::new(RwLock::new(to));
                let task = tokio::spawn(proxy(front, listener, backend.clone()));
                current.insert(front, Listener { backend, task });
            }
            Err(e) => {
                tracing::error!(service = %key, %front, error = %e, "cannot listen on the load-balancer address");
                failed.push((front, e));
            }
        }
    }
    failed
}
