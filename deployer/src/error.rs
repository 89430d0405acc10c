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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_documented() {
        let all = [
            ExitCode::Success,
            ExitCode::Internal,
            ExitCode::Usage,
            ExitCode::Apply,
            ExitCode::Rollout,
            ExitCode::Timeout,
            ExitCode::Smoke,
            ExitCode::Image,
        ];
        let mut codes: Vec<u8> = all.iter().map(|c| c.code()).collect();
        codes.dedup();
        assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6, 7]);
        let help = crate::cli::EXIT_CODES;
        for c in codes {
            assert!(
                help.contains(&format!("\n  {c}  ")) || help.contains(&format!("  {c}  ")),
                "exit code {c} not in --help"
            );
        }
    }

    #[test]
    fn errors_map_to_their_exit_codes() {
        let manifest = manifests::ManifestError::NoDeployment;
        assert_eq!(Error::from(manifest).exit_code(), ExitCode::Usage);
        let unreachable = cluster::ClusterError::Unreachable {
            url: "u".into(),
            message: "m".into(),
        };
        assert_eq!(Error::from(unreachable).exit_code(), ExitCode::Apply);
        let kubeconfig = cluster::ClusterError::NoConfig("x".into());
        assert_eq!(Error::from(kubeconfig).exit_code(), ExitCode::Usage);
        let conflict = apply::ApplyError::Conflict {
            object: "o".into(),
            message: "m".into(),
        };
        assert_eq!(Error::from(conflict).exit_code(), ExitCode::Apply);
        let gone = apply::ApplyError::DeleteTimeout {
            what: "w".into(),
            seconds: 1,
        };
        assert_eq!(Error::from(gone).exit_code(), ExitCode::Timeout);
        let failed = rollout::RolloutError::Failed {
            deployment: "d".into(),
            reason: "ImagePullBackOff".into(),
            message: "m".into(),
            rollback: None,
        };
        assert_eq!(Error::from(failed).exit_code(), ExitCode::Rollout);
        let timeout = rollout::RolloutError::Timeout {
            deployment: "d".into(),
            seconds: 1,
            state: "s".into(),
            rollback: None,
        };
        assert_eq!(Error::from(timeout).exit_code(), ExitCode::Timeout);
        let lb = rollout::RolloutError::LoadBalancerTimeout {
            service: "s".into(),
            seconds: 1,
            hint: "h".into(),
        };
        assert_eq!(Error::from(lb).exit_code(), ExitCode::Timeout);
        let smoke = smoke::SmokeError::Predict {
            url: "u".into(),
            message: "m".into(),
        };
        assert_eq!(Error::from(smoke).exit_code(), ExitCode::Smoke);
        let auth = registry::RegistryError::Unauthorized {
            registry: "r".into(),
            reference: "x".into(),
            operation: "push",
            source_desc: "anonymous".into(),
        };
        assert_eq!(Error::from(auth).exit_code(), ExitCode::Image);
        let old = image::ImageError::GlibcTooOld {
            base: "b".into(),
            missing: vec![],
            newest: "GLIBC_2.17".into(),
        };
        assert_eq!(Error::from(old).exit_code(), ExitCode::Image);
        let input = image::ImageError::Input {
            what: "x",
            path: "p".into(),
            message: "m".into(),
        };
        assert_eq!(Error::from(input).exit_code(), ExitCode::Usage);
        assert_eq!(Error::Usage("u".into()).exit_code(), ExitCode::Usage);
    }
}
