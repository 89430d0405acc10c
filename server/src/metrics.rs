//! Prometheus metrics in the text exposition format (no external registry: a handful of atomics
//! and small maps behind mutexes, rendered on scrape).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Histogram bucket upper bounds in seconds: 100 us .. 10 s.
pub const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Bucket upper bounds for counts of images (adaptive batch sizes).
pub const COUNT_BUCKETS: [f64; 9] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// A fixed-bucket histogram of durations ([`BUCKETS`], the default) or counts.
pub struct Histogram {
    buckets: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// Sum in units of 1/`scale` (nanoseconds for durations, 1 for counts).
    sum: AtomicU64,
    scale: f64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new(&BUCKETS, 1e9)
    }
}

impl Histogram {
    fn new(buckets: &'static [f64], scale: f64) -> Histogram {
        Histogram {
            buckets,
            counts: buckets.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// A histogram of counts over [`COUNT_BUCKETS`].
    pub fn of_counts() -> Histogram {
        Histogram::new(&COUNT_BUCKETS, 1.0)
    }

    pub fn observe(&self, d: Duration) {
        self.observe_value(d.as_secs_f64());
    }

    pub fn observe_count(&self, n: usize) {
        self.observe_value(n as f64);
    }

    fn observe_value(&self, v: f64) {
        if let Some(i) = self.buckets.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        // `as` saturates: a value past u64 (584 years in nanoseconds) adds u64::MAX
        self.sum
            .fetch_add((v * self.scale).round() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// How a TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Ok,
    /// Not TLS, no common protocol version or cipher, the client refused the certificate, ...
    Failed,
    /// Not done within the header-read timeout.
    TimedOut,
}

impl Handshake {
    pub const ALL: [Handshake; 3] = [Handshake::Ok, Handshake::Failed, Handshake::TimedOut];

    /// The `result` label of `celestial_tls_handshakes_total`.
    pub fn label(self) -> &'static str {
        match self {
            Handshake::Ok => "ok",
            Handshake::Failed => "failed",
            Handshake::TimedOut => "timeout",
        }
    }
}

/// The HTTPS listener's handshakes by outcome, and when the certificate in force expires.
#[derive(Debug, Default)]
pub struct TlsMetrics {
    handshakes: [AtomicU64; 3],
    /// Unix seconds; 0 while unknown.
    not_after: AtomicI64,
}

impl TlsMetrics {
    pub fn count(&self, h: Handshake) {
        self.handshakes[h as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn handshakes(&self, h: Handshake) -> u64 {
        self.handshakes[h as usize].load(Ordering::Relaxed)
    }

    pub fn set_not_after(&self, unix_seconds: i64) {
        self.not_after.store(unix_seconds, Ordering::Relaxed);
    }

    /// When the certificate in force expires (Unix seconds), once known.
    pub fn not_after(&self) -> Option<i64> {
        Some(self.not_after.load(Ordering::Relaxed)).filter(|t| *t != 0)
    }
}

/// All server metrics.
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Arc<Histogram>>>,
    in_flight: AtomicI64,
    cancelled: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    pub queue_wait: Histogram,
    pub preprocess: Histogram,
    pub inference: Histogram,
    /// Images per ONNX Runtime call, observed once per job (adaptive batching).
    pub batch_images: Histogram,
    predictions: Vec<AtomicU64>,
    /// Answers with `known: false`, by predicted label; `None` for a model without an OOD rule
    /// (its answers have no `known`, and the metric is not rendered).
    unknown: Option<Vec<AtomicU64>>,
    labels: Vec<String>,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
    api_keys: AtomicU64,
    reloads: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// The HTTPS listener's handshakes and certificate expiry (set when TLS is on).
    tls: OnceLock<Arc<TlsMetrics>>,
    build_info: String,
}

impl Metrics {
    /// `with_known`: the model's answers carry `known` (count the `known: false` ones).
    pub fn new(
        labels: &[String],
        model_name: &str,
        model_version: &str,
        ort_version: &str,
        with_known: bool,
    ) -> Metrics {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(BTreeMap::new()),
            in_flight: AtomicI64::new(0),
            cancelled: Mutex::new(BTreeMap::new()),
            queue_wait: Histogram::default(),
            preprocess: Histogram::default(),
            inference: Histogram::default(),
            batch_images: Histogram::of_counts(),
            predictions: labels.iter().map(|_| AtomicU64::new(0)).collect(),
            unknown: with_known.then(|| labels.iter().map(|_| AtomicU64::new(0)).collect()),
            labels: labels.to_vec(),
            rejections: Mutex::new(BTreeMap::new()),
            api_keys: AtomicU64::new(0),
            reloads: Mutex::new(BTreeMap::new()),
            tls: OnceLock::new(),
            build_info: format!(
                "version=\"{}\",model_name=\"{}\",model_version=\"{}\",onnxruntime_version=\"{}\"",
                esc(env!("CARGO_PKG_VERSION")),
                esc(model_name),
                esc(model_version),
                esc(ort_version)
            ),
        }
    }

    /// A request is being served: the in-flight gauge goes up until [`Metrics::request_ended`].
    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request is over, answered or not: the in-flight gauge goes down. Called once per
    /// [`Metrics::request_started`], from a drop guard, so a request the client abandons (its
    /// future dropped) is not left counted.
    pub fn request_ended(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Count a request the client abandoned (closed the connection) before it was answered.
    pub fn request_cancelled(&self, method: &'static str, route: &'static str) {
        if let Ok(mut m) = self.cancelled.lock() {
            *m.entry((route, method)).or_default() += 1;
        }
    }

    /// Count an answered request (route is the matched route template, or "unmatched").
    pub fn request_finished(
        &self,
        method: &'static str,
        route: &'static str,
        status: u16,
        elapsed: Duration,
    ) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route, method, status)).or_default() += 1;
        }
        let h = match self.latency.lock() {
            Ok(mut m) => Arc::clone(m.entry(route).or_default()),
            Err(_) => return,
        };
        h.observe(elapsed);
    }

