//! The router in-process (`tower::ServiceExt::oneshot`, no port, no ONNX Runtime: the classifier
//! is `testing::FakeClassifier`): every route, every error code a request can get, the limits,
//! the documents and the metrics labels.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use celestial_server::Classifier;
use celestial_server::docs::{DocLimits, documents};
use celestial_server::errors::ErrorCode;
use celestial_server::http::{AppState, Limits, router};
use celestial_server::routes;
use celestial_server::testing::{FakeClassifier, LABELS};

const BOUNDARY: &str = "celestial-test-boundary";

fn limits() -> Limits {
    Limits {
        max_body_bytes: 64 * 1024,
        max_batch_images: 3,
        max_concurrency: 4,
        max_queue: 4,
        max_queue_wait: Duration::from_millis(20),
        request_timeout: Duration::from_secs(10),
        retry_after_seconds: 7,
        body_timeout: Duration::from_secs(10),
        body_min_rate: 1024,
        max_uploads: 8,
        max_body_memory: 1 << 26,
    }
}

fn state(fake: FakeClassifier, limits: Limits) -> Arc<AppState> {
    let classifier: Arc<dyn Classifier> = Arc::new(fake);
    let doc_limits = DocLimits {
        max_body_bytes: limits.max_body_bytes,
        max_image_pixels: 1000,
        max_batch: limits.max_batch_images,
        body_timeout: limits.body_timeout,
        body_min_rate: limits.body_min_rate,
    };
    let docs = documents(classifier.as_ref(), "svc", &doc_limits);
    Arc::new(AppState::new(classifier, limits, docs, &Default::default()))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// `(status, code)` of an error answer, after checking its body has a sentence.
    fn error(&self) -> (u16, String) {
        let v = self.json();
        let message = v["error"].as_str().expect("an error message");
        assert!(message.ends_with('.'), "{message}");
        (
            self.status.as_u16(),
            v["code"].as_str().unwrap_or("").into(),
        )
    }
}

async fn call(state: &Arc<AppState>, req: Request<Body>) -> Answer {
    let resp = router(Arc::clone(state)).oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

fn request(method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(Body::from(body)).unwrap()
}

fn get(path: &str) -> Request<Body> {
    request(Method::GET, path, None, Vec::new())
}

fn encoded(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 9]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, format)
        .unwrap();
    out.into_inner()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    encoded(width, height, image::ImageFormat::Png)
}

/// A multipart/form-data body of `(name, bytes)` parts.
fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"x\"\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post_multipart(path: &str, parts: &[(&str, &[u8])]) -> Request<Body> {
    let ct = format!("multipart/form-data; boundary={BOUNDARY}");
    request(Method::POST, path, Some(&ct), multipart(parts))
}

fn post_raw(content_type: Option<&str>, body: Vec<u8>) -> Request<Body> {
    request(Method::POST, routes::PREDICT, content_type, body)
}

#[tokio::test]
async fn every_route_is_served_and_others_are_404_or_405() {
    let s = state(FakeClassifier::default(), limits());
    let tensor = serde_json::json!({"inputs": [{"name": "input", "datatype": "FP32",
        "shape": [1, 3, 64, 64], "data": vec![0.5; 3 * 64 * 64]}]});
    for route in routes::ALL {
        let path = routes::fill(route, "fake", "0.0.0");
        let req = match route {
            routes::PREDICT | routes::PREDICT_BATCH => {
                post_multipart(route, &[("image", &png(4, 4))])
            }
            routes::V2_INFER | routes::V2_INFER_VERSION => request(
                Method::POST,
                &path,
                Some("application/json"),
                tensor.to_string().into_bytes(),
            ),
            _ => get(&path),
        };
        let a = call(&s, req).await;
        assert!(
            a.status.is_success() || a.status.is_redirection(),
            "{route}: {}",
            a.status
        );
    }
    let a = call(&s, get("/nope")).await;
    assert_eq!(a.error(), (404, "not_found".into()));
    assert_eq!(a.json()["error"], "No route GET /nope; see /docs.");
    let a = call(&s, get(routes::PREDICT)).await;
    assert_eq!(a.error(), (405, "method_not_allowed".into()));
    let a = call(&s, request(Method::DELETE, routes::MODEL, None, Vec::new())).await;
    assert_eq!(a.error(), (405, "method_not_allowed".into()));
    let a = call(&s, get(routes::DOCS_SLASH)).await;
    assert_eq!(a.headers[header::LOCATION], routes::DOCS);
}

