//! HTTP layer: routes, request extraction (multipart and raw bodies), admission control, and the one
//! place where errors become status codes ([`ApiError::status`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::ser::SerializeMap;
use tokio::sync::Semaphore;
use tracing::{Instrument, info, warn};

use crate::docs;
use crate::inference::{Engine, InferenceError, Prediction};
use crate::metrics::Metrics;
use crate::preprocess::PreprocessError;

/// Stable error codes (the `code` field of every error body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    EmptyBody,
    InvalidImage,
    TruncatedImage,
    MissingImagePart,
    MissingBoundary,
    InvalidMultipart,
    NotFound,
    MethodNotAllowed,
    BodyTooLarge,
    TooManyImages,
    UnsupportedMediaType,
    UnsupportedImageFormat,
    ImageTooLarge,
    Overloaded,
    NotReady,
    Draining,
    Timeout,
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 18] = [
        ErrorCode::EmptyBody,
        ErrorCode::InvalidImage,
        ErrorCode::TruncatedImage,
        ErrorCode::MissingImagePart,
        ErrorCode::MissingBoundary,
        ErrorCode::InvalidMultipart,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::BodyTooLarge,
        ErrorCode::TooManyImages,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::UnsupportedImageFormat,
        ErrorCode::ImageTooLarge,
        ErrorCode::Overloaded,
        ErrorCode::NotReady,
        ErrorCode::Draining,
        ErrorCode::Timeout,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::EmptyBody => "empty_body",
            ErrorCode::InvalidImage => "invalid_image",
            ErrorCode::TruncatedImage => "truncated_image",
            ErrorCode::MissingImagePart => "missing_image_part",
            ErrorCode::MissingBoundary => "missing_boundary",
            ErrorCode::InvalidMultipart => "invalid_multipart",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::TooManyImages => "too_many_images",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::UnsupportedImageFormat => "unsupported_image_format",
            ErrorCode::ImageTooLarge => "image_too_large",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Draining => "draining",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Internal => "internal_error",
        }
    }

    /// The HTTP status of each code: the single mapping used by every response.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::EmptyBody
            | ErrorCode::InvalidImage
            | ErrorCode::TruncatedImage
            | ErrorCode::MissingImagePart
            | ErrorCode::MissingBoundary
            | ErrorCode::InvalidMultipart => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::BodyTooLarge | ErrorCode::TooManyImages => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType | ErrorCode::UnsupportedImageFormat => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ErrorCode::ImageTooLarge => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NotReady | ErrorCode::Draining => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A representative message, for the documentation.
    pub fn example_message(self) -> &'static str {
        match self {
            ErrorCode::EmptyBody => "The request body is empty; send an image.",
            ErrorCode::InvalidImage => "The JPEG image cannot be decoded: invalid marker.",
            ErrorCode::TruncatedImage => "The JPEG image is truncated.",
            ErrorCode::MissingImagePart => "The multipart body has no part named `image`.",
            ErrorCode::MissingBoundary => "The multipart/form-data content type has no boundary.",
            ErrorCode::InvalidMultipart => "The multipart body is malformed: incomplete stream.",
            ErrorCode::NotFound => "No route GET /nope; see /docs.",
            ErrorCode::MethodNotAllowed => "Method GET is not allowed on /predict.",
            ErrorCode::BodyTooLarge => "The request body is over the limit of 16777216 bytes.",
            ErrorCode::TooManyImages => "The batch has more than 64 images.",
            ErrorCode::UnsupportedMediaType => {
                "Content type text/plain is not supported; send multipart/form-data with an `image` part or a raw image."
            }
            ErrorCode::UnsupportedImageFormat => {
                "Unsupported image format; send JPEG, PNG, WebP, GIF or BMP."
            }
            ErrorCode::ImageTooLarge => {
                "The image is 10000x10000 = 100000000 pixels, more than the limit of 40000000 pixels."
            }
            ErrorCode::Overloaded => "Too many requests in progress; retry later.",
            ErrorCode::NotReady => "The model is not loaded yet.",
            ErrorCode::Draining => "The server is shutting down.",
            ErrorCode::Timeout => "The request took longer than 30s.",
            ErrorCode::Internal => "Internal error.",
        }
    }
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("The request body is empty; send an image.")]
    EmptyBody,
    #[error("{0}.")]
    Image(PreprocessError),
    #[error("The multipart body has no part named `image`.")]
    MissingImagePart,
    #[error("The multipart/form-data content type has no boundary.")]
    MissingBoundary,
    #[error("The multipart body is malformed: {0}.")]
    InvalidMultipart(String),
    #[error("No route {method} {path}; see /docs.")]
    NotFound { method: String, path: String },
    #[error("Method {method} is not allowed on {path}.")]
    MethodNotAllowed { method: String, path: String },
    #[error("The request body is over the limit of {limit} bytes.")]
    BodyTooLarge { limit: usize },
    #[error("The batch has more than {limit} images.")]
    TooManyImages { limit: usize },
    #[error(
        "Content type {0} is not supported; send multipart/form-data with an `image` part or a raw image."
    )]
    UnsupportedMediaType(String),
    #[error("Too many requests in progress; retry later.")]
    Overloaded { retry_after: u64 },
    #[error("The model is not loaded yet.")]
    NotReady,
    #[error("The server is shutting down.")]
    Draining,
    #[error("The request took longer than {0:?}.")]
    Timeout(Duration),
    #[error("Internal error: {0}.")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::EmptyBody => ErrorCode::EmptyBody,
            ApiError::Image(e) => image_code(e),
            ApiError::MissingImagePart => ErrorCode::MissingImagePart,
            ApiError::MissingBoundary => ErrorCode::MissingBoundary,
            ApiError::InvalidMultipart(_) => ErrorCode::InvalidMultipart,
            ApiError::NotFound { .. } => ErrorCode::NotFound,
            ApiError::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            ApiError::BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            ApiError::TooManyImages { .. } => ErrorCode::TooManyImages,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::Overloaded { .. } => ErrorCode::Overloaded,
            ApiError::NotReady => ErrorCode::NotReady,
            ApiError::Draining => ErrorCode::Draining,
            ApiError::Timeout(_) => ErrorCode::Timeout,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code().status()
    }
}

