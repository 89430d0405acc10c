//! The Open Inference Protocol's gRPC service (`inference.GRPCInferenceService`, tonic) on the
//! HTTP port: [`with_grpc`] sends HTTP/2 requests whose `Content-Type` is `application/grpc*` to
//! it (h2c on the plain listener, h2 over TLS by ALPN) and every other request to the HTTP router.
//!
//! Around each call, the HTTP rules: the API key (metadata `authorization: Bearer <key>` or
//! `x-api-key`, checked like the REST route the method mirrors: `ModelInfer` as the infer route,
//! the metadata calls as the metadata routes), `ModelInfer`'s message received as an upload (upload
//! slot, `--max-body-bytes`, body timeout and rate, body memory), `--request-timeout` from the end
//! of the message, and the request metrics (route label: the method's path; status: the HTTP status
//! of the gRPC code). The calls themselves are `service` over [`crate::oip`]; `proto` is generated.
//!
//! Imports the HTTP layer's state, body and job (the same queue and slots as `/predict`),
//! [`crate::oip`], [`crate::errors`], [`crate::auth`] and [`crate::routes`].

pub mod proto;
mod service;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, Response, Version, header};
use tower::ServiceExt;
use tracing::info;

use crate::auth;
use crate::errors::{ApiError, status_of_grpc};
use crate::http::{AppState, Security, body};
use crate::routes;
use crate::telemetry::{RequestTrace, Value};
use proto::grpc_inference_service_server::GrpcInferenceServiceServer;
pub use service::Inference;

type Server = GrpcInferenceServiceServer<Inference>;

/// Whether `req` is a gRPC call: HTTP/2 with a `Content-Type` of `application/grpc` (or
/// `application/grpc+proto`, ...).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_2
        && req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// `http` with the gRPC calls sent to the service instead.
pub fn with_grpc(http: Router, state: Arc<AppState>) -> Router {
    let grpc = GrpcInferenceServiceServer::new(Inference {
        state: Arc::clone(&state),
    })
    .max_decoding_message_size(state.limits.max_body_bytes)
    .max_encoding_message_size(usize::MAX);
    let dispatch = tower::service_fn(move |req: Request<Body>| {
        let (http, grpc, state) = (http.clone(), grpc.clone(), Arc::clone(&state));
        async move {
            match is_grpc(&req) {
                true => Ok::<_, Infallible>(call(state, grpc, req).await),
                false => http.oneshot(req).await,
            }
        }
    });
    Router::new().fallback_service(dispatch)
}

/// One gRPC call under the HTTP rules (see the module's documentation).
async fn call(state: Arc<AppState>, grpc: Server, req: Request<Body>) -> Response<Body> {
    let path = req.uri().path();
    let (route, mirrors) = routes::GRPC_METHODS
        .iter()
        .find(|(method, _)| *method == path)
        .map_or(("unmatched", None), |&(method, rest)| (method, Some(rest)));
    let trace = state.tracer.begin(req.headers());
    let counted = Counted::start(&state, route, trace.clone());
    if let Err(e) = authorize(&state, mirrors, req.headers()) {
        return counted.finish(refusal(&state, &e));
    }
    let (mut parts, body) = req.into_parts();
    if let Some(trace) = &trace {
        parts.extensions.insert(trace.clone());
    }
    let (body, _memory) = match mirrors == Some(routes::V2_INFER) {
        false => (body, None),
        true => match body::upload(&state, &parts.headers, body, trace.as_ref()).await {
            Ok((bytes, memory)) => (Body::from(bytes), Some(memory)),
            Err(e) => return counted.finish(refusal(&state, &e)),
        },
    };
    let timeout = state.limits.request_timeout;
    let answer = tokio::time::timeout(timeout, grpc.oneshot(Request::from_parts(parts, body)));
    let resp = match answer.await {
        Ok(Ok(resp)) => resp.map(Body::new),
        Ok(Err(never)) => match never {},
        Err(_) => refusal(&state, &ApiError::Timeout(timeout)),
    };
    counted.finish(resp)
}

/// The key check of the REST route `mirrors` (when keys are on and it is protected).
fn authorize(state: &AppState, mirrors: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    match (&state.security, mirrors) {
        (
            Security {
                api_keys: Some(keys),
                protected,
                ..
            },
            Some(route),
        ) if protected.contains(&route) => {
            auth::check(keys, headers).map_err(ApiError::Unauthorized)
        }
        _ => Ok(()),
    }
}

/// `e` as a gRPC answer (trailers only).
fn refusal(state: &AppState, e: &ApiError) -> Response<Body> {
    service::status(state, e).into_http::<Body>()
}

/// A call counted in flight until dropped, and in the request metrics once answered (a call
/// whose client went away first is counted as cancelled).
struct Counted {
    state: Arc<AppState>,
    route: &'static str,
    start: Instant,
    answered: bool,
    /// The call's trace, when it is sampled: ended with the answer.
    trace: Option<RequestTrace>,
}

impl Counted {
    fn start(state: &Arc<AppState>, route: &'static str, trace: Option<RequestTrace>) -> Counted {
        state.metrics.request_started();
        Counted {
            state: Arc::clone(state),
            route,
            start: Instant::now(),
            answered: false,
            trace,
        }
    }

    /// Count the answer `resp` (its gRPC code from its head: an error is answered in trailers
    /// only; a success's code comes in the trailers, after the message).
    fn finish(mut self, resp: Response<Body>) -> Response<Body> {
        self.answered = true;
        let code = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map_or(tonic::Code::Ok, tonic::Code::from);
        let status = status_of_grpc(code).as_u16();
        let elapsed = self.start.elapsed();
        self.state
            .metrics
            .request_finished("POST", self.route, status, elapsed);
        let latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
        info!(method = "POST", route = self.route, status, grpc_code = ?code, latency_ms, "request");
        if let Some(trace) = self.trace.take() {
            self.end_trace(trace, Some(code));
        }
        resp
    }

    /// End the call's span: OpenTelemetry's RPC conventions (named after the method, the gRPC
    /// status as an attribute); a server fault, or a call the client abandoned, is an error.
    fn end_trace(&self, trace: RequestTrace, code: Option<tonic::Code>) {
        let method = self.route.trim_start_matches('/');
        let (service, name) = method.split_once('/').unwrap_or(("", method));
        let mut attributes = vec![
            ("rpc.system", "grpc".into()),
            ("rpc.service", service.into()),
            ("rpc.method", name.into()),
        ];
        let error = match code {
            Some(code) => {
                attributes.push(("rpc.grpc.status_code", Value::Int(code as i64)));
                matches!(
                    code,
                    tonic::Code::Internal
                        | tonic::Code::Unknown
                        | tonic::Code::DataLoss
                        | tonic::Code::Unimplemented
                        | tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                )
                .then(|| format!("gRPC status {code:?}"))
            }
            None => Some("cancelled by the client".into()),
        };
        self.state
            .tracer
            .end(trace, method.to_string(), attributes, error);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.state.metrics.request_ended();
        if !self.answered {
            self.state.metrics.request_cancelled("POST", self.route);
            if let Some(trace) = self.trace.take() {
                self.end_trace(trace, None);
            }
        }
    }
}
