//! The top-level error and the documented process exit codes.
//!
//! Every layer has its own error enum; this module maps each of them to one exit code so that CI can
//! tell an apply error from a rollout failure, a timeout or a failed smoke test.

use crate::{apply, cluster, image, manifests, registry, rollout, smoke};

/// Process exit codes (documented in the README's deploy section and in `deployer --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitCode {
    /// Everything worked.
    Success = 0,
    /// An unexpected internal error (a bug, or an I/O error outside the categories below).
    Internal = 1,
    /// Bad flags, an unreadable or malformed manifest, a bad kubeconfig or registry configuration.
    Usage = 2,
    /// The Kubernetes API refused or could not be reached: apply, diff, status or delete failed.
    Apply = 3,
    /// The rollout failed (a pod's reason such as ImagePullBackOff, Unschedulable, CrashLoopBackOff,
    /// or ProgressDeadlineExceeded), whether or not it was rolled back.
    Rollout = 4,
    /// A wait (rollout, load-balancer address, deletion) ran out of time.
    Timeout = 5,
    /// The deployment is up but the smoke test through its public URL failed.
    Smoke = 6,
    /// Building, pulling or pushing an image failed (registry unreachable, credentials refused, glibc too old).
    Image = 7,
}

impl ExitCode {
    /// The numeric process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Any failure of a `deployer` command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Manifest(#[from] manifests::ManifestError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error(transparent)]
    Rollout(#[from] rollout::RolloutError),
    #[error(transparent)]
    Smoke(#[from] smoke::SmokeError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) | Error::Manifest(_) => ExitCode::Usage,
            Error::Cluster(e) => e.exit_code(),
            Error::Apply(e) => e.exit_code(),
            Error::Rollout(e) => e.exit_code(),
            Error::Smoke(_) => ExitCode::Smoke,
            Error::Image(e) => e.exit_code(),
            Error::Registry(e) => e.exit_code(),
            Error::Internal(_) => ExitCode::Internal,
        }
    }
}
