//! Connecting to the cluster: kubeconfig, context, namespace, and explaining API errors.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::error::credential_problem;
use crate::support::{error_chain, install_crypto_provider};

/// Could not set up or reach the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("no usable cluster configuration: {0} (pass --kubeconfig or set KUBECONFIG)")]
    NoConfig(String),
    #[error("cannot create the Kubernetes client: {0}")]
    Client(String),
    #[error(
        "cannot reach the Kubernetes API server at {url}: {message}. Is the cluster running, and are --kubeconfig/--context right?"
    )]
    Unreachable { url: String, message: String },
    #[error("the Kubernetes API server at {url} refused the credentials: {message}")]
    Unauthorized { url: String, message: String },
    /// The kubeconfig's `exec` plugin is missing, failed, or answered nonsense.
    #[error("{0}")]
    Credentials(String),
}

/// Which cluster and namespace: each unset one is the kubeconfig's default.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Kubeconfig file; default $KUBECONFIG, then ~/.kube/config, then in-cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; default the current one.
    pub context: Option<String>,
    /// Namespace for objects that set none; default the context's, then `default`.
    pub namespace: Option<String>,
}

/// A connected client and the namespace for objects that set none.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub namespace: String,
    pub url: String,
}

impl Cluster {
    /// Builds the client for `to` and checks that the API server answers.
    pub async fn connect(to: &Connection) -> Result<Cluster, ClusterError> {
        install_crypto_provider();
        let options = KubeConfigOptions {
            context: to.context.clone(),
            cluster: None,
            user: None,
        };
        let config = match &to.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path).map_err(|e| ClusterError::Kubeconfig {
                    path: path.display().to_string(),
                    message: error_chain(&e),
                })?;
                Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| ClusterError::Kubeconfig {
                        path: path.display().to_string(),
                        message: error_chain(&e),
                    })?
            }
            None if to.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|e| ClusterError::NoConfig(error_chain(&e)))?,
            None => Config::infer()
                .await
                .map_err(|e| ClusterError::NoConfig(error_chain(&e)))?,
        };
        let url = config.cluster_url.to_string();
        let namespace = to
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let mut config = config;
        config.connect_timeout = Some(std::time::Duration::from_secs(10));
        config.read_timeout = Some(std::time::Duration::from_secs(60));
        let plugin = config.auth_info.exec.as_ref().map(|x| x.command.clone());
        let plugin = plugin.flatten();
        let client = Client::try_from(config).map_err(|e| {
            credential_problem(&e, plugin.as_deref()).map_or_else(
                || ClusterError::Client(error_chain(&e)),
                ClusterError::Credentials,
            )
        })?;
        match client.apiserver_version().await {
            Ok(_) => {}
            Err(e) if credential_problem(&e, plugin.as_deref()).is_some() => {
                let message = credential_problem(&e, plugin.as_deref()).unwrap_or_default();
                return Err(ClusterError::Credentials(message));
            }
            Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
                return Err(ClusterError::Unauthorized {
                    url,
                    message: s.message.clone(),
                });
            }
            Err(e) => {
                return Err(ClusterError::Unreachable {
                    url,
                    message: error_chain(&e),
                });
            }
        }
        Ok(Cluster {
            client,
            namespace,
            url,
        })
    }
}
