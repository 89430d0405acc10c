//! The rollout wait against the API server's answers: complete, each pod reason that fails it,
//! the controller's own deadline, the `--unschedulable-grace`, the wait's own deadline, and a
//! Deployment that goes away.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use super::api_server::{Scenario, status};
use super::exit_code;
use super::objects::*;
use crate::exit::ExitCode;
use crate::kube::error::ApplyError;
use crate::kube::rollout::{Limits, RolloutError, RolloutReport, wait_rollout};
use crate::progress::Recorded;

/// The wait's `--timeout` in these tests.
const TIMEOUT: Duration = Duration::from_secs(120);

/// What a wait came to: its result, the progress it reported, and how long it took (on tokio's
/// clock, paused in these tests: the scripted time, not the time the test took).
pub struct Waited {
    pub result: Result<RolloutReport, RolloutError>,
    pub progress: Vec<String>,
    pub took: Duration,
}

/// Runs the rollout wait of Deployment `d` against `scenario` and checks that exactly the
/// expected requests were made.
pub async fn wait(scenario: Scenario, unschedulable_grace: Duration) -> Waited {
    let (cluster, server) = scenario.serve();
    let mut progress = Recorded::default();
    let limits = Limits {
        timeout: TIMEOUT,
        unschedulable_grace,
    };
    let start = Instant::now();
    let result = wait_rollout(&cluster, NS, NAME, limits, &mut progress).await;
    let took = start.elapsed();
    server.verify();
    Waited {
        result,
        progress: progress.lines,
        took,
    }
}

/// The failure a wait ended with: (reason, message).
fn failure(w: &Waited) -> (String, String) {
    match &w.result {
        Err(RolloutError::Failed {
            reason, message, ..
        }) => (reason.clone(), message.clone()),
        other => panic!("not a rollout failure: {other:?}"),
    }
}

