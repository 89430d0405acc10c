//! The exposition pinned line by line: any change of a name, label, bucket, help text or value
//! format on the wire fails here.

use super::*;

/// `text` with the series of each family in a fixed order: the registry keeps a family's series
/// in a hash map, so their order varies from one run to the next (a scraper does not mind).
/// Samples are sorted (stably) by their labels without `le`, which keeps a histogram's buckets,
/// sum and count together and in their order.
fn canonical(text: &str) -> String {
    fn series(sample: &str) -> &str {
        let name_and_labels = sample.rsplit_once(' ').map_or(sample, |(s, _)| s);
        let labels = name_and_labels.split_once('{').map_or("", |(_, l)| l);
        let labels = labels.split("le=\"").next().unwrap_or_default();
        labels.trim_end_matches(['}', ','])
    }
    let mut out = Vec::new();
    let mut samples: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            samples.sort_by_key(|l| series(l));
            out.append(&mut samples);
            out.push(line);
        } else {
            samples.push(line);
        }
    }
    samples.sort_by_key(|l| series(l));
    out.append(&mut samples);
    out.iter().map(|l| format!("{l}\n")).collect()
}

/// One of each recording, labels that need escaping, a value past the last bucket.
fn recorded() -> (Metrics, Arc<TlsMetrics>) {
    let labels = ["Earth".to_string(), "Mars \"red\" \\ 4".to_string()];
    let m = Metrics::new(&labels, "bodies \"v2\"\nbeta", "7", "1.31.1", true, true);
    for (method, route, status, ms) in [
        ("POST", "/predict", 200, 0.25), // on a bucket bound: counted in it
        ("POST", "/predict", 400, 20.0),
        ("GET", "/livez", 200, 30_000.0), // past the last bucket: +Inf only
    ] {
        m.request_started();
        m.request_finished(method, route, status, Duration::from_secs_f64(ms / 1e3));
        m.request_ended();
    }
    m.request_started();
    m.request_cancelled("POST", "/predict");
    m.request_ended();
    m.request_started(); // still in flight
    m.queue_wait.observe(Duration::from_millis(500));
    m.preprocess.observe(Duration::from_millis(1));
    m.inference.observe(Duration::from_millis(2500));
    for n in [1, 6, 300] {
        m.batch_images.observe_count(n);
    }
    m.predicted(1, Some(true), Some(0.999_5));
    m.predicted(1, Some(false), Some(0.5)); // on a bucket bound: counted in it
    m.predicted(0, Some(false), Some(0.97));
    m.predicted(0, Some(false), None);
    let (score, alert) = m.drift_series("colour");
    score.set(1.25);
    alert.set(1);
    m.drift_series("labels").0.set(0.5);
    m.rejected("invalid_image");
    m.rejected("api_key_missing");
    m.rejected("invalid_image");
    m.set_api_keys(2);
    m.reloaded("tls", true);
    m.reloaded("api_keys", false);
    m.self_checked(19, 2.384185791015625e-6, 0.0125);
    let tls = Arc::new(TlsMetrics::default());
    m.set_tls(Arc::clone(&tls));
    tls.count(Handshake::Ok);
    tls.count(Handshake::Ok);
    tls.count(Handshake::Failed);
    tls.set_not_after(1_936_742_400);
    (m, tls)
}

