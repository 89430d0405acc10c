//! A Deployment's rollout: waiting for it (`wait.rs`), failing fast with the pod's own reason
//! (`failure.rs`), and its state at one moment (`assess.rs`, no API calls).
//!
//! [`wait_rollout`] ends in a [`RolloutReport`] or a [`RolloutError`]; [`rollout_state`] and
//! [`assess`] say where a rollout stands as a [`RolloutState`] (a [`Progressing`] and a description),
//! a hopeless one with its [`Failure`] (reason and message).

use std::time::Duration;

use super::error::ApplyError;

mod assess;
mod failure;
mod wait;

pub use assess::{
    Counts, Pending, Progressing, REVISION, RolloutState, assess, counts, new_pods, owned_by,
    revision, rollout_state,
};
pub use failure::{
    FATAL_WAITING_REASONS, Failure, MODEL_CHECK_EXIT_STATUS, MODEL_CHECK_FAILED, UNSCHEDULABLE,
    pod_failure,
};
pub use wait::{describe, selector_string, wait_rollout};

/// How long a rollout waits, and how long a pod may stay Unschedulable before the rollout counts as
/// failed (a cluster autoscaler or GKE Autopilot adds a node for it; a node that is briefly NotReady
/// or under disk pressure is tainted until it recovers).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub unschedulable_grace: Duration,
}

/// A rollout or a wait that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout of Deployment/{deployment} failed: {reason}: {message}{}", rollback_note(.rollback))]
    Failed {
        deployment: String,
        reason: String,
        message: String,
        rollback: Option<Rollback>,
    },
    #[error("timed out after {seconds}s waiting for the rollout of Deployment/{deployment} ({state}){}", rollback_note(.rollback))]
    Timeout {
        deployment: String,
        seconds: u64,
        state: String,
        rollback: Option<Rollback>,
    },
    #[error(
        "timed out after {seconds}s waiting for the load-balancer address of Service/{service}: {hint}"
    )]
    LoadBalancerTimeout {
        service: String,
        seconds: u64,
        hint: String,
    },
    #[error("Deployment/{0} disappeared while waiting for its rollout")]
    Gone(String),
    #[error(transparent)]
    Api(#[from] ApplyError),
}

/// What happened when a failed rollout was rolled back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rollback {
    /// True when the previous spec is back and available again.
    pub restored: bool,
    /// The image the previous spec runs (when known).
    pub image: Option<String>,
    pub message: String,
}

fn rollback_note(r: &Option<Rollback>) -> String {
    match r {
        None => String::new(),
        Some(r) => format!("\n  rollback: {}", r.message),
    }
}

impl RolloutError {
    /// Attach the outcome of a rollback to a rollout failure.
    pub fn with_rollback(self, r: Rollback) -> Self {
        match self {
            RolloutError::Failed {
                deployment,
                reason,
                message,
                ..
            } => RolloutError::Failed {
                deployment,
                reason,
                message,
                rollback: Some(r),
            },
            RolloutError::Timeout {
                deployment,
                seconds,
                state,
                ..
            } => RolloutError::Timeout {
                deployment,
                seconds,
                state,
                rollback: Some(r),
            },
            other => other,
        }
    }

    /// True when the server refused its model ([`MODEL_CHECK_FAILED`]): the previous revision is
    /// restored whatever `--rollback-on-failure` says.
    pub fn is_model_check(&self) -> bool {
        matches!(self, RolloutError::Failed { reason, .. } if reason == MODEL_CHECK_FAILED)
    }

    /// The rollback attached to a rollout failure, when one was made.
    pub fn rollback(&self) -> Option<&Rollback> {
        match self {
            RolloutError::Failed { rollback, .. } | RolloutError::Timeout { rollback, .. } => {
                rollback.as_ref()
            }
            _ => None,
        }
    }

    /// True for errors a rollback can help with.
    pub fn is_rollout_failure(&self) -> bool {
        matches!(
            self,
            RolloutError::Failed { .. } | RolloutError::Timeout { .. }
        )
    }
}

/// A finished rollout.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RolloutReport {
    pub deployment: String,
    pub revision: Option<String>,
    pub replicas: i32,
    pub seconds: f64,
}
