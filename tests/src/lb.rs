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
//!   socket created inside it ([`netns`]). Without a real node nothing listens on the address
//!   (connections are refused).
//!
//! Every change is logged and recorded as an Event on the Service, named like a cloud
//! controller's (`EnsuringLoadBalancer`, `EnsuredLoadBalancer`, `SyncLoadBalancerFailed`), with the
//! reporting controller `testenv-lb`; status patches carry the field manager given on the command line.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

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

/// Where the connections to one Service port go, as the backend annotation names them.
pub type Backends = BTreeMap<u16, SocketAddr>;

/// Where the stand-in sends the connections of one Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A server in the stand-in's own network namespace (the backend annotation).
    Host(SocketAddr),
    /// A node port of the real node, reached from a socket inside the node's namespace.
    Node { netns: PathBuf, addr: SocketAddr },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host(a) => write!(f, "{a}"),
            Self::Node { netns, addr } => write!(f, "node port {addr} in {}", netns.display()),
        }
    }
}

async fn connect(to: &Target) -> std::io::Result<TcpStream> {
    match to {
        Target::Host(a) => TcpStream::connect(a).await,
        Target::Node { netns, addr } => netns::connect(netns, *addr, Duration::from_secs(5)).await,
    }
}

/// Parses [`BACKEND_ANNOTATION`] for a Service whose TCP ports are `ports`.
pub fn parse_backends(value: &str, ports: &[u16]) -> Result<Backends, LbError> {
    let bad = |reason: String| LbError::BadBackend {
        value: value.to_owned(),
        reason,
    };
    let value = value.trim();
    if value.is_empty() {
        return Err(bad("empty".into()));
    }
    let mut out = Backends::new();
    if !value.contains('=') {
        let addr: SocketAddr = value
            .parse()
            .map_err(|e| bad(format!("{e} (expected HOST:PORT, e.g. 127.0.0.1:38080)")))?;
        for p in ports {
            out.insert(*p, addr);
        }
        return Ok(out);
    }
    for part in value.split(',') {
        let (port, addr) = part
            .split_once('=')
            .ok_or_else(|| bad(format!("{part:?} is not PORT=HOST:PORT")))?;
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|e| bad(format!("port {port:?}: {e}")))?;
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|e| bad(format!("{addr:?}: {e}")))?;
        if !ports.contains(&port) {
            return Err(bad(format!("the Service has no TCP port {port}")));
        }
        out.insert(port, addr);
    }
    Ok(out)
}

/// What the stand-in wants for one Service.
#[derive(Debug, Clone, PartialEq)]
struct Desired {
    pending: bool,
    backends: BTreeMap<u16, Target>,
    /// IP currently in the Service status, if any.
    status_ip: Option<IpAddr>,
}

fn desired(svc: &Service, node: Option<&NodeTarget>) -> Option<Result<Desired, LbError>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer") || spec.load_balancer_class.is_some() {
        return None;
    }
    let ports: Vec<u16> = spec
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.port).ok())
        .collect();
    let ann = svc.annotations();
    let pending = ann
        .get(PENDING_ANNOTATION)
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
    let backends = match (ann.get(BACKEND_ANNOTATION), node) {
        (Some(v), _) => match parse_backends(v, &ports) {
            Ok(b) => b.into_iter().map(|(p, a)| (p, Target::Host(a))).collect(),
            Err(e) => return Some(Err(e)),
        },
        // like a cloud load balancer: every TCP port to its node port on the (real) node
        (None, Some(node)) => spec
            .ports
            .iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .filter_map(|p| {
                Some((
                    u16::try_from(p.port).ok()?,
                    u16::try_from(p.node_port?).ok()?,
                ))
            })
            .map(|(port, node_port)| {
                let addr = SocketAddr::new(node.address, node_port);
                let netns = node.netns.clone();
                (port, Target::Node { netns, addr })
            })
            .collect(),
        (None, None) => BTreeMap::new(),
    };
    let status_ip = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|i| i.first())
        .and_then(|i| i.ip.as_deref())
        .and_then(|ip| ip.parse().ok());
    Some(Ok(Desired {
        pending,
        backends,
        status_ip,
    }))
}

