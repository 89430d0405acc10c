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

use celestial_server::errors::ErrorCode;
use celestial_server::http::{AppState, router};
use celestial_server::server::app_state;
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

/// The shared state with the server's default limits, built by `server::app_state`.
pub static STATE: LazyLock<Arc<AppState>> = LazyLock::new(|| {
    let config = &*CONFIG;
    let classifier: Arc<dyn Classifier> =
        Arc::new(FakeClassifier::default().with_max_image_pixels(config.max_image_pixels));
    Arc::new(app_state(config, classifier))
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
