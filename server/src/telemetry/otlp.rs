//! OTLP's trace export request, in both encodings of OTLP/HTTP: protobuf (`http/protobuf`, the
//! default) and JSON (`http/json`). The messages are the few of `opentelemetry/proto` that a trace
//! export needs, with their field numbers; imports the spans.

use prost::Message;
use serde_json::{Value as Json, json};

use super::span::{Kind, SpanRecord, Value};

/// `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK`: the flags say whether the parent is remote.
const HAS_IS_REMOTE: u32 = 0x100;
/// `SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`: the parent span is the caller's.
const IS_REMOTE: u32 = 0x200;
/// W3C's `sampled` flag (every exported span was sampled).
const SAMPLED: u32 = 0x01;
/// `STATUS_CODE_ERROR`.
const STATUS_ERROR: i32 = 2;

/// Who made the spans: the `Resource` (service name and the other resource attributes) and the
/// instrumentation scope's name and version.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub resource: Vec<(String, String)>,
    pub scope: &'static str,
    pub version: &'static str,
}

#[derive(Clone, PartialEq, Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    spans: Vec<Span>,
}

#[derive(Clone, PartialEq, Message)]
struct InstrumentationScope {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    version: String,
}

#[derive(Clone, PartialEq, Message)]
struct Span {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(fixed32, tag = "16")]
    flags: u32,
    #[prost(string, tag = "5")]
    name: String,
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    status: Option<Status>,
}

#[derive(Clone, PartialEq, Message)]
struct Status {
    #[prost(string, tag = "2")]
    message: String,
    #[prost(int32, tag = "3")]
    code: i32,
}

#[derive(Clone, PartialEq, Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
struct AnyValue {
    #[prost(oneof = "Any", tags = "1, 2, 3")]
    value: Option<Any>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum Any {
    #[prost(string, tag = "1")]
    String(String),
    #[prost(bool, tag = "2")]
    Bool(bool),
    #[prost(int64, tag = "3")]
    Int(i64),
}

/// The spans as one OTLP/HTTP protobuf request body (`application/x-protobuf`).
pub fn protobuf(origin: &Origin, spans: &[SpanRecord]) -> Vec<u8> {
    let key_value = |key: &str, value: Any| KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
    };
    let attribute = |(key, value): &(&'static str, Value)| {
        key_value(
            key,
            match value {
                Value::Str(s) => Any::String(s.clone()),
                Value::Int(n) => Any::Int(*n),
                Value::Bool(b) => Any::Bool(*b),
            },
        )
    };
    let spans = spans
        .iter()
        .map(|s| Span {
            trace_id: s.trace_id.0.to_vec(),
            span_id: s.span_id.0.to_vec(),
            trace_state: s.trace_state.clone().unwrap_or_default(),
            parent_span_id: s.parent.map(|p| p.0.to_vec()).unwrap_or_default(),
            flags: flags(s),
            name: s.name.clone(),
            kind: kind(s.kind),
            start_time_unix_nano: s.start_unix_nano,
            end_time_unix_nano: s.end_unix_nano,
            attributes: s.attributes.iter().map(attribute).collect(),
            status: s.error.as_ref().map(|message| Status {
                message: message.clone(),
                code: STATUS_ERROR,
            }),
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: origin
                    .resource
                    .iter()
                    .map(|(k, v)| key_value(k, Any::String(v.clone())))
                    .collect(),
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: origin.scope.to_string(),
                    version: origin.version.to_string(),
                }),
                spans,
            }],
        }],
    }
    .encode_to_vec()
}

