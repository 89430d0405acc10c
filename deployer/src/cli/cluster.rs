//! Which cluster and manifests, and the commands that need nothing else: `diff`, `status`,
//! `delete`.

use std::path::PathBuf;
use std::time::Duration;

use celestial_common::parse_duration;
use clap::Args;

use crate::kube::cluster::Connection;

/// Which cluster and namespace.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubeconfig file; default $KUBECONFIG, then ~/.kube/config, then in-cluster.
    #[arg(long, env = "DEPLOYER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context; default the current context.
    #[arg(long, env = "DEPLOYER_CONTEXT")]
    pub context: Option<String>,

    /// Namespace for objects that do not set one; default the context's namespace, then `default`.
    #[arg(long, short = 'n', env = "DEPLOYER_NAMESPACE")]
    pub namespace: Option<String>,
}

/// Which manifests.
#[derive(Debug, Clone, Args)]
pub struct ManifestArgs {
    /// Manifest files or directories (YAML, multi-document); default the kubernetes/ directory.
    #[arg(
        long = "filename",
        short = 'f',
        env = "DEPLOYER_FILES",
        value_delimiter = ','
    )]
    pub files: Vec<PathBuf>,

    /// Name of the server container whose image is set (default: the Deployment's only container,
    /// or the one named `celestial-server`).
    #[arg(long, env = "DEPLOYER_CONTAINER")]
    pub container: Option<String>,
}

impl ClusterArgs {
    /// The cluster and namespace to connect to.
    pub fn connection(&self) -> Connection {
        Connection {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespace: self.namespace.clone(),
        }
    }
}

impl ManifestArgs {
    /// The files to read: the given ones, or `kubernetes/`.
    pub fn paths(&self) -> Vec<PathBuf> {
        if self.files.is_empty() {
            vec![PathBuf::from("kubernetes")]
        } else {
            self.files.clone()
        }
    }
}

/// `deployer diff`.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// Image for the server container; default the manifest's.
    #[arg(long, env = "DEPLOYER_IMAGE")]
    pub image: Option<String>,

    /// Also show what `--monitoring` would apply (kubernetes/monitoring/, fitted to the
    /// release; prometheus-operator's kinds only when the cluster serves them).
    #[arg(long, env = "DEPLOYER_MONITORING")]
    pub monitoring: bool,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub manifests: ManifestArgs,
}

/// `deployer status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub manifests: ManifestArgs,
}

/// `deployer delete`.
#[derive(Debug, Clone, Args)]
pub struct DeleteArgs {
    /// How long to wait until everything is gone.
    #[arg(long, env = "DEPLOYER_TIMEOUT", default_value = "3m", value_parser = parse_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub cluster: ClusterArgs,

    #[command(flatten)]
    pub manifests: ManifestArgs,
}
