//! Whether the cluster serves prometheus-operator's kinds, from API discovery: the group version
//! not found (no CRDs), found with both kinds, found with one, and discovery refused (an API
//! error, exit 3: not a missing operator).

use super::api_server::{Scenario, status};
use super::apply::resources;
use super::exit_code;
use crate::exit::ExitCode;
use crate::kube::error::ApplyError;
use crate::kube::monitoring::missing_kinds;

const OPERATOR: &str = "/apis/monitoring.coreos.com/v1";

async fn missing(s: Scenario) -> Result<Vec<&'static str>, ApplyError> {
    let (cluster, server) = s.serve();
    let missing = missing_kinds(&cluster).await;
    server.verify();
    missing
}

#[tokio::test(start_paused = true)]
async fn the_operators_kinds_are_found_by_discovery() {
    let mut s = Scenario::new();
    let found = status(
        404,
        "NotFound",
        "the server could not find the requested resource",
    );
    s.get(OPERATOR).reply(404, found);
    let none = missing(s).await.expect("answered");
    assert_eq!(none, ["PrometheusRule", "PodMonitor"]);

    let both = [
        ("prometheusrules", "PrometheusRule"),
        ("podmonitors", "PodMonitor"),
        ("podmonitors/status", "PodMonitor"),
    ];
    let mut s = Scenario::new();
    s.get(OPERATOR)
        .reply(200, resources("monitoring.coreos.com/v1", &both));
    assert_eq!(missing(s).await.expect("answered"), Vec::<&str>::new());

    // A subresource is not the kind itself.
    let rules_only = [
        ("prometheusrules", "PrometheusRule"),
        ("podmonitors/status", "PodMonitor"),
    ];
    let mut s = Scenario::new();
    s.get(OPERATOR)
        .reply(200, resources("monitoring.coreos.com/v1", &rules_only));
    assert_eq!(missing(s).await.expect("answered"), ["PodMonitor"]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_discovery_is_an_api_error_not_a_missing_operator() {
    let mut s = Scenario::new();
    let forbidden = status(403, "Forbidden", "forbidden: User \"ci\" cannot get path");
    s.get(OPERATOR).reply(403, forbidden);
    let e = missing(s).await.expect_err("refused");
    assert!(matches!(e, ApplyError::Forbidden { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("monitoring.coreos.com/v1: discovery forbidden"),
        "{e}"
    );
    assert_eq!(exit_code(e), ExitCode::Apply);
}
