//! The tracing flags (flattened into the server's [`crate::Config`]), read from OpenTelemetry's
//! standard environment variables, and their checked form ([`TraceSettings`]). A leaf but for the
//! duration syntax of `celestial-common`.

use std::time::Duration;

use axum::http::uri::InvalidUri;
use axum::http::{HeaderName, HeaderValue, Uri};
use clap::{Args, ValueEnum};

/// Where and how the server sends its traces (OpenTelemetry over OTLP/HTTP). Off unless an
/// endpoint is set.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct TraceConfig {
    /// The OTLP/HTTP collector's base URL (http:// or https://); spans go to its `/v1/traces`.
    /// Tracing is off without this or --otlp-traces-endpoint.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The full URL spans are posted to, as it is (overrides --otlp-endpoint for traces).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")]
    pub otlp_traces_endpoint: Option<String>,
    /// The OTLP encoding: `http/protobuf` or `http/json` (`grpc` is not supported: use the
    /// collector's OTLP/HTTP port, 4318 by default).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    pub otlp_protocol: String,
    /// Headers sent with every export, as `key=value` pairs separated by commas (values
    /// percent-encoded), e.g. a collector's API key.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_HEADERS", default_value = "")]
    pub otlp_headers: String,
    /// A PEM file of the certificate authorities that sign an https collector's certificate
    /// (default: the system's).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_CERTIFICATE")]
    pub otlp_certificate: Option<std::path::PathBuf>,
    /// How long one export may take before its spans are dropped: milliseconds (the variable's
    /// unit), or a duration like `10s`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", default_value = "10000", value_parser = millis)]
    pub otlp_timeout: Duration,
    /// Which requests are traced: `parentbased_traceidratio` (a request continues its caller's
    /// decision, a new trace is sampled at --trace-sampler-arg), `traceidratio`,
    /// `parentbased_always_on` (every request, unless the caller said no), `always_on`,
    /// `always_off`, `parentbased_always_off`.
    #[arg(
        long,
        env = "OTEL_TRACES_SAMPLER",
        value_enum,
        default_value = "parentbased_always_on"
    )]
    pub trace_sampler: SamplerKind,
    /// The ratio of the ratio samplers, between 0 and 1 (0.01: one request in a hundred).
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0, value_parser = ratio)]
    pub trace_sampler_arg: f64,
    /// The service name the spans carry (resource attribute `service.name`; default: the one in
    /// --otel-resource-attributes, else `celestial-server`).
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub otel_service_name: Option<String>,
    /// More resource attributes, as `key=value` pairs separated by commas (e.g. the pod's name
    /// and namespace, from the Downward API).
    #[arg(long, env = "OTEL_RESOURCE_ATTRIBUTES", default_value = "")]
    pub otel_resource_attributes: String,
    /// Spans waiting to be exported, at most: past it, a finished request's spans are dropped
    /// (and counted) rather than slowing anything down.
    #[arg(long, env = "OTEL_BSP_MAX_QUEUE_SIZE", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub trace_queue_size: u32,
    /// Spans in one export request, at most.
    #[arg(long, env = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub trace_batch_size: u32,
    /// The longest a span waits before its export starts: milliseconds, or a duration like `5s`.
    #[arg(long, env = "OTEL_BSP_SCHEDULE_DELAY", default_value = "5000", value_parser = millis)]
    pub trace_export_delay: Duration,
    /// No traces, whatever the other settings say.
    #[arg(long, env = "OTEL_SDK_DISABLED")]
    pub otel_sdk_disabled: bool,
}

/// The resource attribute naming the service.
const SERVICE_NAME: &str = "service.name";
/// The service's name when no setting names it.
const DEFAULT_SERVICE_NAME: &str = "celestial-server";

/// OpenTelemetry's sampler names (`OTEL_TRACES_SAMPLER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum SamplerKind {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

