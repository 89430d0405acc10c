//! Traces: OpenTelemetry spans of the requests this server answers, exported over OTLP/HTTP to a
//! collector. A sampled request gets a span (continuing the caller's W3C `traceparent`, or
//! starting a trace) with child spans for its steps; a finished request's spans go to a bounded
//! queue that one background task exports in batches. Nothing a prediction waits for ever blocks
//! on the collector: a full queue drops the spans (counted on `/metrics`), a failed export drops
//! its batch (counted, and logged at most once a minute).
//!
//! Inside: `context` (trace ids and `traceparent`; a leaf), `span` (a request's spans), `otlp`
//! (the export request's encodings), `config` (the flags), `export` (the queue, the exporter task
//! and its HTTP client); this file holds the sampler and the [`Tracer`] the HTTP layer uses.
//! Imports the metrics.

mod config;
mod context;
mod export;
mod otlp;
mod span;

use std::sync::Arc;

use axum::http::HeaderMap;

pub use config::{SamplerKind, TraceConfig, TraceConfigError, TraceSettings};
pub use context::{Parent, SpanId, TRACEPARENT, TRACESTATE, TraceId, nonzero_random as random_u64};
pub use export::{Exporter, ExporterError, ExporterHandle};
pub use span::{Attribute, RequestTrace, SpanRecord, Value};

use self::export::Queue;
use crate::metrics::Metrics;

/// Decides which requests are traced and hands their spans to the exporter; off by default.
#[derive(Clone, Default)]
pub struct Tracer {
    active: Option<Arc<Active>>,
}

struct Active {
    sampler: Sampler,
    queue: Arc<Queue>,
}

/// OpenTelemetry's samplers: whether a root (a request without a caller's trace) is sampled, and
/// whether a caller's decision is followed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sampler {
    /// Roots are sampled when their trace id's sampling value is below this (`u64::MAX`: all;
    /// 0: none).
    threshold: u64,
    /// Ratio 1 samples every root, even the one id whose value is `u64::MAX`.
    all: bool,
    parent_based: bool,
}

impl Sampler {
    fn new(kind: SamplerKind, ratio: f64) -> Sampler {
        let (ratio, parent_based) = match kind {
            SamplerKind::AlwaysOn => (1.0, false),
            SamplerKind::AlwaysOff => (0.0, false),
            SamplerKind::Traceidratio => (ratio, false),
            SamplerKind::ParentbasedAlwaysOn => (1.0, true),
            SamplerKind::ParentbasedAlwaysOff => (0.0, true),
            SamplerKind::ParentbasedTraceidratio => (ratio, true),
        };
        Sampler {
            // (a float-to-int cast saturates: ratio 1 gives u64::MAX)
            threshold: (ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
            all: ratio >= 1.0,
            parent_based,
        }
    }

    fn sampled(&self, trace_id: TraceId, parent: Option<&Parent>) -> bool {
        match parent {
            Some(p) if self.parent_based => p.sampled,
            _ => self.all || trace_id.sampling_value() < self.threshold,
        }
    }
}

impl Tracer {
    /// A tracer that traces nothing.
    pub fn off() -> Tracer {
        Tracer::default()
    }

    /// A tracer under `settings`, with its exporter (which the caller runs, and stops at
    /// shutdown). Spans carry `model` (name, version) as resource attributes; the span counters
    /// go to `metrics`.
    pub fn start(
        settings: &TraceSettings,
        model: (&str, &str),
        metrics: &Metrics,
    ) -> Result<(Tracer, Exporter), ExporterError> {
        let queue = Arc::new(Queue::new(settings, metrics));
        let exporter = Exporter::new(settings, model, Arc::clone(&queue), metrics)?;
        let active = Active {
            sampler: Sampler::new(settings.sampler, settings.ratio),
            queue,
        };
        Ok((
            Tracer {
                active: Some(Arc::new(active)),
            },
            exporter,
        ))
    }

