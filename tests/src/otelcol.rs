//! A real OpenTelemetry Collector (built from its pinned Go modules by
//! `tests/env/build-addon.sh otelcol`, `tests/env/tools/otelcol/main.go`) on loopback: the core OTLP
//! receiver over HTTP, and a file exporter that writes every batch it receives as one line of OTLP
//! JSON. A test points the server's trace exporter at [`Collector::endpoint`] and reads back what
//! arrived with [`Collector::spans`] or [`Collector::wait_for_spans`], flattened into [`Span`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{EnvError, free_loopback_port, http_client, repo_root};

/// How long the collector may take to answer on its port (it starts in well under a second).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The cached collector binary (built when missing).
pub fn otelcol_bin() -> Result<PathBuf, EnvError> {
    let out = Command::new(repo_root().join("tests/env/build-addon.sh"))
        .arg("otelcol")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| EnvError::Command(format!("cannot run tests/env/build-addon.sh: {e}")))?;
    if !out.status.success() {
        return Err(EnvError::Command(
            "tests/env/build-addon.sh otelcol failed (its output is above)".into(),
        ));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("otelcol"))
}

/// One span as the collector received it, with its resource's and scope's identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    /// OTLP's `SpanKind`: 1 internal, 2 server, 3 client, 4 producer, 5 consumer (0 unspecified).
    pub kind: i32,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// Each attribute's value without its OTLP type wrapper: a string, a bool, a float, an integer
    /// (OTLP JSON writes `intValue` as a string; it is a JSON number here), an array or an object.
    pub attributes: BTreeMap<String, Value>,
    /// OTLP's `StatusCode`: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    pub status_message: String,
    /// The resource's attributes (`service.name`, ...), values as in `attributes`.
    pub resource: BTreeMap<String, Value>,
    /// The instrumentation scope's name.
    pub scope: String,
}

impl Span {
    /// The resource's `service.name`.
    pub fn service_name(&self) -> Option<&str> {
        self.resource.get("service.name").and_then(Value::as_str)
    }

    /// The string attribute `key`.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }

    /// How long the span lasted.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.end_unix_nano.saturating_sub(self.start_unix_nano))
    }
}

/// A running collector; killed (and its files removed) on drop.
pub struct Collector {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Collector {
    /// Starts a collector receiving OTLP/HTTP on a free loopback port (no gRPC), exporting traces
    /// to a JSON-lines file in a temporary directory; returns once the port answers.
    pub async fn start() -> Result<Collector, EnvError> {
        let bin = otelcol_bin()?;
        let dir = tempfile::tempdir().map_err(|e| EnvError::Command(format!("tempdir: {e}")))?;
        let port = free_loopback_port();
        let config = config(port, &dir.path().join("spans.jsonl"));
        let config_path = dir.path().join("config.yaml");
        let log_path = dir.path().join("otelcol.log");
        let io = |e: std::io::Error| EnvError::Command(format!("otelcol in {dir:?}: {e}"));
        // JSON is YAML: the collector reads the file as written.
        std::fs::write(&config_path, config.to_string()).map_err(io)?;
        let log = std::fs::File::create(&log_path).map_err(io)?;
        let child = Command::new(&bin)
            .arg(format!("--config=file:{}", config_path.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io)?)
            .stderr(log)
            .spawn()
            .map_err(|e| EnvError::Command(format!("starting {}: {e}", bin.display())))?;
        let mut collector = Collector { child, port, dir };
        collector.wait_ready().await?;
        Ok(collector)
    }

    /// Any HTTP answer means the receiver listens, and the collector starts its exporters before
    /// its receivers, so the pipeline is complete by then.
    async fn wait_ready(&mut self) -> Result<(), EnvError> {
        let client = http_client(Duration::from_secs(2));
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(EnvError::Command(format!(
                    "otelcol exited ({status}) before it answered:\n{}",
                    self.log()
                )));
            }
            if client.get(self.endpoint()).send().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(EnvError::Timeout {
            what: format!("otelcol on port {}:\n{}", self.port, self.log()),
            secs: READY_TIMEOUT.as_secs(),
        })
    }