impl Default for TraceConfig {
    fn default() -> TraceConfig {
        TraceConfig {
            otlp_endpoint: None,
            otlp_traces_endpoint: None,
            otlp_protocol: "http/protobuf".into(),
            otlp_headers: String::new(),
            otlp_certificate: None,
            otlp_timeout: Duration::from_secs(10),
            trace_sampler: SamplerKind::ParentbasedAlwaysOn,
            trace_sampler_arg: 1.0,
            otel_service_name: None,
            otel_resource_attributes: String::new(),
            trace_queue_size: 2048,
            trace_batch_size: 512,
            trace_export_delay: Duration::from_secs(5),
            otel_sdk_disabled: false,
        }
    }
}

/// A duration in milliseconds (OpenTelemetry's variables), or in the workspace's duration syntax.
fn millis(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => celestial_common::parse_duration(s),
    }
}

fn ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1")),
    }
}

/// The encoding of the export requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Protobuf,
    Json,
}

impl Protocol {
    pub fn content_type(self) -> &'static str {
        match self {
            Protocol::Protobuf => "application/x-protobuf",
            Protocol::Json => "application/json",
        }
    }
}

/// The checked settings of an exporter that is on.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// Where spans are posted (`…/v1/traces`).
    pub url: Uri,
    pub protocol: Protocol,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub certificate: Option<std::path::PathBuf>,
    pub timeout: Duration,
    pub sampler: SamplerKind,
    pub ratio: f64,
    /// `service.name` first, then the other resource attributes.
    pub resource: Vec<(String, String)>,
    pub queue_size: usize,
    pub batch_size: usize,
    pub delay: Duration,
}

/// Why the tracing settings cannot be used (a configuration error: the server does not start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceConfigError {
    #[error("the OTLP endpoint {url:?} is not an http:// or https:// URL with a host ({reason})")]
    Endpoint { url: String, reason: String },
    #[error(
        "OTLP protocol {0:?} is not supported: use http/protobuf or http/json (the collector's OTLP/HTTP port, 4318 by default)"
    )]
    Protocol(String),
    #[error("OTEL_EXPORTER_OTLP_HEADERS: {0}")]
    Header(String),
    #[error("OTEL_RESOURCE_ATTRIBUTES: {0}")]
    Resource(String),
}

