//! What the stand-in wants for one Service: its address held pending or not, and where each TCP
//! port's connections go (the backend annotation, else the real node's node ports).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use super::{BACKEND_ANNOTATION, LbError, NodeTarget, PENDING_ANNOTATION};

/// Where the connections to one Service port go, as the backend annotation names them.
pub type Backends = BTreeMap<u16, SocketAddr>;

/// Where the stand-in sends the connections of one Service port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
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
pub(super) struct Desired {
    pub(super) pending: bool,
    pub(super) backends: BTreeMap<u16, Target>,
    /// IP currently in the Service status, if any.
    pub(super) status_ip: Option<IpAddr>,
}

/// None for a Service that is not the stand-in's (not a LoadBalancer, or of another class).
pub(super) fn desired(
    svc: &Service,
    node: Option<&NodeTarget>,
) -> Option<Result<Desired, LbError>> {
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
}
