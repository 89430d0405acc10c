//! The drift monitor through HTTP with the real model: 200 grayscale pictures raise its alert, 200 clean
//! ones do not; probe requests (`celestial-probe`) stay out of it and of the answer metrics; a
//! model without a reference (or `--no-drift`) has it off; `/model/drift` follows `/model`'s
//! access rule.

use celestial_server::model::EMBEDDED_MODEL;
use celestial_server::routes;
use serde_json::Value;

use crate::common::{self, TestServer, onnx_metadata};

/// The 150 validation pictures the model's drift reference leaves out (odd positions of each
/// class in validation-split.txt, as `model/celestial/drift_reference.py` splits it).
fn held_out(test: &str) -> Option<Vec<Vec<u8>>> {
    let raw = common::dataset(test)?;
    let split = std::fs::read_to_string(common::model_dir().join("validation-split.txt")).unwrap();
    let mut seen = std::collections::HashMap::new();
    let mut out = Vec::new();
    for rel in split.lines().filter(|l| !l.is_empty()) {
        let class = rel.split('/').next().unwrap();
        let i = seen.entry(class).or_insert(0);
        if *i % 2 == 1 {
            out.push(std::fs::read(raw.join(rel)).unwrap());
        }
        *i += 1;
    }
    assert_eq!(out.len(), 150);
    Some(out)
}

/// `jpeg` in grayscale (luma, three equal channels), as a JPEG of quality 95.
fn grayscale(jpeg: &[u8]) -> Vec<u8> {
    let img = image::load_from_memory(jpeg).unwrap().grayscale().to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&img)
        .unwrap();
    out
}

