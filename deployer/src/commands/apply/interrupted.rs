//! What a signal during `apply` leaves: which objects were applied, or that the cluster goes on
//! rolling them out without deployer; and how to resume.

use crate::error::Interrupted;
use crate::interrupt::Signal;
use crate::kube::apply::Applied;
use crate::kube::manifests::Manifest;

/// A signal during the server-side applies: which objects were applied, which one may or may not
/// have been (its request was in flight), which were not.
pub(super) fn interrupted_applying(
    signal: Signal,
    manifests: &[Manifest],
    applied: &[Applied],
    command: &str,
) -> Interrupted {
    let mut state: Vec<String> = applied
        .iter()
        .map(|o| format!("{}: {}", o.display_name(), o.action.past()))
        .collect();
    for (i, m) in manifests.iter().enumerate().skip(applied.len()) {
        let what = if i == applied.len() {
            "interrupted while being applied: it may or may not have been"
        } else {
            "not applied"
        };
        state.push(format!("{}: {what}", m.display_name()));
    }
    Interrupted {
        signal,
        during: "applying the manifests".into(),
        state,
        resume: format!(
            "run the same `deployer {command}` again: server-side apply converges (objects already applied stay unchanged)"
        ),
    }
}

/// A signal while waiting: the objects are applied and the cluster goes on without deployer.
pub(super) fn interrupted_waiting(
    signal: Signal,
    during: &str,
    state: Vec<String>,
    command: &str,
    rollback_on_failure: bool,
) -> Interrupted {
    let mut resume = format!(
        "the objects are applied and the cluster goes on rolling them out without deployer; run the same `deployer {command}` again to wait for it (nothing is re-applied), or `deployer status` to look"
    );
    if rollback_on_failure {
        resume.push_str(
            "; no rollback was done (--rollback-on-failure acts on failures, not on interrupts)",
        );
    }
    Interrupted {
        signal,
        during: during.into(),
        state,
        resume,
    }
}

/// A signal while the release history was written: the release itself is over (`waited`).
pub(super) fn interrupted_recording(
    signal: Signal,
    waited: &Result<super::Waited, crate::error::Error>,
) -> Interrupted {
    let outcome = match waited {
        Ok(_) => "the release finished: rolled out and checked".to_string(),
        Err(e) => format!(
            "the release finished: {}",
            e.to_string().lines().next().unwrap_or_default()
        ),
    };
    Interrupted {
        signal,
        during: "recording the release history".into(),
        state: vec![
            outcome,
            "its entry in the release history may be missing".into(),
        ],
        resume: "nothing to resume: `deployer status` shows what serves, `deployer history` what was recorded".into(),
    }
}