/// A new pod template rolls out: the controller observes the new generation, replaces the old
/// replicas one by one, and the wait ends when the Deployment says the rollout is complete.
#[tokio::test(start_paused = true)]
async fn a_rollout_that_progresses_completes_when_the_deployment_says_so() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    r.deployment = deployment(json!({"observedGeneration": 1, "replicas": 2,
        "updatedReplicas": 0, "availableReplicas": 2}));
    let mut replacing = rolling();
    replacing["updatedReplicas"] = 2.into();
    r.pod_events = vec![(
        secs(4),
        event("MODIFIED", pod("d-h2-a", "h2", running()), "11"),
    )];
    r.deployment_events = vec![
        (secs(1), event("MODIFIED", deployment(rolling()), "12")),
        (secs(5), event("MODIFIED", deployment(replacing), "13")),
        (secs(6), event("MODIFIED", deployment(rolled_out()), "14")),
    ];
    r.script(&mut s);
    let w = wait(s, Duration::ZERO).await;
    let report = w.result.expect("the rollout completes");
    assert_eq!(
        (report.revision.as_deref(), report.replicas),
        (Some("2"), 2)
    );
    assert_eq!(
        w.took,
        secs(6),
        "done at the Deployment's event, not before"
    );
    assert_eq!(report.seconds, 6.0);
    let mut states = w.progress.clone();
    states.dedup();
    assert_eq!(
        states,
        [
            "Deployment/d: waiting for the controller to observe generation 2",
            "Deployment/d: 1/2 updated, 2/2 available, 3 total",
            "Deployment/d: 2/2 updated, 2/2 available, 3 total; 1 old replica(s) terminating"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_deployment_already_rolled_out_needs_no_watch() {
    let mut s = Scenario::new();
    s.get(&one(DEPLOYMENTS, NAME))
        .reply(200, deployment(rolled_out()));
    let w = wait(s, Duration::ZERO).await;
    assert_eq!(w.result.expect("complete").replicas, 2);
    assert_eq!(w.took, Duration::ZERO);
}

/// Every container waiting reason that makes a rollout hopeless fails it as soon as a new pod
/// shows it, with the reason and the kubelet's message.
#[tokio::test(start_paused = true)]
async fn each_hopeless_container_reason_fails_the_rollout_at_once() {
    for reason in crate::kube::rollout::FATAL_WAITING_REASONS {
        let mut s = Scenario::new();
        let mut r = Rollout::rolling();
        let message = format!("the kubelet says {reason}");
        let failing = pod("d-h2-a", "h2", waiting(reason, &message));
        r.pod_events = vec![(secs(3), event("MODIFIED", failing, "11"))];
        r.script(&mut s);
        let w = wait(s, Duration::from_secs(60)).await;
        let (got, text) = failure(&w);
        assert_eq!(got, *reason);
        assert_eq!(text, format!("pod d-h2-a container server: {message}"));
        assert_eq!(w.took, secs(3), "{reason}: not at once");
        let failed = w.result.unwrap_err();
        let error = failed.to_string();
        assert!(
            error.starts_with(&format!(
                "rollout of Deployment/d failed: {reason}: pod d-h2-a"
            )),
            "{error}"
        );
        assert_eq!(exit_code(failed), ExitCode::Rollout, "{reason}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_container_that_exits_for_good_fails_the_rollout_with_its_exit_code() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    r.pod_events = vec![(
        secs(2),
        event("MODIFIED", pod("d-h2-a", "h2", exited(2)), "11"),
    )];
    r.script(&mut s);
    let w = wait(s, Duration::ZERO).await;
    let (reason, message) = failure(&w);
    assert_eq!(reason, "PodFailed (Error)");
    assert_eq!(
        message,
        "pod d-h2-a container server exited with code 2: boom"
    );
}

/// A server that refuses its model (it exits with the model-check status) fails the rollout at
/// once as `ModelCheckFailed`, with the server's own one-line reason, also when the kubelet shows
/// it as a crash loop. It is exit 8 once the previous revision serves again, else 4.
#[tokio::test(start_paused = true)]
async fn a_model_that_fails_its_self_check_fails_the_rollout_with_the_servers_reason() {
    use crate::kube::rollout::{MODEL_CHECK_FAILED, Rollback};
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    let refused = pod("d-h2-a", "h2", model_check_failed());
    r.pod_events = vec![(secs(4), event("MODIFIED", refused, "11"))];
    r.script(&mut s);
    let w = wait(s, Duration::ZERO).await;
    let (reason, message) = failure(&w);
    assert_eq!(reason, MODEL_CHECK_FAILED);
    assert_eq!(
        message,
        format!(
            "pod d-h2-a container server: the model failed its self-check (exit status 3): {MODEL_CHECK_REASON}"
        )
    );
    assert_eq!(
        w.took,
        secs(4),
        "at once, not after the crash loop's backoff"
    );
    let failed = w.result.unwrap_err();
    assert!(failed.is_model_check());
    let restored = |restored| Rollback {
        restored,
        image: Some(PREVIOUS_IMAGE.into()),
        message: "m".into(),
    };
    let message = failed.to_string();
    let ok = failed.with_rollback(restored(true));
    assert_eq!(exit_code(ok), ExitCode::ModelRejected);
    // When the previous revision does not serve again (none, or it cannot run), exit 4.
    let again = RolloutError::Failed {
        deployment: NAME.into(),
        reason: MODEL_CHECK_FAILED.into(),
        message,
        rollback: None,
    };
    assert_eq!(
        exit_code(again.with_rollback(restored(false))),
        ExitCode::Rollout
    );
}

/// Only the new ReplicaSet's pods decide: an old pod crash-looping (it is being replaced) does not
/// fail the rollout.
#[tokio::test(start_paused = true)]
async fn an_old_pods_failure_does_not_fail_the_new_rollout() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    let crashing = pod("d-h1-a", "h1", waiting("CrashLoopBackOff", "back-off"));
    r.pod_events = vec![(secs(1), event("MODIFIED", crashing, "11"))];
    r.deployment_events = vec![(secs(5), event("MODIFIED", deployment(rolled_out()), "12"))];
    r.script(&mut s);
    let w = wait(s, Duration::ZERO).await;
    assert!(w.result.is_ok(), "{:?}", w.result);
    assert_eq!(w.took, secs(5));
}

#[tokio::test(start_paused = true)]
async fn the_controllers_progress_deadline_fails_the_rollout() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    let exceeded = deployment(deadline_exceeded());
    r.deployment_events = vec![(secs(30), event("MODIFIED", exceeded, "11"))];
    r.script(&mut s);
    let w = wait(s, Duration::ZERO).await;
    let (reason, message) = failure(&w);
    assert_eq!(reason, "ProgressDeadlineExceeded");
    assert_eq!(message, "ReplicaSet \"d-h2\" has timed out progressing.");
    assert_eq!(w.took, secs(30));
}

