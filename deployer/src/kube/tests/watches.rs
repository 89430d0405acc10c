//! Watches that break during a rollout wait: the API server closes the stream, forgets the
//! history a watch resumes from (410 Gone), or refuses to start one for a while; and the refusals
//! a retry cannot change.

use std::time::Duration;

use super::api_server::{End, Scenario, status};
use super::objects::*;
use super::rollout::wait;
use crate::kube::error::ApplyError;
use crate::kube::rollout::RolloutError;

/// The progress line of a wait that lost its watch and takes it up again.
fn resumed(progress: &[String]) -> bool {
    progress.iter().any(|l| {
        l.starts_with("Deployment/d: watch interrupted (") && l.ends_with("; re-establishing it")
    })
}

/// The API server ends the Deployment's watch (its watch timeout, a restart): the watch resumes
/// from the last resourceVersion it saw, without a new list, and the wait goes on to the end.
#[tokio::test(start_paused = true)]
async fn a_watch_the_api_server_closes_resumes_where_it_was() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    let mut halfway = rolling();
    halfway["updatedReplicas"] = 2.into();
    r.deployment_events = vec![(secs(3), event("MODIFIED", deployment(halfway), "11"))];
    r.deployment_end = End::Close;
    r.script(&mut s);
    let (key, name) = named(NAME);
    let done = event("MODIFIED", deployment(rolled_out()), "12");
    s.watch(DEPLOYMENTS, "11")
        .query(key, &name)
        .stream(vec![(secs(4), done)], End::Open);
    let w = wait(s, Duration::ZERO).await;
    assert!(w.result.is_ok(), "{:?}", w.result);
    assert_eq!(w.took, secs(3 + 4));
}

/// 410 Gone: the resourceVersion is too old, so the watch lists again and watches from the new
/// list. The wait says it lost the watch, and completes.
#[tokio::test(start_paused = true)]
async fn a_watch_that_expired_lists_again_and_the_wait_completes() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    r.deployment_events = vec![(secs(5), gone())];
    r.script(&mut s);
    relisted_then_complete(&mut s, secs(2));
    let w = wait(s, Duration::ZERO).await;
    assert!(w.result.is_ok(), "{:?}", w.result);
    assert!(resumed(&w.progress), "{:#?}", w.progress);
    // after the 410, kube's watcher backs off (0.8 s, with jitter) before it lists again
    assert!(w.took > secs(7) && w.took < secs(9), "{:?}", w.took);
}

/// The API server answers 503 to the pods' watch twice (it is restarting): the watch is retried
/// with backoff, and a pod failing afterwards still fails the rollout.
#[tokio::test(start_paused = true)]
async fn a_watch_refused_while_the_api_server_restarts_is_retried() {
    let mut s = Scenario::new();
    Rollout::rolling().script_without_pods(&mut s);
    let unavailable = status(503, "ServiceUnavailable", "the server is shutting down");
    let failing = pod(
        "d-h2-a",
        "h2",
        waiting("ImagePullBackOff", "Back-off pulling image"),
    );
    s.get(PODS)
        .query("labelSelector", SELECTOR)
        .reply(200, list("Pod", Vec::new()));
    for _ in 0..2 {
        s.watch(PODS, LISTED)
            .query("labelSelector", SELECTOR)
            .reply(503, unavailable.clone());
    }
    s.watch(PODS, LISTED)
        .query("labelSelector", SELECTOR)
        .stream(vec![(secs(1), event("ADDED", failing, "11"))], End::Open);
    let w = wait(s, Duration::ZERO).await;
    let Err(RolloutError::Failed { reason, .. }) = &w.result else {
        panic!("not a rollout failure: {:?}", w.result);
    };
    assert_eq!(reason, "ImagePullBackOff");
    let retries = w.progress.iter().filter(|l| l.contains("503")).count();
    assert_eq!(retries, 2, "{:#?}", w.progress);
    assert!(resumed(&w.progress), "{:#?}", w.progress);
}

/// Refusals a retry cannot change end the wait at once with the API server's words: the
/// credentials are refused or lack the right to list pods, or the resource is not served.
#[tokio::test(start_paused = true)]
async fn a_watch_refused_for_good_ends_the_wait() {
    for (code, reason) in [(403, "Forbidden"), (401, "Unauthorized"), (404, "NotFound")] {
        let mut s = Scenario::new();
        let message = format!("pods is {reason}: User \"ci\" cannot list resource");
        Rollout::rolling().script_without_pods(&mut s);
        // (answered a second later: the other watches have started by then)
        s.get(PODS).query("labelSelector", SELECTOR).reply_after(
            secs(1),
            code,
            status(code, reason, &message),
        );
        let w = wait(s, Duration::ZERO).await;
        let error = w.result.expect_err("refused");
        let text = error.to_string();
        match error {
            RolloutError::Api(ApplyError::Forbidden { action, .. }) if code != 404 => {
                assert_eq!(action, "watch");
            }
            RolloutError::Api(ApplyError::Api { action, .. }) if code == 404 => {
                assert_eq!(action, "watch");
            }
            other => panic!("{code}: {other:?}"),
        }
        assert!(text.contains(&message), "{text}");
        assert_eq!(w.took, secs(1), "not retried");
    }
}

/// The API server restarts during the wait: its watches end, connections are refused while it is
/// down, and once it is back the Deployment's watch has lost its history (410) and lists again.
/// The wait says so and completes.
#[tokio::test(start_paused = true)]
async fn a_restarting_api_server_is_ridden_out() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    r.deployment_end = End::Close;
    let pods = std::mem::take(&mut r.pods);
    r.script_without_pods(&mut s);
    let (key, name) = named(NAME);
    for _ in 0..2 {
        s.watch(DEPLOYMENTS, LISTED).query(key, &name).refuse();
    }
    s.watch(DEPLOYMENTS, LISTED)
        .query(key, &name)
        .stream(vec![(secs(1), gone())], End::Open);
    relisted_then_complete(&mut s, secs(2));
    let by_label = ("labelSelector", SELECTOR);
    watched(&mut s, PODS, by_label, pods, Vec::new(), End::Close);
    s.watch(PODS, LISTED).query(by_label.0, by_label.1).refuse();
    s.watch(PODS, LISTED)
        .query(by_label.0, by_label.1)
        .stream(Vec::new(), End::Open);
    let w = wait(s, Duration::ZERO).await;
    assert!(w.result.is_ok(), "{:?}", w.result);
    let refused = w
        .progress
        .iter()
        .filter(|l| l.contains("Connection refused"));
    assert_eq!(refused.count(), 3, "{:#?}", w.progress);
    assert!(
        w.progress
            .iter()
            .any(|l| l.contains("too old resource version")),
        "{:#?}",
        w.progress
    );
    assert!(resumed(&w.progress), "{:#?}", w.progress);
}
