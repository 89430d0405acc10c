//! The model contract: golden preprocessing fixtures (model/golden.json and the guide-recipe one),
//! the `--model` path with flags for a model without metadata, refusing unservable models, and
//! accuracy over HTTP on the validation split.

mod common;

use std::time::Duration;

use base64::Engine as _;
use celestial_server::Classifier;
use celestial_server::model::ModelOverrides;
use celestial_server::model::ModelSpec;
use celestial_server::preprocess;
use common::model_dir;
use serde_json::Value;
use sha2::{Digest, Sha256};

fn load_json(path: &std::path::Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("golden file")).expect("golden JSON")
}

/// The spec of the embedded model as the server resolves it (via a running server's /model would
/// need HTTP; here we rebuild it from the same metadata through the engine).
fn engine_spec(args: &[&str]) -> std::sync::Arc<ModelSpec> {
    let config = celestial_server::Config::from_args(args.iter().copied()).unwrap();
    let engine = celestial_server::load_engine(&config).expect("model loads");
    std::sync::Arc::clone(engine.spec())
}

fn tensor_sha256(t: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in t {
        h.update(v.to_le_bytes());
    }
    hex::encode(h.finalize())
}

/// Pixels within tolerance, bit-identical tensor from the golden pixels, identical prediction.
fn check_golden(golden_path: &std::path::Path, args: &[&str], gray: bool) {
    let Some(dataset) = common::dataset("golden fixtures") else {
        return;
    };
    let golden = load_json(golden_path);
    let spec = engine_spec(args);
    let tol = &golden["tolerance"];
    let max_abs = tol["pixel_max_abs"].as_f64().unwrap();
    let mean_abs = tol["pixel_mean_abs"].as_f64().unwrap();
    let labels: Vec<String> = golden["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    assert_eq!(spec.labels, labels);
    let images = golden["images"].as_array().unwrap();
    assert!(!images.is_empty());
    let config = celestial_server::Config::from_args(args.iter().copied()).unwrap();
    let engine = celestial_server::load_engine(&config).unwrap();
    let mut session = engine
        .new_worker(&celestial_server::model_bytes(&config).unwrap(), 1)
        .unwrap();
    for case in images {
        let name = case["image"].as_str().unwrap();
        let bytes = std::fs::read(dataset.join(name)).unwrap();
        let img = preprocess::decode(&bytes, u64::MAX).unwrap();
        let ours: Vec<u8> = if gray {
            preprocess::resize_gray(&img, &spec).into_raw()
        } else {
            preprocess::resize_rgb(&img, &spec).into_raw()
        };
        let key = if gray {
            "pixels_gray8_base64"
        } else {
            "pixels_rgb8_base64"
        };
        let theirs = base64::engine::general_purpose::STANDARD
            .decode(case[key].as_str().unwrap())
            .unwrap();
        assert_eq!(ours.len(), theirs.len(), "{name}: pixel count");
        let diffs: Vec<f64> = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
            .collect();
        let max = diffs.iter().copied().fold(0.0, f64::max);
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        assert!(
            max <= max_abs && mean <= mean_abs,
            "{name}: pixel diff max {max} mean {mean} over tolerance {max_abs}/{mean_abs}"
        );
        // JPEGs are decoded by libjpeg-turbo with Pillow's defaults, as the fixtures were: only the
        // resize's last-bit rounding may differ (measured: max 1, mean 0.03-0.13 over both fixture sets).
        assert!(
            max <= 1.0,
            "{name}: decoded like Pillow, the pixels differ by at most 1 (got {max})"
        );

        // The tensor from exactly the golden pixels is bit-identical.
        let golden_img = if gray {
            image::DynamicImage::ImageLuma8(
                image::GrayImage::from_raw(spec.width, spec.height, theirs.clone()).unwrap(),
            )
        } else {
            image::DynamicImage::ImageRgb8(
                image::RgbImage::from_raw(spec.width, spec.height, theirs.clone()).unwrap(),
            )
        };
        let mut tensor = vec![0f32; spec.tensor_len()];
        preprocess::fill_tensor(&golden_img, &spec, &mut tensor);
        if !gray {
            // (The guide fixture's tensor is p/255, which differs from p*(1/255) in the last bit.)
            assert_eq!(
                tensor_sha256(&tensor),
                case["tensor_sha256"].as_str().unwrap(),
                "{name}: tensor"
            );
        }

        // Prediction from our own decoding is identical; logits close.
        let out = engine
            .predict_blocking(&[bytes.into()], &mut session)
            .unwrap();
        let p = out.results[0].as_ref().unwrap();
        assert_eq!(
            spec.labels[p.best],
            case["prediction"].as_str().unwrap(),
            "{name}: prediction"
        );
        let want: Vec<f64> = case["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        for (a, b) in p.probabilities.iter().zip(&want) {
            assert!(
                (f64::from(*a) - b).abs() < 0.05,
                "{name}: probabilities {:?} vs {want:?}",
                p.probabilities
            );
        }
    }
}

#[test]
fn golden_fixtures_of_the_served_model() {
    check_golden(&model_dir().join("golden.json"), &[], false);
}

const GUIDE_FLAGS: [&str; 4] = [
    "--labels",
    "Earth,Jupiter,Mars,Mercury,Moon,Neptune,Pluto,Saturn,Uranus,Venus",
    "--model-name",
    "guide-recipe",
];

fn guide_args() -> Vec<String> {
    let mut a = vec![
        "--model".to_string(),
        model_dir()
            .join("testdata/guide-recipe.onnx")
            .display()
            .to_string(),
    ];
    a.extend(GUIDE_FLAGS.iter().map(|s| s.to_string()));
    a
}

#[test]
fn golden_fixtures_of_the_guide_recipe_model_served_with_flags() {
    let args = guide_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let spec = engine_spec(&args);
    assert_eq!((spec.height, spec.width, spec.channels()), (32, 32, 1));
    assert_eq!(spec.layout, celestial_server::model::Layout::Nhwc);
    check_golden(
        &model_dir().join("testdata/guide-recipe-golden.json"),
        &args,
        true,
    );
}

#[tokio::test]
async fn guide_recipe_model_over_http() {
    let args = guide_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let s = common::start(&args).await;
    let c = reqwest::Client::new();
    let model: Value = c
        .get(s.url("/model"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["name"], "guide-recipe");
    assert_eq!(model["input"]["color_mode"], "grayscale");
    assert_eq!(model["input"]["layout"], "NHWC");
    let r = c
        .post(s.url("/predict"))
        .body(common::fixture("saturn-progressive.jpg"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["probabilities"].as_object().unwrap().len(), 10);
    s.stop().await.unwrap();
}

#[test]
fn unservable_models_are_refused_with_a_reason() {
    // No metadata and no --labels.
    let path = model_dir().join("testdata/guide-recipe.onnx");
    let c = celestial_server::Config::from_args(["--model", path.to_str().unwrap()]).unwrap();
    let e = celestial_server::load_engine(&c)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("--labels"), "{e}");
    // Wrong label count.
    let c = celestial_server::Config::from_args([
        "--model",
        path.to_str().unwrap(),
        "--labels",
        "a,b,c",
    ])
    .unwrap();
    let e = celestial_server::load_engine(&c)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("10 classes") && e.contains("3 labels"), "{e}");
    // Not a model at all / missing file.
    let junk = std::env::temp_dir().join(format!("celestial-junk-{}.onnx", std::process::id()));
    std::fs::write(&junk, b"not an onnx model").unwrap();
    let c = celestial_server::Config::from_args(["--model", junk.to_str().unwrap()]).unwrap();
    let e = celestial_server::load_engine(&c)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("cannot load the model"), "{e}");
    let _ = std::fs::remove_file(&junk);
    let c = celestial_server::Config::from_args(["--model", "/nonexistent/model.onnx"]).unwrap();
    let e = celestial_server::load_engine(&c)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        e.contains("cannot read model file /nonexistent/model.onnx"),
        "{e}"
    );
    // Flags that contradict the model.
    let c = celestial_server::Config::from_args(["--input-height", "32"]).unwrap();
    assert!(celestial_server::load_engine(&c).is_err());
    let _ = ModelOverrides::default();
}

