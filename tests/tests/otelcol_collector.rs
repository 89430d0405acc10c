//! The collector helper itself (`celestial_e2e::otelcol`) against the real collector: OTLP/HTTP JSON
//! requests built by hand go to `/v1/traces`, and [`Collector::wait_for_spans`] reads back every
//! span with its ids, kind, times, typed attributes, status and resource. Needs Go (the collector
//! is built by `tests/env/build-addon.sh otelcol`, cached; `scripts/setup` builds it), not the test
//! environment.

use std::time::{Duration, Instant};

use celestial_e2e::http_client;
use celestial_e2e::otelcol::{Collector, Span};
use serde_json::{Value, json};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

fn string(key: &str, v: &str) -> Value {
    json!({"key": key, "value": {"stringValue": v}})
}

/// One `TracesData` of `spans` from service `service`.
fn request(service: &str, spans: Vec<Value>) -> Value {
    json!({"resourceSpans": [{
        "resource": {"attributes": [string("service.name", service)]},
        "scopeSpans": [{"scope": {"name": "celestial-server"}, "spans": spans}],
    }]})
}

async fn post(collector: &Collector, body: &Value) {
    let r = http_client(Duration::from_secs(10))
        .post(format!("{}/v1/traces", collector.endpoint()))
        .json(body)
        .send()
        .await
        .expect("POST /v1/traces");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    assert!(status.is_success(), "{status}: {text}\n{}", collector.log());
}

fn by_name<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span {name:?} in {spans:#?}"))
}

#[tokio::test]
async fn spans_posted_over_otlp_http_come_back_flat() {
    let t = Instant::now();
    let collector = Collector::start().await.expect("the collector starts");
    let started = t.elapsed();
    assert!(collector.spans().is_empty());

    let server = json!({
        "traceId": TRACE, "spanId": "b7ad6b7169203331", "name": "POST /predict", "kind": 2,
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000042000000",
        "attributes": [
            string("http.request.method", "POST"),
            {"key": "http.response.status_code", "value": {"intValue": "200"}},
            {"key": "celestial.cached", "value": {"boolValue": true}},
            {"key": "celestial.confidence", "value": {"doubleValue": 0.5}},
        ],
        "status": {"code": 1},
    });
    let inference = json!({
        "traceId": TRACE, "spanId": "00f067aa0ba902b7", "parentSpanId": "b7ad6b7169203331",
        "name": "inference", "kind": 1,
        "startTimeUnixNano": "1700000000010000000", "endTimeUnixNano": "1700000000030000000",
        "status": {"code": 2, "message": "session failed"},
    });
    // two requests, two lines of the file
    post(&collector, &request("celestial-test", vec![server])).await;
    post(&collector, &request("celestial-test", vec![inference])).await;
    let spans = collector
        .wait_for_spans(Duration::from_secs(10), |s| s.len() >= 2)
        .await;
    assert_eq!(spans.len(), 2, "{spans:#?}");

    let root = by_name(&spans, "POST /predict");
    assert_eq!(
        (root.trace_id.as_str(), root.span_id.as_str()),
        (TRACE, "b7ad6b7169203331")
    );
    assert_eq!(root.parent_span_id, None);
    assert_eq!((root.kind, root.status_code), (2, 1));
    assert_eq!(root.duration(), Duration::from_millis(42));
    assert_eq!(root.service_name(), Some("celestial-test"));
    assert_eq!(root.scope, "celestial-server");
    assert_eq!(root.attr_str("http.request.method"), Some("POST"));
    assert_eq!(root.attributes["http.response.status_code"], json!(200));
    assert_eq!(root.attributes["celestial.cached"], json!(true));
    assert_eq!(root.attributes["celestial.confidence"], json!(0.5));

    let child = by_name(&spans, "inference");
    assert_eq!(child.trace_id, TRACE);
    assert_eq!(child.parent_span_id.as_deref(), Some("b7ad6b7169203331"));
    assert_eq!(
        (child.start_unix_nano, child.end_unix_nano),
        (1_700_000_000_010_000_000, 1_700_000_000_030_000_000)
    );
    assert_eq!((child.kind, child.status_code), (1, 2));
    assert_eq!(child.status_message, "session failed");
    eprintln!(
        "measured: collector ready in {started:.2?}, two requests read back after {:.2?}",
        t.elapsed()
    );
}

/// Runs beside the other test's collector: each binds its own port and nothing else.
#[tokio::test]
async fn a_malformed_request_is_refused_and_writes_nothing() {
    let collector = Collector::start().await.expect("the collector starts");
    let r = http_client(Duration::from_secs(10))
        .post(format!("{}/v1/traces", collector.endpoint()))
        .header("content-type", "application/json")
        .body("{\"resourceSpans\": 7}")
        .send()
        .await
        .expect("POST /v1/traces");
    assert_eq!(r.status(), 400);
    assert!(collector.spans().is_empty());
}