fn image_code(e: &PreprocessError) -> ErrorCode {
    match e {
        PreprocessError::Empty => ErrorCode::EmptyBody,
        PreprocessError::UnsupportedFormat(_) => ErrorCode::UnsupportedImageFormat,
        PreprocessError::TooLarge { .. } => ErrorCode::ImageTooLarge,
        PreprocessError::Truncated { .. } => ErrorCode::TruncatedImage,
        PreprocessError::ZeroSized { .. } | PreprocessError::Undecodable { .. } => {
            ErrorCode::InvalidImage
        }
    }
}

/// The JSON error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: &'static str,
}

impl From<&ApiError> for ErrorBody {
    fn from(e: &ApiError) -> Self {
        let error = match e {
            ApiError::Image(PreprocessError::Empty) => ApiError::EmptyBody.to_string(),
            other => {
                let s = other.to_string();
                // Messages from lower layers start lower-case; make every message a sentence.
                let mut c = s.chars();
                match c.next() {
                    Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                    None => s,
                }
            }
        };
        ErrorBody {
            error,
            code: e.code().as_str(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(ErrorBody::from(&self))).into_response();
        resp.extensions_mut()
            .insert(Rejection(self.code().as_str()));
        if let ApiError::Overloaded { retry_after } = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        resp
    }
}

/// Marks a response as a Swagger UI asset, for the metrics route label.
#[derive(Clone, Copy)]
struct SwaggerAsset;

/// Marks a response as a rejection, for the metrics middleware.
#[derive(Clone, Copy)]
struct Rejection(&'static str);

/// Shared state of a running server.
pub struct AppState {
    pub engine: Engine,
    pub metrics: Metrics,
    pub draining: AtomicBool,
    pub ready: AtomicBool,
    pub limiter: Arc<Semaphore>,
    pub limits: Limits,
    pub openapi_json: Bytes,
    pub schema_json: Bytes,
    pub model_json: Bytes,
    pub swagger: Arc<utoipa_swagger_ui::Config<'static>>,
}

/// Request limits and behaviour knobs.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_images: usize,
    pub request_timeout: Duration,
    pub retry_after_seconds: u64,
    pub test_delay: Duration,
}

type Shared = State<Arc<AppState>>;

/// The application router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/predict", post(predict))
        .route("/predict/batch", post(predict_batch))
        .route("/", get(swagger_index))
        .route("/docs", get(swagger_index))
        .route(
            "/docs/",
            get(|| async { axum::response::Redirect::permanent("/docs") }),
        )
        .route("/docs.json", get(openapi_json))
        .route("/schema.json", get(schema_json))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/healthz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/model", get(model_info))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            observe,
        ))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Middleware: request id, timeout, logging, metrics.