    /// Whether spans are recorded at all.
    pub fn is_on(&self) -> bool {
        self.active.is_some()
    }

    /// The trace of a request with these `headers`, when it is sampled: the caller's
    /// `traceparent` is continued, a malformed one is ignored (a new trace starts).
    pub fn begin(&self, headers: &HeaderMap) -> Option<RequestTrace> {
        let active = self.active.as_ref()?;
        let parent = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|tp| {
                let state = headers.get(TRACESTATE).and_then(|v| v.to_str().ok());
                Parent::parse(tp, state)
            });
        let trace_id = parent.as_ref().map_or_else(TraceId::random, |p| p.trace_id);
        if !active.sampler.sampled(trace_id, parent.as_ref()) {
            return None;
        }
        Some(RequestTrace::begin(trace_id, parent))
    }

    /// End `trace`'s request span now (`name`, `attributes`, and `error` when it failed) and
    /// queue its spans for export.
    pub fn end(
        &self,
        trace: RequestTrace,
        name: String,
        attributes: Vec<Attribute>,
        error: Option<String>,
    ) {
        if let Some(active) = &self.active {
            active.queue.push(trace.finish(name, attributes, error));
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn samplers_follow_their_names() {
        let parent = |sampled: bool| Parent {
            trace_id: TraceId([7; 16]),
            span_id: SpanId([1; 8]),
            sampled,
            state: None,
        };
        let id = |v: u64| {
            let mut b = [0u8; 16];
            b[8..].copy_from_slice(&v.to_be_bytes());
            TraceId(b)
        };
        let on = Sampler::new(SamplerKind::ParentbasedAlwaysOn, 0.5);
        assert!(on.sampled(id(u64::MAX), None));
        assert!(!on.sampled(id(0), Some(&parent(false))));
        let off = Sampler::new(SamplerKind::ParentbasedAlwaysOff, 1.0);
        assert!(!off.sampled(id(0), None));
        assert!(off.sampled(id(0), Some(&parent(true))));
        let ratio = Sampler::new(SamplerKind::ParentbasedTraceidratio, 0.25);
        assert!(ratio.sampled(id(u64::MAX / 5), None));
        assert!(!ratio.sampled(id(u64::MAX / 3), None));
        assert!(ratio.sampled(id(u64::MAX / 3), Some(&parent(true))));
        // Without the parent rule, the ratio decides for the caller's trace too.
        let plain = Sampler::new(SamplerKind::Traceidratio, 0.25);
        assert!(!plain.sampled(id(u64::MAX / 3), Some(&parent(true))));
        assert!(!Sampler::new(SamplerKind::AlwaysOff, 1.0).sampled(id(0), Some(&parent(true))));
        assert!(
            Sampler::new(SamplerKind::AlwaysOn, 0.0).sampled(id(u64::MAX), Some(&parent(false)))
        );
    }

    #[test]
    fn a_ratio_samples_about_its_share_of_new_traces() {
        let s = Sampler::new(SamplerKind::Traceidratio, 0.01);
        let n = 200_000;
        let sampled = (0..n)
            .filter(|_| s.sampled(TraceId::random(), None))
            .count();
        // 2,000 expected; 6 standard deviations (about 267) either side.
        assert!((1_733..=2_267).contains(&sampled), "{sampled}");
    }

    #[test]
    fn off_traces_nothing_and_a_malformed_parent_starts_a_trace() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_static("00-zz-zz-01"));
        assert!(Tracer::off().begin(&headers).is_none());
        let active = Active {
            sampler: Sampler::new(SamplerKind::ParentbasedAlwaysOn, 1.0),
            queue: Arc::new(Queue::for_tests(10)),
        };
        let tracer = Tracer {
            active: Some(Arc::new(active)),
        };
        let trace = tracer.begin(&headers).expect("sampled");
        let spans = trace.finish("GET /livez".into(), vec![], None);
        assert_eq!(spans[0].parent, None);
    }
}
