//! Helpers shared by the integration tests: start the server in-process on port 0 (with the
//! library's [`TestServer`]), locate the repository's model files and the dataset.
#![allow(dead_code)]

pub mod onnx_metadata;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use celestial_server::{Classifier, Config};

pub use celestial_server::testing::TestServer;

/// The real server (ONNX Runtime, the model the flags name) in-process, started with `args`.
pub async fn start(args: &[&str]) -> TestServer {
    start_with(args, None).await
}

/// `classifier` (the real model when `None`) served in-process with `args`.
pub async fn start_with(args: &[&str], classifier: Option<Arc<dyn Classifier>>) -> TestServer {
    let config = Config::from_args(args.iter().copied()).expect("valid test flags");
    TestServer::start(config, classifier)
        .await
        .unwrap_or_else(|e| panic!("the test server did not start: {e}"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn model_dir() -> PathBuf {
    repo_root().join("model")
}

/// model/golden.json: what the training run wrote about the embedded model (version, input
/// shape, decode rule, outputs), the one source tests compare the server's answers with.
pub fn golden() -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(model_dir().join("golden.json")).expect("golden.json"))
        .expect("golden JSON")
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .expect("fixture")
}

/// `$CELESTIAL_DATASET` or `../shared/dataset` next to the repository; `None` (and a printed
/// SKIP line) when absent.
pub fn dataset(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("CELESTIAL_DATASET").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => repo_root().join("../shared/dataset"),
    };
    if dir.join("raw").is_dir() {
        Some(dir.join("raw"))
    } else {
        eprintln!(
            "SKIP {test}: dataset not found at {} (set CELESTIAL_DATASET)",
            dir.display()
        );
        None
    }
}

/// A dataset image by relative path (e.g. `Earth/Earth_101.jpg`).
pub fn dataset_image(test: &str, rel: &str) -> Option<Vec<u8>> {
    dataset(test).map(|d| std::fs::read(d.join(rel)).expect("dataset image"))
}

pub fn multipart_image(bytes: Vec<u8>, file_name: &str, mime: &str) -> reqwest::multipart::Form {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(file_name.to_string())
        .mime_str(mime)
        .unwrap();
    reqwest::multipart::Form::new().part("image", part)
}

/// A 128x128 test picture (gradient), encoded in `format`.
pub fn synthetic(format: image::ImageFormat) -> Vec<u8> {
    synthetic_sized(128, 128, format)
}

/// A `w` x `h` gradient picture encoded in `format`.
pub fn synthetic_sized(w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 2) as u8, 128])
    }));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// `GET path` on `s` with the client `c`, as text.
pub async fn get_text(c: &reqwest::Client, s: &TestServer, path: &str) -> String {
    c.get(s.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of `series` (a metric's name with its labels, as `/metrics` renders them; trailing
/// spaces ignored) in a metrics text; `None` when absent.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    let series = series.trim_end();
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `GET path` on `s` with the client `c`, as JSON.
pub async fn get_json(c: &reqwest::Client, s: &TestServer, path: &str) -> serde_json::Value {
    c.get(s.url(path))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub async fn error_of(resp: reqwest::Response) -> (u16, String, String) {
    let status = resp.status().as_u16();
    let v: serde_json::Value = resp.json().await.expect("JSON error body");
    (
        status,
        v["code"].as_str().unwrap_or("").to_string(),
        v["error"].as_str().unwrap_or("").to_string(),
    )
}
