//! Traces when the collector fails: one that hangs or refuses connections never slows or fails a
//! prediction (the spans are dropped and counted instead); tracing is off without an endpoint;
//! unusable tracing settings stop the start with their reason. What a real collector receives is
//! checked by the end-to-end tests (tests/tests/traces.rs).

use std::sync::Arc;
use std::time::{Duration, Instant};

use celestial_server::routes;
use celestial_server::testing::FakeClassifier;
use celestial_server::{Config, testing::TestServer};

use crate::common::{self, metric};

const EXPORTED: &str = r#"celestial_trace_spans_total{outcome="exported"}"#;
const QUEUE_FULL: &str = r#"celestial_trace_spans_total{outcome="dropped_queue_full"}"#;
const EXPORT_FAILED: &str = r#"celestial_trace_spans_total{outcome="dropped_export_failed"}"#;

async fn traced(endpoint: &str, extra: &[&str]) -> TestServer {
    let mut args = vec![
        "--otlp-endpoint",
        endpoint,
        // a collector that does not answer is given up on after 2 s
        "--otlp-timeout",
        "2000",
        "--trace-queue-size",
        "60",
        "--trace-batch-size",
        "30",
        "--trace-export-delay",
        "20",
    ];
    args.extend_from_slice(extra);
    common::start_with(&args, Some(Arc::new(FakeClassifier::default()))).await
}

/// `n` predictions one after the other: every one must succeed; the slowest one's time.
async fn predictions(s: &TestServer, n: usize) -> Duration {
    let c = reqwest::Client::new();
    let png = common::synthetic(image::ImageFormat::Png);
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let started = Instant::now();
        let r = c
            .post(s.url(routes::PREDICT))
            .header("content-type", "image/png")
            .body(png.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        slowest = slowest.max(started.elapsed());
    }
    slowest
}

async fn metrics(s: &TestServer) -> String {
    common::get_text(&reqwest::Client::new(), s, routes::METRICS).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_hangs_never_slows_or_fails_a_prediction() {
    // Accepts connections (the kernel's backlog does) and never answers.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hanging.local_addr().unwrap());
    let s = traced(&endpoint, &[]).await;
    // 300 traced predictions (3-4 spans each) while every export waits its 2 s out: a prediction
    // that waited for the exporter would take 2 s.
    let slowest = predictions(&s, 300).await;
    assert!(
        slowest < Duration::from_secs(1),
        "a prediction took {slowest:?}"
    );
    let text = metrics(&s).await;
    assert_eq!(metric(&text, EXPORTED), Some(0.0), "{text}");
    assert!(metric(&text, QUEUE_FULL).unwrap() > 0.0, "{text}");
    // The first export is given up on after its timeout; its spans are counted as failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(&s).await;
        if metric(&text, EXPORT_FAILED).unwrap() > 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failed export counted:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_refuses_connections_costs_only_the_dropped_spans() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = traced(&format!("http://127.0.0.1:{port}"), &[]).await;
    predictions(&s, 50).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(&s).await;
        let failed = metric(&text, EXPORT_FAILED).unwrap();
        let full = metric(&text, QUEUE_FULL).unwrap();
        // Every span is accounted for, none exported: the 50 predictions' (the request's and its
        // 4 steps'), the readiness probe's, and those of the earlier rounds of this loop.
        if failed + full >= 251.0 {
            assert_eq!(metric(&text, EXPORTED), Some(0.0));
            break;
        }
        assert!(Instant::now() < deadline, "spans unaccounted for:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn tracing_is_off_without_an_endpoint_and_sampling_can_say_no() {
    let s = common::start_with(&[], Some(Arc::new(FakeClassifier::default()))).await;
    predictions(&s, 3).await;
    assert!(!metrics(&s).await.contains("celestial_trace_spans"));
    s.stop().await.unwrap();
    // Traced, but no request is sampled: nothing is queued, nothing dropped.
    let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hanging.local_addr().unwrap());
    let s = traced(&endpoint, &["--trace-sampler", "always_off"]).await;
    predictions(&s, 100).await;
    let text = metrics(&s).await;
    assert_eq!(metric(&text, QUEUE_FULL), Some(0.0), "{text}");
    assert_eq!(metric(&text, EXPORT_FAILED), Some(0.0), "{text}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn unusable_tracing_settings_stop_the_start_with_their_reason() {
    for (args, expected) in [
        (
            vec![
                "--otlp-endpoint",
                "http://c:4317",
                "--otlp-protocol",
                "grpc",
            ],
            "4318",
        ),
        (vec!["--otlp-endpoint", "collector:4318"], "http://"),
        (
            vec![
                "--otlp-endpoint",
                "http://c:4318",
                "--otlp-headers",
                "no-equals",
            ],
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            vec![
                "--otlp-endpoint",
                "https://c:4318",
                "--otlp-certificate",
                "/nonexistent/ca.pem",
            ],
            "/nonexistent/ca.pem",
        ),
    ] {
        let config = Config::from_args(args.iter().copied()).unwrap();
        let classifier = Arc::new(FakeClassifier::default());
        let e = match TestServer::start(config, Some(classifier)).await {
            Ok(_) => panic!("{args:?} started"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(expected), "{args:?}: {e}");
    }
    let e = Config::from_args(["--trace-sampler-arg", "2"]).unwrap_err();
    assert!(e.to_string().contains("ratio"), "{e}");
}