/// [`recorded`]'s exposition (ready: no).
const RECORDED: &str = r#"# HELP celestial_http_requests_total HTTP requests by route, method and status.
# TYPE celestial_http_requests_total counter
celestial_http_requests_total{route="/livez",method="GET",status="200"} 1
celestial_http_requests_total{route="/predict",method="POST",status="200"} 1
celestial_http_requests_total{route="/predict",method="POST",status="400"} 1
# HELP celestial_http_request_duration_seconds HTTP request latency by route.
# TYPE celestial_http_request_duration_seconds histogram
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.0001"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.00025"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.0005"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.001"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.0025"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.005"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.01"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.025"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.05"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.1"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.25"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="0.5"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="1"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="2.5"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="5"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="10"} 0
celestial_http_request_duration_seconds_bucket{route="/livez",le="+Inf"} 1
celestial_http_request_duration_seconds_sum{route="/livez"} 30.0
celestial_http_request_duration_seconds_count{route="/livez"} 1
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.0001"} 0
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.00025"} 1
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.0005"} 1
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.001"} 1
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.0025"} 1
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.005"} 1
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.01"} 1
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.025"} 2
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.05"} 2
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.1"} 2
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.25"} 2
celestial_http_request_duration_seconds_bucket{route="/predict",le="0.5"} 2
celestial_http_request_duration_seconds_bucket{route="/predict",le="1"} 2
celestial_http_request_duration_seconds_bucket{route="/predict",le="2.5"} 2
celestial_http_request_duration_seconds_bucket{route="/predict",le="5"} 2
celestial_http_request_duration_seconds_bucket{route="/predict",le="10"} 2
celestial_http_request_duration_seconds_bucket{route="/predict",le="+Inf"} 2
celestial_http_request_duration_seconds_sum{route="/predict"} 0.02025
celestial_http_request_duration_seconds_count{route="/predict"} 2
# HELP celestial_http_requests_in_flight HTTP requests being served now.
# TYPE celestial_http_requests_in_flight gauge
celestial_http_requests_in_flight 1
# HELP celestial_http_requests_cancelled_total Requests the client abandoned (closed the connection) before the answer, by route and method.
# TYPE celestial_http_requests_cancelled_total counter
celestial_http_requests_cancelled_total{route="/predict",method="POST"} 1
# HELP celestial_queue_wait_seconds Time prediction jobs waited for a free inference worker.
# TYPE celestial_queue_wait_seconds histogram
celestial_queue_wait_seconds_bucket{le="0.0001"} 0
celestial_queue_wait_seconds_bucket{le="0.00025"} 0
celestial_queue_wait_seconds_bucket{le="0.0005"} 0
celestial_queue_wait_seconds_bucket{le="0.001"} 0
celestial_queue_wait_seconds_bucket{le="0.0025"} 0
celestial_queue_wait_seconds_bucket{le="0.005"} 0
celestial_queue_wait_seconds_bucket{le="0.01"} 0
celestial_queue_wait_seconds_bucket{le="0.025"} 0
celestial_queue_wait_seconds_bucket{le="0.05"} 0
celestial_queue_wait_seconds_bucket{le="0.1"} 0
celestial_queue_wait_seconds_bucket{le="0.25"} 0
celestial_queue_wait_seconds_bucket{le="0.5"} 1
celestial_queue_wait_seconds_bucket{le="1"} 1
celestial_queue_wait_seconds_bucket{le="2.5"} 1
celestial_queue_wait_seconds_bucket{le="5"} 1
celestial_queue_wait_seconds_bucket{le="10"} 1
celestial_queue_wait_seconds_bucket{le="+Inf"} 1
celestial_queue_wait_seconds_sum 0.5
celestial_queue_wait_seconds_count 1
# HELP celestial_preprocess_seconds Time spent decoding and preprocessing the images of one job (of the whole batch it ran in).
# TYPE celestial_preprocess_seconds histogram
celestial_preprocess_seconds_bucket{le="0.0001"} 0
celestial_preprocess_seconds_bucket{le="0.00025"} 0
celestial_preprocess_seconds_bucket{le="0.0005"} 0
celestial_preprocess_seconds_bucket{le="0.001"} 1
celestial_preprocess_seconds_bucket{le="0.0025"} 1
celestial_preprocess_seconds_bucket{le="0.005"} 1
celestial_preprocess_seconds_bucket{le="0.01"} 1
celestial_preprocess_seconds_bucket{le="0.025"} 1
celestial_preprocess_seconds_bucket{le="0.05"} 1
celestial_preprocess_seconds_bucket{le="0.1"} 1
celestial_preprocess_seconds_bucket{le="0.25"} 1
celestial_preprocess_seconds_bucket{le="0.5"} 1
celestial_preprocess_seconds_bucket{le="1"} 1
celestial_preprocess_seconds_bucket{le="2.5"} 1
celestial_preprocess_seconds_bucket{le="5"} 1
celestial_preprocess_seconds_bucket{le="10"} 1
celestial_preprocess_seconds_bucket{le="+Inf"} 1
celestial_preprocess_seconds_sum 0.001
celestial_preprocess_seconds_count 1
# HELP celestial_inference_seconds Time spent in ONNX Runtime for one job (for the whole batch it ran in).
# TYPE celestial_inference_seconds histogram
celestial_inference_seconds_bucket{le="0.0001"} 0
celestial_inference_seconds_bucket{le="0.00025"} 0
celestial_inference_seconds_bucket{le="0.0005"} 0
celestial_inference_seconds_bucket{le="0.001"} 0
celestial_inference_seconds_bucket{le="0.0025"} 0
celestial_inference_seconds_bucket{le="0.005"} 0
celestial_inference_seconds_bucket{le="0.01"} 0
celestial_inference_seconds_bucket{le="0.025"} 0
celestial_inference_seconds_bucket{le="0.05"} 0
celestial_inference_seconds_bucket{le="0.1"} 0
celestial_inference_seconds_bucket{le="0.25"} 0
celestial_inference_seconds_bucket{le="0.5"} 0
celestial_inference_seconds_bucket{le="1"} 0
celestial_inference_seconds_bucket{le="2.5"} 1
celestial_inference_seconds_bucket{le="5"} 1
celestial_inference_seconds_bucket{le="10"} 1
celestial_inference_seconds_bucket{le="+Inf"} 1
celestial_inference_seconds_sum 2.5
celestial_inference_seconds_count 1
# HELP celestial_inference_batch_images Images in the ONNX Runtime call that classified a job (adaptive batching: other requests' images included); one observation per job.
# TYPE celestial_inference_batch_images histogram
celestial_inference_batch_images_bucket{le="1"} 1
celestial_inference_batch_images_bucket{le="2"} 1
celestial_inference_batch_images_bucket{le="4"} 1
celestial_inference_batch_images_bucket{le="8"} 2
celestial_inference_batch_images_bucket{le="16"} 2
celestial_inference_batch_images_bucket{le="32"} 2
celestial_inference_batch_images_bucket{le="64"} 2
celestial_inference_batch_images_bucket{le="128"} 2
celestial_inference_batch_images_bucket{le="256"} 2
celestial_inference_batch_images_bucket{le="+Inf"} 3
celestial_inference_batch_images_sum 307.0
celestial_inference_batch_images_count 3
# HELP celestial_predictions_total Predictions by predicted label.
# TYPE celestial_predictions_total counter
celestial_predictions_total{label="Earth"} 2
celestial_predictions_total{label="Mars \"red\" \\ 4"} 2
# HELP celestial_unknown_predictions_total Answers with known=false (the image is not like any label, by the model's OOD score and threshold), by predicted label.
# TYPE celestial_unknown_predictions_total counter
celestial_unknown_predictions_total{label="Earth"} 2
celestial_unknown_predictions_total{label="Mars \"red\" \\ 4"} 1
# HELP celestial_prediction_confidence The served confidence of each prediction (the calibrated top probability).
# TYPE celestial_prediction_confidence histogram
celestial_prediction_confidence_bucket{le="0.5"} 1
celestial_prediction_confidence_bucket{le="0.7"} 1
celestial_prediction_confidence_bucket{le="0.8"} 1
celestial_prediction_confidence_bucket{le="0.9"} 1
celestial_prediction_confidence_bucket{le="0.95"} 1
celestial_prediction_confidence_bucket{le="0.98"} 2
celestial_prediction_confidence_bucket{le="0.99"} 2
celestial_prediction_confidence_bucket{le="0.995"} 2
celestial_prediction_confidence_bucket{le="0.999"} 2
celestial_prediction_confidence_bucket{le="+Inf"} 3
celestial_prediction_confidence_sum 2.4695000052452089
celestial_prediction_confidence_count 3
# HELP celestial_drift_score How far the last window of answers is from the model's drift reference, by signal (the test statistic over its threshold: 1 or more is an alert).
# TYPE celestial_drift_score gauge
celestial_drift_score{signal="colour"} 1.25
celestial_drift_score{signal="labels"} 0.5
# HELP celestial_drift_alert Whether a drift signal is over its threshold in the last window of answers (1) or not (0).
# TYPE celestial_drift_alert gauge
celestial_drift_alert{signal="colour"} 1
celestial_drift_alert{signal="labels"} 0
# HELP celestial_rejections_total Refused requests and images by reason (error code).
# TYPE celestial_rejections_total counter
celestial_rejections_total{reason="api_key_missing"} 1
celestial_rejections_total{reason="invalid_image"} 2
# HELP celestial_api_keys API keys accepted now (0: keys are off).
# TYPE celestial_api_keys gauge
celestial_api_keys 2
# HELP celestial_reloads_total New contents of the API keys file or the TLS certificate and key, by what and result (error: refused, the previous one stays).
# TYPE celestial_reloads_total counter
celestial_reloads_total{what="api_keys",result="error"} 1
celestial_reloads_total{what="tls",result="ok"} 1
# HELP celestial_model_self_check_images Golden images of the model that gave their recorded answers in the start-up self-check (0: the model has no golden set, or no check ran).
# TYPE celestial_model_self_check_images gauge
celestial_model_self_check_images 19
# HELP celestial_model_self_check_max_logit_diff Largest difference of a served output value from the golden set's recorded one in the start-up self-check.
# TYPE celestial_model_self_check_max_logit_diff gauge
celestial_model_self_check_max_logit_diff 0.000002384185791015625
# HELP celestial_model_self_check_seconds How long the start-up self-check took.
# TYPE celestial_model_self_check_seconds gauge
celestial_model_self_check_seconds 0.0125
# HELP celestial_ready Whether the server accepts predictions (1) or not (0).
# TYPE celestial_ready gauge
celestial_ready 0
# HELP celestial_build_info Build and model information.
# TYPE celestial_build_info gauge
celestial_build_info{version="{version}",model_name="bodies \"v2\"\nbeta",model_version="7",onnxruntime_version="1.31.1"} 1
# HELP celestial_tls_handshakes_total TLS handshakes on the HTTPS listener by result (failed: not TLS, no common version or cipher, certificate refused by the client; timeout: not done within the header-read timeout).
# TYPE celestial_tls_handshakes_total counter
celestial_tls_handshakes_total{result="failed"} 1
celestial_tls_handshakes_total{result="ok"} 2
celestial_tls_handshakes_total{result="timeout"} 0
# HELP celestial_tls_certificate_expiry_timestamp_seconds When the served TLS certificate expires (Unix time; alert on it minus time()).
# TYPE celestial_tls_certificate_expiry_timestamp_seconds gauge
celestial_tls_certificate_expiry_timestamp_seconds 1936742400
"#;

