//! The top-level error and THE error mapper: every layer has its own error enum, and this is the
//! one place that decides which exit code each of them ends the process with, so that CI can tell
//! an apply error from a rollout failure, a timeout or a failed smoke test.
//!
//! The layers do not import this module (they return their own errors); it imports them.

use crate::exit::ExitCode;
use crate::interrupt::Signal;
use crate::kube::error as apply;
use crate::kube::{cluster, manifests, rollout};
use crate::oci::{error as image, registry};
use crate::smoke;

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
    /// The smoke test failed and `--rollback-on-failure` rolled back what this apply changed.
    #[error("{error}\n  rollback: {}", rollback.message)]
    SmokeRolledBack {
        error: smoke::SmokeError,
        rollback: rollout::Rollback,
    },
    /// `--evaluate` refused the new model before it got traffic; nothing serving was changed.
    #[error(
        "the new model was refused before it got traffic: {}\n  {}\n  Deployment/{} was not changed; the candidate was deleted",
        .0.verdict.reasons.join("; "), .0.numbers(), .0.deployment
    )]
    Refused(Box<crate::commands::evaluate::report::EvaluationReport>),
    /// `--canary` aborted the new model on its share of live traffic; the canary was deleted.
    #[error(
        "the new model was aborted by its canary on live traffic: {}\n  Deployment/{} was not changed; the canary was deleted and the previous model serves every request",
        .0.summary(), .0.deployment
    )]
    Aborted(Box<crate::commands::canary::report::CanaryReport>),
    /// `deployer rollback` applied the revision it chose, but it did not become available.
    #[error("rollback of Deployment/{deployment}: {}", rollback.message)]
    RollbackFailed {
        deployment: String,
        rollback: rollout::Rollback,
    },
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A command stopped by SIGINT or SIGTERM: what it was doing, the state it left, how to resume.
#[derive(Debug, thiserror::Error, serde::Serialize)]
#[error("interrupted by {} while {during}\n{}\nto resume: {resume}", signal.name(), state.iter().map(|s| format!("  {s}")).collect::<Vec<_>>().join("\n"))]
pub struct Interrupted {
    pub signal: Signal,
    pub during: String,
    /// One line per object (or fact): what the cluster or registry holds now.
    pub state: Vec<String>,
    pub resume: String,
}

impl Error {
    /// The exit code this error ends the process with.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Usage(_) | Error::Manifest(_) => ExitCode::Usage,
            Error::Cluster(e) => cluster_code(e),
            Error::Apply(e) => apply_code(e),
            Error::Rollout(e) => rollout_code(e),
            Error::Smoke(_) => ExitCode::Smoke,
            Error::SmokeRolledBack { rollback, .. } => rejected_or(rollback, ExitCode::Smoke),
            Error::RollbackFailed { .. } => ExitCode::Rollout,
            Error::Refused(_) | Error::Aborted(_) => ExitCode::ModelRejected,
            Error::Image(e) => image_code(e),
            Error::Registry(e) => registry_code(e),
            Error::Interrupted(i) => match i.signal {
                Signal::Int => ExitCode::Interrupted,
                Signal::Term => ExitCode::Terminated,
            },
            Error::Internal(_) => ExitCode::Internal,
        }
    }
}

/// Configuration problems are usage errors; an unreachable cluster is an API error.
fn cluster_code(e: &cluster::ClusterError) -> ExitCode {
    use cluster::ClusterError as E;
    match e {
        E::Kubeconfig { .. } | E::NoConfig(_) | E::Client(_) | E::Credentials(_) => ExitCode::Usage,
        E::Unreachable { .. } | E::Unauthorized { .. } => ExitCode::Apply,
    }
}

/// A deletion that ran out of time is a timeout; everything else the API refused is an apply error.
/// Credentials that stopped working mid-command (an exec plugin's refresh failed) are configuration.
fn apply_code(e: &apply::ApplyError) -> ExitCode {
    match e {
        apply::ApplyError::DeleteTimeout { .. } => ExitCode::Timeout,
        apply::ApplyError::Credentials { .. }
        | apply::ApplyError::Secret { .. }
        | apply::ApplyError::Record { .. } => ExitCode::Usage,
        _ => ExitCode::Apply,
    }
}

/// A check of the new model that failed is exit 8 once the previous version serves again;
/// otherwise the check's own code (the cluster may run nothing that works).
fn rejected_or(rollback: &rollout::Rollback, otherwise: ExitCode) -> ExitCode {
    if rollback.restored {
        ExitCode::ModelRejected
    } else {
        otherwise
    }
}

fn rollout_code(e: &rollout::RolloutError) -> ExitCode {
    use rollout::RolloutError as E;
    match e {
        E::Failed {
            rollback: Some(r), ..
        } if e.is_model_check() => rejected_or(r, ExitCode::Rollout),
        E::Failed { .. } | E::Gone(_) => ExitCode::Rollout,
        E::Timeout { .. } | E::LoadBalancerTimeout { .. } => ExitCode::Timeout,
        E::Api(e) => apply_code(e),
    }
}

/// Unreadable inputs are usage errors; the rest of a build is an image error.
fn image_code(e: &image::ImageError) -> ExitCode {
    use image::ImageError as E;
    match e {
        E::Input { .. } | E::Archive { .. } | E::Platform { .. } => ExitCode::Usage,
        E::Registry(e) => registry_code(e),
        _ => ExitCode::Image,
    }
}

/// A bad reference or Docker config is a usage error; the registry's answers are image errors.
fn registry_code(e: &registry::RegistryError) -> ExitCode {
    use registry::RegistryError as E;
    match e {
        E::Reference { .. } | E::Config { .. } | E::Stdin(_) => ExitCode::Usage,
        _ => ExitCode::Image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let plugin = cluster::ClusterError::Credentials("exec plugin failed".into());
        assert_eq!(Error::from(plugin).exit_code(), ExitCode::Usage);
        let refresh = apply::ApplyError::Credentials {
            object: "o".into(),
            action: "apply",
            message: "exec plugin failed".into(),
        };
        assert_eq!(Error::from(refresh).exit_code(), ExitCode::Usage);
        let conflict = apply::ApplyError::Conflict {
            object: "o".into(),
            message: "m".into(),
        };
        assert_eq!(Error::from(conflict).exit_code(), ExitCode::Apply);
        let conflict = apply::ApplyError::Conflict {
            object: "o".into(),
            message: "m".into(),
        };
        let wrapped = rollout::RolloutError::Api(conflict);
        assert_eq!(Error::from(wrapped).exit_code(), ExitCode::Apply);
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
        for (restored, code) in [(true, ExitCode::ModelRejected), (false, ExitCode::Smoke)] {
            let rolled_back = Error::SmokeRolledBack {
                error: smoke::SmokeError::Predict {
                    url: "u".into(),
                    message: "m".into(),
                },
                rollback: rollout::Rollback {
                    restored,
                    image: None,
                    message: "m".into(),
                },
            };
            assert_eq!(rolled_back.exit_code(), code);
        }
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
        for signal in [Signal::Int, Signal::Term] {
            let i = Interrupted {
                signal,
                during: "waiting".into(),
                state: vec![],
                resume: "again".into(),
            };
            // as shells report a process a signal ended: 128 + the signal's number
            let code = Error::from(i).exit_code().code();
            assert_eq!(code, 128 + signal.number());
        }
    }
}