/// A running listener on `ADDRESS:port`; the backend can be swapped without rebinding.
struct Listener {
    backend: Arc<RwLock<Target>>,
    task: JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct State {
    /// Service key (namespace/name) -> its address.
    addresses: HashMap<String, Ipv4Addr>,
    /// Service key -> its listeners by front address.
    listeners: HashMap<String, HashMap<SocketAddr, Listener>>,
    /// Services held pending (announced once per transition).
    pending: std::collections::HashSet<String>,
    /// Services whose backend annotation was reported invalid (value), to report once.
    bad_backend: HashMap<String, String>,
}

impl State {
    fn allocate(&mut self, key: &str, adopt: Option<IpAddr>) -> Result<Ipv4Addr, LbError> {
        if let Some(ip) = self.addresses.get(key) {
            return Ok(*ip);
        }
        let used: std::collections::HashSet<Ipv4Addr> = self.addresses.values().copied().collect();
        if let Some(IpAddr::V4(ip)) = adopt
            && in_pool(ip)
            && !used.contains(&ip)
        {
            self.addresses.insert(key.to_owned(), ip);
            return Ok(ip);
        }
        let mut n: u32 = 0x7f00_0101; // 127.0.1.1
        while n <= 0x7f00_fffe {
            let ip = Ipv4Addr::from(n);
            let last = ip.octets()[3];
            if last != 0 && last != 255 && !used.contains(&ip) {
                self.addresses.insert(key.to_owned(), ip);
                return Ok(ip);
            }
            n += 1;
        }
        Err(LbError::PoolExhausted)
    }
}

fn in_pool(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] == 127 && o[1] == 0 && o[2] >= 1 && o[3] != 0 && o[3] != 255
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

async fn patch_status(
    api: &Api<Service>,
    name: &str,
    fm: &str,
    ip: Option<Ipv4Addr>,
) -> Result<(), kube::Error> {
    let ingress = match ip {
        Some(ip) => serde_json::json!([{ "ip": ip.to_string(), "ipMode": "VIP" }]),
        None => serde_json::Value::Null,
    };
    let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": ingress } } });
    let pp = PatchParams {
        field_manager: Some(fm.to_owned()),
        ..Default::default()
    };
    api.patch_status(name, &pp, &Patch::Merge(&patch))
        .await
        .map(|_| ())
}

async fn record(recorder: &Recorder, svc: &Service, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "SyncLoadBalancer".into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&ev, &svc.object_ref(&())).await {
        tracing::warn!(error = %e, reason, "could not record an event");
    }
}

