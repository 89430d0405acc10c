//! The server's Prometheus metrics: `prometheus-client` metrics in one registry, encoded on scrape
//! in the Prometheus text format (version 0.0.4) by that library.
//!
//! Each metric's name and help text are written once, where it is registered. Two conventions of
//! the library: a counter is registered without its `_total` suffix (the encoder appends it to the
//! HELP, TYPE and sample lines), and a help text without its final period (the registry adds one).
//! A family shows no HELP and TYPE lines until it has a series.

mod tls;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub use tls::{Handshake, TlsMetrics};

/// The media type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Histogram bucket upper bounds in seconds: 100 us .. 10 s.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The served confidence of each prediction (a histogram; also read by the deployer's canary, per
/// pod).
pub const PREDICTION_CONFIDENCE: &str = "celestial_prediction_confidence";

/// Bucket upper bounds of [`PREDICTION_CONFIDENCE`]: a calibrated model's confidences crowd near 1.
const CONFIDENCE_BUCKETS: [f64; 9] = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999];

/// Bucket upper bounds for counts of images (adaptive batch sizes).
const COUNT_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

fn seconds_histogram() -> histogram::Histogram {
    histogram::Histogram::new(BUCKETS)
}

/// A histogram of durations ([`BUCKETS`], the default) or counts ([`COUNT_BUCKETS`]).
#[derive(Debug)]
pub struct Histogram(histogram::Histogram);

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram(seconds_histogram())
    }
}