    /// The OTLP/HTTP base URL, `http://127.0.0.1:PORT` (what `OTEL_EXPORTER_OTLP_ENDPOINT` takes;
    /// traces go to `/v1/traces` below it).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The collector's own log (startup, errors), for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("otelcol.log")).unwrap_or_default()
    }

    /// Every span received so far, in the order of arrival.
    pub fn spans(&self) -> Vec<Span> {
        let text = std::fs::read_to_string(self.dir.path().join("spans.jsonl")).unwrap_or_default();
        // a line still being written has no newline yet: only complete lines count
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete
            .lines()
            .flat_map(|line| {
                parse_line(line).unwrap_or_else(|e| panic!("otelcol wrote {line:?}: {e}"))
            })
            .collect()
    }

    /// Waits until `done` holds for the spans received so far (polled every 100 ms) for at most
    /// `timeout`; returns them. Panics with what did arrive, and the collector's log, otherwise.
    pub async fn wait_for_spans(
        &self,
        timeout: Duration,
        done: impl Fn(&[Span]) -> bool,
    ) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if Instant::now() >= deadline {
                panic!(
                    "the expected spans did not arrive within {timeout:?}; received:\n{spans:#?}\n\
                     otelcol log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The collector's configuration: OTLP/HTTP in (no gRPC listener, the server exports over HTTP),
/// the JSON-lines file out. The main.go telemetry has no internal metrics, so nothing else binds.
fn config(port: u16, spans: &Path) -> Value {
    json!({
        "receivers": {"otlp": {"protocols": {"http": {"endpoint": format!("127.0.0.1:{port}")}}}},
        "exporters": {"jsonfile": {"path": spans}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["jsonfile"]}}},
    })
}

/// The spans of one line of the file: one OTLP JSON `TracesData` (`ptrace.JSONMarshaler`).
pub fn parse_line(line: &str) -> Result<Vec<Span>, serde_json::Error> {
    let data: TracesData = serde_json::from_str(line)?;
    let mut spans = Vec::new();
    for rs in data.resource_spans {
        let resource = attributes(&rs.resource.attributes);
        for ss in rs.scope_spans {
            for s in ss.spans {
                spans.push(Span {
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    parent_span_id: Some(s.parent_span_id).filter(|p| !p.is_empty()),
                    name: s.name,
                    kind: s.kind,
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                    attributes: attributes(&s.attributes),
                    status_code: s.status.code,
                    status_message: s.status.message,
                    resource: resource.clone(),
                    scope: ss.scope.name.clone(),
                });
            }
        }
    }
    Ok(spans)
}

// The OTLP JSON shapes read here; a field the collector leaves out (empty in protobuf terms) is
// its default.

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TracesData {
    #[serde(default)]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans {
    #[serde(default)]
    resource: Resource,
    #[serde(default)]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Deserialize, Default)]
struct Resource {
    #[serde(default)]
    attributes: Vec<KeyValue>,
}

#[derive(Deserialize)]
struct ScopeSpans {
    #[serde(default)]
    scope: Scope,
    #[serde(default)]
    spans: Vec<OtlpSpan>,
}

#[derive(Deserialize, Default)]
struct Scope {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OtlpSpan {
    trace_id: String,
    span_id: String,
    #[serde(default)]
    parent_span_id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: i32,
    #[serde(default, deserialize_with = "u64_in_string")]
    start_time_unix_nano: u64,
    #[serde(default, deserialize_with = "u64_in_string")]
    end_time_unix_nano: u64,
    #[serde(default)]
    attributes: Vec<KeyValue>,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    code: i32,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct KeyValue {
    key: String,
    #[serde(default)]
    value: Value,
}

/// OTLP JSON writes 64-bit integers as strings (JavaScript's numbers would lose digits); a number
/// is accepted too.
fn u64_in_string<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        v => v
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom(format!("not a u64: {v}"))),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_value(&kv.value)))
        .collect()
}

