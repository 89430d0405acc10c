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
    /// The real node, when the environment has one (`TESTENV_REAL_NODE=1 testenv up`, or
    /// `testenv start node`; [`crate::TestEnv::real_node`] adds it).
    #[serde(default)]
    pub real_node: Option<RealNode>,
}

/// The environment's real node: kubelet + containerd + CNI bridge + kube-proxy in a network
/// namespace of their own (tests/env/node.sh). Only pods that tolerate the taint and select the
/// label run there; everything else goes to the kwok nodes.
#[derive(Debug, Clone, Deserialize)]
pub struct RealNode {
    /// Node name.
    pub name: String,
    /// Label `LABEL=true` on the node (select it with a nodeSelector).
    pub label: String,
    /// Taint key, `KEY=true:NoSchedule` (tolerate it).
    pub taint: String,
    /// The node's InternalIP, inside its namespace.
    pub address: String,
    /// The namespace (a bind mount; `nsenter --net=PATH`).
    pub netns: PathBuf,
    /// Pod IP range of the node.
    pub pod_cidr: String,
    /// The kubelet's pod log directory (`NAMESPACE_POD_UID/CONTAINER/N.log`).
    pub pod_logs: PathBuf,
}

impl RealNode {
    /// A pod spec's `nodeSelector` and `tolerations` that put it on this node.
    pub fn placement(&self) -> serde_json::Value {
        serde_json::json!({
            "nodeSelector": { &self.label: "true" },
            "tolerations": [{ "key": &self.taint, "operator": "Equal", "value": "true",
                              "effect": "NoSchedule" }],
        })
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