#[tokio::test]
async fn predictions_come_from_the_classifier_in_label_order() {
    let s = state(FakeClassifier::default(), limits());
    for req in [
        post_raw(Some("image/png"), png(13, 2)),
        post_raw(None, png(13, 2)),
        post_multipart(routes::PREDICT, &[("other", b"x"), ("image", &png(13, 2))]),
    ] {
        let a = call(&s, req).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.headers[header::CONTENT_TYPE], "application/json");
        let v = a.json();
        assert_eq!(v["prediction"], LABELS[13 % LABELS.len()]);
        let labels: Vec<&String> = v["probabilities"].as_object().unwrap().keys().collect();
        assert_eq!(labels, LABELS);
    }
    let parts: [(&str, &[u8]); 3] = [
        ("image", &png(11, 1)),
        ("image", b"not an image"),
        ("image", &png(2, 1)),
    ];
    let a = call(&s, post_multipart(routes::PREDICT_BATCH, &parts)).await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["results"][0]["prediction"], LABELS[1]);
    assert_eq!(v["results"][1]["code"], "unsupported_image_format");
    assert_eq!(v["results"][2]["prediction"], LABELS[2]);
}

#[tokio::test]
async fn client_errors_have_their_codes_and_statuses() {
    let s = state(
        FakeClassifier::default().with_max_image_pixels(100),
        limits(),
    );
    let big = limits().max_body_bytes + 1;
    let ok = png(4, 4);
    let jpeg = encoded(8, 8, image::ImageFormat::Jpeg);
    let too_many: Vec<(&str, &[u8])> = (0..4).map(|_| ("image", ok.as_slice())).collect();
    let cases: Vec<(Request<Body>, ErrorCode)> = vec![
        (
            post_raw(Some("image/jpeg"), Vec::new()),
            ErrorCode::EmptyBody,
        ),
        (
            post_multipart(routes::PREDICT, &[("image", b"")]),
            ErrorCode::EmptyBody,
        ),
        (
            post_raw(Some("text/plain"), ok.clone()),
            ErrorCode::UnsupportedMediaType,
        ),
        (
            post_raw(Some(";;;=;"), ok.clone()),
            ErrorCode::UnsupportedMediaType,
        ),
        (
            post_raw(Some("image/png; charset"), ok.clone()),
            ErrorCode::UnsupportedMediaType,
        ),
        (
            post_raw(Some("multipart/form-data"), ok.clone()),
            ErrorCode::MissingBoundary,
        ),
        (
            post_raw(Some("multipart/form-data; boundary=\"\""), ok.clone()),
            ErrorCode::MissingBoundary,
        ),
        (
            post_multipart(routes::PREDICT, &[("image", &ok), ("image", &ok)]),
            ErrorCode::MultipleImages,
        ),
        (
            post_multipart(routes::PREDICT, &[("file", &ok)]),
            ErrorCode::MissingImagePart,
        ),
        (
            post_raw(
                Some("multipart/form-data; boundary=XYZ"),
                b"--XYZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc".to_vec(),
            ),
            ErrorCode::InvalidMultipart,
        ),
        (post_raw(None, vec![0; big]), ErrorCode::BodyTooLarge),
        (
            post_multipart(routes::PREDICT_BATCH, &too_many),
            ErrorCode::TooManyImages,
        ),
        (
            post_raw(None, b"II*\0\x08\0\0\0rest".to_vec()),
            ErrorCode::UnsupportedImageFormat,
        ),
        (
            post_raw(None, jpeg[..jpeg.len() - 2].to_vec()),
            ErrorCode::TruncatedImage,
        ),
        (
            post_raw(Some("image/png"), png(11, 10)),
            ErrorCode::ImageTooLarge,
        ),
    ];
    for (req, code) in cases {
        let a = call(&s, req).await;
        assert_eq!(
            a.error(),
            (code.status().as_u16(), code.as_str().into()),
            "{code:?}"
        );
    }
    let m = String::from_utf8(call(&s, get(routes::METRICS)).await.body.to_vec()).unwrap();
    assert!(
        m.contains("celestial_rejections_total{reason=\"too_many_images\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn overload_gets_429_and_draining_turns_only_readiness_503() {
    let s = state(
        FakeClassifier::default(),
        Limits {
            max_concurrency: 1,
            ..limits()
        },
    );
    let held = Arc::clone(&s.limiter).try_acquire_owned().unwrap();
    let a = call(&s, post_raw(None, png(3, 3))).await;
    assert_eq!(a.error(), (429, "overloaded".into()));
    assert_eq!(a.headers[header::RETRY_AFTER], "7");
    assert_eq!(
        call(&s, get(routes::READYZ)).await.status,
        200,
        "health is not limited"
    );
    drop(held);
    assert_eq!(call(&s, post_raw(None, png(3, 3))).await.status, 200);

    // A slot freed within the queue wait serves the waiting prediction instead of a 429.
    let patient = state(
        FakeClassifier::default(),
        Limits {
            max_concurrency: 1,
            max_queue_wait: Duration::from_secs(10),
            ..limits()
        },
    );
    let held = Arc::clone(&patient.limiter).try_acquire_owned().unwrap();
    let waiting = tokio::spawn({
        let patient = Arc::clone(&patient);
        async move { call(&patient, post_raw(None, png(3, 3))).await.status }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "waits for a slot");
    drop(held);
    assert_eq!(waiting.await.unwrap(), 200);

    s.start_draining();
    let a = call(&s, post_raw(None, png(3, 3))).await;
    assert_eq!(a.status, 200, "predictions are still served while draining");
    for route in [
        routes::READYZ,
        routes::HEALTHZ,
        routes::V2_READY,
        "/v2/models/fake/ready",
        "/v2/models/fake/versions/0.0.0/ready",
    ] {
        assert_eq!(call(&s, get(route)).await.error(), (503, "draining".into()));
    }
    for route in [routes::LIVEZ, routes::V2_LIVE] {
        assert_eq!(call(&s, get(route)).await.status, 200);
    }
    let m = String::from_utf8(call(&s, get(routes::METRICS)).await.body.to_vec()).unwrap();
    assert!(m.contains("celestial_ready 0"), "{m}");
}

#[tokio::test]
async fn slow_predictions_get_504() {
    let slow = FakeClassifier::slow(Duration::from_secs(30));
    let s = state(
        slow,
        Limits {
            request_timeout: Duration::from_millis(50),
            ..limits()
        },
    );
    let a = call(&s, post_raw(None, png(3, 3))).await;
    assert_eq!(a.error(), (504, "timeout".into()));
}

/// A body that sends `first` and then never another byte (nor its end).
fn stalled_body(first: &'static [u8]) -> Body {
    let chunks =
        futures_util::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(first)) })
            .chain(futures_util::stream::pending());
    Body::from_stream(chunks)
}

