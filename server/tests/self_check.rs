//! The start-up self-check against the golden set the model carries (`celestial.golden`): the
//! committed model passes it and says so on `/model` and `/metrics`; a copy whose labels are
//! permuted in its metadata (an export slip that today would serve 0 of 10 images right) stops
//! the binary with exit status 3 before `/readyz` ever answers 200, with the one-line reason on
//! stderr and in the termination log; a model without a golden set is served with a warning.

use crate::binary::{Spawned, free_port, get, spawn, stderr_of, stop, wait_ready};
use crate::common::{self, onnx_metadata};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use celestial_server::ServerError;
use celestial_server::model::EMBEDDED_MODEL;
use serde_json::Value;

/// The exit status of a failed self-check, as `deployer` reads it.
const MODEL_CHECK_FAILED: i32 = celestial_common::server_exit::MODEL_CHECK_FAILED;

/// The golden set the embedded model carries, as its metadata says.
fn golden_set() -> Value {
    let text = onnx_metadata::get(EMBEDDED_MODEL, "celestial.golden").expect("celestial.golden");
    serde_json::from_str(&text).unwrap()
}

fn labels() -> Vec<String> {
    let text = onnx_metadata::get(EMBEDDED_MODEL, "celestial.labels").expect("celestial.labels");
    serde_json::from_str(&text).unwrap()
}

