//! Traces end to end: the real server binary, configured by OpenTelemetry's standard variables
//! only, sends its spans to a real OpenTelemetry Collector (`celestial_e2e::otelcol`, built from its
//! pinned Go modules), and the spans the collector wrote are read back: a request's W3C
//! `traceparent` is continued (trace id, parent span, `tracestate`), a malformed one is ignored, a
//! caller's "not sampled" is followed, a prediction's steps are child spans inside its span (the
//! batch size on `inference`), the resource names the service and the model; a ratio sampler
//! samples its share, over the JSON encoding. Needs Go for the collector (cached), not the test
//! environment.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use celestial_e2e::otelcol::{Collector, Span};
use celestial_e2e::{free_loopback_port, http_client, onnxruntime_library, repo_binary, repo_root};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// The real server binary on a free loopback port with `env` (and nothing of the caller's
/// `OTEL_*`), killed on drop.
struct Served {
    child: Child,
    port: u16,
}

impl Served {
    async fn start(env: &[(&str, &str)]) -> Served {
        let bin = repo_binary("celestial-server", "celestial-server").expect("building the server");
        let port = free_loopback_port();
        let mut cmd = Command::new(bin);
        for (name, _) in std::env::vars() {
            if name.starts_with("OTEL_") || name.starts_with("CELESTIAL_") {
                cmd.env_remove(name);
            }
        }
        let child = cmd
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env("ORT_DYLIB_PATH", onnxruntime_library())
            .env("CELESTIAL_TERMINATION_LOG", "")
            // warnings only: one request line each would bury the test's own output
            .env("CELESTIAL_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting celestial-server");
        let served = Served { child, port };
        let client = http_client(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let ready = client.get(served.url("/readyz")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return served;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server was not ready within 60 s");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn picture() -> Vec<u8> {
    std::fs::read(repo_root().join("server/tests/fixtures/saturn-progressive.jpg"))
        .expect("fixture")
}

/// POST `n` copies of the fixture picture to `/predict` (one) or `/predict/batch` (more), with
/// `x-request-id: id` and `headers`.
async fn predict(s: &Served, id: &str, n: usize, headers: &[(&str, &str)]) {
    let mut form = reqwest::multipart::Form::new();
    for i in 0..n {
        let part = reqwest::multipart::Part::bytes(picture())
            .file_name(format!("{i}.jpg"))
            .mime_str("image/jpeg")
            .unwrap();
        form = form.part("image", part);
    }
    let path = if n == 1 { "/predict" } else { "/predict/batch" };
    let mut req = http_client(Duration::from_secs(30))
        .post(s.url(path))
        .header("x-request-id", id)
        .multipart(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("prediction");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

/// The request span of request `id`, if it arrived.
fn request_span<'a>(spans: &'a [Span], id: &str) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| s.kind == 2 && s.attr_str("celestial.request_id") == Some(id))
}

fn children<'a>(spans: &'a [Span], parent: &Span) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.parent_span_id.as_deref() == Some(parent.span_id.as_str()))
        .collect()
}

#[tokio::test]
async fn a_prediction_continues_its_callers_trace_with_its_steps_as_child_spans() {
    let collector = Collector::start().await.expect("the collector starts");
    let endpoint = collector.endpoint();
    let s = Served::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=celestial-test"),
    ])
    .await;
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let continued = [
        ("traceparent", traceparent.as_str()),
        ("tracestate", "vendor=opaque"),
    ];
    predict(&s, "continued", 1, &continued).await;
    predict(
        &s,
        "unsampled",
        1,
        &[("traceparent", &traceparent.replace("-01", "-00"))],
    )
    .await;
    predict(&s, "malformed", 1, &[("traceparent", "00-not-a-trace-01")]).await;
    predict(&s, "batch", 3, &[]).await;
    let spans = collector
        .wait_for_spans(Duration::from_secs(30), |spans| {
            ["continued", "malformed", "batch"]
                .iter()
                .all(|id| request_span(spans, id).is_some())
        })
        .await;
    let root = request_span(&spans, "continued").unwrap();
    assert_eq!(root.trace_id, TRACE);
    assert_eq!(root.parent_span_id.as_deref(), Some(CALLER_SPAN));
    assert_eq!(root.name, "POST /predict");
    assert_eq!(root.attr_str("http.route"), Some("/predict"));
    assert_eq!(root.attributes["http.response.status_code"], 200);
    assert_eq!(root.service_name(), Some("celestial-server"));
    assert_eq!(
        root.resource["k8s.pod.name"], "celestial-test",
        "{:?}",
        root.resource
    );
    assert!(root.resource.contains_key("celestial.model.version"));
    let steps = children(&spans, root);
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    for step in [
        "read body",
        "batch queue",
        "decode and preprocess",
        "inference",
    ] {
        assert!(names.contains(&step), "no {step:?} in {names:?}");
    }
    for step in &steps {
        assert_eq!(step.trace_id, TRACE);
        assert_eq!(step.kind, 1, "{step:?}");
        assert!(
            step.start_unix_nano >= root.start_unix_nano
                && step.end_unix_nano <= root.end_unix_nano,
            "{step:?} is outside {root:?}"
        );
    }
    // The caller said "not sampled": nothing of its trace but the continued request's.
    let of_caller = spans.iter().filter(|s| s.trace_id == TRACE).count();
    assert_eq!(of_caller, steps.len() + 1, "{spans:#?}");
    assert!(request_span(&spans, "unsampled").is_none());
    // A malformed traceparent starts a new trace.
    let fresh = request_span(&spans, "malformed").unwrap();
    assert_ne!(fresh.trace_id, TRACE);
    assert_eq!(fresh.parent_span_id, None);
    // Three pictures of one request: one ONNX Runtime call of (at least) three.
    let batch = request_span(&spans, "batch").unwrap();
    let inference = children(&spans, batch)
        .into_iter()
        .find(|s| s.name == "inference")
        .expect("the batch's inference span");
    let images = inference.attributes["celestial.batch.images"]
        .as_i64()
        .unwrap();
    assert!(images >= 3, "{inference:?}");
}

#[tokio::test]
async fn a_ratio_sampler_traces_its_share_of_new_traces_over_json() {
    let collector = Collector::start().await.expect("the collector starts");
    let endpoint = collector.endpoint();
    let s = Served::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let client = http_client(Duration::from_secs(10));
    let n = 400;
    for _ in 0..n {
        let r = client.get(s.url("/livez")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    // One sampled request whose span arrives last marks the end of the run.
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let r = client
        .get(s.url("/model"))
        .header("traceparent", traceparent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = collector
        .wait_for_spans(Duration::from_secs(30), |spans| {
            spans.iter().any(|s| s.trace_id == TRACE)
        })
        .await;
    let sampled = spans.iter().filter(|s| s.name == "GET /livez").count();
    // 100 expected; the binomial's standard deviation is 8.7: 5 of them either side.
    assert!((56..=144).contains(&sampled), "{sampled} of {n} sampled");
}
