//! Helpers for end-to-end tests: the real test environment (see tests/env/ and docs/testing.md,
//! "The test environment").
//!
//! [`TestEnv::get`] starts the environment once per test process (`tests/env/testenv up`, which
//! reuses a running one and serialises concurrent callers with a file lock) and hands a test a
//! `kube::Client` for the loopback control plane, the registry addresses and credentials, a
//! configured [`podman::Podman`], and helpers for the load-balancer stand-in ([`lb`]).
//! Tests that use it live in files named `env_*.rs` (and `deploy_*`/`container_*` of other parts);
//! they run in CI through `scripts/test`, which brings the environment up before and down after.

pub mod browser;
pub mod ci;
pub mod deployer;
pub mod httpd;
pub mod lb;
pub mod podman;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use serde::Deserialize;

pub use podman::{Container, Podman};

/// Field manager the helpers use for the annotations they set on Services.
pub const FIELD_MANAGER: &str = "celestial-e2e";

/// Errors of the test-environment helpers.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    /// `testenv up` failed.
    #[error("the test environment did not come up: {0}")]
    Up(String),
    /// A kubeconfig problem.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Waiting timed out.
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },
    /// A command could not run or failed.
    #[error("{0}")]
    Command(String),
    /// podman failed.
    #[error(transparent)]
    Podman(#[from] podman::PodmanError),
}

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
    /// [`lb::BACKEND_ANNOTATION`].
    pub lb_backend_annotation: String,
    /// [`lb::PENDING_ANNOTATION`].
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
    /// `testenv start node`; [`TestEnv::real_node`] adds it).
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

/// A loopback port that was free a moment ago (bound to 127.0.0.1:0 and released).
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A name no other test run uses: `PREFIX-<pid>-<nanoseconds>`.
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// An HTTP client for the tests' loopback traffic: no proxy from the environment, `timeout` per
/// request.
pub fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("a plain-HTTP client builds")
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `testenv` script.
pub fn testenv_script() -> PathBuf {
    repo_root().join("tests/env/testenv")
}

fn state_dir() -> PathBuf {
    std::env::var_os("TESTENV_STATE")
        .map_or_else(|| PathBuf::from("/tmp/celestial-testenv"), PathBuf::from)
}

static UP: OnceLock<Result<EnvInfo, String>> = OnceLock::new();
static NODE: OnceLock<Result<EnvInfo, String>> = OnceLock::new();

/// `tests/env/testenv ARGS`, handed the LB stand-in (and the node forwarder next to it) that
/// cargo already built for the running tests.
fn testenv_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(testenv_script());
    // cargo built the package's binaries before running its tests: hand testenv the LB stand-in
    // so it does not run cargo itself while `cargo test` holds the build directory
    if let Some(lb) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(|d| d.join("testenv-lb")))
        .filter(|p| p.is_file())
    {
        cmd.env("TESTENV_LB_BIN", lb);
    }
    cmd.args(args).stdin(Stdio::null());
    cmd
}