async fn reconcile(
    client: &Client,
    recorder: &Recorder,
    cfg: &LbConfig,
    state: &mut State,
    svc: &Service,
) {
    let (Some(ns), name) = (svc.namespace(), svc.name_any()) else {
        return;
    };
    let key = format!("{ns}/{name}");
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let want = match desired(svc, cfg.node.as_ref()) {
        None => {
            release(state, &key);
            return;
        }
        Some(Err(e)) => {
            let msg = e.to_string();
            if state.bad_backend.get(&key) != Some(&msg) {
                tracing::warn!(service = %key, error = %e, "ignoring the backend annotation");
                record(
                    recorder,
                    svc,
                    EventType::Warning,
                    "SyncLoadBalancerFailed",
                    format!("load-balancer stand-in: {msg}"),
                )
                .await;
                state.bad_backend.insert(key.clone(), msg);
            }
            Desired {
                pending: svc
                    .annotations()
                    .get(PENDING_ANNOTATION)
                    .is_some_and(|v| v == "true"),
                backends: BTreeMap::new(),
                status_ip: None,
            }
        }
        Some(Ok(d)) => {
            state.bad_backend.remove(&key);
            d
        }
    };
    if want.pending {
        release(state, &key);
        if state.pending.insert(key.clone()) {
            record(recorder, svc, EventType::Normal, "EnsuringLoadBalancer", format!(
                "load-balancer stand-in: held pending (no address) by the annotation {PENDING_ANNOTATION}=true"
            )).await;
        }
        if want.status_ip.is_some() {
            match patch_status(&api, &name, &cfg.field_manager, None).await {
                Ok(()) => tracing::info!(service = %key, "pending on request: address withdrawn"),
                Err(e) => tracing::warn!(service = %key, error = %e, "could not clear the status"),
            }
        }
        return;
    }
    state.pending.remove(&key);
    let ip = match state.allocate(&key, want.status_ip) {
        Ok(ip) => ip,
        Err(e) => {
            tracing::error!(service = %key, error = %e, "cannot assign an address");
            record(
                recorder,
                svc,
                EventType::Warning,
                "SyncLoadBalancerFailed",
                format!("load-balancer stand-in: {e}"),
            )
            .await;
            return;
        }
    };
    if want.status_ip != Some(IpAddr::V4(ip)) {
        match patch_status(&api, &name, &cfg.field_manager, Some(ip)).await {
            Ok(()) => {
                tracing::info!(service = %key, %ip, "assigned the load-balancer address");
                let to = if cfg.node.is_some() {
                    format!(
                        "the {BACKEND_ANNOTATION} annotation's backend, else to the Service's node ports on the real node"
                    )
                } else {
                    format!("the {BACKEND_ANNOTATION} annotation's backend")
                };
                record(
                    recorder,
                    svc,
                    EventType::Normal,
                    "EnsuredLoadBalancer",
                    format!("load-balancer stand-in: assigned {ip} (loopback; forwards to {to})"),
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(service = %key, %ip, error = %e, "could not write the status; will retry on the next event")
            }
        }
    }
    // listeners: one per TCP port with a backend
    let current = state.listeners.entry(key.clone()).or_default();
    let fronts: HashMap<SocketAddr, Target> = want
        .backends
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
                record(
                    recorder,
                    svc,
                    EventType::Warning,
                    "SyncLoadBalancerFailed",
                    format!("load-balancer stand-in: cannot listen on {front}: {e}"),
                )
                .await;
            }
        }
    }
}

fn release(state: &mut State, key: &str) {
    state.bad_backend.remove(key);
    state.pending.remove(key);
    if let Some(ip) = state.addresses.remove(key) {
        tracing::info!(service = %key, %ip, "released the load-balancer address");
    }
    if let Some(ls) = state.listeners.remove(key) {
        for front in ls.keys() {
            tracing::info!(service = %key, %front, "stopped forwarding");
        }
    }
}

/// Runs the stand-in until `shutdown` resolves or the watch fails for good.
pub async fn run(
    client: Client,
    cfg: LbConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), LbError> {
    let api: Api<Service> = Api::all(client.clone());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "testenv-lb".into(),
            instance: None,
        },
    );
    let mut state = State::default();
    // Services seen during a (re)list, to drop the ones that disappeared meanwhile.
    let mut relisting: Option<Vec<String>> = None;
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    tokio::pin!(shutdown);
    let mut announced = false;
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            ev = stream.try_next() => ev,
        };
        let event = match event {
            Ok(Some(ev)) => ev,
            Ok(None) => return Ok(()),
            Err(e) => {
                // the watcher re-lists by itself on the next poll; back off a little
                tracing::warn!(error = %e, "watch error; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match event {
            watcher::Event::Init => relisting = Some(Vec::new()),
            watcher::Event::InitApply(svc) => {
                if let Some(seen) = relisting.as_mut() {
                    seen.push(format!(
                        "{}/{}",
                        svc.namespace().unwrap_or_default(),
                        svc.name_any()
                    ));
                }
                reconcile(&client, &recorder, &cfg, &mut state, &svc).await;
            }
            watcher::Event::InitDone => {
                if let Some(seen) = relisting.take() {
                    let gone: Vec<String> = state
                        .addresses
                        .keys()
                        .filter(|k| !seen.contains(k))
                        .cloned()
                        .collect();
                    for k in gone {
                        release(&mut state, &k);
                    }
                }
                if !announced {
                    tracing::info!("{READY_LINE}");
                    announced = true;
                }
            }
            watcher::Event::Apply(svc) => {
                reconcile(&client, &recorder, &cfg, &mut state, &svc).await
            }
            watcher::Event::Delete(svc) => release(
                &mut state,
                &format!("{}/{}", svc.namespace().unwrap_or_default(), svc.name_any()),
            ),
        }
    }
}

