//! Deletion against the API server's answers: objects deleted in reverse apply order with
//! foreground propagation, an object still there (finalizers, its pods going first) waited for
//! until it is gone, one already absent, and the wait's deadline.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::api_server::{End, Scenario, status};
use super::apply::{discover_deployments, discover_services, manifests};
use super::exit_code;
use super::objects::*;
use crate::exit::ExitCode;
use crate::kube::apply::delete_all;
use crate::kube::error::ApplyError;
use crate::progress::Recorded;

/// `object` as a delete answers while it is still there (a deletion timestamp set).
fn deleting(mut object: Value) -> Value {
    object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    object
}

/// Deletes the Deployment and Service against `scenario`: the result, the progress, how long it
/// took on the paused clock.
async fn delete(
    scenario: Scenario,
    timeout: Duration,
) -> (
    Result<Vec<(String, bool)>, ApplyError>,
    Vec<String>,
    Duration,
) {
    let (cluster, server) = scenario.serve();
    let mut progress = Recorded::default();
    let start = Instant::now();
    let result = delete_all(&cluster, &manifests(), timeout, &mut progress).await;
    let took = start.elapsed();
    server.verify();
    for d in server
        .requests(Method::DELETE, &one(SERVICES, "s"))
        .into_iter()
        .chain(server.requests(Method::DELETE, &one(DEPLOYMENTS, NAME)))
    {
        assert_eq!(d.body["propagationPolicy"], "Foreground", "{d:?}");
    }
    (result, progress.lines, took)
}

/// The Service goes first (reverse order); the Deployment is still there while its pods stop, and
/// the delete waits until the watch sees it gone.
#[tokio::test(start_paused = true)]
async fn a_delete_waits_until_each_object_is_gone() {
    let mut s = Scenario::new();
    let svc = service(json!([]));
    discover_services(&mut s);
    s.on(Method::DELETE, &one(SERVICES, "s"))
        .reply(200, deleting(svc.clone()));
    discover_deployments(&mut s);
    let d = deleting(deployment(rolled_out()));
    s.on(Method::DELETE, &one(DEPLOYMENTS, NAME))
        .reply(200, d.clone());
    // the Service is gone by the time its wait lists it; the Deployment goes 6 s later
    let (key, name) = named("s");
    s.get(SERVICES)
        .query(key, &name)
        .reply(200, list("Service", Vec::new()));
    let gone = vec![(secs(6), event("DELETED", d.clone(), "11"))];
    watched_object(&mut s, (DEPLOYMENTS, NAME), d, gone, End::Open);
    let (result, progress, took) = delete(s, Duration::from_secs(120)).await;
    let deleted = result.expect("deleted");
    assert_eq!(
        deleted,
        [
            ("Service/s".to_string(), true),
            ("Deployment/d".to_string(), true)
        ]
    );
    assert_eq!(took, secs(6));
    assert_eq!(
        progress,
        [
            "Service/s: deleting",
            "Deployment/d: deleting",
            "Service/s: deleted",
            "Deployment/d: deleted"
        ]
    );
}

/// An object already absent (404) is reported as such and not waited for; an object the API
/// server deleted at once (a `Status` answer) is not waited for either.
#[tokio::test(start_paused = true)]
async fn absent_and_at_once_deleted_objects_need_no_wait() {
    let mut s = Scenario::new();
    discover_services(&mut s);
    let done = json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}});
    s.on(Method::DELETE, &one(SERVICES, "s")).reply(200, done);
    discover_deployments(&mut s);
    s.on(Method::DELETE, &one(DEPLOYMENTS, NAME)).reply(
        404,
        status(404, "NotFound", "deployments.apps \"d\" not found"),
    );
    let (result, progress, took) = delete(s, Duration::from_secs(120)).await;
    let deleted = result.expect("deleted");
    assert_eq!(
        deleted,
        [
            ("Service/s".to_string(), true),
            ("Deployment/d".to_string(), false)
        ]
    );
    assert_eq!(took, Duration::ZERO);
    assert!(progress.contains(&"Deployment/d: already absent".to_string()));
}

/// An object that stays (a finalizer nobody removes) ends the delete at its deadline (exit 5).
#[tokio::test(start_paused = true)]
async fn an_object_that_stays_times_the_delete_out() {
    let mut s = Scenario::new();
    discover_services(&mut s);
    let svc = deleting(service(json!([])));
    s.on(Method::DELETE, &one(SERVICES, "s"))
        .reply(200, svc.clone());
    discover_deployments(&mut s);
    s.on(Method::DELETE, &one(DEPLOYMENTS, NAME))
        .reply(404, status(404, "NotFound", "gone"));
    watched_object(&mut s, (SERVICES, "s"), svc, Vec::new(), End::Open);
    let (result, _, took) = delete(s, Duration::from_secs(30)).await;
    let error = result.expect_err("timed out");
    match &error {
        ApplyError::DeleteTimeout { what, seconds } => {
            assert_eq!((what.as_str(), *seconds), ("Service/s", 30));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(exit_code(error), ExitCode::Timeout);
    assert_eq!(took, secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_forbidden_delete_stops_at_that_object() {
    let mut s = Scenario::new();
    discover_services(&mut s);
    let refused = "services \"s\" is forbidden: User \"ci\" cannot delete resource";
    s.on(Method::DELETE, &one(SERVICES, "s"))
        .reply(403, status(403, "Forbidden", refused));
    let (result, _, _) = delete(s, Duration::from_secs(30)).await;
    match result.expect_err("refused") {
        ApplyError::Forbidden {
            object,
            action,
            message,
        } => {
            assert_eq!(
                (object.as_str(), action, message.as_str()),
                ("Service/s", "delete", refused)
            );
        }
        other => panic!("{other:?}"),
    }
}