impl Histogram {
    /// A histogram of counts over [`COUNT_BUCKETS`].
    pub fn of_counts() -> Histogram {
        Histogram(histogram::Histogram::new(COUNT_BUCKETS))
    }

    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }

    pub fn observe_count(&self, n: usize) {
        self.0.observe(n as f64);
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cancelled {
    route: &'static str,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Predicted {
    label: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DriftSignal {
    signal: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TraceOutcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Rejection {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reload {
    what: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: &'static str,
    model_name: String,
    model_version: String,
    onnxruntime_version: String,
}

/// All server metrics.
pub struct Metrics {
    /// Locked to encode, and once more to add the HTTPS listener's metrics ([`Metrics::set_tls`]).
    registry: Mutex<Registry>,
    requests: Family<Request, Counter>,
    latency: Family<Route, histogram::Histogram, fn() -> histogram::Histogram>,
    in_flight: Gauge,
    cancelled: Family<Cancelled, Counter>,
    pub queue_wait: Histogram,
    pub preprocess: Histogram,
    pub inference: Histogram,
    /// Images per ONNX Runtime call, observed once per job (adaptive batching).
    pub batch_images: Histogram,
    /// The series of each label, by label index.
    predictions: Vec<Counter>,
    /// Answers with `known: false`, by label index; empty for a model without an OOD rule (its
    /// answers have no `known`, and the metric is not registered).
    unknown: Vec<Counter>,
    /// The served confidences (registered for a model with a temperature only).
    confidence: histogram::Histogram,
    drift_score: Family<DriftSignal, Gauge<f64, AtomicU64>>,
    drift_alert: Family<DriftSignal, Gauge>,
    /// Spans of sampled requests by outcome (no series while tracing is off).
    trace_spans: Family<TraceOutcome, Counter>,
    rejections: Family<Rejection, Counter>,
    api_keys: Gauge,
    reloads: Family<Reload, Counter>,
    /// The HTTPS listener's metrics join the registry once, at the first [`Metrics::set_tls`].
    tls: Once,
    ready: Gauge,
    /// The start-up self-check: golden images that agreed (0: none ran), the largest logit
    /// difference, how long it took.
    self_check_images: Gauge,
    self_check_max_logit_diff: Gauge<f64, AtomicU64>,
    self_check_seconds: Gauge<f64, AtomicU64>,
}

impl Metrics {
    /// `with_known`: the model's answers carry `known` (count the `known: false` ones);
    /// `with_confidence`: they carry `confidence` (a histogram of them).
    pub fn new(
        labels: &[String],
        model_name: &str,
        model_version: &str,
        ort_version: &str,
        with_known: bool,
        with_confidence: bool,
    ) -> Metrics {
        let predictions = Family::default();
        let unknown = Family::default();
        let m = Metrics {
            registry: Mutex::default(),
            requests: Family::default(),
            latency: Family::new_with_constructor(seconds_histogram),
            in_flight: Gauge::default(),
            cancelled: Family::default(),
            queue_wait: Histogram::default(),
            preprocess: Histogram::default(),
            inference: Histogram::default(),
            batch_images: Histogram::of_counts(),
            predictions: series_by_label(&predictions, labels),
            unknown: if with_known {
                series_by_label(&unknown, labels)
            } else {
                Vec::new()
            },
            confidence: histogram::Histogram::new(CONFIDENCE_BUCKETS),
            drift_score: Family::default(),
            drift_alert: Family::default(),
            trace_spans: Family::default(),
            rejections: Family::default(),
            api_keys: Gauge::default(),
            reloads: Family::default(),
            tls: Once::new(),
            ready: Gauge::default(),
            self_check_images: Gauge::default(),
            self_check_max_logit_diff: Gauge::default(),
            self_check_seconds: Gauge::default(),
        };
        let mut r = Registry::default();
        m.register_http(&mut r);
        m.register_jobs(&mut r);
        r.register(
            "celestial_predictions",
            "Predictions by predicted label",
            predictions,
        );
        if with_known {
            r.register(
                "celestial_unknown_predictions",
                "Answers with known=false (the image is not like any label, by the model's OOD \
                 score and threshold), by predicted label",
                unknown,
            );
        }
        m.register_answers(&mut r, with_confidence);
        m.register_security(&mut r);
        m.register_self_check(&mut r);
        r.register(
            "celestial_ready",
            "Whether the server accepts predictions (1) or not (0)",
            m.ready.clone(),
        );
        // An info metric: the encoder appends `_info` to the name.
        let build = Build {
            version: env!("CARGO_PKG_VERSION"),
            model_name: model_name.to_string(),
            model_version: model_version.to_string(),
            onnxruntime_version: ort_version.to_string(),
        };
        r.register(
            "celestial_build",
            "Build and model information",
            Info::new(build),
        );
        *m.registry.lock().unwrap_or_else(PoisonError::into_inner) = r;
        m
    }

    /// Requests by route, method and status; latency by route; requests in flight.
    fn register_http(&self, r: &mut Registry) {
        r.register(
            "celestial_http_requests",
            "HTTP requests by route, method and status",
            self.requests.clone(),
        );
        r.register(
            "celestial_http_request_duration_seconds",
            "HTTP request latency by route",
            self.latency.clone(),
        );
        r.register(
            "celestial_http_requests_in_flight",
            "HTTP requests being served now",
            self.in_flight.clone(),
        );
        r.register(
            "celestial_http_requests_cancelled",
            "Requests the client abandoned (closed the connection) before the answer, by route \
             and method",
            self.cancelled.clone(),
        );
    }

    /// Where the time of prediction jobs went.
    fn register_jobs(&self, r: &mut Registry) {
        for (name, help, h) in [
            (
                "celestial_queue_wait_seconds",
                "Time prediction jobs waited for a free inference worker",
                &self.queue_wait,
            ),
            (
                "celestial_preprocess_seconds",
                "Time spent decoding and preprocessing the images of one job (of the whole batch \
                 it ran in)",
                &self.preprocess,
            ),
            (
                "celestial_inference_seconds",
                "Time spent in ONNX Runtime for one job (for the whole batch it ran in)",
                &self.inference,
            ),
            (
                "celestial_inference_batch_images",
                "Images in the ONNX Runtime call that classified a job (adaptive batching: other \
                 requests' images included); one observation per job",
                &self.batch_images,
            ),
        ] {
            r.register(name, help, h.0.clone());
        }
    }

    /// The served confidences (a model with a temperature), and the drift monitor's last scores
    /// and alerts by signal (no series without a monitor).
    fn register_answers(&self, r: &mut Registry, with_confidence: bool) {
        if with_confidence {
            r.register(
                PREDICTION_CONFIDENCE,
                "The served confidence of each prediction (the calibrated top probability)",
                self.confidence.clone(),
            );
        }
        r.register(
            "celestial_drift_score",
            "How far the last window of answers is from the model's drift reference, by signal \
             (the test statistic over its threshold: 1 or more is an alert)",
            self.drift_score.clone(),
        );
        r.register(
            "celestial_drift_alert",
            "Whether a drift signal is over its threshold in the last window of answers (1) or not \
             (0)",
            self.drift_alert.clone(),
        );
        r.register(
            "celestial_trace_spans",
            "Spans of traced requests by outcome: exported to the OTLP collector, dropped because \
             the export queue was full, or dropped because the collector did not take them",
            self.trace_spans.clone(),
        );
    }

    /// The counter of trace spans with `outcome` (`exported`, `dropped_queue_full`,
    /// `dropped_export_failed`), created at 0.
    pub fn trace_spans(&self, outcome: &'static str) -> Counter {
        self.trace_spans
            .get_or_create_owned(&TraceOutcome { outcome })
    }

    /// The score and alert series of the drift `signal`, created at 0.
    pub fn drift_series(&self, signal: &'static str) -> (Gauge<f64, AtomicU64>, Gauge) {
        let label = DriftSignal { signal };
        (
            self.drift_score.get_or_create_owned(&label),
            self.drift_alert.get_or_create_owned(&label),
        )
    }

    /// Rejections by reason, API keys in force and reloads of the keys file and the TLS pair
    /// (refused keys are rejections with the reasons `api_key_missing`, `api_key_invalid`,
    /// `api_key_malformed`).
    fn register_security(&self, r: &mut Registry) {
        r.register(
            "celestial_rejections",
            "Refused requests and images by reason (error code)",
            self.rejections.clone(),
        );
        r.register(
            "celestial_api_keys",
            "API keys accepted now (0: keys are off)",
            self.api_keys.clone(),
        );
        r.register(
            "celestial_reloads",
            "New contents of the API keys file or the TLS certificate and key, by what and result \
             (error: refused, the previous one stays)",
            self.reloads.clone(),
        );
    }

    /// The start-up self-check against the model's golden set (`celestial.golden`).
    fn register_self_check(&self, r: &mut Registry) {
        r.register(
            "celestial_model_self_check_images",
            "Golden images of the model that gave their recorded answers in the start-up self-check \
             (0: the model has no golden set, or no check ran)",
            self.self_check_images.clone(),
        );
        r.register(
            "celestial_model_self_check_max_logit_diff",
            "Largest difference of a served output value from the golden set's recorded one in the \
             start-up self-check",
            self.self_check_max_logit_diff.clone(),
        );
        r.register(
            "celestial_model_self_check_seconds",
            "How long the start-up self-check took",
            self.self_check_seconds.clone(),
        );
    }

    /// The start-up self-check passed: `images` agreed, within `max_logit_diff`, in `seconds`.
    pub fn self_checked(&self, images: usize, max_logit_diff: f64, seconds: f64) {
        self.self_check_images
            .set(i64::try_from(images).unwrap_or(i64::MAX));
        self.self_check_max_logit_diff.set(max_logit_diff);
        self.self_check_seconds.set(seconds);
    }

    /// A request is being served: the in-flight gauge goes up until [`Metrics::request_ended`].
    pub fn request_started(&self) {
        self.in_flight.inc();
    }

    /// A request is over, answered or not: the in-flight gauge goes down. Called once per
    /// [`Metrics::request_started`], from a drop guard, so a request the client abandons (its
    /// future dropped) is not left counted.
    pub fn request_ended(&self) {
        self.in_flight.dec();
    }

    /// Count a request the client abandoned (closed the connection) before it was answered.
    pub fn request_cancelled(&self, method: &'static str, route: &'static str) {
        self.cancelled
            .get_or_create(&Cancelled { route, method })
            .inc();
    }

    /// Count an answered request (route is the matched route template, or "unmatched").
    pub fn request_finished(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&Request {
                route,
                method,
                status,
            })
            .inc();
        self.latency
            .get_or_create(&Route { route })
            .observe(elapsed.as_secs_f64());
    }

    /// Count an answer: its predicted label, whether the model found it `known`, its confidence.
    pub fn predicted(&self, label_index: usize, known: Option<bool>, confidence: Option<f32>) {
        if let Some(c) = confidence {
            self.confidence.observe(f64::from(c));
        }
        if let Some(c) = self.predictions.get(label_index) {
            c.inc();
        }
        if known == Some(false)
            && let Some(c) = self.unknown.get(label_index)
        {
            c.inc();
        }
    }

    /// Count a refused request or image by its stable error code.
    pub fn rejected(&self, reason: &'static str) {
        self.rejections.get_or_create(&Rejection { reason }).inc();
    }

    /// The number of API keys accepted now (0: keys are off).
    pub fn set_api_keys(&self, n: usize) {
        self.api_keys.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Show the HTTPS listener's handshakes and certificate expiry (TLS on); once.
    pub fn set_tls(&self, tls: Arc<TlsMetrics>) {
        self.tls.call_once(|| {
            tls.register(&mut self.registry.lock().unwrap_or_else(PoisonError::into_inner));
        });
    }

    /// Count a new content of a reloaded file (`what`: `api_keys`, `tls`), used or refused.
    pub fn reloaded(&self, what: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&Reload { what, result }).inc();
    }

    /// The exposition, in the text format of [`CONTENT_TYPE`].
    pub fn render(&self, ready: bool) -> String {
        self.ready.set(i64::from(ready));
        let mut out = String::with_capacity(8192);
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        // Writing into a String cannot fail, nor can the metric kinds used here.
        if prometheus_text::encode(&mut out, &registry).is_err() {
            tracing::error!("the metrics could not be encoded");
        }
        out
    }
}

/// One series of `family` per model label, created at 0 so that every label shows.
fn series_by_label(family: &Family<Predicted, Counter>, labels: &[String]) -> Vec<Counter> {
    labels
        .iter()
        .map(|label| {
            family.get_or_create_owned(&Predicted {
                label: label.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