    /// Count an answer: its predicted label, and whether the model found it `known`.
    pub fn predicted(&self, label_index: usize, known: Option<bool>) {
        if let Some(c) = self.predictions.get(label_index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if known == Some(false)
            && let Some(c) = self.unknown.as_ref().and_then(|u| u.get(label_index))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count a refused request or image by its stable error code.
    pub fn rejected(&self, reason: &'static str) {
        if let Ok(mut m) = self.rejections.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// The number of API keys accepted now (0: keys are off).
    pub fn set_api_keys(&self, n: usize) {
        self.api_keys.store(n as u64, Ordering::Relaxed);
    }

    /// Show the HTTPS listener's handshakes and certificate expiry (TLS on).
    pub fn set_tls(&self, tls: Arc<TlsMetrics>) {
        let _ = self.tls.set(tls);
    }

    /// Count a new content of a reloaded file (`what`: `api_keys`, `tls`), used or refused.
    pub fn reloaded(&self, what: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        if let Ok(mut m) = self.reloads.lock() {
            *m.entry((what, result)).or_default() += 1;
        }
    }

    /// The text exposition format.
    pub fn render(&self, ready: bool) -> String {
        let mut out = String::with_capacity(8192);
        self.render_http(&mut out);
        self.render_jobs(&mut out);
        self.render_outcomes(&mut out);
        self.render_security(&mut out);
        out.push_str("# HELP celestial_ready Whether the server accepts predictions (1) or not (0).\n# TYPE celestial_ready gauge\n");
        let _ = writeln!(out, "celestial_ready {}", u8::from(ready));
        out.push_str("# HELP celestial_build_info Build and model information.\n# TYPE celestial_build_info gauge\n");
        let _ = writeln!(out, "celestial_build_info{{{}}} 1", self.build_info);
        out
    }

    /// Requests by route, method and status; latency by route; requests in flight.
    fn render_http(&self, out: &mut String) {
        out.push_str(
            "# HELP celestial_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE celestial_http_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, method, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "celestial_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP celestial_http_request_duration_seconds HTTP request latency by route.\n",
        );
        out.push_str("# TYPE celestial_http_request_duration_seconds histogram\n");
        let hs: Vec<(&'static str, Arc<Histogram>)> = match self.latency.lock() {
            Ok(m) => m.iter().map(|(k, v)| (*k, Arc::clone(v))).collect(),
            Err(_) => Vec::new(),
        };
        for (route, h) in hs {
            h.render(
                out,
                "celestial_http_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        out.push_str("# HELP celestial_http_requests_in_flight HTTP requests being served now.\n");
        out.push_str("# TYPE celestial_http_requests_in_flight gauge\n");
        let _ = writeln!(
            out,
            "celestial_http_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        out.push_str("# HELP celestial_http_requests_cancelled_total Requests the client abandoned (closed the connection) before the answer, by route and method.\n");
        out.push_str("# TYPE celestial_http_requests_cancelled_total counter\n");
        if let Ok(m) = self.cancelled.lock() {
            for ((route, method), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "celestial_http_requests_cancelled_total{{route=\"{route}\",method=\"{method}\"}} {n}"
                );
            }
        }
    }

    /// Where the time of prediction jobs went.
    fn render_jobs(&self, out: &mut String) {
        for (name, help, h) in [
            (
                "celestial_queue_wait_seconds",
                "Time prediction jobs waited for a free inference worker.",
                &self.queue_wait,
            ),
            (
                "celestial_preprocess_seconds",
                "Time spent decoding and preprocessing the images of one job (of the whole batch it ran in).",
                &self.preprocess,
            ),
            (
                "celestial_inference_seconds",
                "Time spent in ONNX Runtime for one job (for the whole batch it ran in).",
                &self.inference,
            ),
            (
                "celestial_inference_batch_images",
                "Images in the ONNX Runtime call that classified a job (adaptive batching: other requests' images included); one observation per job.",
                &self.batch_images,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            h.render(out, name, "");
        }
    }

    /// Predictions by label and rejections by reason.
    fn render_outcomes(&self, out: &mut String) {
        out.push_str("# HELP celestial_predictions_total Predictions by predicted label.\n");
        out.push_str("# TYPE celestial_predictions_total counter\n");
        for (label, c) in self.labels.iter().zip(&self.predictions) {
            let _ = writeln!(
                out,
                "celestial_predictions_total{{label=\"{}\"}} {}",
                esc(label),
                c.load(Ordering::Relaxed)
            );
        }
        if let Some(unknown) = &self.unknown {
            out.push_str("# HELP celestial_unknown_predictions_total Answers with known=false (the image is not like any label, by the model's OOD score and threshold), by predicted label.\n");
            out.push_str("# TYPE celestial_unknown_predictions_total counter\n");
            for (label, c) in self.labels.iter().zip(unknown) {
                let _ = writeln!(
                    out,
                    "celestial_unknown_predictions_total{{label=\"{}\"}} {}",
                    esc(label),
                    c.load(Ordering::Relaxed)
                );
            }
        }
        out.push_str("# HELP celestial_rejections_total Refused requests and images by reason (error code).\n");
        out.push_str("# TYPE celestial_rejections_total counter\n");
        if let Ok(m) = self.rejections.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(out, "celestial_rejections_total{{reason=\"{reason}\"}} {n}");
            }
        }
    }

    /// API keys in force and reloads of the keys file and the TLS pair (refused keys are
    /// `celestial_rejections_total` with the reasons `api_key_missing`, `api_key_invalid`,
    /// `api_key_malformed`).
    fn render_security(&self, out: &mut String) {
        out.push_str("# HELP celestial_api_keys API keys accepted now (0: keys are off).\n# TYPE celestial_api_keys gauge\n");
        let _ = writeln!(
            out,
            "celestial_api_keys {}",
            self.api_keys.load(Ordering::Relaxed)
        );
        out.push_str("# HELP celestial_reloads_total New contents of the API keys file or the TLS certificate and key, by what and result (error: refused, the previous one stays).\n# TYPE celestial_reloads_total counter\n");
        if let Ok(m) = self.reloads.lock() {
            for ((what, result), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "celestial_reloads_total{{what=\"{what}\",result=\"{result}\"}} {n}"
                );
            }
        }
        let Some(tls) = self.tls.get() else {
            return;
        };
        out.push_str("# HELP celestial_tls_handshakes_total TLS handshakes on the HTTPS listener by result (failed: not TLS, no common version or cipher, certificate refused by the client; timeout: not done within the header-read timeout).\n# TYPE celestial_tls_handshakes_total counter\n");
        for h in Handshake::ALL {
            let _ = writeln!(
                out,
                "celestial_tls_handshakes_total{{result=\"{}\"}} {}",
                h.label(),
                tls.handshakes(h)
            );
        }
        if let Some(t) = tls.not_after() {
            out.push_str("# HELP celestial_tls_certificate_expiry_timestamp_seconds When the served TLS certificate expires (Unix time; alert on it minus time()).\n# TYPE celestial_tls_certificate_expiry_timestamp_seconds gauge\n");
            let _ = writeln!(
                out,
                "celestial_tls_certificate_expiry_timestamp_seconds {t}"
            );
        }
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::new(&["Earth".into(), "Mars".into()], "m", "1", "1.31.1", true);
        m.request_started();
        m.request_finished("POST", "/predict", 200, Duration::from_micros(300));
        m.request_ended();
        m.request_started();
        m.request_finished("POST", "/predict", 400, Duration::from_millis(20));
        m.request_ended();
        m.request_started();
        m.request_cancelled("POST", "/predict");
        m.request_ended();
        m.predicted(1, Some(true));
        m.predicted(1, Some(false));
        m.predicted(0, Some(false));
        m.predicted(0, Some(false));
        m.rejected("invalid_image");
        m.batch_images.observe_count(1);
        m.batch_images.observe_count(6);
        let text = m.render(true);
        assert!(
            text.contains(
                "celestial_http_requests_total{route=\"/predict\",method=\"POST\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "celestial_http_request_duration_seconds_bucket{route=\"/predict\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "celestial_http_request_duration_seconds_bucket{route=\"/predict\",le=\"0.025\"} 2"
        ));
        assert!(text.contains(
            "celestial_http_request_duration_seconds_bucket{route=\"/predict\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("celestial_http_requests_in_flight 0"));
        assert!(text.contains(
            "celestial_http_requests_cancelled_total{route=\"/predict\",method=\"POST\"} 1"
        ));
        assert!(text.contains("celestial_predictions_total{label=\"Mars\"} 2"));
        assert!(text.contains("celestial_unknown_predictions_total{label=\"Mars\"} 1"));
        assert!(text.contains("celestial_unknown_predictions_total{label=\"Earth\"} 2"));
        assert!(text.contains("celestial_rejections_total{reason=\"invalid_image\"} 1"));
        assert!(text.contains("onnxruntime_version=\"1.31.1\""));
        assert!(text.contains("celestial_ready 1"));
        assert!(text.contains("celestial_inference_batch_images_bucket{le=\"4\"} 1"));
        assert!(text.contains("celestial_inference_batch_images_bucket{le=\"8\"} 2"));
        assert!(text.contains("celestial_inference_batch_images_sum 7"));
        assert!(text.contains("celestial_api_keys 0"));
        m.set_api_keys(2);
        m.reloaded("tls", true);
        m.reloaded("api_keys", false);
        let text = m.render(true);
        assert!(text.contains("celestial_api_keys 2"));
        assert!(text.contains("celestial_reloads_total{what=\"tls\",result=\"ok\"} 1"));
        assert!(text.contains("celestial_reloads_total{what=\"api_keys\",result=\"error\"} 1"));
        // TLS: nothing until the HTTPS listener registers; then every result, and the expiry once known.
        assert!(!text.contains("celestial_tls_"));
        let tls = Arc::new(TlsMetrics::default());
        m.set_tls(Arc::clone(&tls));
        let text = m.render(true);
        assert!(text.contains("celestial_tls_handshakes_total{result=\"timeout\"} 0"));
        assert!(!text.contains("celestial_tls_certificate_expiry_timestamp_seconds"));
        tls.count(Handshake::Ok);
        tls.count(Handshake::Ok);
        tls.count(Handshake::Failed);
        tls.set_not_after(1_936_742_400);
        let text = m.render(true);
        assert!(text.contains("celestial_tls_handshakes_total{result=\"ok\"} 2"));
        assert!(text.contains("celestial_tls_handshakes_total{result=\"failed\"} 1"));
        assert!(text.contains("celestial_tls_certificate_expiry_timestamp_seconds 1936742400"));
        // A model without an OOD rule: no such metric (its answers have no `known`).
        let plain = Metrics::new(&["Earth".into()], "m", "1", "1.31.1", false);
        plain.predicted(0, None);
        assert!(
            !plain
                .render(true)
                .contains("celestial_unknown_predictions_total")
        );
    }
}