/// A fresh server's exposition but the bucket lines (the same as in [`RECORDED`], at 0): only
/// the families that have a series from the start.
const FRESH_BUT_BUCKETS: &str = r#"# HELP celestial_http_requests_in_flight HTTP requests being served now.
# TYPE celestial_http_requests_in_flight gauge
celestial_http_requests_in_flight 0
# HELP celestial_queue_wait_seconds Time prediction jobs waited for a free inference worker.
# TYPE celestial_queue_wait_seconds histogram
celestial_queue_wait_seconds_sum 0.0
celestial_queue_wait_seconds_count 0
# HELP celestial_preprocess_seconds Time spent decoding and preprocessing the images of one job (of the whole batch it ran in).
# TYPE celestial_preprocess_seconds histogram
celestial_preprocess_seconds_sum 0.0
celestial_preprocess_seconds_count 0
# HELP celestial_inference_seconds Time spent in ONNX Runtime for one job (for the whole batch it ran in).
# TYPE celestial_inference_seconds histogram
celestial_inference_seconds_sum 0.0
celestial_inference_seconds_count 0
# HELP celestial_inference_batch_images Images in the ONNX Runtime call that classified a job (adaptive batching: other requests' images included); one observation per job.
# TYPE celestial_inference_batch_images histogram
celestial_inference_batch_images_sum 0.0
celestial_inference_batch_images_count 0
# HELP celestial_predictions_total Predictions by predicted label.
# TYPE celestial_predictions_total counter
celestial_predictions_total{label="Earth"} 0
# HELP celestial_api_keys API keys accepted now (0: keys are off).
# TYPE celestial_api_keys gauge
celestial_api_keys 0
# HELP celestial_model_self_check_images Golden images of the model that gave their recorded answers in the start-up self-check (0: the model has no golden set, or no check ran).
# TYPE celestial_model_self_check_images gauge
celestial_model_self_check_images 0
# HELP celestial_model_self_check_max_logit_diff Largest difference of a served output value from the golden set's recorded one in the start-up self-check.
# TYPE celestial_model_self_check_max_logit_diff gauge
celestial_model_self_check_max_logit_diff 0.0
# HELP celestial_model_self_check_seconds How long the start-up self-check took.
# TYPE celestial_model_self_check_seconds gauge
celestial_model_self_check_seconds 0.0
# HELP celestial_ready Whether the server accepts predictions (1) or not (0).
# TYPE celestial_ready gauge
celestial_ready 1
# HELP celestial_build_info Build and model information.
# TYPE celestial_build_info gauge
celestial_build_info{version="{version}",model_name="m",model_version="1",onnxruntime_version="1.31.1"} 1
"#;

