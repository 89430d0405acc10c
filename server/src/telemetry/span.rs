//! One request's spans while it runs ([`RequestTrace`], shared by the middleware and the handler)
//! and a finished span as the exporter sends it ([`SpanRecord`]). Imports the trace context.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::context::{Parent, SpanId, TraceId};

/// A span attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(s: &str) -> Value {
        Value::Str(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Value {
        Value::Str(s)
    }
}

impl From<usize> for Value {
    fn from(n: usize) -> Value {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<u16> for Value {
    fn from(n: u16) -> Value {
        Value::Int(i64::from(n))
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Value {
        Value::Bool(b)
    }
}

/// An attribute: its name (OpenTelemetry's semantic conventions, or `celestial.*`) and value.
pub type Attribute = (&'static str, Value);

/// What a span is to its trace (OTLP's `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A step inside this server.
    Internal = 1,
    /// The request this server answered.
    Server = 2,
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    /// The caller's `tracestate`, passed on.
    pub trace_state: Option<String>,
    pub name: String,
    pub kind: Kind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Vec<Attribute>,
    /// The span failed, and why (OTLP's status ERROR with this message).
    pub error: Option<String>,
    /// Whether the parent span is the caller's (OTLP's `flags` say the parent is remote).
    pub remote_parent: bool,
}

/// A sampled request's trace while it is served: the root span's ids and start, and the child
/// spans the handler records. Cheap to clone (one `Arc`); stored in the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestTrace {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    trace_id: TraceId,
    root: SpanId,
    parent: Option<SpanId>,
    state: Option<String>,
    /// The request's start on both clocks: monotonic for durations, the wall clock for OTLP.
    started: Instant,
    started_unix_nano: u64,
    children: Mutex<Vec<SpanRecord>>,
}

impl RequestTrace {
    /// A new root span starting now in trace `trace_id`: under the caller's `parent` span (whose
    /// trace it is), or starting that trace.
    pub fn begin(trace_id: TraceId, parent: Option<Parent>) -> RequestTrace {
        let started = Instant::now();
        let started_unix_nano = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let (parent, state) = match parent {
            Some(p) => (Some(p.span_id), p.state),
            None => (None, None),
        };
        RequestTrace {
            inner: Arc::new(Inner {
                trace_id,
                root: SpanId::random(),
                parent,
                state,
                started,
                started_unix_nano,
                children: Mutex::new(Vec::with_capacity(5)),
            }),
        }
    }

    pub fn trace_id(&self) -> TraceId {
        self.inner.trace_id
    }

    /// The root span's id (the request's span).
    pub fn span_id(&self) -> SpanId {
        self.inner.root
    }

    /// Record a step of the request, from `start` to `end`, under the request's span.
    pub fn child(&self, name: &str, start: Instant, end: Instant, attributes: Vec<Attribute>) {
        let span = self.span(
            name,
            Kind::Internal,
            Some(self.inner.root),
            (start, end),
            attributes,
        );
        self.inner
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(span);
    }

    /// The request's span, ended now, followed by its children: what the exporter sends.
    pub fn finish(
        self,
        name: String,
        attributes: Vec<Attribute>,
        error: Option<String>,
    ) -> Vec<SpanRecord> {
        let mut root = self.span(
            &name,
            Kind::Server,
            self.inner.parent,
            (self.inner.started, Instant::now()),
            attributes,
        );
        root.error = error;
        root.remote_parent = self.inner.parent.is_some();
        let mut children = self
            .inner
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut spans = Vec::with_capacity(1 + children.len());
        spans.push(root);
        spans.append(&mut children);
        spans
    }

    fn span(
        &self,
        name: &str,
        kind: Kind,
        parent: Option<SpanId>,
        (start, end): (Instant, Instant),
        attributes: Vec<Attribute>,
    ) -> SpanRecord {
        let at = |t: Instant| {
            let offset = t.saturating_duration_since(self.inner.started).as_nanos();
            self.inner
                .started_unix_nano
                .saturating_add(u64::try_from(offset).unwrap_or(u64::MAX))
        };
        SpanRecord {
            trace_id: self.inner.trace_id,
            span_id: if kind == Kind::Server {
                self.inner.root
            } else {
                SpanId::random()
            },
            parent,
            trace_state: self.inner.state.clone(),
            name: name.to_string(),
            kind,
            start_unix_nano: at(start),
            end_unix_nano: at(end.max(start)),
            attributes,
            error: None,
            remote_parent: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn children_hang_under_the_request_span_on_its_clock() {
        let parent = Parent::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            Some("a=b"),
        );
        let trace = RequestTrace::begin(parent.as_ref().unwrap().trace_id, parent);
        let t0 = Instant::now();
        trace.child(
            "inference",
            t0,
            t0 + Duration::from_millis(3),
            vec![("celestial.batch.images", 4usize.into())],
        );
        let spans = trace.clone().finish("POST /predict".into(), vec![], None);
        let (root, child) = (&spans[0], &spans[1]);
        assert_eq!(
            root.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(root.parent.unwrap().to_string(), "00f067aa0ba902b7");
        assert!(root.remote_parent);
        assert_eq!(root.kind, Kind::Server);
        assert_eq!(child.parent, Some(root.span_id));
        assert_eq!(child.trace_state.as_deref(), Some("a=b"));
        assert_eq!(child.end_unix_nano - child.start_unix_nano, 3_000_000);
        assert!(child.start_unix_nano >= root.start_unix_nano);
        assert!(root.end_unix_nano >= root.start_unix_nano);
    }

    #[test]
    fn a_request_without_a_parent_starts_a_trace() {
        let spans =
            RequestTrace::begin(TraceId::random(), None).finish("GET /livez".into(), vec![], None);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].parent, None);
        assert!(!spans[0].remote_parent);
    }
}