/// The embedded model with its labels rotated by one in the metadata (every label names the next
/// class): graph, weights and golden set untouched, written to `dir`.
fn permuted_model(dir: &Path) -> PathBuf {
    let mut rotated = labels();
    rotated.rotate_left(1);
    let bytes = onnx_metadata::with(
        EMBEDDED_MODEL,
        "celestial.labels",
        Some(&serde_json::to_string(&rotated).unwrap()),
    );
    assert_eq!(
        onnx_metadata::get(&bytes, "celestial.golden"),
        onnx_metadata::get(EMBEDDED_MODEL, "celestial.golden"),
        "only the labels change"
    );
    let path = dir.join("permuted-labels.onnx");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[tokio::test]
async fn the_committed_model_passes_its_self_check_and_says_so() {
    let images = golden_set()["images"].as_array().unwrap().len();
    assert!(images >= 10, "one image per class at least: {images}");
    let s = common::start(&[]).await;
    let c = reqwest::Client::new();
    let model = common::get_json(&c, &s, "/model").await;
    let check = &model["self_check"];
    assert_eq!(check["status"], "passed", "{model}");
    assert_eq!(check["images"], images, "{check}");
    let diff = check["max_logit_diff"].as_f64().unwrap();
    // Pixels resized by image-rs's float triangle filter within one level of Pillow's fixed-point
    // one move the logits (measured 0.0099 with model v2 and 0.041 with the first v3, whose logits
    // are larger; 0.098 with the re-framing v3, whose class images are resized from the square
    // around the body). Under the largest tolerance in the golden set.
    let tolerance = golden_set()["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["logit_max_abs"].as_f64())
        .fold(0.0, f64::max);
    assert!(
        diff > 0.0 && diff < tolerance,
        "{check} (tolerance {tolerance})"
    );
    let seconds = check["seconds"].as_f64().unwrap();
    assert!(seconds > 0.0 && seconds < 5.0, "{check}");
    eprintln!("self-check: {images} images, max logit diff {diff:.2e}, {seconds:.4} s");
    let metrics = common::get_text(&c, &s, "/metrics").await;
    assert_eq!(
        common::metric(&metrics, "celestial_model_self_check_images"),
        Some(images as f64)
    );
    assert_eq!(
        common::metric(&metrics, "celestial_model_self_check_max_logit_diff"),
        Some(diff)
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn permuted_labels_fail_the_check_in_process_unless_a_flag_puts_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let model = permuted_model(dir.path());
    let model = model.to_str().unwrap();
    let config = celestial_server::Config::from_args(["--model", model]).unwrap();
    let e = match common::TestServer::start(config, None).await {
        Ok(_) => panic!("a model with permuted labels became ready"),
        Err(e) => e,
    };
    assert!(matches!(e, ServerError::SelfCheck(_)), "{e}");
    assert_eq!(i32::from(e.exit_code()), MODEL_CHECK_FAILED);
    // The check judges what is served: with the right labels as a flag, the same file passes.
    let right = labels().join(",");
    let s = common::start(&["--model", model, "--labels", &right]).await;
    let m = common::get_json(&reqwest::Client::new(), &s, "/model").await;
    assert_eq!(m["self_check"]["status"], "passed", "{m}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_slipped_decode_rule_or_resize_filter_fails_the_check() {
    // What an export that wrote the wrong preprocessing would serve, here through the override
    // flags: the decode cases disagree.
    for flags in [
        ["--jpeg-dct-scaling", "full"],
        ["--resize-filter", "nearest"],
        ["--resize-filter", "lanczos3"],
    ] {
        let config = celestial_server::Config::from_args(flags).unwrap();
        let e = match common::TestServer::start(config, None).await {
            Ok(_) => panic!("{flags:?}: ready"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains("golden images (celestial.golden) disagree") && e.contains("> tolerance"),
            "{flags:?}: {e}"
        );
    }
}

#[tokio::test]
async fn a_model_that_forgot_its_re_framing_fails_the_check() {
    // The embedded model's metadata with `stretch` for `content_square`: pictures reach the
    // network whole, the body smaller than in training. Every class image and decode case is
    // checked; enough of them move past the tolerance that the server refuses to start.
    assert_eq!(
        onnx_metadata::get(EMBEDDED_MODEL, "celestial.resize_mode").as_deref(),
        Some("content_square")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stretch.onnx");
    let bytes = onnx_metadata::with(EMBEDDED_MODEL, "celestial.resize_mode", Some("stretch"));
    std::fs::write(&path, bytes).unwrap();
    let config = celestial_server::Config::from_args(["--model", path.to_str().unwrap()]).unwrap();
    let e = match common::TestServer::start(config, None).await {
        Ok(_) => panic!("ready with the wrong resize mode"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("golden images (celestial.golden) disagree"),
        "{e}"
    );
}

#[test]
fn permuted_labels_stop_the_binary_before_ready_with_status_3_and_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = permuted_model(dir.path());
    let termination = dir.path().join("termination-log");
    let port = free_port();
    let mut server = Spawned(spawn(&[
        "--model",
        model.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--log-filter",
        "off",
        "--termination-log",
        termination.to_str().unwrap(),
    ]));
    let child = &mut server.0;
    // Probe /readyz as a kubelet would, only faster, until the process exits.
    let started = Instant::now();
    let mut probes = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Ok((code, text)) = get(port, "/readyz") {
            assert_ne!(code, 200, "ready with permuted labels: {text}");
        }
        probes += 1;
        assert!(started.elapsed() < Duration::from_secs(30), "still running");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(status.code(), Some(MODEL_CHECK_FAILED), "{status}");
    let err = stderr_of(child);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line:\n{err}");
    let line = lines[0];
    // Every class image is now predicted as the next label's name.
    let (classes, total) = (
        labels().len(),
        golden_set()["images"].as_array().unwrap().len(),
    );
    let (first, second) = (&labels()[0], &labels()[1]);
    assert!(
        line.starts_with(&format!(
            "celestial-server: error: model self-check failed: {classes} of {total} golden images \
             (celestial.golden) disagree with the model as served: "
        )),
        "{line}"
    );
    assert!(
        line.contains(&format!("prediction {second}, expected {first}")),
        "{line}"
    );
    assert!(line.len() < 1024, "{} bytes: {line}", line.len());
    assert_eq!(
        std::fs::read_to_string(&termination).unwrap(),
        format!("{line}\n"),
        "the termination log has the same line"
    );
    eprintln!("{probes} probes, none 200; {line}");
}

#[test]
fn a_model_without_a_golden_set_is_served_with_a_warning() {
    let guide = common::model_dir().join("testdata/guide-recipe.onnx");
    let labels = labels().join(",");
    let port = free_port();
    let mut server = Spawned(spawn(&[
        "--model",
        guide.to_str().unwrap(),
        "--labels",
        &labels,
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--log-filter",
        "warn",
    ]));
    let child = &mut server.0;
    wait_ready(port, child);
    let (code, body) = get(port, "/model").unwrap();
    assert_eq!(code, 200, "{body}");
    let json = body.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let model: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(model["self_check"], serde_json::json!({"status": "absent"}));
    let (_, metrics) = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("\ncelestial_model_self_check_images 0\n"),
        "{metrics}"
    );
    // SIGTERM, then the log: the warning was written at start.
    let logs = stop(child);
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains("no golden set (celestial.golden)")
            && l.contains("without a start-up self-check")),
        "{logs}"
    );
}

#[tokio::test]
async fn the_embedded_model_without_its_golden_set_is_served_unchecked() {
    let stripped = onnx_metadata::with(EMBEDDED_MODEL, "celestial.golden", None);
    assert_eq!(onnx_metadata::get(&stripped, "celestial.golden"), None);
    assert_eq!(
        onnx_metadata::metadata(&stripped).len() + 1,
        onnx_metadata::metadata(EMBEDDED_MODEL).len(),
        "only the golden set is gone"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("without-golden-set.onnx");
    std::fs::write(&path, stripped).unwrap();
    let s = common::start(&["--model", path.to_str().unwrap()]).await;
    let m = common::get_json(&reqwest::Client::new(), &s, "/model").await;
    assert_eq!(m["self_check"], serde_json::json!({"status": "absent"}));
    s.stop().await.unwrap();
}