#[tokio::test]
async fn a_stalled_body_is_408_even_past_the_request_timeout_and_holds_no_prediction_slot() {
    let s = state(
        FakeClassifier::default(),
        Limits {
            body_timeout: Duration::from_millis(100),
            body_min_rate: 0,
            request_timeout: Duration::from_millis(20),
            max_concurrency: 1,
            ..limits()
        },
    );
    let req = Request::builder()
        .method(Method::POST)
        .uri(routes::PREDICT)
        .header(header::CONTENT_TYPE, "image/png")
        .body(stalled_body(b"\x89PNG"))
        .unwrap();
    let stalled = tokio::spawn({
        let s = Arc::clone(&s);
        async move { call(&s, req).await }
    });
    // While that body is stalled, the only prediction slot is free.
    assert_eq!(call(&s, post_raw(None, png(3, 3))).await.status, 200);
    let a = stalled.await.unwrap();
    assert_eq!(a.error(), (408, "body_timeout".into()));
    assert_eq!(a.headers[header::CONNECTION], "close");
    let m = String::from_utf8(call(&s, get(routes::METRICS)).await.body.to_vec()).unwrap();
    for needle in [
        "route=\"/predict\",method=\"POST\",status=\"408\"} 1",
        "celestial_rejections_total{reason=\"body_timeout\"} 1",
    ] {
        assert!(m.contains(needle), "{needle} in\n{m}");
    }
    assert!(!m.contains("status=\"504\""), "{m}");
}

#[tokio::test]
async fn uploads_over_max_uploads_get_429() {
    let s = state(
        FakeClassifier::default(),
        Limits {
            max_uploads: 1,
            ..limits()
        },
    );
    let held = Arc::clone(&s.uploads).try_acquire_owned().unwrap();
    let a = call(&s, post_raw(None, png(3, 3))).await;
    assert_eq!(a.error(), (429, "overloaded".into()));
    drop(held);
    assert_eq!(call(&s, post_raw(None, png(3, 3))).await.status, 200);
}