/// `expected` with the server's version in place of `{version}`.
fn with_version(expected: &str) -> String {
    expected.replace("{version}", env!("CARGO_PKG_VERSION"))
}

#[test]
fn the_exposition_of_every_series_is_pinned() {
    let (m, _tls) = recorded();
    let text = m.render(false);
    assert_eq!(canonical(&text), with_version(RECORDED), "got:\n{text}");
}

#[test]
fn a_fresh_server_shows_its_gauges_histograms_and_labels_at_zero() {
    // A model without an OOD rule: no unknown-predictions metric (its answers have no `known`).
    let m = Metrics::new(&["Earth".to_string()], "m", "1", "1.31.1", false, false);
    let text = canonical(&m.render(true));
    let but_buckets: String = text
        .lines()
        .filter(|l| !l.contains("_bucket{"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(but_buckets, with_version(FRESH_BUT_BUCKETS), "got:\n{text}");
    // The bucket lines left out above: the three duration histograms' and the batch sizes', +Inf
    // included (their values are pinned in RECORDED).
    let buckets = 3 * (BUCKETS.len() + 1) + COUNT_BUCKETS.len() + 1;
    assert_eq!(text.matches("_bucket{").count(), buckets);
}

#[test]
fn tls_metrics_show_once_tls_is_on_and_the_expiry_once_known() {
    let m = Metrics::new(&["Earth".to_string()], "m", "1", "1.31.1", true, true);
    assert!(!m.render(true).contains("celestial_tls_"));
    let tls = Arc::new(TlsMetrics::default());
    tls.count(Handshake::TimedOut);
    m.set_tls(Arc::clone(&tls));
    m.set_tls(Arc::clone(&tls)); // a second call adds nothing
    let text = m.render(true);
    assert_eq!(
        text.matches("# TYPE celestial_tls_handshakes_total")
            .count(),
        1
    );
    for (result, n) in [("ok", 0), ("failed", 0), ("timeout", 1)] {
        let line = format!("celestial_tls_handshakes_total{{result=\"{result}\"}} {n}\n");
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    assert!(!text.contains("celestial_tls_certificate_expiry_timestamp_seconds"));
    tls.set_not_after(1_936_742_400);
    let line = "celestial_tls_certificate_expiry_timestamp_seconds 1936742400\n";
    assert!(m.render(true).contains(line));
}