static REQUEST_SEQ: AtomicU64 = AtomicU64::new(0);

fn new_request_id() -> String {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.finish()
    });
    format!(
        "{seed:016x}-{:08x}",
        REQUEST_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_string())
}

fn route_label(path: &str) -> &'static str {
    match path {
        "/predict" => "/predict",
        "/predict/batch" => "/predict/batch",
        "/" => "/",
        "/docs" | "/docs/" => "/docs",
        "/docs.json" => "/docs.json",
        "/schema.json" => "/schema.json",
        "/livez" => "/livez",
        "/readyz" => "/readyz",
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        "/model" => "/model",
        _ => "unmatched",
    }
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

async fn observe(State(state): Shared, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(valid_request_id)
        .unwrap_or_else(new_request_id);
    let method = method_label(req.method());
    let mut route = route_label(req.uri().path());
    let header_value =
        HeaderValue::from_str(&request_id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    req.headers_mut()
        .insert("x-request-id", header_value.clone());
    state.metrics.request_started();
    let span = tracing::info_span!("request", request_id = %request_id);
    let timeout = state.limits.request_timeout;
    let mut resp = match tokio::time::timeout(timeout, next.run(req).instrument(span)).await {
        Ok(r) => r,
        Err(_) => ApiError::Timeout(timeout).into_response(),
    };
    let elapsed = start.elapsed();
    let status = resp.status();
    if resp.extensions().get::<SwaggerAsset>().is_some() {
        route = "/{swagger-asset}";
    }
    if let Some(Rejection(reason)) = resp.extensions().get::<Rejection>() {
        state.metrics.rejected(reason);
    }
    state
        .metrics
        .request_finished(method, route, status.as_u16(), elapsed);
    resp.headers_mut().insert("x-request-id", header_value);
    let latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3;
    if status.is_server_error()
        && status != StatusCode::SERVICE_UNAVAILABLE
        && status != StatusCode::GATEWAY_TIMEOUT
    {
        warn!(method, route, status = status.as_u16(), latency_ms, request_id = %request_id, "request");
    } else {
        info!(method, route, status = status.as_u16(), latency_ms, request_id = %request_id, "request");
    }
    resp
}

// ---------------------------------------------------------------------------------------------
// Prediction routes.

/// A prediction serialized with the probabilities in label order.
struct PredictionBody<'a> {
    labels: &'a [String],
    prediction: &'a Prediction,
}

impl Serialize for PredictionBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Probs<'a>(&'a [String], &'a [f32]);
        impl Serialize for Probs<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (l, p) in self.0.iter().zip(self.1) {
                    m.serialize_entry(l, p)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("prediction", &self.labels[self.prediction.best])?;
        m.serialize_entry(
            "probabilities",
            &Probs(self.labels, &self.prediction.probabilities),
        )?;
        m.end()
    }
}

/// Admission: ready and not draining, and under the concurrency limit.
fn admit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(ApiError::Draining);
    }
    if !state.ready.load(Ordering::SeqCst) {
        return Err(ApiError::NotReady);
    }
    Arc::clone(&state.limiter)
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded {
            retry_after: state.limits.retry_after_seconds,
        })
}

enum BodyKind {
    Multipart(String),
    Raw,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Raw);
    };
    let ct = ct
        .to_str()
        .map_err(|_| ApiError::UnsupportedMediaType("(not ASCII)".into()))?;
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "multipart/form-data" => multer::parse_boundary(ct)
            .map(BodyKind::Multipart)
            .map_err(|_| ApiError::MissingBoundary),
        "image/jpeg"
        | "image/jpg"
        | "image/pjpeg"
        | "image/png"
        | "image/webp"
        | "image/gif"
        | "image/bmp"
        | "image/x-bmp"
        | "image/x-ms-bmp"
        | "application/octet-stream" => Ok(BodyKind::Raw),
        "" => Ok(BodyKind::Raw),
        _ => Err(ApiError::UnsupportedMediaType(essence)),
    }
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(ApiError::BodyTooLarge { limit });
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(e) => Err(ApiError::InvalidMultipart(format!(
            "the request body could not be read ({e})"
        ))),
    }
}

