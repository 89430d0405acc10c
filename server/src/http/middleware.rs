//! The middleware around every route: request id, time limit, one log line, metrics (with a drop
//! guard, so a request the client abandons leaves the in-flight gauge and is counted as cancelled).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{Instrument, info, warn};

use super::state::AppState;
use crate::errors::{ApiError, ClientGone, Rejection};
use crate::routes;
use crate::telemetry::{RequestTrace, random_u64};

/// Marks a response as a Swagger UI asset, for the metrics route label.
#[derive(Clone, Copy)]
pub struct SwaggerAsset;

/// The metrics label of Swagger UI assets (served by the fallback, so they have no route).
const SWAGGER_ASSET_LABEL: &str = "/{swagger-asset}";

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

/// A new request id: one random prefix per process (the trace ids' generator), then a sequence
/// number. Built once as the header value it is sent as (one allocation, no copies).
fn new_request_id() -> HeaderValue {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(random_u64);
    let id = format!(
        "{seed:016x}-{:08x}",
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    );
    HeaderValue::try_from(id).expect("hex digits and a dash")
}

/// Whether a client's `x-request-id` is echoed: 1 to 128 visible ASCII characters.
fn valid_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic)
}

/// A request id as text (a valid or generated one is always visible ASCII).
fn id_text(id: &HeaderValue) -> &str {
    id.to_str().unwrap_or("invalid")
}

fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// One request's place in the in-flight gauge, from its start until it is dropped: answered, or
/// abandoned by the client (hyper drops the request's future when the connection closes), which is
/// counted and logged as cancelled. The gauge goes down on every path.
struct InFlight {
    state: Arc<AppState>,
    method: &'static str,
    route: &'static str,
    start: Instant,
    request_id: HeaderValue,
    answered: bool,
    /// The request's trace and path, when it is sampled: ended with the answer, or as cancelled.
    trace: Option<(RequestTrace, String)>,
}

impl InFlight {
    fn start(
        state: &Arc<AppState>,
        method: &'static str,
        route: &'static str,
        id: HeaderValue,
    ) -> Self {
        state.metrics.request_started();
        InFlight {
            state: Arc::clone(state),
            method,
            route,
            start: Instant::now(),
            request_id: id,
            answered: false,
            trace: None,
        }
    }

    /// End the request's span (OpenTelemetry's HTTP server conventions): `status` of the answer,
    /// none for a request the client abandoned (an error, like a server fault).
    fn end_trace(&mut self, status: Option<StatusCode>, route: &'static str) {
        let Some((trace, path)) = self.trace.take() else {
            return;
        };
        let mut attributes = vec![
            ("http.request.method", self.method.into()),
            ("http.route", route.into()),
            ("url.path", path.into()),
            (
                "celestial.request_id",
                id_text(&self.request_id).to_owned().into(),
            ),
        ];
        let error = match status {
            Some(status) => {
                attributes.push(("http.response.status_code", status.as_u16().into()));
                status.is_server_error().then(|| status.to_string())
            }
            None => Some("cancelled by the client".into()),
        };
        let name = format!("{} {route}", self.method);
        self.state.tracer.end(trace, name, attributes, error);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.metrics.request_ended();
        if !self.answered {
            self.state
                .metrics
                .request_cancelled(self.method, self.route);
            let latency_ms = (self.start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
            info!(
                method = self.method,
                route = self.route,
                latency_ms,
                request_id = id_text(&self.request_id),
                "request cancelled by the client"
            );
            self.end_trace(None, self.route);
        }
    }
}

/// Request id (echoed or generated), `--request-timeout` (the prediction routes apply it
/// themselves, from the end of the body), metrics and the request's log line.
pub async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get("x-request-id")
        .filter(|v| valid_request_id(v))
        .cloned()
        .unwrap_or_else(new_request_id);
    let method = method_label(req.method());
    let route = routes::label(req.uri().path());
    req.headers_mut().insert("x-request-id", request_id.clone());
    let mut in_flight = InFlight::start(&state, method, route, request_id.clone());
    if let Some(trace) = state.tracer.begin(req.headers()) {
        req.extensions_mut().insert(trace.clone());
        in_flight.trace = Some((trace, req.uri().path().to_string()));
    }
    let span = tracing::info_span!("request", request_id = id_text(&request_id));
    let timeout = state.limits.request_timeout;
    let serving = next.run(req).instrument(span);
    let mut resp = if routes::UPLOADS.contains(&route) {
        serving.await
    } else {
        match tokio::time::timeout(timeout, serving).await {
            Ok(r) => r,
            Err(_) => ApiError::Timeout(timeout).into_response(),
        }
    };
    resp.headers_mut().insert("x-request-id", request_id);
    // A client that went away in the middle of its body is cancelled (counted when `in_flight`
    // drops), like one whose request future hyper dropped.
    if resp.extensions().get::<ClientGone>().is_none() {
        in_flight.answered = true;
        let route = record(&state, &in_flight, &resp);
        in_flight.end_trace(Some(resp.status()), route);
    }
    resp
}

/// Count and log an answered request; its route label.
fn record(state: &AppState, request: &InFlight, resp: &Response) -> &'static str {
    let elapsed = request.start.elapsed();
    let status = resp.status();
    let (method, request_id) = (request.method, id_text(&request.request_id));
    let route = if resp.extensions().get::<SwaggerAsset>().is_some() {
        SWAGGER_ASSET_LABEL
    } else {
        request.route
    };
    if let Some(Rejection(reason)) = resp.extensions().get::<Rejection>() {
        state.metrics.rejected(reason);
    }
    state
        .metrics
        .request_finished(method, route, status.as_u16(), elapsed);
    let latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
    // the same line at either level: tracing's macros take the level as a constant
    macro_rules! request_line {
        ($level:ident) => {
            $level!(
                method,
                route,
                status = status.as_u16(),
                latency_ms,
                request_id,
                "request"
            )
        };
    }
    if status.is_server_error()
        && status != StatusCode::SERVICE_UNAVAILABLE
        && status != StatusCode::GATEWAY_TIMEOUT
    {
        request_line!(warn);
    } else {
        request_line!(info);
    }
    route
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_validated_and_generated() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-123")));
        assert!(!valid_request_id(&HeaderValue::from_static("has space")));
        assert!(!valid_request_id(&HeaderValue::from_static("")));
        let long = "a".repeat(129);
        assert!(!valid_request_id(&HeaderValue::from_str(&long).unwrap()));
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert!(valid_request_id(&a));
        assert_eq!(id_text(&a).len(), 16 + 1 + 8);
    }
}