/// A pod the scheduler cannot place waits for a node for the grace (a cluster autoscaler adds
/// one); the rollout completes when the node comes within it.
#[tokio::test(start_paused = true)]
async fn an_unschedulable_pod_within_the_grace_waits_for_its_node() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    r.pods[2] = pod("d-h2-a", "h2", unschedulable());
    r.pod_events = vec![(
        secs(50),
        event("MODIFIED", pod("d-h2-a", "h2", running()), "11"),
    )];
    r.deployment_events = vec![(secs(55), event("MODIFIED", deployment(rolled_out()), "12"))];
    r.script(&mut s);
    let w = wait(s, Duration::from_secs(60)).await;
    assert!(w.result.is_ok(), "{:?}", w.result);
    assert_eq!(w.took, secs(55));
    let waiting = "Unschedulable (waiting up to 60s more for a node): pod d-h2-a: 0/3 nodes";
    assert!(
        w.progress.iter().any(|l| l.contains(waiting)),
        "{:#?}",
        w.progress
    );
}

/// Past the grace the rollout fails, without any change to wake the wait: at the grace exactly.
#[tokio::test(start_paused = true)]
async fn an_unschedulable_pod_past_the_grace_fails_the_rollout() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    let stuck = pod("d-h2-a", "h2", unschedulable());
    r.pod_events = vec![(secs(2), event("MODIFIED", stuck, "11"))];
    r.script(&mut s);
    let w = wait(s, Duration::from_secs(45)).await;
    let (reason, message) = failure(&w);
    assert_eq!(reason, "Unschedulable");
    assert_eq!(
        message,
        "pod d-h2-a: 0/3 nodes are available: 3 Insufficient cpu. (for 45s, the --unschedulable-grace)"
    );
    assert_eq!(w.took, secs(2 + 45));
    assert!(w.result.unwrap_err().is_rollout_failure());
}

#[tokio::test(start_paused = true)]
async fn a_zero_grace_fails_an_unschedulable_pod_at_once() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    r.pod_events = vec![(
        secs(2),
        event("MODIFIED", pod("d-h2-a", "h2", unschedulable()), "11"),
    )];
    r.script(&mut s);
    let w = wait(s, Duration::ZERO).await;
    assert_eq!(failure(&w).0, "Unschedulable");
    assert_eq!(w.took, secs(2));
}

/// Nothing happens: the wait ends at its own deadline and says where the rollout stood.
#[tokio::test(start_paused = true)]
async fn a_rollout_that_never_completes_times_out_with_its_state() {
    let mut s = Scenario::new();
    Rollout::rolling().script(&mut s);
    let w = wait(s, Duration::ZERO).await;
    assert_eq!(w.took, TIMEOUT);
    match &w.result {
        Err(e @ RolloutError::Timeout { seconds, state, .. }) => {
            assert_eq!(*seconds, 120);
            assert!(state.starts_with("1/2 updated, 2/2 available"), "{state}");
            assert!(e.is_rollout_failure());
        }
        other => panic!("not a timeout: {other:?}"),
    }
    assert_eq!(exit_code(w.result.unwrap_err()), ExitCode::Timeout);
}

#[tokio::test(start_paused = true)]
async fn a_deployment_deleted_during_the_wait_ends_it() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    r.deployment_events = vec![(secs(8), event("DELETED", deployment(rolling()), "11"))];
    r.script(&mut s);
    let w = wait(s, Duration::ZERO).await;
    assert!(
        matches!(&w.result, Err(RolloutError::Gone(name)) if name == NAME),
        "{:?}",
        w.result
    );
    assert_eq!(w.took, secs(8));
}

#[tokio::test(start_paused = true)]
async fn a_missing_or_forbidden_deployment_ends_the_wait_before_any_watch() {
    let mut s = Scenario::new();
    s.get(&one(DEPLOYMENTS, NAME)).reply(
        404,
        status(404, "NotFound", "deployments.apps \"d\" not found"),
    );
    let w = wait(s, Duration::ZERO).await;
    assert!(
        matches!(w.result, Err(RolloutError::Gone(_))),
        "{:?}",
        w.result
    );

    let mut s = Scenario::new();
    let refused = "deployments.apps \"d\" is forbidden: User \"ci\" cannot get resource";
    s.get(&one(DEPLOYMENTS, NAME))
        .reply(403, status(403, "Forbidden", refused));
    let w = wait(s, Duration::ZERO).await;
    match &w.result {
        Err(RolloutError::Api(ApplyError::Forbidden {
            object, message, ..
        })) => {
            assert_eq!(object, "Deployment/d");
            assert_eq!(message, refused);
        }
        other => panic!("not a refusal: {other:?}"),
    }
    assert_eq!(exit_code(w.result.unwrap_err()), ExitCode::Apply);
}