/// Sockets inside another network namespace (the real node's), made on a short-lived thread that
/// joined it: `setns(2)` with `CLONE_NEWNET` moves only the calling thread, and a socket stays in
/// the namespace it was created in, whichever thread uses it later. A fresh thread per socket
/// keeps the runtime's threads in the process's own namespace and follows a namespace that was
/// re-created under the same path.
pub mod netns {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;
    use std::path::Path;
    use std::time::Duration;

    fn enter(path: &Path) -> io::Result<()> {
        let ns = std::fs::File::open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        // SAFETY: setns(2) on a file descriptor that stays open for the call; it changes the
        // network namespace of this thread only, which ends after making one socket.
        let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("setns {}: {e}", path.display()),
            ));
        }
        Ok(())
    }

    async fn inside<T: Send + 'static>(
        path: &Path,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name("netns".into())
            .spawn(move || {
                let _ = tx.send(enter(&path).and_then(|()| f()));
            })?;
        rx.await
            .map_err(|_| io::Error::other("the network-namespace thread ended without an answer"))?
    }

    /// Connects to `addr` from inside the network namespace at `path` (e.g. `/run/netns/NAME`).
    pub async fn connect(
        path: &Path,
        addr: SocketAddr,
        timeout: Duration,
    ) -> io::Result<tokio::net::TcpStream> {
        let s = inside(path, move || {
            std::net::TcpStream::connect_timeout(&addr, timeout)
        })
        .await?;
        s.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(s)
    }

    /// Listens on `addr` inside the network namespace at `path`.
    pub async fn listen(path: &Path, addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
        let l = inside(path, move || std::net::TcpListener::bind(addr)).await?;
        l.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(l)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn backend_for_all_ports() {
        let b = parse_backends("127.0.0.1:38080", &[80, 443]).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[&80], "127.0.0.1:38080".parse().unwrap());
        assert_eq!(b[&443], "127.0.0.1:38080".parse().unwrap());
    }

    #[test]
    fn backend_per_port() {
        let b = parse_backends("80=127.0.0.1:1, 443=127.0.0.1:2", &[80, 443, 8080]).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b[&443], "127.0.0.1:2".parse().unwrap());
    }

    #[test]
    fn backend_errors_name_the_problem() {
        let e = parse_backends("localhost", &[80]).unwrap_err().to_string();
        assert!(e.contains("HOST:PORT"), "{e}");
        let e = parse_backends("81=127.0.0.1:1", &[80])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no TCP port 81"), "{e}");
        assert!(parse_backends(" ", &[80]).is_err());
    }

    #[test]
    fn allocation_is_distinct_stable_and_adopts() {
        let mut s = State::default();
        let a = s.allocate("ns/a", None).unwrap();
        let b = s.allocate("ns/b", None).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, Ipv4Addr::new(127, 0, 1, 1));
        assert_eq!(s.allocate("ns/a", None).unwrap(), a);
        // adopt an address already in a status, unless taken or outside the pool
        let c = s
            .allocate("ns/c", Some("127.0.3.7".parse().unwrap()))
            .unwrap();
        assert_eq!(c, Ipv4Addr::new(127, 0, 3, 7));
        let d = s.allocate("ns/d", Some(IpAddr::V4(a))).unwrap();
        assert_ne!(d, a);
        let e = s
            .allocate("ns/e", Some("10.0.0.1".parse().unwrap()))
            .unwrap();
        assert!(in_pool(e));
        release(&mut s, "ns/a");
        assert_eq!(
            s.allocate("ns/f", None).unwrap(),
            a,
            "a released address is reused"
        );
    }

    fn lb_service(backend: Option<&str>) -> Service {
        let ann = backend.map_or_else(
            || serde_json::json!({}),
            |b| serde_json::json!({ BACKEND_ANNOTATION: b }),
        );
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": "s", "namespace": "n", "annotations": ann },
            "spec": { "type": "LoadBalancer", "ports": [
                { "name": "http", "port": 80, "nodePort": 30080 },
                { "name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30053 },
                { "name": "none", "port": 81 }
            ] }
        }))
        .unwrap()
    }

    #[test]
    fn node_ports_of_the_real_node_unless_the_annotation_names_a_backend() {
        let node = NodeTarget {
            netns: "/state/node/netns".into(),
            address: "10.250.0.1".parse().unwrap(),
        };
        let d = desired(&lb_service(None), Some(&node)).unwrap().unwrap();
        // TCP ports with a node port only
        assert_eq!(d.backends.len(), 1, "{:?}", d.backends);
        assert_eq!(
            d.backends[&80],
            Target::Node {
                netns: "/state/node/netns".into(),
                addr: "10.250.0.1:30080".parse().unwrap()
            }
        );
        assert!(
            d.backends[&80]
                .to_string()
                .contains("node port 10.250.0.1:30080")
        );
        // without a real node nothing forwards
        let d = desired(&lb_service(None), None).unwrap().unwrap();
        assert!(d.backends.is_empty());
        // the annotation wins
        let d = desired(&lb_service(Some("127.0.0.1:9")), Some(&node))
            .unwrap()
            .unwrap();
        assert_eq!(
            d.backends[&80],
            Target::Host("127.0.0.1:9".parse().unwrap())
        );
    }

    /// A network namespace of its own (a bind mount in a temporary directory), for as long as
    /// the guard lives. Needs root, like the whole test environment.
    struct Netns {
        dir: tempfile::TempDir,
    }

    impl Netns {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ns");
            std::fs::write(&path, b"").unwrap();
            let ok = std::process::Command::new("unshare")
                .arg(format!("--net={}", path.display()))
                .arg("true")
                .status()
                .unwrap()
                .success();
            assert!(ok, "unshare --net failed (needs root)");
            let ok = std::process::Command::new("nsenter")
                .arg(format!("--net={}", path.display()))
                .args(["ip", "link", "set", "lo", "up"])
                .status()
                .unwrap()
                .success();
            assert!(ok);
            Self { dir }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("ns")
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.path())
                .status();
        }
    }

    #[tokio::test]
    async fn sockets_inside_another_network_namespace() {
        let ns = Netns::new();
        let listener = netns::listen(&ns.path(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"inside").await.unwrap();
        });
        let mut conn = netns::connect(&ns.path(), addr, Duration::from_secs(2))
            .await
            .unwrap();
        let mut got = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut conn, &mut got)
            .await
            .unwrap();
        assert_eq!(got, "inside");
        accept.await.unwrap();
        // the namespace's loopback is not the process's: nothing listens there on the host side
        // (the runtime's threads stayed in their own namespace)
        let outside = TcpStream::connect(addr).await;
        assert!(outside.is_err(), "{addr} answered outside the namespace");
        let missing = netns::connect(
            Path::new("/nonexistent/netns"),
            addr,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/netns"),
            "{missing}"
        );
    }

    #[test]
    fn skips_network_and_broadcast_like_octets() {
        let mut s = State::default();
        for i in 0..300 {
            let ip = s.allocate(&format!("ns/{i}"), None).unwrap();
            assert!(in_pool(ip), "{ip}");
        }
    }
}
