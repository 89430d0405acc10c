//! The load-balancer stand-in of the test environment (binary `testenv-lb`).
//!
//! A STAND-IN for a cloud provider's load-balancer controller, for tests only. No cloud controller
//! runs in the test cluster, so nothing would ever fill `status.loadBalancer.ingress` of a
//! `type: LoadBalancer` Service. This controller does, with an address on loopback:
//!
//! * every LoadBalancer Service (without a `spec.loadBalancerClass`) gets its own address from
//!   127.0.1.1 upwards, written to `status.loadBalancer.ingress[0].ip` (kept across restarts: an
//!   address already in the status is adopted); it is released when the Service goes away;
//! * with the annotation [`PENDING_ANNOTATION`]`: "true"` the Service gets no address (the status
//!   is cleared), which is what a real cloud shows while it provisions, or when it cannot;
//! * with the annotation [`BACKEND_ANNOTATION`]`: HOST:PORT` (or `PORT=HOST:PORT,...` per Service
//!   port), it listens on `ADDRESS:servicePort` for every TCP port of the Service and forwards each
//!   connection to that backend, e.g. a container listening on 127.0.0.1:38080. Kubernetes pods on
//!   kwok nodes are not real processes, so the test names the real server to reach;
//! * without that annotation, when the environment has a real node (`--node-netns`, see
//!   `tests/env/node.sh`), it does what a cloud load balancer does: it forwards `ADDRESS:port` to
//!   the Service's node port on the node's address (`--node-address`), where kube-proxy picks a
//!   ready pod. The node lives in its own network namespace, so the connection is made from a
//!   socket created inside it ([`crate::netns`]). Without a real node nothing listens on the address
//!   (connections are refused).
//!
//! Every change is logged and recorded as an Event on the Service, named like a cloud
//! controller's (`EnsuringLoadBalancer`, `EnsuredLoadBalancer`, `SyncLoadBalancerFailed`), with the
//! reporting controller `testenv-lb`; status patches carry the field manager given on the command line.

mod desired;
mod forward;
mod reconcile;
mod state;
mod watch;

use std::net::IpAddr;
use std::path::PathBuf;

use kube::runtime::watcher;

pub use desired::{Backends, parse_backends};
pub use watch::run;

/// Annotation naming the real backend of a LoadBalancer Service: `HOST:PORT` for every port, or
/// `PORT=HOST:PORT[,PORT=HOST:PORT...]` keyed by Service port.
pub const BACKEND_ANNOTATION: &str = "testenv.celestial.dev/backend";
/// Annotation `"true"`: keep the Service pending (no ingress address), like a cloud that has not
/// provisioned (or cannot provision) the load balancer.
pub const PENDING_ANNOTATION: &str = "testenv.celestial.dev/lb-pending";
/// Log line printed once the watch is established (the harness waits for it).
pub const READY_LINE: &str = "watching LoadBalancer Services";

/// Errors of the load-balancer stand-in.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    /// The Service watch ended with an error.
    #[error("watching Services failed: {0}")]
    Watch(#[from] watcher::Error),
    /// The annotation value cannot be parsed.
    #[error("annotation {BACKEND_ANNOTATION}={value:?} is invalid: {reason}")]
    BadBackend { value: String, reason: String },
    /// All loopback addresses of the pool are in use.
    #[error("no free address left in 127.0.1.1-127.0.255.254")]
    PoolExhausted,
}

/// Configuration of [`run`].
#[derive(Debug, Clone)]
pub struct LbConfig {
    /// Field manager for the status patches.
    pub field_manager: String,
    /// The environment's real node, if it has one: Services without the backend annotation are
    /// forwarded to their node ports there.
    pub node: Option<NodeTarget>,
}

/// Where the real node's node ports are reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTarget {
    /// The node's network namespace, e.g. `/run/netns/celestial-testenv`.
    pub netns: PathBuf,
    /// The node's address inside it (its `InternalIP`).
    pub address: IpAddr,
}
