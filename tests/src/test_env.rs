//! The handle a test gets on the running environment ([`TestEnv::get`]): clients and tools
//! configured for it, fresh namespaces, and waits for what the cluster does.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::{EnvError, EnvInfo, Podman, RealNode, TestNamespace, testenv};

/// Handle on the running test environment.
#[derive(Debug, Clone)]
pub struct TestEnv {
    info: EnvInfo,
}

impl TestEnv {
    /// Starts the environment (once per process; reuses a running one) and returns a handle.
    pub async fn get() -> Result<Self, EnvError> {
        let r = tokio::task::spawn_blocking(testenv::up)
            .await
            .map_err(|e| EnvError::Up(format!("the start-up task failed: {e}")))?;
        r.map(|info| Self { info }).map_err(EnvError::Up)
    }

    /// The real nodes: `testenv start node` once per process, which adds them to the environment
    /// when it does not have them, repairs one when a part of it is down, and does nothing when
    /// they run. Returns the handle with the refreshed `env.json` and the first node.
    pub async fn real_node(&self) -> Result<(Self, RealNode), EnvError> {
        let r = tokio::task::spawn_blocking(testenv::start_node)
            .await
            .map_err(|e| EnvError::Up(format!("the start-up task failed: {e}")))?;
        let info = r.map_err(EnvError::Up)?;
        let node = info.real_nodes.first().cloned().ok_or_else(|| {
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

    /// Creates a fresh namespace named `PREFIX-xxxxx`, deleted when the guard drops. Its pods run
    /// on the real nodes.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, EnvError> {
        self.create_namespace(prefix, BTreeMap::new()).await
    }

    /// A fresh namespace whose pods all go to the kwok nodes, for tests that need pods which never
    /// run (fake images) or many nodes: the apiserver's PodNodeSelector and
    /// PodTolerationRestriction admission plugins give every pod of the namespace the kwok nodes'
    /// nodeSelector and a toleration of their taint, so the manifests stay as they are.
    pub async fn kwok_namespace(&self, prefix: &str) -> Result<TestNamespace, EnvError> {
        let tolerations = serde_json::json!([{
            "key": self.info.kwok_taint, "operator": "Exists", "effect": "NoSchedule"
        }]);
        let annotations = BTreeMap::from([
            (
                "scheduler.alpha.kubernetes.io/node-selector".to_owned(),
                "type=kwok".to_owned(),
            ),
            (
                "scheduler.alpha.kubernetes.io/defaultTolerations".to_owned(),
                tolerations.to_string(),
            ),
        ]);
        self.create_namespace(prefix, annotations).await
    }

    async fn create_namespace(
        &self,
        prefix: &str,
        annotations: BTreeMap<String, String>,
    ) -> Result<TestNamespace, EnvError> {
        let api: Api<Namespace> = Api::all(self.client().await?);
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some([("dev.celestial.testenv/test".to_owned(), "true".to_owned())].into()),
                annotations: Some(annotations),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = api.create(&PostParams::default(), &ns).await?;
        let name = created
            .metadata
            .name
            .expect("the apiserver names a generateName namespace");
        Ok(TestNamespace::new(
            name,
            self.info.kubectl.clone(),
            self.info.kubeconfig.clone(),
        ))
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
