//! The errors of the test-environment helpers.

use std::path::PathBuf;

use crate::podman;

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
