//! Every route and every error status, against the real server (embedded model) on port 0.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use celestial_server::testing::{FakeClassifier, LABELS};
use common::{error_of, fixture, multipart_image, start, start_with, synthetic};
use image::ImageFormat;
use serde_json::Value;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

fn assert_prediction(v: &Value) -> String {
    let label = v["prediction"].as_str().expect("prediction").to_string();
    let probs = v["probabilities"].as_object().expect("probabilities");
    let keys: Vec<&str> = probs.keys().map(String::as_str).collect();
    assert_eq!(keys, LABELS, "every label, in output order");
    let sum: f64 = probs.values().map(|p| p.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to {sum}");
    let best = probs
        .iter()
        .max_by(|a, b| a.1.as_f64().partial_cmp(&b.1.as_f64()).unwrap())
        .unwrap()
        .0;
    assert_eq!(best, &label);
    // The embedded model defines both (model/golden.json `outputs`; their values: tests/model.rs).
    let confidence = v["confidence"].as_f64().expect("confidence");
    assert!(
        confidence > 0.0 && confidence <= 1.0,
        "confidence {confidence}"
    );
    assert!(v["known"].is_boolean(), "known in {v}");
    label
}

#[tokio::test]
async fn predict_multipart_and_raw_bodies() {
    let s = start(&["--workers", "2"]).await;
    let c = client();
    let saturn = fixture("saturn-progressive.jpg");

    // Multipart, as the BentoML client and Swagger UI send it.
    let r = c
        .post(s.url("/predict"))
        .multipart(multipart_image(saturn.clone(), "saturn.jpg", "image/jpeg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(assert_prediction(&r.json().await.unwrap()), "Saturn");

    // Raw bodies with each declared type, and octet-stream / no type with sniffing.
    for (name, ct) in [
        ("saturn-progressive.jpg", "image/jpeg"),
        ("saturn-cmyk.jpg", "image/jpeg"),
        ("saturn.webp", "image/webp"),
        ("saturn-lossless.webp", "application/octet-stream"),
        ("saturn-exif-rotated.jpg", "image/jpeg"),
    ] {
        let r = c
            .post(s.url("/predict"))
            .header("content-type", ct)
            .body(fixture(name))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(
            assert_prediction(&r.json().await.unwrap()),
            "Saturn",
            "{name}"
        );
    }
    let r = c
        .post(s.url("/predict"))
        .body(saturn.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "no content type: sniffed");

    // Formats the server decodes (synthetic pictures: any label is fine, the point is 200).
    for (f, ct) in [
        (ImageFormat::Png, "image/png"),
        (ImageFormat::Gif, "image/gif"),
        (ImageFormat::Bmp, "image/bmp"),
        (ImageFormat::Jpeg, "image/jpeg"),
    ] {
        let r = c
            .post(s.url("/predict"))
            .header("content-type", ct)
            .body(synthetic(f))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{f:?}");
        assert_prediction(&r.json().await.unwrap());
    }
    // 16-bit PNG with alpha, grayscale, palette.
    let rgba16 = image::DynamicImage::ImageRgba16(image::ImageBuffer::from_fn(40, 30, |x, y| {
        image::Rgba([x as u16 * 1000, y as u16 * 2000, 30000, 40000])
    }));
    let gray = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(40, 30, |x, _| {
        image::Luma([x as u8 * 6])
    }));
    for img in [rgba16, gray] {
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, ImageFormat::Png).unwrap();
        let r = c
            .post(s.url("/predict"))
            .multipart(multipart_image(buf.into_inner(), "x.png", "image/png"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn every_client_error_status() {
    let s = start(&[
        "--max-body-bytes",
        "200000",
        "--max-image-pixels",
        "16384",
        "--max-batch-images",
        "3",
    ])
    .await;
    let c = client();
    let jpeg = fixture("saturn-progressive.jpg");
    let post = |ct: Option<&str>, body: Vec<u8>| {
        let mut rq = c.post(s.url("/predict")).body(body);
        if let Some(ct) = ct {
            rq = rq.header("content-type", ct);
        }
        rq.send()
    };

    let cases: Vec<(reqwest::Response, u16, &str)> = vec![
        (
            post(Some("image/jpeg"), vec![]).await.unwrap(),
            400,
            "empty_body",
        ),
        (post(None, vec![]).await.unwrap(), 400, "empty_body"),
        (
            post(
                Some("image/jpeg"),
                b"\xFF\xD8\xFF\xE0garbage that is not a jpeg".to_vec(),
            )
            .await
            .unwrap(),
            400,
            "invalid_image",
        ),
        (
            post(Some("image/jpeg"), jpeg[..jpeg.len() / 2].to_vec())
                .await
                .unwrap(),
            400,
            "truncated_image",
        ),
        (
            post(Some("multipart/form-data"), b"--x\r\n".to_vec())
                .await
                .unwrap(),
            400,
            "missing_boundary",
        ),
        (
            post(
                Some("multipart/form-data; boundary=XYZ"),
                b"--XYZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nabc".to_vec(),
            )
            .await
            .unwrap(),
            400,
            "invalid_multipart",
        ),
        (
            c.post(s.url("/predict"))
                .multipart(reqwest::multipart::Form::new().text("file", "x"))
                .send()
                .await
                .unwrap(),
            400,
            "missing_image_part",
        ),
        (
            c.post(s.url("/predict"))
                .multipart(multipart_image(vec![], "e.jpg", "image/jpeg"))
                .send()
                .await
                .unwrap(),
            400,
            "empty_body",
        ),
        (
            c.get(s.url("/nope")).send().await.unwrap(),
            404,
            "not_found",
        ),
        (
            c.get(s.url("/predict")).send().await.unwrap(),
            405,
            "method_not_allowed",
        ),
        (
            c.delete(s.url("/readyz")).send().await.unwrap(),
            405,
            "method_not_allowed",
        ),
        (
            post(Some("image/jpeg"), vec![0u8; 300_000]).await.unwrap(),
            413,
            "body_too_large",
        ),
        (
            post(Some("text/plain"), b"hello".to_vec()).await.unwrap(),
            415,
            "unsupported_media_type",
        ),
        (
            post(Some("image/tiff"), b"II*\0\x08\0\0\0".to_vec())
                .await
                .unwrap(),
            415,
            "unsupported_media_type",
        ),
        (
            post(
                Some("application/octet-stream"),
                b"II*\0\x08\0\0\0more".to_vec(),
            )
            .await
            .unwrap(),
            415,
            "unsupported_image_format",
        ),
        (
            post(Some("application/octet-stream"), b"just some text".to_vec())
                .await
                .unwrap(),
            415,
            "unsupported_image_format",
        ),
        (
            post(
                Some("image/jpeg"),
                common::synthetic_sized(129, 128, ImageFormat::Png),
            )
            .await
            .unwrap(),
            422,
            "image_too_large",
        ),
    ];
    for (resp, status, code) in cases {
        let (got_status, got_code, msg) = error_of(resp).await;
        assert_eq!((got_status, got_code.as_str()), (status, code), "{msg}");
        assert!(
            msg.ends_with('.') && msg.chars().next().unwrap().is_uppercase(),
            "sentence: {msg}"
        );
    }

    // Chunked body over the limit (no Content-Length): still 413.
    let chunks =
        futures_util::stream::iter((0..40).map(|_| Ok::<_, std::io::Error>(vec![0u8; 10_000])));
    let r = c
        .post(s.url("/predict"))
        .header("content-type", "image/jpeg")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.1, "body_too_large");

    // Batch: too many images.
    let mut form = reqwest::multipart::Form::new();
    for _ in 0..4 {
        form = form.part(
            "image",
            reqwest::multipart::Part::bytes(jpeg.clone()).file_name("a.jpg"),
        );
    }
    let r = c
        .post(s.url("/predict/batch"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.1, "too_many_images");

    // The server still works, and rejections are counted.
    let r = c
        .post(s.url("/predict"))
        .body(jpeg.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m = common::get_text(&c, &s, "/metrics").await;
    assert!(
        m.contains("celestial_rejections_total{reason=\"truncated_image\"} 1"),
        "{m}"
    );
    assert!(m.contains("celestial_rejections_total{reason=\"image_too_large\"} 1"));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn batch_keeps_order_and_reports_per_image_errors() {
    let s = start(&[]).await;
    let c = client();
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(fixture("saturn-progressive.jpg")).file_name("1.jpg"),
        )
        .part(
            "image",
            reqwest::multipart::Part::bytes(b"not an image".to_vec()).file_name("2.txt"),
        )
        .text("comment", "ignored")
        .part(
            "image",
            reqwest::multipart::Part::bytes(fixture("saturn.webp")).file_name("3.webp"),
        );
    let r = c
        .post(s.url("/predict/batch"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(assert_prediction(&results[0]), "Saturn");
    assert_eq!(results[1]["code"], "unsupported_image_format");
    assert_eq!(assert_prediction(&results[2]), "Saturn");
    let r = c
        .post(s.url("/predict/batch"))
        .multipart(reqwest::multipart::Form::new().text("x", "y"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(r).await.1, "missing_image_part");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn docs_schema_health_metrics_model_and_request_ids() {
    let s = start(&[]).await;
    let c = client();

    for path in ["/", "/docs"] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(r.text().await.unwrap().contains("swagger-ui"));
    }
    let init = c
        .get(s.url("/swagger-initializer.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(init.contains("./docs.json"), "{init}");
    assert_eq!(
        c.get(s.url("/swagger-ui-bundle.js"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let doc: Value = common::get_json(&c, &s, "/docs.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let golden = common::golden();
    assert_eq!(doc["info"]["version"], golden["model_version"]);
    for label in LABELS {
        assert!(doc["info"]["description"].as_str().unwrap().contains(label));
    }
    for path in [
        "/predict",
        "/predict/batch",
        "/livez",
        "/readyz",
        "/healthz",
        "/metrics",
        "/model",
        "/schema.json",
        "/docs.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    let predict = &doc["paths"]["/predict"]["post"];
    for status in [
        "200", "400", "408", "413", "415", "422", "429", "503", "504",
    ] {
        assert!(
            predict["responses"][status].is_object(),
            "/predict documents {status}"
        );
    }
    assert!(predict["requestBody"]["content"]["multipart/form-data"].is_object());
    assert!(predict["requestBody"]["content"]["image/png"].is_object());
    assert!(predict["responses"]["429"]["headers"]["Retry-After"].is_object());
    assert_eq!(
        doc["components"]["schemas"]["Prediction"]["properties"]["probabilities"]["required"]
            .as_array()
            .unwrap()
            .len(),
        10
    );

    let prediction = &doc["components"]["schemas"]["Prediction"];
    let ok_example = &predict["responses"]["200"]["content"]["application/json"]["example"];
    for field in ["confidence", "known"] {
        assert!(
            prediction["properties"][field]["description"].is_string(),
            "{field} documented"
        );
        assert!(
            prediction["required"]
                .as_array()
                .unwrap()
                .contains(&field.into()),
            "{field} required"
        );
        assert!(ok_example.get(field).is_some(), "{field} in the example");
    }

    // BentoML's client contract (see /work/shared/reference/bentoml-schema.json).
    let schema: Value = common::get_json(&c, &s, "/schema.json").await;
    assert_eq!(schema["type"], "service");
    assert_eq!(schema["name"], "celestial_bodies_classifier");
    let route = &schema["routes"][0];
    assert_eq!(
        (
            route["name"].as_str(),
            route["route"].as_str(),
            route["is_task"].as_bool()
        ),
        (Some("predict"), Some("/predict"), Some(false))
    );
    assert_eq!(route["input"]["properties"]["image"]["type"], "file");
    assert_eq!(route["input"]["properties"]["image"]["format"], "image");
    assert_eq!(route["input"]["required"], serde_json::json!(["image"]));
    assert_eq!(
        route["output"],
        serde_json::json!({"type": "string", "media_type": "application/json"})
    );

    for path in ["/livez", "/readyz", "/healthz"] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }

    let model: Value = common::get_json(&c, &s, "/model").await;
    assert_eq!(model["name"], "celestial-bodies");
    assert_eq!(model["labels"], serde_json::json!(LABELS));
    assert_eq!(model["input"]["layout"], "NCHW");
    let shape = &golden["input"]["shape"]; // [1, 3, H, W]
    assert_eq!(
        (&model["input"]["height"], &model["input"]["width"]),
        (&shape[2], &shape[3])
    );
    assert_eq!(model["version"], golden["model_version"]);
    assert_eq!(
        model["input"]["jpeg_dct_scaling"],
        golden["jpeg_dct_scaling"]
    );
    assert_eq!(model["onnxruntime_version"], "1.31.1");

    // Request ids: echoed when valid, generated otherwise.
    let r = c
        .get(s.url("/livez"))
        .header("x-request-id", "test-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "test-123");
    let r = c.get(s.url("/livez")).send().await.unwrap();
    assert!(!r.headers()["x-request-id"].is_empty());

    c.post(s.url("/predict"))
        .body(fixture("saturn.webp"))
        .send()
        .await
        .unwrap();
    let m = c.get(s.url("/metrics")).send().await.unwrap();
    assert!(
        m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let m = m.text().await.unwrap();
    for needle in [
        "celestial_http_requests_total{route=\"/predict\",method=\"POST\",status=\"200\"} 1",
        "celestial_http_request_duration_seconds_bucket{route=\"/predict\",le=\"0.0001\"}",
        "celestial_http_request_duration_seconds_bucket{route=\"/predict\",le=\"10\"} 1",
        "celestial_http_requests_in_flight 1", // the /metrics request itself
        "celestial_preprocess_seconds_count 1",
        "celestial_inference_seconds_count 1",
        "celestial_predictions_total{label=\"Saturn\"} 1",
        "celestial_build_info{",
        "celestial_ready 1",
    ] {
        assert!(m.contains(needle), "metrics lack {needle}:\n{m}");
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn overload_gets_429_with_retry_after_and_slow_requests_get_504() {
    let slow_fake = || Some(Arc::new(FakeClassifier::slow(Duration::from_millis(1500))) as _);
    let s = start_with(
        &["--max-concurrency", "1", "--retry-after-seconds", "3"],
        slow_fake(),
    )
    .await;
    let c = client();
    let jpeg = fixture("saturn.webp");
    let slow = tokio::spawn({
        let (c, url, body) = (c.clone(), s.url("/predict"), jpeg.clone());
        async move {
            c.post(url)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = c
        .post(s.url("/predict"))
        .body(jpeg.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(error_of(r).await.1, "overloaded");
    // Health checks are not subject to the limit.
    assert_eq!(c.get(s.url("/readyz")).send().await.unwrap().status(), 200);
    assert_eq!(slow.await.unwrap(), 200);
    s.stop().await.unwrap();

    let s = start_with(&["--request-timeout", "300ms"], slow_fake()).await;
    let r = c.post(s.url("/predict")).body(jpeg).send().await.unwrap();
    let (status, code, _) = error_of(r).await;
    assert_eq!((status, code.as_str()), (504, "timeout"));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn drain_serves_with_connection_close_while_in_flight_requests_finish() {
    let slow_fake = Arc::new(FakeClassifier::slow(Duration::from_secs(2)));
    let mut s = start_with(
        &["--drain-delay", "1s", "--shutdown-timeout", "10s"],
        Some(slow_fake),
    )
    .await;
    let c = client();
    let slow = tokio::spawn({
        let (c, url, body) = (c.clone(), s.url("/predict"), fixture("saturn.webp"));
        async move {
            let r = c.post(url).body(body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.signal();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // During the drain delay: not ready, but still serving, each answer closing its connection.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let (status, code, _) = error_of(fresh.get(s.url("/readyz")).send().await.unwrap()).await;
    assert_eq!((status, code.as_str()), (503, "draining"));
    let r = fresh
        .post(s.url("/predict"))
        .body(fixture("saturn.webp"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["connection"], "close");
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200, "in-flight request completes");
    assert!(
        LABELS.contains(&body["prediction"].as_str().unwrap()),
        "{body}"
    );
    tokio::time::timeout(Duration::from_secs(10), s.finished())
        .await
        .expect("run returns")
        .unwrap();
}

#[tokio::test]
async fn concurrent_clients_all_succeed() {
    let s = start(&["--workers", "2"]).await;
    let c = client();
    let body = fixture("saturn-cmyk.jpg");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, url, body) = (c.clone(), s.url("/predict"), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut labels = Vec::new();
            for _ in 0..5 {
                let r = c
                    .post(&url)
                    .multipart(multipart_image(body.clone(), "s.jpg", "image/jpeg"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                labels.push(
                    r.json::<Value>().await.unwrap()["prediction"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                );
            }
            labels
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().iter().all(|l| l == "Saturn"));
    }
    s.stop().await.unwrap();
}
