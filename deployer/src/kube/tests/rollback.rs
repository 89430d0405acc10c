//! Rolling back a failed rollout against the API server's answers: which spec comes back (the
//! one before this apply, or the previous revision's ReplicaSet template), the forced apply that
//! restores it, and the wait for it, also when that wait's watch breaks.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use super::api_server::{Scenario, status};
use super::objects::*;
use crate::kube::rollback::{rollback, rollback_spec, surging};
use crate::kube::rollout::{Limits, Rollback};
use crate::progress::Recorded;

/// The Deployment's spec with `template`.
fn spec(template: Value) -> Value {
    json!({"replicas": 2, "selector": {"matchLabels": {"app": "a"}}, "template": template})
}

/// A Deployment object (as an apply returns it) with `spec`.
fn object(spec: Value) -> Value {
    json!({"metadata": {"name": NAME, "namespace": NS}, "spec": spec})
}

/// The spec before this apply comes back when this apply changed the pod template; nothing needs
/// asking the API server.
#[tokio::test(start_paused = true)]
async fn the_spec_before_the_apply_comes_back_when_the_apply_changed_the_template() {
    let (cluster, server) = Scenario::new().serve();
    let before = object(spec(template(PREVIOUS_IMAGE)));
    let after = object(spec(template(IMAGE)));
    let found = rollback_spec(&cluster, NS, NAME, Some(&before), &after)
        .await
        .expect("no API error");
    server.verify();
    assert_eq!(found, Some(before["spec"].clone()));
}

/// The failing template was live already (an earlier apply): the template of the Deployment's
/// previous revision comes back, from its own ReplicaSets only (not a namesake's), without the
/// controller's pod-template-hash label.
#[tokio::test(start_paused = true)]
async fn the_previous_revisions_template_comes_back_when_the_template_was_live() {
    let mut s = Scenario::new();
    let mut live = deployment(rolling());
    live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = json!("3");
    s.get(&one(DEPLOYMENTS, NAME)).reply(200, live);
    let mut namesakes = replica_set("x9", 2, "registry.invalid/someone-else:1");
    namesakes["metadata"]["ownerReferences"][0]["uid"] = json!("uid-of-another-d");
    let sets = vec![
        replica_set("h0", 1, "registry.invalid/server:0"),
        replica_set("h1", 2, PREVIOUS_IMAGE),
        replica_set("h2", 3, IMAGE),
        namesakes,
    ];
    s.get(REPLICASETS).reply(200, list("ReplicaSet", sets));
    let (cluster, server) = s.serve();
    let after = object(spec(template(IMAGE)));
    let found = rollback_spec(&cluster, NS, NAME, Some(&after), &after)
        .await
        .expect("no API error")
        .expect("a previous revision");
    server.verify();
    assert_eq!(found, spec(template(PREVIOUS_IMAGE)));
}

#[tokio::test(start_paused = true)]
async fn there_is_nothing_to_roll_back_to_without_an_earlier_revision() {
    let mut s = Scenario::new();
    s.get(&one(DEPLOYMENTS, NAME))
        .reply(200, deployment(rolling()));
    let sets = vec![replica_set("h2", 2, IMAGE)];
    s.get(REPLICASETS).reply(200, list("ReplicaSet", sets));
    let (cluster, server) = s.serve();
    let after = object(spec(template(IMAGE)));
    let found = rollback_spec(&cluster, NS, NAME, Some(&after), &after).await;
    server.verify();
    assert_eq!(found.expect("no API error"), None);
    // a Deployment this apply created has no earlier spec at all
    let (cluster, server) = Scenario::new().serve();
    let found = rollback_spec(&cluster, NS, NAME, None, &after).await;
    server.verify();
    assert_eq!(found.expect("no API error"), None);
}

/// Rolls Deployment `d` back to [`PREVIOUS_IMAGE`] against `scenario` (after the forced apply,
/// which the test scripts): the outcome, the progress, and the apply's body.
async fn roll_back(scenario: Scenario) -> (Rollback, Vec<String>, Value) {
    let (cluster, server) = scenario.serve();
    let mut progress = Recorded::default();
    let limits = Limits {
        timeout: Duration::from_secs(120),
        unschedulable_grace: Duration::ZERO,
    };
    let previous = spec(template(PREVIOUS_IMAGE));
    let target = (&previous, "the previous spec");
    let outcome = rollback(&cluster, NS, NAME, target, limits, &mut progress).await;
    server.verify();
    let patches = server.requests(Method::PATCH, &one(DEPLOYMENTS, NAME));
    let body = patches[0].body.clone();
    assert_eq!(body["spec"], surging(&previous), "all pods at once");
    assert_eq!(body["metadata"], json!({"name": NAME, "namespace": NS}));
    if let Some(second) = patches.get(1) {
        assert_eq!(second.body["spec"], previous, "then its own strategy again");
    }
    (outcome, progress.lines, body)
}