/// Runs `testenv ARGS`; its output in the error when it fails.
pub fn run_testenv(args: &[&str]) -> Result<std::process::Output, String> {
    let out = testenv_command(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", testenv_script().display()))?;
    if !out.status.success() {
        return Err(format!(
            "`tests/env/testenv {}` exited with {}:\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

fn up_once() -> Result<EnvInfo, String> {
    eprintln!("celestial-e2e: tests/env/testenv up (reuses a running environment)");
    let t = Instant::now();
    run_testenv(&["up"])?;
    eprintln!(
        "celestial-e2e: test environment ready in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    read_env_json()
}

fn node_once() -> Result<EnvInfo, String> {
    let t = Instant::now();
    run_testenv(&["start", "node"])?;
    eprintln!(
        "celestial-e2e: real node ready in {:.1}s (testenv start node)",
        t.elapsed().as_secs_f64()
    );
    read_env_json()
}

fn read_env_json() -> Result<EnvInfo, String> {
    let path = state_dir().join("env.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Handle on the running test environment.
#[derive(Debug, Clone)]
pub struct TestEnv {
    info: EnvInfo,
}

impl TestEnv {
    /// Starts the environment (once per process; reuses a running one) and returns a handle.
    pub async fn get() -> Result<Self, EnvError> {
        let r = tokio::task::spawn_blocking(|| UP.get_or_init(up_once).clone())
            .await
            .map_err(|e| EnvError::Up(format!("the start-up task failed: {e}")))?;
        r.map(|info| Self { info }).map_err(EnvError::Up)
    }

    /// The real node: `testenv start node` once per process, which adds it to the environment
    /// when it does not have it yet, repairs it when a part of it is down, and does nothing when it
    /// runs. Returns the handle with the refreshed `env.json`.
    pub async fn real_node(&self) -> Result<(Self, RealNode), EnvError> {
        let r = tokio::task::spawn_blocking(|| NODE.get_or_init(node_once).clone())
            .await
            .map_err(|e| EnvError::Up(format!("the start-up task failed: {e}")))?;
        let info = r.map_err(EnvError::Up)?;
        let node = info.real_node.clone().ok_or_else(|| {
            EnvError::Up("`testenv start node` succeeded but env.json names no real node".into())
        })?;
        Ok((Self { info }, node))
    }

    /// Everything `env.json` says.
    pub fn info(&self) -> &EnvInfo {
        &self.info
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.info.kubeconfig
    }

    /// A new client for the test cluster (one per test: a client belongs to the tokio runtime
    /// it was made on).
    pub async fn client(&self) -> Result<kube::Client, EnvError> {
        let path = self.info.kubeconfig.clone();
        let kc =
            kube::config::Kubeconfig::read_from(&path).map_err(|source| EnvError::Kubeconfig {
                path: path.clone(),
                source,
            })?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|source| EnvError::Kubeconfig { path, source })?;
        Ok(kube::Client::try_from(cfg)?)
    }

    /// The plain registry, `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.info.registry
    }

    /// The htpasswd registry, `127.0.0.1:5001`, with its (user, password).
    pub fn registry_auth(&self) -> (&str, &str, &str) {
        (
            &self.info.registry_auth,
            &self.info.registry_auth_username,
            &self.info.registry_auth_password,
        )
    }

    /// podman configured for the environment.
    pub fn podman(&self) -> Podman {
        Podman::new(
            &self.info.containers_conf,
            &self.info.containers_registries_conf,
        )
    }

    /// kubectl for the test cluster (`--kubeconfig` set).
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(&self.info.kubectl);
        c.arg(format!("--kubeconfig={}", self.info.kubeconfig.display()))
            .stdin(Stdio::null());
        c
    }

    /// kubeconform with the schemas generated from this apiserver, `-strict -summary`; append
    /// the files or directories to validate.
    pub fn kubeconform(&self) -> Command {
        let mut c = Command::new(&self.info.kubeconform);
        c.args([
            "-strict",
            "-summary",
            "-schema-location",
            &self.info.kubeconform_schema_location,
        ])
        .stdin(Stdio::null());
        c
    }

    /// Creates a fresh namespace named `PREFIX-xxxxx`, deleted when the guard drops.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, EnvError> {
        let api: Api<Namespace> = Api::all(self.client().await?);
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some([("dev.celestial.testenv/test".to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &ns).await?;
        let name = created
            .metadata
            .name
            .expect("the apiserver names a generateName namespace");
        Ok(TestNamespace {
            name,
            kubectl: self.info.kubectl.clone(),
            kubeconfig: self.info.kubeconfig.clone(),
        })
    }

    /// Points the load-balancer stand-in at a real backend for every port of a Service
    /// (annotation [`lb::BACKEND_ANNOTATION`], server-side applied with field manager
    /// [`FIELD_MANAGER`]).
    pub async fn set_lb_backend(
        &self,
        namespace: &str,
        service: &str,
        backend: SocketAddr,
    ) -> Result<(), EnvError> {
        self.annotate_service(
            namespace,
            service,
            lb::BACKEND_ANNOTATION,
            &backend.to_string(),
        )
        .await
    }

    /// Keeps a LoadBalancer Service pending (no address) or lets it get one again.
    pub async fn set_lb_pending(
        &self,
        namespace: &str,
        service: &str,
        pending: bool,
    ) -> Result<(), EnvError> {
        self.annotate_service(
            namespace,
            service,
            lb::PENDING_ANNOTATION,
            if pending { "true" } else { "false" },
        )
        .await
    }

    async fn annotate_service(
        &self,
        namespace: &str,
        service: &str,
        key: &str,
        value: &str,
    ) -> Result<(), EnvError> {
        let api: Api<Service> = Api::namespaced(self.client().await?, namespace);
        let patch = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": service, "annotations": { key: value } }
        });
        api.patch(
            service,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    /// Waits until the Service has a load-balancer ingress IP.
    pub async fn wait_lb_address(
        &self,
        namespace: &str,
        service: &str,
        timeout: Duration,
    ) -> Result<IpAddr, EnvError> {
        let api: Api<Service> = Api::namespaced(self.client().await?, namespace);
        let start = Instant::now();
        loop {
            let svc = api.get(service).await?;
            let ip = svc
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .and_then(|i| i.into_iter().next())
                .and_then(|i| i.ip)
                .and_then(|ip| ip.parse().ok());
            if let Some(ip) = ip {
                return Ok(ip);
            }
            if start.elapsed() > timeout {
                return Err(EnvError::Timeout {
                    what: format!("an address for Service {namespace}/{service}"),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until a Deployment's rollout is complete: observed generation caught up and
    /// updated = available = ready = desired replicas.
    pub async fn wait_deployment_available(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<Deployment, EnvError> {
        let api: Api<Deployment> = Api::namespaced(self.client().await?, namespace);
        let start = Instant::now();
        loop {
            let d = api.get(name).await?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            if let (Some(st), Some(generation)) = (d.status.as_ref(), d.metadata.generation) {
                let done = st.observed_generation == Some(generation)
                    && st.updated_replicas == Some(want)
                    && st.available_replicas == Some(want)
                    && st.ready_replicas == Some(want)
                    && st.replicas == Some(want);
                if done {
                    return Ok(d);
                }
            }
            if start.elapsed() > timeout {
                return Err(EnvError::Timeout {
                    what: format!(
                        "Deployment {namespace}/{name} to become available (status: {:?})",
                        d.status
                    ),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Builds a binary of the workspace (debug profile, `--locked`) and returns its path.
pub fn repo_binary(package: &str, bin: &str) -> Result<PathBuf, EnvError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo_root())
        .args(["build", "--locked", "-q", "-p", package, "--bin", bin])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| EnvError::Command(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        return Err(EnvError::Command(format!(
            "cargo build -p {package} --bin {bin} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    Ok(target.join("debug").join(bin))
}

/// A namespace created by [`TestEnv::namespace`]; deleted (without waiting) on drop.
#[derive(Debug)]
pub struct TestNamespace {
    name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    /// The generated name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