impl TraceConfig {
    /// The checked settings, or `None` when tracing is off (no endpoint, or disabled).
    pub fn settings(&self) -> Result<Option<TraceSettings>, TraceConfigError> {
        let url = match (&self.otlp_traces_endpoint, &self.otlp_endpoint) {
            _ if self.otel_sdk_disabled => return Ok(None),
            (Some(url), _) if !url.trim().is_empty() => endpoint(url.trim(), false)?,
            (_, Some(base)) if !base.trim().is_empty() => endpoint(base.trim(), true)?,
            _ => return Ok(None),
        };
        let protocol = match self.otlp_protocol.trim() {
            "http/protobuf" => Protocol::Protobuf,
            "http/json" => Protocol::Json,
            other => return Err(TraceConfigError::Protocol(other.to_string())),
        };
        let headers = pairs(&self.otlp_headers)
            .map_err(TraceConfigError::Header)?
            .into_iter()
            .map(|(k, v)| {
                let name = HeaderName::try_from(k.as_str())
                    .map_err(|_| TraceConfigError::Header(format!("{k:?} is not a header name")))?;
                let value = HeaderValue::try_from(v.as_str()).map_err(|_| {
                    TraceConfigError::Header(format!("the value of {k} is not a header value"))
                })?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, TraceConfigError>>()?;
        let extra = pairs(&self.otel_resource_attributes).map_err(TraceConfigError::Resource)?;
        let named = extra
            .iter()
            .find(|(k, _)| k == SERVICE_NAME)
            .map(|(_, v)| v.clone());
        let name = self
            .otel_service_name
            .clone()
            .or(named)
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.into());
        let mut resource = vec![(SERVICE_NAME.to_string(), name)];
        resource.extend(extra.into_iter().filter(|(k, _)| k != SERVICE_NAME));
        Ok(Some(TraceSettings {
            url,
            protocol,
            headers,
            certificate: self.otlp_certificate.clone(),
            timeout: self.otlp_timeout,
            sampler: self.trace_sampler,
            ratio: self.trace_sampler_arg,
            resource,
            queue_size: self.trace_queue_size as usize,
            batch_size: self.trace_batch_size.min(self.trace_queue_size) as usize,
            delay: self.trace_export_delay,
        }))
    }
}

/// The URL spans go to: `base` + `/v1/traces` for the base endpoint, the URL as it is otherwise.
fn endpoint(url: &str, base: bool) -> Result<Uri, TraceConfigError> {
    let bad = |reason: &str| TraceConfigError::Endpoint {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let full = if base {
        format!("{}/v1/traces", url.trim_end_matches('/'))
    } else {
        url.to_string()
    };
    let uri: Uri = full.parse().map_err(|e: InvalidUri| bad(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("the scheme must be http or https")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(uri)
}

/// `key=value,key=value` (OpenTelemetry's list syntax; values percent-decoded).
fn pairs(list: &str) -> Result<Vec<(String, String)>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not key=value"))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(format!("{item:?} has an empty key"));
            }
            Ok((k.to_string(), percent_decode(v.trim())?))
        })
        .collect()
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("{s:?} has a malformed percent escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut TraceConfig)) -> Result<Option<TraceSettings>, TraceConfigError> {
        let mut c = TraceConfig::default();
        f(&mut c);
        c.settings()
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(with(|_| {}), Ok(None));
        assert_eq!(
            with(|c| {
                c.otlp_endpoint = Some("http://collector:4318".into());
                c.otel_sdk_disabled = true;
            }),
            Ok(None)
        );
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path_and_the_full_one_is_kept() {
        let s = with(|c| c.otlp_endpoint = Some("http://collector:4318/".into()))
            .unwrap()
            .unwrap();
        assert_eq!(s.url.to_string(), "http://collector:4318/v1/traces");
        let s = with(|c| {
            c.otlp_endpoint = Some("http://ignored:4318".into());
            c.otlp_traces_endpoint = Some("https://x.example/otlp/traces".into());
        })
        .unwrap()
        .unwrap();
        assert_eq!(s.url.to_string(), "https://x.example/otlp/traces");
        assert_eq!(
            s.resource[0],
            ("service.name".into(), "celestial-server".into())
        );
    }

    #[test]
    fn bad_settings_are_refused_with_their_reason() {
        for url in ["collector:4318", "ftp://collector", "http://", "http://a b"] {
            let e = with(|c| c.otlp_endpoint = Some(url.into())).unwrap_err();
            assert!(matches!(e, TraceConfigError::Endpoint { .. }), "{url}: {e}");
        }
        let e = with(|c| {
            c.otlp_endpoint = Some("http://c:4317".into());
            c.otlp_protocol = "grpc".into();
        })
        .unwrap_err();
        assert!(e.to_string().contains("4318"), "{e}");
        let e = with(|c| {
            c.otlp_endpoint = Some("http://c:4318".into());
            c.otlp_headers = "api-key".into();
        })
        .unwrap_err();
        assert!(matches!(e, TraceConfigError::Header(_)), "{e}");
    }

    #[test]
    fn lists_are_parsed_and_percent_decoded() {
        let s = with(|c| {
            c.otlp_endpoint = Some("http://c:4318".into());
            c.otlp_headers = "api-key=a%20b, x-tenant = t1".into();
            c.otel_resource_attributes = "k8s.pod.name=p-1,service.name=from-list".into();
        })
        .unwrap()
        .unwrap();
        assert_eq!(s.headers[0].1, "a b");
        assert_eq!(s.headers[1].0, "x-tenant");
        assert_eq!(s.resource.len(), 2);
        assert_eq!(s.resource[0], ("service.name".into(), "from-list".into()));
        assert_eq!(s.resource[1], ("k8s.pod.name".into(), "p-1".into()));
        assert!(pairs("k=%zz").is_err());
    }

    #[test]
    fn durations_are_milliseconds_or_the_workspace_syntax() {
        assert_eq!(millis("250"), Ok(Duration::from_millis(250)));
        assert_eq!(millis("2s"), Ok(Duration::from_secs(2)));
        assert!(ratio("1.5").is_err());
        assert_eq!(ratio("0.01"), Ok(0.01));
    }
}