/// POST `pictures` to /predict/batch, 50 at a time, with `headers`.
async fn send(s: &TestServer, pictures: &[Vec<u8>], headers: &[(&str, &str)]) {
    let c = reqwest::Client::new();
    for chunk in pictures.chunks(50) {
        let mut form = reqwest::multipart::Form::new();
        for (i, p) in chunk.iter().enumerate() {
            let part = reqwest::multipart::Part::bytes(p.clone())
                .file_name(format!("{i}.jpg"))
                .mime_str("image/jpeg")
                .unwrap();
            form = form.part("image", part);
        }
        let mut req = c.post(s.url(routes::PREDICT_BATCH)).multipart(form);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
}

fn alerts(drift: &Value) -> Vec<String> {
    drift["signals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["alert"] == true)
        .map(|s| s["signal"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn grayscale_pictures_raise_the_alert_and_clean_ones_do_not() {
    let Some(clean) = held_out("grayscale_pictures_raise_the_alert_and_clean_ones_do_not") else {
        return;
    };
    // A window of 200 (the default is 400) halves the pictures this test sends.
    let s = common::start(&["--drift-window", "200"]).await;
    let c = reqwest::Client::new();
    let before = common::get_json(&c, &s, routes::MODEL_DRIFT).await;
    assert_eq!(
        (before["enabled"].clone(), before["scored"].clone()),
        (true.into(), false.into())
    );
    assert_eq!(before["window"], 200, "{before}");
    // 200 clean answers: every held-out picture, 50 of them twice (a stride through the classes,
    // as traffic repeats itself)
    let stream: Vec<Vec<u8>> = (0..200).map(|i| clean[i * 37 % 150].clone()).collect();
    send(&s, &stream, &[]).await;
    let drift = common::get_json(&c, &s, routes::MODEL_DRIFT).await;
    assert_eq!(
        (drift["scored"].clone(), drift["window_answers"].clone()),
        (true.into(), 200.into()),
        "{drift}"
    );
    assert_eq!(
        alerts(&drift),
        Vec::<String>::new(),
        "clean pictures: {drift}"
    );
    let names: Vec<&str> = drift["signals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["signal"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["labels", "confidence", "unknown", "brightness", "colour"]
    );
    // then 200 grayscale ones: the window is all grayscale
    let gray: Vec<Vec<u8>> = stream.iter().map(|p| grayscale(p)).collect();
    send(&s, &gray, &[]).await;
    let drift = common::get_json(&c, &s, routes::MODEL_DRIFT).await;
    assert!(alerts(&drift).contains(&"colour".to_string()), "{drift}");
    let colour = drift["signals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["signal"] == "colour")
        .unwrap();
    assert!(
        colour["score"].as_f64().unwrap() >= 1.0 && colour["worst"].is_string(),
        "{colour}"
    );
    let metrics = common::get_text(&c, &s, routes::METRICS).await;
    assert_eq!(
        common::metric(&metrics, r#"celestial_drift_alert{signal="colour"}"#),
        Some(1.0)
    );
    let score = common::metric(&metrics, r#"celestial_drift_score{signal="colour"}"#).unwrap();
    assert_eq!(score, colour["score"].as_f64().unwrap());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn probes_stay_out_of_the_answer_metrics_and_the_drift_windows() {
    let s = common::start(&[]).await;
    let c = reqwest::Client::new();
    let saturn = common::fixture("saturn-progressive.jpg");
    let probe = [("celestial-probe", "evaluation")];
    send(&s, &vec![saturn.clone(); 3], &probe).await;
    let r = c
        .post(s.url(routes::PREDICT))
        .header("celestial-probe", "")
        .header("content-type", "image/jpeg")
        .body(saturn.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let metrics = common::get_text(&c, &s, routes::METRICS).await;
    let m = |series: &str| common::metric(&metrics, series);
    assert_eq!(
        m(r#"celestial_predictions_total{label="Saturn"}"#),
        Some(0.0)
    );
    assert_eq!(m("celestial_prediction_confidence_count"), Some(0.0));
    assert_eq!(
        m(r#"celestial_http_requests_total{route="/predict/batch",method="POST",status="200"}"#),
        Some(1.0),
        "still a request"
    );
    assert_eq!(
        m(r#"celestial_http_requests_total{route="/predict",method="POST",status="200"}"#),
        Some(1.0)
    );
    assert_eq!(
        common::get_json(&c, &s, routes::MODEL_DRIFT).await["answers"],
        0
    );
    // the same picture without the header counts everywhere
    send(&s, &[saturn], &[]).await;
    let metrics = common::get_text(&c, &s, routes::METRICS).await;
    let m = |series: &str| common::metric(&metrics, series);
    assert_eq!(
        m(r#"celestial_predictions_total{label="Saturn"}"#),
        Some(1.0)
    );
    assert_eq!(m("celestial_prediction_confidence_count"), Some(1.0));
    assert_eq!(
        m(r#"celestial_prediction_confidence_bucket{le="+Inf"}"#),
        Some(1.0)
    );
    assert_eq!(
        common::get_json(&c, &s, routes::MODEL_DRIFT).await["answers"],
        1
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_reference_or_with_no_drift_the_monitor_is_off_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let stripped = onnx_metadata::with(EMBEDDED_MODEL, "celestial.drift", None);
    assert_eq!(onnx_metadata::get(&stripped, "celestial.drift"), None);
    assert!(onnx_metadata::get(EMBEDDED_MODEL, "celestial.drift").is_some());
    let path = dir.path().join("no-reference.onnx");
    std::fs::write(&path, stripped).unwrap();
    let c = reqwest::Client::new();
    for (args, why) in [
        (
            vec!["--model", path.to_str().unwrap()],
            "no drift reference",
        ),
        (vec!["--no-drift"], "--no-drift"),
    ] {
        let s = common::start(&args).await;
        send(&s, &[common::fixture("saturn-progressive.jpg")], &[]).await;
        let drift = common::get_json(&c, &s, routes::MODEL_DRIFT).await;
        assert_eq!(drift["enabled"], false, "{drift}");
        assert!(drift["reason"].as_str().unwrap().contains(why), "{drift}");
        assert_eq!(drift["signals"], serde_json::json!([]));
        let metrics = common::get_text(&c, &s, routes::METRICS).await;
        assert!(!metrics.contains("celestial_drift_score"), "{metrics}");
        assert!(
            metrics.contains("celestial_prediction_confidence_count 1"),
            "{metrics}"
        );
        s.stop().await.unwrap();
    }
}

#[tokio::test]
async fn the_drift_route_follows_the_model_route_s_key_rule() {
    let key = "drift-test-key-0123456789abcdef";
    let s = common::start(&["--api-keys", key, "--api-key-scope", "model"]).await;
    let c = reqwest::Client::new();
    for route in [routes::MODEL, routes::MODEL_DRIFT] {
        let r = c.get(s.url(route)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{route}");
        let r = c.get(s.url(route)).bearer_auth(key).send().await.unwrap();
        assert_eq!(r.status(), 200, "{route}");
    }
    s.stop().await.unwrap();
}