/// The `image` part(s) of a multipart body (at most `max` of them).
async fn image_parts(body: Bytes, boundary: String, max: usize) -> Result<Vec<Bytes>, ApiError> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut images = Vec::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(ApiError::InvalidMultipart(multipart_reason(&e))),
        };
        if field.name() != Some("image") {
            // Drain and ignore other parts.
            if let Err(e) = field.bytes().await {
                return Err(ApiError::InvalidMultipart(multipart_reason(&e)));
            }
            continue;
        }
        if images.len() == max {
            return Err(ApiError::TooManyImages { limit: max });
        }
        images.push(
            field
                .bytes()
                .await
                .map_err(|e| ApiError::InvalidMultipart(multipart_reason(&e)))?,
        );
    }
    if images.is_empty() {
        return Err(ApiError::MissingImagePart);
    }
    Ok(images)
}

fn multipart_reason(e: &multer::Error) -> String {
    let s = e.to_string();
    let s = s.trim_end_matches('.');
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => "unknown error".into(),
    }
}

async fn extract_images(
    state: &AppState,
    req: Request,
    max: usize,
) -> Result<Vec<Bytes>, ApiError> {
    let (parts, body) = req.into_parts();
    let kind = body_kind(&parts.headers)?;
    let bytes = read_body(body, &parts.headers, state.limits.max_body_bytes).await?;
    match kind {
        BodyKind::Multipart(boundary) => {
            if bytes.is_empty() {
                return Err(ApiError::EmptyBody);
            }
            image_parts(bytes, boundary, max).await
        }
        BodyKind::Raw if bytes.is_empty() => Err(ApiError::EmptyBody),
        BodyKind::Raw => Ok(vec![bytes]),
    }
}

async fn run_job(
    state: &AppState,
    images: Vec<Bytes>,
) -> Result<Vec<Result<Prediction, PreprocessError>>, ApiError> {
    let out = state.engine.predict(images).await.map_err(|e| match e {
        InferenceError::WorkersGone => ApiError::Draining,
        other => ApiError::Internal(other.to_string()),
    })?;
    state.metrics.queue_wait.observe(out.queue_wait);
    state.metrics.preprocess.observe(out.preprocess);
    state.metrics.inference.observe(out.inference);
    for p in out.results.iter().flatten() {
        state.metrics.predicted(p.best);
    }
    Ok(out.results)
}

async fn predict(State(state): Shared, req: Request) -> Result<Response, ApiError> {
    let _permit = admit(&state)?;
    if !state.limits.test_delay.is_zero() {
        tokio::time::sleep(state.limits.test_delay).await;
    }
    let images = extract_images(&state, req, 1).await?;
    let mut results = run_job(&state, images).await?;
    let prediction = results
        .pop()
        .ok_or_else(|| ApiError::Internal("no result".into()))?
        .map_err(ApiError::Image)?;
    let labels = &state.engine.spec().labels;
    Ok(Json(PredictionBody {
        labels,
        prediction: &prediction,
    })
    .into_response())
}

async fn predict_batch(State(state): Shared, req: Request) -> Result<Response, ApiError> {
    let _permit = admit(&state)?;
    if !state.limits.test_delay.is_zero() {
        tokio::time::sleep(state.limits.test_delay).await;
    }
    let images = extract_images(&state, req, state.limits.max_batch_images).await?;
    let results = run_job(&state, images).await?;
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        // Per-image errors inside a 200 batch answer (a refused request is counted by the middleware).
        state.metrics.rejected(image_code(e).as_str());
    }
    let labels = &state.engine.spec().labels;
    let items: Vec<serde_json::Value> = results
        .iter()
        .map(|r| match r {
            Ok(p) => serde_json::to_value(PredictionBody {
                labels,
                prediction: p,
            })
            .unwrap_or(serde_json::Value::Null),
            Err(e) => serde_json::to_value(ErrorBody::from(&ApiError::Image(e.clone())))
                .unwrap_or(serde_json::Value::Null),
        })
        .collect();
    Ok(Json(serde_json::json!({ "results": items })).into_response())
}

// ---------------------------------------------------------------------------------------------
// Documentation, health, metrics, model.

fn json_bytes(b: &Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], b.clone()).into_response()
}

async fn openapi_json(State(state): Shared) -> Response {
    json_bytes(&state.openapi_json)
}

async fn schema_json(State(state): Shared) -> Response {
    json_bytes(&state.schema_json)
}

async fn model_info(State(state): Shared) -> Response {
    json_bytes(&state.model_json)
}

fn swagger_file(state: &AppState, path: &str) -> Option<Response> {
    let file = utoipa_swagger_ui::serve(path, Arc::clone(&state.swagger))
        .ok()
        .flatten()?;
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, file.content_type)],
        file.bytes.into_owned(),
    )
        .into_response();
    if file.gzpipped {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Some(resp)
}