/// Top-1 accuracy over HTTP on model/validation-split.txt equals the model card's figure
/// (`celestial.validation_accuracy`), within one image.
#[tokio::test]
async fn validation_accuracy_over_http() {
    let Some(dataset) = common::dataset("validation_accuracy_over_http") else {
        return;
    };
    let split = std::fs::read_to_string(model_dir().join("validation-split.txt")).unwrap();
    let paths: Vec<&str> = split
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let s = common::start(&[]).await;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let model: Value = c
        .get(s.url("/model"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let card = model["validation_accuracy"]
        .as_f64()
        .expect("model card accuracy in metadata");
    let mut correct = 0usize;
    for rel in &paths {
        let label = rel.split('/').next().unwrap();
        let bytes = std::fs::read(dataset.join(rel)).unwrap();
        let form = common::multipart_image(bytes, rel.rsplit('/').next().unwrap(), "image/jpeg");
        let r = c
            .post(s.url("/predict"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{rel}");
        let v: Value = r.json().await.unwrap();
        if v["prediction"] == label {
            correct += 1;
        }
    }
    let accuracy = correct as f64 / paths.len() as f64;
    eprintln!(
        "validation accuracy over HTTP: {correct}/{} = {accuracy:.4} (model card {card:.4})",
        paths.len()
    );
    assert!(
        (accuracy - card).abs() <= 1.0 / paths.len() as f64 + 1e-9,
        "accuracy {accuracy} vs model card {card}"
    );
    s.stop().await.unwrap();
}

/// The answers of `/predict` for `images` (each sent as the raw body), all at once: (status, JSON).
async fn predict_all(
    s: &celestial_server::testing::TestServer,
    images: &[Vec<u8>],
) -> Vec<(u16, Value)> {
    let c = reqwest::Client::new();
    let sends = images.iter().map(|bytes| {
        let req = c.post(s.url("/predict")).body(bytes.clone());
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    });
    futures_util::future::join_all(sends).await
}

/// `celestial_inference_batch_images` from `/metrics`: (sum, count).
async fn batch_metrics(s: &celestial_server::testing::TestServer) -> (f64, f64) {
    let text = reqwest::get(s.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics"))
    };
    (
        value("celestial_inference_batch_images_sum "),
        value("celestial_inference_batch_images_count "),
    )
}

#[tokio::test]
async fn adaptive_batches_answer_every_request_as_if_it_ran_alone() {
    // Different pictures (and one that is not an image) so a mix-up between requests would show.
    let mut images: Vec<Vec<u8>> = [
        "saturn-progressive.jpg",
        "saturn-cmyk.jpg",
        "saturn-exif-rotated.jpg",
        "saturn.webp",
        "saturn-lossless.webp",
    ]
    .iter()
    .map(|f| common::fixture(f))
    .collect();
    images.push(common::synthetic(image::ImageFormat::Png));
    images.push(common::synthetic_sized(300, 200, image::ImageFormat::Jpeg));
    images.push(b"not an image at all".to_vec());
    let alone = common::start(&["--workers", "1", "--max-batch-size", "1"]).await;
    let mut expected = Vec::new();
    for image in &images {
        expected.extend(predict_all(&alone, std::slice::from_ref(image)).await);
    }
    let (sum, count) = batch_metrics(&alone).await;
    assert_eq!(
        (sum, count),
        (images.len() as f64 - 1.0, images.len() as f64 - 1.0),
        "--max-batch-size 1 runs every job alone (the non-image runs nothing)"
    );
    alone.stop().await.unwrap();

    // One worker that waits up to 300 ms for more: the requests sent at once share its calls.
    let batched = common::start(&[
        "--workers",
        "1",
        "--max-batch-size",
        "8",
        "--max-batch-delay",
        "300ms",
    ])
    .await;
    let got = predict_all(&batched, &images).await;
    for (i, ((status, answer), (want_status, want))) in got.iter().zip(&expected).enumerate() {
        assert_eq!(status, want_status, "image {i}: {answer}");
        if *status != 200 {
            assert_eq!(answer["code"], want["code"], "image {i}");
            continue;
        }
        assert_eq!(answer["prediction"], want["prediction"], "image {i}");
        for (label, p) in want["probabilities"].as_object().unwrap() {
            let q = answer["probabilities"][label].as_f64().unwrap();
            assert!(
                (q - p.as_f64().unwrap()).abs() < 1e-5,
                "image {i} {label}: {q} vs {p}"
            );
        }
    }
    let (sum, count) = batch_metrics(&batched).await;
    assert_eq!(
        count,
        images.len() as f64 - 1.0,
        "one observation per job that ran"
    );
    assert!(
        sum > count,
        "no job shared an ONNX Runtime call: sum {sum}, count {count}"
    );
    batched.stop().await.unwrap();
}
