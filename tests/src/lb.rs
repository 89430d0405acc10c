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
//!   kwok nodes are not real processes, so the test names the real server to reach. Without the
//!   annotation nothing listens on the address (connections are refused).
//!
//! Every change is logged and recorded as an Event on the Service, named like a cloud
//! controller's (`EnsuringLoadBalancer`, `EnsuredLoadBalancer`, `SyncLoadBalancerFailed`), with the
//! reporting controller `testenv-lb`; status patches carry the field manager given on the command line.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};

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
}

/// Where the connections to one Service port go.
pub type Backends = BTreeMap<u16, SocketAddr>;

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
    backends: Backends,
    /// IP currently in the Service status, if any.
    status_ip: Option<IpAddr>,
}

fn desired(svc: &Service) -> Option<Result<Desired, LbError>> {
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
    let backends = match ann.get(BACKEND_ANNOTATION) {
        Some(v) => match parse_backends(v, &ports) {
            Ok(b) => b,
            Err(e) => return Some(Err(e)),
        },
        None => Backends::new(),
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
    backend: Arc<RwLock<SocketAddr>>,
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

async fn proxy(front: SocketAddr, listener: TcpListener, backend: Arc<RwLock<SocketAddr>>) {
    loop {
        let (mut inbound, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(%front, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let to = *backend.read().expect("backend lock");
        tokio::spawn(async move {
            match TcpStream::connect(to).await {
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
    let want = match desired(svc) {
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
                backends: Backends::new(),
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
                record(recorder, svc, EventType::Normal, "EnsuredLoadBalancer", format!(
                    "load-balancer stand-in: assigned {ip} (loopback; forwards to the {BACKEND_ANNOTATION} annotation's backend)"
                )).await;
            }
            Err(e) => {
                tracing::warn!(service = %key, %ip, error = %e, "could not write the status; will retry on the next event")
            }
        }
    }
    // listeners: one per TCP port with a backend
    let current = state.listeners.entry(key.clone()).or_default();
    let fronts: HashMap<SocketAddr, SocketAddr> = want
        .backends
        .iter()
        .map(|(port, to)| (SocketAddr::new(IpAddr::V4(ip), *port), *to))
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
                let backend = Arc::new(RwLock::new(to));
                let task = tokio::spawn(proxy(front, listener, backend.clone()));
                current.insert(front, Listener { backend, task });
                tracing::info!(service = %key, %front, backend = %to, "forwarding");
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
    shutdown: impl std::future::Future<Output = ()>,
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
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
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

#[cfg(test)]
mod tests {
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

    #[test]
    fn skips_network_and_broadcast_like_octets() {
        let mut s = State::default();
        for i in 0..300 {
            let ip = s.allocate(&format!("ns/{i}"), None).unwrap();
            assert!(in_pool(ip), "{ip}");
        }
    }
}