#[tokio::test]
async fn bodies_over_the_body_memory_get_429_and_their_memory_comes_back() {
    // room for two bodies of this size (each counted twice), not three
    let body = png(64, 64);
    let kib_each = (2 * body.len()).div_ceil(1024);
    let s = state(
        FakeClassifier::slow(Duration::from_millis(300)),
        Limits {
            max_body_memory: (2 * kib_each + kib_each / 2) * 1024,
            ..limits()
        },
    );
    let app = router(Arc::clone(&s));
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(app.clone().oneshot(post_raw(None, body.clone()))))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = call(&s, post_raw(None, body.clone())).await;
    assert_eq!(a.error(), (429, "overloaded".into()));
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), 200);
    }
    // every permit back once the answers are out
    assert_eq!(
        s.body_memory.available_permits(),
        s.limits.max_body_memory / 1024
    );
    assert_eq!(call(&s, post_raw(None, body)).await.status, 200);
}

#[tokio::test]
async fn an_abandoned_request_leaves_the_in_flight_gauge_and_is_counted_as_cancelled() {
    let s = state(FakeClassifier::slow(Duration::from_secs(30)), limits());
    let pending = router(Arc::clone(&s)).oneshot(post_raw(None, png(3, 3)));
    // The client goes away while the prediction runs: its future is dropped.
    assert!(
        tokio::time::timeout(Duration::from_millis(50), pending)
            .await
            .is_err()
    );
    let m = String::from_utf8(call(&s, get(routes::METRICS)).await.body.to_vec()).unwrap();
    for needle in [
        "celestial_http_requests_in_flight 1\n", // the /metrics request itself
        "celestial_http_requests_cancelled_total{route=\"/predict\",method=\"POST\"} 1",
    ] {
        assert!(m.contains(needle), "{needle} in\n{m}");
    }
}

#[tokio::test]
async fn the_documents_describe_the_routes_and_media_types_the_router_has() {
    let s = state(FakeClassifier::default(), limits());
    let doc = call(&s, get(routes::DOCS_JSON)).await.json();
    for path in doc["paths"].as_object().unwrap().keys() {
        assert!(routes::ALL.contains(&path.as_str()), "{path}");
    }
    let content = doc["paths"][routes::PREDICT]["post"]["requestBody"]["content"]
        .as_object()
        .unwrap();
    let mut documented: Vec<&str> = content.keys().map(String::as_str).collect();
    let mut accepted = routes::RAW_IMAGE_TYPES.to_vec();
    accepted.push("multipart/form-data");
    documented.sort_unstable();
    accepted.sort_unstable();
    assert_eq!(documented, accepted);
    let codes = &doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"];
    let all: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(codes, &serde_json::json!(all));
    let schema = call(&s, get(routes::SCHEMA_JSON)).await.json();
    assert_eq!(schema["routes"][0]["route"], routes::PREDICT);
    let model = call(&s, get(routes::MODEL)).await.json();
    assert_eq!(model["labels"], serde_json::json!(LABELS));
    assert_eq!(model["onnxruntime_version"], "none");
}

#[tokio::test]
async fn request_ids_are_echoed_and_metrics_use_route_labels() {
    let s = state(FakeClassifier::default(), limits());
    let mut req = get(routes::LIVEZ);
    req.headers_mut()
        .insert("x-request-id", "abc-123".parse().unwrap());
    assert_eq!(call(&s, req).await.headers["x-request-id"], "abc-123");
    let generated = call(&s, get(routes::LIVEZ)).await;
    assert!(!generated.headers["x-request-id"].is_empty());
    call(&s, get("/random/path")).await;
    call(&s, get(routes::DOCS_SLASH)).await;
    let m = String::from_utf8(call(&s, get(routes::METRICS)).await.body.to_vec()).unwrap();
    for needle in [
        "route=\"unmatched\",method=\"GET\",status=\"404\"",
        "route=\"/docs\",method=\"GET\",status=\"308\"",
        "route=\"/livez\",method=\"GET\",status=\"200\"} 2",
    ] {
        assert!(m.contains(needle), "{needle} in\n{m}");
    }
}