/// Its own strategy back after the wait, as the apply answers it.
fn expect_strategy_back(s: &mut Scenario) {
    expect_apply(s).reply(200, deployment(rolled_out()));
}

#[test]
fn a_rollback_surges_rolling_updates_and_leaves_recreate_alone() {
    let rolling = json!({"replicas": 2, "strategy": {"type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}});
    assert_eq!(
        surging(&rolling)["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "100%"}})
    );
    let default = json!({"replicas": 2});
    assert_eq!(
        surging(&default)["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "100%"}})
    );
    let recreate = json!({"replicas": 2, "strategy": {"type": "Recreate"}});
    assert_eq!(surging(&recreate), recreate);
}

/// The forced server-side apply the rollback makes (it takes back fields others changed).
fn expect_apply(s: &mut Scenario) -> &mut super::api_server::Exchange {
    s.on(Method::PATCH, &one(DEPLOYMENTS, NAME))
        .query("fieldManager", "deployer")
        .query("force", "true")
}

#[tokio::test(start_paused = true)]
async fn a_rollback_restores_the_previous_spec_and_waits_until_it_is_available() {
    let mut s = Scenario::new();
    expect_apply(&mut s).reply(200, deployment(rolling()));
    let mut r = Rollout::rolling();
    r.deployment_events = vec![(secs(9), event("MODIFIED", deployment(rolled_out()), "11"))];
    r.script(&mut s);
    expect_strategy_back(&mut s);
    let (outcome, progress, _) = roll_back(s).await;
    assert!(outcome.restored, "{outcome:?}");
    assert_eq!(outcome.image.as_deref(), Some(PREVIOUS_IMAGE));
    assert_eq!(
        outcome.message,
        "restored the previous spec (image registry.invalid/server:1); it is available again (2 replicas, 9.0s)"
    );
    assert_eq!(
        progress[0],
        "rolling Deployment/d back to the previous spec (image registry.invalid/server:1), all its pods at once"
    );
}

/// The watch of the rollback's wait expires (410 Gone) halfway: it lists again, and the rollback
/// still ends restored.
#[tokio::test(start_paused = true)]
async fn a_rollback_rides_out_a_watch_that_breaks_during_its_wait() {
    let mut s = Scenario::new();
    expect_apply(&mut s).reply(200, deployment(rolling()));
    let mut r = Rollout::rolling();
    r.deployment_events = vec![(secs(4), gone())];
    r.script(&mut s);
    relisted_then_complete(&mut s, secs(3));
    expect_strategy_back(&mut s);
    let (outcome, progress, _) = roll_back(s).await;
    assert!(outcome.restored, "{outcome:?}");
    assert!(
        progress.iter().any(|l| l.ends_with("re-establishing it")),
        "{progress:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rollback_the_api_server_refuses_says_so_and_restores_nothing() {
    let mut s = Scenario::new();
    let refusal =
        "Deployment.apps \"d\" is invalid: spec.template.spec.containers[0].image: Required value";
    expect_apply(&mut s).reply(422, status(422, "Invalid", refusal));
    let (outcome, _, _) = roll_back(s).await;
    assert!(!outcome.restored);
    assert!(
        outcome.message.starts_with(
            "restoring the previous spec failed: Deployment/d (the previous spec): the API server rejected it: "
        ),
        "{}",
        outcome.message
    );
    assert!(outcome.message.contains(refusal), "{}", outcome.message);
}

/// The previous spec cannot run either (its pod is unschedulable now): the rollback says the
/// spec is back but not available, and why.
#[tokio::test(start_paused = true)]
async fn a_restored_spec_that_does_not_become_available_is_reported() {
    let mut s = Scenario::new();
    expect_apply(&mut s).reply(200, deployment(rolling()));
    let mut r = Rollout::rolling();
    let stuck = pod("d-h2-a", "h2", unschedulable());
    r.pod_events = vec![(secs(2), event("MODIFIED", stuck, "11"))];
    r.script(&mut s);
    expect_strategy_back(&mut s);
    let (outcome, _, _) = roll_back(s).await;
    assert!(!outcome.restored);
    assert!(
        outcome.message.starts_with(
            "restored the previous spec but it did not become available: rollout of Deployment/d failed: Unschedulable: pod d-h2-a"
        ),
        "{}",
        outcome.message
    );
}