async fn swagger_index(State(state): Shared) -> Response {
    swagger_file(&state, "index.html").unwrap_or_else(|| {
        ApiError::Internal("Swagger UI assets are missing".into()).into_response()
    })
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

async fn livez() -> Response {
    Json(Health { status: "ok" }).into_response()
}

async fn readyz(State(state): Shared) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        ApiError::Draining.into_response()
    } else if !state.ready.load(Ordering::SeqCst) {
        ApiError::NotReady.into_response()
    } else {
        Json(Health { status: "ok" }).into_response()
    }
}

async fn metrics(State(state): Shared) -> Response {
    let ready = state.ready.load(Ordering::SeqCst) && !state.draining.load(Ordering::SeqCst);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(ready),
    )
        .into_response()
}

async fn fallback(State(state): Shared, method: Method, uri: axum::http::Uri) -> Response {
    if method == Method::GET
        && let Some(mut resp) = swagger_file(&state, uri.path().trim_start_matches('/'))
    {
        resp.extensions_mut().insert(SwaggerAsset);
        return resp;
    }
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into_response()
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into_response()
}

/// The `/model` document.
pub fn model_document(engine: &Engine) -> serde_json::Value {
    let s = engine.spec();
    serde_json::json!({
        "name": s.name,
        "version": s.version,
        "labels": s.labels,
        "input": {
            "name": s.input_name,
            "layout": s.layout,
            "height": s.height,
            "width": s.width,
            "color_mode": s.color_mode,
            "grayscale_coefficients": (s.channels() == 1).then_some(s.grayscale_coefficients),
            "alpha": s.alpha,
            "resize_filter": s.resize_filter,
            "resize_mode": s.resize_mode,
            "scale": s.scale,
            "mean": s.mean,
            "std": s.std,
        },
        "output": {"name": s.output_name, "kind": s.output_kind},
        "trained_at": s.trained_at,
        "validation_accuracy": s.validation_accuracy,
        "onnxruntime_version": engine.ort_version(),
        "server_version": env!("CARGO_PKG_VERSION"),
        "workers": engine.workers(),
    })
}

/// Serialized documents, computed once at start-up.
pub fn documents(
    engine: &Engine,
    service_name: &str,
    max_body_bytes: usize,
    max_image_pixels: u64,
    max_batch: usize,
) -> (Bytes, Bytes, Bytes) {
    let openapi = docs::openapi(engine.spec(), max_body_bytes, max_image_pixels, max_batch);
    let openapi = openapi
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    let schema = docs::bentoml_schema(service_name).to_string();
    let model = model_document(engine).to_string();
    (
        Bytes::from(openapi),
        Bytes::from(schema),
        Bytes::from(model),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_name_and_client_codes_are_not_500() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for c in ErrorCode::ALL {
            if c != ErrorCode::Internal {
                assert_ne!(c.status(), StatusCode::INTERNAL_SERVER_ERROR, "{c:?}");
            }
        }
    }

    #[test]
    fn content_types_are_classified() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(
            matches!(body_kind(&h("multipart/form-data; boundary=abc")), Ok(BodyKind::Multipart(b)) if b == "abc")
        );
        assert!(matches!(
            body_kind(&h("multipart/form-data")),
            Err(ApiError::MissingBoundary)
        ));
        assert!(matches!(body_kind(&h("image/png")), Ok(BodyKind::Raw)));
        assert!(matches!(
            body_kind(&h("Application/Octet-Stream")),
            Ok(BodyKind::Raw)
        ));
        assert!(
            matches!(body_kind(&h("text/plain")), Err(ApiError::UnsupportedMediaType(t)) if t == "text/plain")
        );
        assert!(matches!(body_kind(&HeaderMap::new()), Ok(BodyKind::Raw)));
    }

    #[test]
    fn request_ids_are_validated_and_generated() {
        assert_eq!(
            valid_request_id(&HeaderValue::from_static("abc-123")).as_deref(),
            Some("abc-123")
        );
        assert!(valid_request_id(&HeaderValue::from_static("has space")).is_none());
        assert_ne!(new_request_id(), new_request_id());
    }

    #[test]
    fn error_messages_are_sentences() {
        let e = ApiError::Image(PreprocessError::Truncated { format: "JPEG" });
        let b = ErrorBody::from(&e);
        assert_eq!(
            (b.error.as_str(), b.code),
            ("The JPEG image is truncated.", "truncated_image")
        );
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let b = ErrorBody::from(&ApiError::Image(PreprocessError::Empty));
        assert_eq!(b.code, "empty_body");
    }
}
