//! The load-balancer wait against the API server's answers: a Service without an address until
//! the controller sets an IP or a hostname, one that never gets one (the wait explains why, with
//! the Service's latest event), and one that goes away. Also the one-line states a report shows.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::api_server::{End, Scenario, status};
use super::exit_code;
use super::objects::*;
use crate::exit::ExitCode;
use crate::kube::error::ApplyError;
use crate::kube::rollout::RolloutError;
use crate::kube::{rollout, service};
use crate::progress::Recorded;

/// The Service's events, as the wait looks them up (by the object they are about).
fn expect_events(s: &mut Scenario, events: Vec<Value>) {
    s.get(EVENTS)
        .query(
            "fieldSelector",
            "involvedObject.kind=Service,involvedObject.name=s",
        )
        .reply(200, list("Event", events));
}

/// Expects the wait's watch of Service `s`, without an address when listed, then `events`; and
/// its first look at the Service's events (none yet).
fn pending_service(s: &mut Scenario, events: Vec<(Duration, Value)>) {
    watched_object(s, (SERVICES, "s"), service(json!([])), events, End::Open);
    expect_events(s, Vec::new());
}

/// An event about the Service `s`.
fn about_service(reason: &str, message: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "s.1", "namespace": NS},
        "involvedObject": {"kind": "Service", "name": "s", "namespace": NS},
        "reason": reason, "message": message, "lastTimestamp": "2026-01-01T00:00:00Z"})
}

/// Waits (at most `timeout`) for the address of Service `s` against `scenario`.
async fn wait(
    scenario: Scenario,
    timeout: Duration,
) -> (Result<String, RolloutError>, Vec<String>, Duration) {
    let (cluster, server) = scenario.serve();
    let mut progress = Recorded::default();
    let start = Instant::now();
    let result = service::wait_load_balancer(&cluster, NS, "s", timeout, &mut progress).await;
    let took = start.elapsed();
    server.verify();
    (result, progress.lines, took)
}

/// The controller sets the address 3 s in: an IP, or a hostname (as some clouds do), becomes the
/// URL.
#[tokio::test(start_paused = true)]
async fn the_url_comes_once_the_controller_sets_the_address() {
    for (ingress, url) in [
        (json!([{"ip": "203.0.113.7"}]), "http://203.0.113.7:80/"),
        (
            json!([{"hostname": "lb.example.invalid"}]),
            "http://lb.example.invalid:80/",
        ),
    ] {
        let mut s = Scenario::new();
        let addressed = vec![(secs(3), event("MODIFIED", service(ingress), "11"))];
        pending_service(&mut s, addressed);
        let (result, progress, took) = wait(s, Duration::from_secs(60)).await;
        assert_eq!(result.expect("an address"), url);
        assert_eq!(took, secs(3));
        assert!(
            progress.contains(&"Service/s: waiting for the load-balancer address (2s)".to_string()),
            "{progress:#?}"
        );
    }
}

/// No controller ever sets an address: the wait ends at its deadline (exit 5) explaining what is
/// missing, with the Service's latest event (looked up every 5 s).
#[tokio::test(start_paused = true)]
async fn a_pending_address_is_explained_and_times_out() {
    let mut s = Scenario::new();
    pending_service(&mut s, Vec::new());
    let failed = about_service("SyncLoadBalancerFailed", "no available IPs in the pool");
    expect_events(&mut s, vec![failed]);
    let (result, progress, took) = wait(s, Duration::from_secs(8)).await;
    assert_eq!(took, secs(8));
    let error = result.expect_err("timed out");
    let text = error.to_string();
    assert!(
        matches!(error, RolloutError::LoadBalancerTimeout { seconds: 8, .. }),
        "{error:?}"
    );
    assert!(
        text.starts_with("timed out after 8s waiting for the load-balancer address of Service/s: no load-balancer controller has set status.loadBalancer.ingress yet")
            && text.ends_with("; latest event: SyncLoadBalancerFailed: no available IPs in the pool"),
        "{text}"
    );
    // the explanation comes after 5 s of waiting, not at once
    let explained = |l: &String| l.contains("no load-balancer controller");
    let first = progress.iter().position(explained).expect("explained");
    assert!(progress[first].contains("(5s)"), "{progress:#?}");
    assert_eq!(exit_code(error), ExitCode::Timeout);
}

#[tokio::test(start_paused = true)]
async fn a_service_deleted_during_the_wait_ends_it() {
    let mut s = Scenario::new();
    let removed = vec![(secs(2), event("DELETED", service(json!([])), "11"))];
    pending_service(&mut s, removed);
    let (result, _, took) = wait(s, Duration::from_secs(60)).await;
    match result.expect_err("gone") {
        RolloutError::Api(ApplyError::Api {
            object, message, ..
        }) => {
            assert_eq!(object, "Service/s");
            assert_eq!(message, "the Service does not exist (any more)");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(took, secs(2));
}

/// The state lines a report shows (after an interrupt, or from `status`), read from the API
/// server: the Deployment's rollout and image, the Service's URL.
#[tokio::test(start_paused = true)]
async fn state_lines_say_where_the_rollout_and_the_address_are() {
    let mut s = Scenario::new();
    s.get(&one(DEPLOYMENTS, NAME))
        .reply(200, deployment(rolling()));
    s.get(&one(SERVICES, "s"))
        .reply(200, service(json!([{"ip": "203.0.113.7"}])));
    s.get(&one(DEPLOYMENTS, NAME))
        .reply(404, status(404, "NotFound", "not found"));
    s.get(&one(SERVICES, "s")).reply(200, service(json!([])));
    let (cluster, server) = s.serve();
    let lines = [
        rollout::describe(&cluster, NS, NAME).await,
        service::describe(&cluster, NS, "s").await,
        rollout::describe(&cluster, NS, NAME).await,
        service::describe(&cluster, NS, "s").await,
    ];
    server.verify();
    assert_eq!(
        lines,
        [
            "Deployment/d: rollout in progress: 1/2 updated, 2/2 available, 3 total; image registry.invalid/server:2",
            "Service/s: http://203.0.113.7:80/",
            "Deployment/d: does not exist",
            "Service/s: no load-balancer address yet",
        ]
    );
}
