//! What `tests/env/testenv up` says about the environment it started (`env.json`).

use std::path::PathBuf;

use serde::Deserialize;

/// What `testenv up` wrote to `env.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct EnvInfo {
    /// State directory (removed by `testenv down`).
    pub state_dir: PathBuf,
    /// Admin kubeconfig of the test cluster.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:6443`.
    pub api_server: String,
    /// Plain-HTTP registry without auth, `127.0.0.1:5000`.
    pub registry: String,
    /// Plain-HTTP registry with htpasswd basic auth, `127.0.0.1:5001`.
    pub registry_auth: String,
    /// User of the auth registry.
    pub registry_auth_username: String,
    /// Password of the auth registry (random per `up`).
    pub registry_auth_password: String,
    /// Directory of the built Go tools (kubectl, kubeconform, ...).
    pub tools_bin: PathBuf,
    /// kubectl of the same release as the control plane.
    pub kubectl: PathBuf,
    /// kubeconform.
    pub kubeconform: PathBuf,
    /// `-schema-location` template for kubeconform (schemas from this apiserver).
    pub kubeconform_schema_location: String,
    /// The load-balancer stand-in binary.
    pub lb_bin: PathBuf,
    /// [`crate::lb::BACKEND_ANNOTATION`].
    pub lb_backend_annotation: String,
    /// [`crate::lb::PENDING_ANNOTATION`].
    pub lb_pending_annotation: String,
    /// `CONTAINERS_CONF` for podman.
    pub containers_conf: PathBuf,
    /// `CONTAINERS_REGISTRIES_CONF` for podman.
    pub containers_registries_conf: PathBuf,
    /// The synthesized base images.
    pub base_images: BaseImages,
    /// Names of the fake (kwok) nodes.
    pub kwok_nodes: Vec<String>,
    /// Taint key of the kwok nodes (`KEY=true:NoSchedule`): only pods that tolerate it go there.
    pub kwok_taint: String,
    /// The real nodes (two by default; `TESTENV_REAL_NODES`), where pods run unless they opt into
    /// the kwok nodes.
    #[serde(default)]
    pub real_nodes: Vec<RealNode>,
    /// metrics-server's address (behind the aggregation layer), empty without real nodes.
    #[serde(default)]
    pub metrics_server: String,
}

impl EnvInfo {
    /// The real node named `name`, if it is one.
    pub fn real_node_named(&self, name: &str) -> Option<&RealNode> {
        self.real_nodes.iter().find(|n| n.name == name)
    }
}

/// One of the environment's real nodes: kubelet + containerd + CNI bridge + kube-proxy in a network
/// namespace of their own (tests/env/node.sh), on a bridge the host routes to.
#[derive(Debug, Clone, Deserialize)]
pub struct RealNode {
    /// Node name.
    pub name: String,
    /// Label `LABEL=true` on every real node (select them with a nodeSelector).
    pub label: String,
    /// The node's InternalIP, inside its namespace and on the host's bridge.
    pub address: String,
    /// The namespace (a bind mount; `nsenter --net=PATH`).
    pub netns: PathBuf,
    /// Pod IP range of the node.
    pub pod_cidr: String,
    /// The kubelet's pod log directory (`NAMESPACE_POD_UID/CONTAINER/N.log`).
    pub pod_logs: PathBuf,
}

impl RealNode {
    /// A pod spec's `nodeSelector` that keeps it on the real nodes (any of them).
    pub fn placement(&self) -> serde_json::Value {
        serde_json::json!({ "nodeSelector": { &self.label: "true" } })
    }

    /// Whether `ip` is in this node's pod range (a /24).
    pub fn has_pod_ip(&self, ip: &str) -> bool {
        let prefix = self.pod_cidr.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
        ip.rsplit_once('.').map(|(p, _)| p) == Some(prefix)
    }
}

/// Names of the synthesized base images.
#[derive(Debug, Clone, Deserialize)]
pub struct BaseImages {
    /// `gcr.io/distroless/cc-debian12:nonroot` (podman local storage).
    pub distroless_cc: String,
    /// The same image in the plain registry.
    pub distroless_cc_registry: String,
    /// `debian:bookworm-slim` (podman local storage).
    pub debian_slim: String,
    /// The same image in the plain registry.
    pub debian_slim_registry: String,
    /// `rust:<major.minor>-slim-bookworm` (podman local storage only).
    pub rust: String,
}
