//! What the HTTP targets share: the app as the server assembles it (over the fake classifier, no
//! ONNX Runtime), one tokio current-thread runtime for the whole process, and the checks every
//! answer must pass.

#![allow(dead_code)]

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use celestial_server::docs::{DocLimits, documents};
use celestial_server::errors::ErrorCode;
use celestial_server::http::{AppState, Limits, router};
use celestial_server::testing::FakeClassifier;
use celestial_server::{Classifier, Config, root_path};

/// The server's defaults (no flag, no environment variable).
pub static CONFIG: LazyLock<Config> = LazyLock::new(Config::with_defaults);

/// One runtime for the process: a current-thread runtime with timers (the body deadline and the
/// request timeout use them), created once.
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
});

/// The shared state with the server's default limits, as `server::app_state` builds it.
pub static STATE: LazyLock<Arc<AppState>> = LazyLock::new(|| {
    let config = &*CONFIG;
    let classifier: Arc<dyn Classifier> =
        Arc::new(FakeClassifier::default().with_max_image_pixels(config.max_image_pixels));
    let doc_limits = DocLimits {
        max_body_bytes: config.max_body_bytes,
        max_image_pixels: config.max_image_pixels,
        max_batch: config.max_batch_images,
        body_timeout: config.body_timeout,
        body_min_rate: config.body_min_rate,
    };
    let docs = documents(classifier.as_ref(), &config.service_name, &doc_limits);
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        max_batch_images: config.max_batch_images,
        max_concurrency: config.max_concurrency,
        max_queue_wait: config.max_queue_wait,
        request_timeout: config.request_timeout,
        retry_after_seconds: config.retry_after_seconds,
        body_timeout: config.body_timeout,
        body_min_rate: config.body_min_rate,
        max_uploads: config.max_uploads,
        max_body_memory: config.max_body_memory,
    };
    Arc::new(AppState::new(classifier, limits, docs))
});

/// The application as `server::serve` assembles it: the router under the root-path middleware
/// with the configured prefix `root_path` (already valid).
pub fn app(root_path: &str) -> Router {
    router(Arc::clone(&STATE)).layer(axum::middleware::from_fn_with_state(
        Arc::<str>::from(root_path),
        root_path::middleware,
    ))
}

/// Send `req` through `app` on the runtime; the status, headers and whole body.
pub fn call(app: Router, req: Request<Body>) -> (Response<()>, Bytes) {
    RUNTIME.block_on(async move {
        let resp = app.oneshot(req).await.expect("the router is infallible");
        let (parts, body) = resp.into_parts();
        let bytes = body
            .collect()
            .await
            .expect("a response body is readable")
            .to_bytes();
        (Response::from_parts(parts, ()), bytes)
    })
}

/// Every answer: never a 5xx (with the fake classifier, no drain and the default timeouts none of
/// the documented ones, 500 `internal`, 503 `draining`, 504 `timeout`, can happen), and every
/// error a JSON `{"error": "<a sentence>.", "code": "<a known code>"}` whose code maps to the
/// answer's status.
pub fn check_answer(resp: &Response<()>, body: &[u8]) {
    let status = resp.status();
    assert!(
        !status.is_server_error(),
        "a {status} answer: {}",
        String::from_utf8_lossy(body)
    );
    if status.is_client_error() {
        check_error_body(status, body);
    }
}

/// A JSON error body with a sentence and a known code whose status is `status`.
pub fn check_error_body(status: StatusCode, body: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "a {status} answer without a JSON body ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let message = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("a {status} answer without an error message: {v}"));
    assert!(
        message.ends_with('.'),
        "a {status} message that is not a sentence: {message:?}"
    );
    let code = v["code"]
        .as_str()
        .unwrap_or_else(|| panic!("a {status} answer without a code: {v}"));
    let known = ErrorCode::ALL
        .iter()
        .find(|c| c.as_str() == code)
        .unwrap_or_else(|| panic!("a {status} answer with an unknown code {code:?}"));
    assert_eq!(known.status(), status, "code {code} answered with {status}");
}