/// The spans as one OTLP/HTTP JSON request body (`application/json`): OTLP's JSON mapping, with
/// ids in hex, enums as numbers and 64-bit integers as strings.
pub fn json(origin: &Origin, spans: &[SpanRecord]) -> Vec<u8> {
    let attribute = |(key, value): &(&'static str, Value)| {
        let value = match value {
            Value::Str(s) => json!({ "stringValue": s }),
            Value::Int(n) => json!({ "intValue": n.to_string() }),
            Value::Bool(b) => json!({ "boolValue": b }),
        };
        json!({ "key": key, "value": value })
    };
    let spans: Vec<Json> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": s.trace_id.to_string(),
                "spanId": s.span_id.to_string(),
                "flags": flags(s),
                "name": s.name,
                "kind": kind(s.kind),
                "startTimeUnixNano": s.start_unix_nano.to_string(),
                "endTimeUnixNano": s.end_unix_nano.to_string(),
                "attributes": s.attributes.iter().map(attribute).collect::<Vec<_>>(),
            });
            if let Some(parent) = s.parent {
                span["parentSpanId"] = parent.to_string().into();
            }
            if let Some(state) = &s.trace_state {
                span["traceState"] = state.clone().into();
            }
            if let Some(message) = &s.error {
                span["status"] = json!({ "code": STATUS_ERROR, "message": message });
            }
            span
        })
        .collect();
    let resource: Vec<Json> = origin
        .resource
        .iter()
        .map(|(k, v)| json!({ "key": k, "value": { "stringValue": v } }))
        .collect();
    let body = json!({ "resourceSpans": [{
        "resource": { "attributes": resource },
        "scopeSpans": [{
            "scope": { "name": origin.scope, "version": origin.version },
            "spans": spans,
        }],
    }]});
    serde_json::to_vec(&body).unwrap_or_default()
}

fn kind(k: Kind) -> i32 {
    k as i32
}

fn flags(s: &SpanRecord) -> u32 {
    let remote = if s.remote_parent { IS_REMOTE } else { 0 };
    SAMPLED | HAS_IS_REMOTE | remote
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::telemetry::context::Parent;
    use crate::telemetry::span::RequestTrace;

    fn origin() -> Origin {
        Origin {
            resource: vec![("service.name".into(), "celestial-server".into())],
            scope: "celestial-server",
            version: "0.1.0",
        }
    }

    fn spans() -> Vec<SpanRecord> {
        let parent = Parent::parse(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
        );
        let trace = RequestTrace::begin(parent.as_ref().unwrap().trace_id, parent);
        let t = Instant::now();
        trace.child(
            "inference",
            t,
            t + Duration::from_millis(2),
            vec![("celestial.batch.images", 3usize.into())],
        );
        trace.finish(
            "POST /predict".into(),
            vec![("http.response.status_code", 500u16.into())],
            Some("internal error".into()),
        )
    }

    #[test]
    fn protobuf_round_trips_through_the_messages() {
        let spans = spans();
        let body = protobuf(&origin(), &spans);
        let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        let scope = &request.resource_spans[0].scope_spans[0];
        assert_eq!(scope.scope.as_ref().unwrap().name, "celestial-server");
        let (root, child) = (&scope.spans[0], &scope.spans[1]);
        assert_eq!(root.trace_id, spans[0].trace_id.0.to_vec());
        assert_eq!(root.parent_span_id, spans[0].parent.unwrap().0.to_vec());
        assert_eq!(root.kind, 2);
        assert_eq!(root.flags, SAMPLED | HAS_IS_REMOTE | IS_REMOTE);
        assert_eq!(root.status.as_ref().unwrap().code, STATUS_ERROR);
        assert_eq!(child.parent_span_id, root.span_id);
        assert_eq!(child.flags, SAMPLED | HAS_IS_REMOTE);
        assert_eq!(
            child.attributes[0].value.as_ref().unwrap().value,
            Some(Any::Int(3))
        );
    }

    #[test]
    fn json_uses_otlps_mapping() {
        let spans = spans();
        let body: Json = serde_json::from_slice(&json(&origin(), &spans)).unwrap();
        let span = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][1];
        assert_eq!(span["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span["parentSpanId"], spans[0].span_id.to_string());
        assert_eq!(span["attributes"][0]["value"]["intValue"], "3");
        assert_eq!(span["kind"], 1);
        let resource = &body["resourceSpans"][0]["resource"]["attributes"][0];
        assert_eq!(resource["value"]["stringValue"], "celestial-server");
    }
}