/// An OTLP `AnyValue` (`{"stringValue": "x"}`, `{"intValue": "42"}`, ...) as the plain JSON value.
fn any_value(v: &Value) -> Value {
    let Some((kind, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return Value::Null; // an empty AnyValue
    };
    match kind.as_str() {
        "intValue" => match inner {
            Value::String(s) => s.parse::<i64>().map_or_else(|_| inner.clone(), Value::from),
            _ => inner.clone(),
        },
        "arrayValue" => Value::Array(
            inner["values"]
                .as_array()
                .map(|vs| vs.iter().map(any_value).collect())
                .unwrap_or_default(),
        ),
        "kvlistValue" => Value::Object(
            inner["values"]
                .as_array()
                .map(|kvs| {
                    kvs.iter()
                        .map(|kv| {
                            let key = kv["key"].as_str().unwrap_or_default().to_string();
                            (key, any_value(&kv["value"]))
                        })
                        .collect()
                })
                .unwrap_or_default(),
        ),
        // stringValue, boolValue, doubleValue, bytesValue (base64)
        _ => inner.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the real collector wrote for a hand-made OTLP/HTTP JSON request of two spans
    /// (tests/tests/otelcol_collector.rs sends such a request through a running one).
    const LINE: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"celestial-fixture"}}]},"scopeSpans":[{"scope":{"name":"celestial-server","version":"0.1.0"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"POST /predict","kind":2,"startTimeUnixNano":"1796618000000000000","endTimeUnixNano":"1796618000250000000","attributes":[{"key":"http.request.method","value":{"stringValue":"POST"}},{"key":"http.response.status_code","value":{"intValue":"200"}},{"key":"celestial.cached","value":{"boolValue":false}},{"key":"celestial.confidence","value":{"doubleValue":0.875}},{"key":"celestial.classes","value":{"arrayValue":{"values":[{"stringValue":"galaxy"},{"intValue":"3"}]}}}],"status":{"code":1}},{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b175","parentSpanId":"eee19b7ec3c1b174","name":"onnx inference","kind":1,"startTimeUnixNano":"1796618000100000000","endTimeUnixNano":"1796618000200000000","status":{"message":"model failed","code":2}}]}]}]}"#;

    #[test]
    fn a_line_of_the_collector_becomes_flat_spans() {
        let spans = parse_line(LINE).unwrap();
        assert_eq!(spans.len(), 2);
        let (root, child) = (&spans[0], &spans[1]);
        assert_eq!(root.trace_id, "5b8efff798038103d269b633813fc60c");
        assert_eq!(root.span_id, "eee19b7ec3c1b174");
        assert_eq!(root.parent_span_id, None);
        assert_eq!(root.name, "POST /predict");
        assert_eq!((root.kind, root.status_code), (2, 1));
        assert_eq!(root.duration(), Duration::from_millis(250));
        assert_eq!(root.service_name(), Some("celestial-fixture"));
        assert_eq!(root.scope, "celestial-server");
        assert_eq!(root.attr_str("http.request.method"), Some("POST"));
        assert_eq!(root.attributes["http.response.status_code"], json!(200));
        assert_eq!(root.attributes["celestial.cached"], json!(false));
        assert_eq!(root.attributes["celestial.confidence"], json!(0.875));
        assert_eq!(root.attributes["celestial.classes"], json!(["galaxy", 3]));
        assert_eq!(child.parent_span_id.as_deref(), Some("eee19b7ec3c1b174"));
        assert_eq!((child.kind, child.status_code), (1, 2));
        assert_eq!(child.status_message, "model failed");
        assert!(child.attributes.is_empty());
        assert_eq!(child.resource, root.resource);
    }

    #[test]
    fn any_values_lose_their_type_wrapper() {
        let kv = json!({"values": [{"key": "a", "value": {"intValue": "-7"}}, {"key": "b", "value": {}}]});
        assert_eq!(
            any_value(&json!({ "kvlistValue": kv })),
            json!({"a": -7, "b": null})
        );
        assert_eq!(any_value(&json!({"bytesValue": "AQI="})), json!("AQI="));
    }

    #[test]
    fn the_config_has_one_http_listener_and_the_file() {
        let c = config(4318, Path::new("/tmp/x/spans.jsonl"));
        assert_eq!(
            c["receivers"]["otlp"]["protocols"],
            json!({"http": {"endpoint": "127.0.0.1:4318"}})
        );
        assert_eq!(c["exporters"]["jsonfile"]["path"], "/tmp/x/spans.jsonl");
    }
}
