//! The canary on the real nodes of the test environment (tests/env/): a model that is right on
//! clean evaluation images but answers differently on live traffic is aborted by the canary
//! analysis, with exit 8 and the signal that decided, while every client request is answered.
//!
//! The shipped model (2.x) serves; `model/testdata/v1-celestial-bodies.onnx` (1.0.0) is released
//! with `--canary` while a client sends dim photographs of the dataset (each pixel at 35 %)
//! through the public URL. On clean images v1 is as right as the shipped model (the evaluation
//! before traffic promotes it: 10/10 golden images); on dim ones it answers "Saturn" for most
//! bodies (measured with both servers on 200 dim dataset images: v1 19.9 % right, 141 of 201
//! answers "Saturn"; the shipped model 100 %), so the canary pods' predicted labels move against
//! the stable pods' on the same stream. A second client counts failed requests all along (target:
//! none, also while the canary's pods join and leave the Service).
//!
//! What the analysis makes of the numbers (each rule, the chi-squared test, its false-alarm rate)
//! is proven by the unit tests (`deployer/src/commands/canary/`); this test keeps the path through
//! the real components: kube-proxy splitting connections between the canary's and the stable pods,
//! the servers' own counters read through the API server's pod proxy, the canary's removal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use celestial_e2e::TestEnv;
use celestial_e2e::deployer::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::Value;
use tokio::task::JoinHandle;

const LABELS: [&str; 10] = [
    "Earth", "Jupiter", "Mars", "Mercury", "Moon", "Neptune", "Pluto", "Saturn", "Uranus", "Venus",
];

/// Dataset photographs of every body (the first 3 of each) at 35 % brightness, as PNG; None
/// without the shared dataset.
fn dim_photographs() -> Option<Vec<Vec<u8>>> {
    let photos: Vec<Vec<u8>> = LABELS
        .iter()
        .flat_map(|label| dataset_images(label, 3))
        .map(|jpeg| {
            let mut rgb = image::load_from_memory(&jpeg).unwrap().to_rgb8();
            for p in rgb.pixels_mut() {
                p.0 = p.0.map(|c| (f32::from(c) * 0.35) as u8);
            }
            let mut png = Vec::new();
            rgb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            png
        })
        .collect();
    (photos.len() == 30).then_some(photos)
}

/// The stream's stop flag and its clients, each ending with (answers, failures).
type LiveStream = (Arc<AtomicBool>, Vec<JoinHandle<(usize, Vec<String>)>>);

/// The live stream: `clients` loops posting the photographs in turn through `url`, each request
/// on a new connection (kube-proxy picks a pod per connection, so the canary gets its share);
/// returns (answers, failures) once stopped.
fn live_stream(url: &str, photographs: Vec<Vec<u8>>, clients: usize) -> LiveStream {
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = (0..clients)
        .map(|i| {
            let (flag, url, photos) = (stop.clone(), url.to_string(), photographs.clone());
            tokio::spawn(async move {
                let (mut answers, mut failures) = (0, Vec::new());
                let mut n = i;
                while !flag.load(Ordering::Relaxed) {
                    let photo = &photos[n % photos.len()];
                    n += 1;
                    let client = connection_per_request_client();
                    let sent = client
                        .post(format!("{url}predict"))
                        .header("content-type", "image/png")
                        .body(photo.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 200 => answers += 1,
                        Ok(r) => failures.push(format!("HTTP {}", r.status())),
                        Err(e) => failures.push(e.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                (answers, failures)
            })
        })
        .collect();
    (stop, tasks)
}

/// The canary Deployment, if it is (still) there and not being deleted.
async fn canary_left(env: &TestEnv, ns: &str) -> Option<Deployment> {
    let api = Api::<Deployment>::namespaced(env.client().await.unwrap(), ns);
    api.get_opt(&format!("{DEPLOYMENT}-canary"))
        .await
        .unwrap()
        .filter(|d| d.metadata.deletion_timestamp.is_none())
}

#[tokio::test]
async fn a_model_that_answers_live_traffic_differently_is_aborted_by_its_canary() {
    let Some(dim) = dim_photographs() else {
        eprintln!("SKIPPED: the shared dataset (../shared/dataset or CELESTIAL_DATASET) is absent");
        return;
    };
    let env = TestEnv::get().await.expect("test environment");
    let (env, node) = env.real_node().await.expect("the real node");
    let ns = env.namespace("deployer-canary").await.unwrap();
    // as the CI account holding only the repository's Role: the canary's verbs must be in it
    let (_account, c) = least_privilege_args(&env, ns.name());
    let on_node = real_node_manifests(&node, str::to_string);
    let f = on_node.path().to_str().unwrap().to_string();
    let shipped = shipped_model();
    let v1 = celestial_e2e::repo_root().join("model/testdata/v1-celestial-bodies.onnx");
    let shipped_version = model_version(&shipped);

    // The shipped model serves.
    let (_inputs, mut release) = real_node_release(&env, "canary-shipped", on_node.path());
    set_arg(&mut release, "--model", shipped.to_str().unwrap());
    release.extend(c.iter().cloned());
    let r = run(release, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    let serving_image = j["pushed"]["image"].as_str().unwrap().to_string();
    let url = j["url"].as_str().unwrap().to_string();

    // v1 with a canary of a third, while dim photographs stream in and a steady client counts.
    let steady = keep_predicting(&url, &dataset_image_or_fixture("Mars"));
    let (stop, stream) = live_stream(&url, dim, 2);
    let (_inputs, mut release) = real_node_release(&env, "canary-v1", on_node.path());
    set_arg(&mut release, "--model", v1.to_str().unwrap());
    release.extend(args(&[
        "--canary",
        "0.33",
        "--canary-duration",
        "120s",
        "--canary-requests",
        "150",
    ]));
    release.extend(c.iter().cloned());
    let r = run(release, None).await;
    assert_kept_answering(steady, "the canary of v1").await;
    stop.store(true, Ordering::Relaxed);
    let (mut answered, mut failed) = (0, Vec::new());
    for t in stream {
        let (a, f) = t.await.unwrap();
        answered += a;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "the live stream: {answered} answered, failed: {}",
        summary(&failed)
    );
    eprintln!("the live stream of dim photographs: all {answered} answered");

    // Aborted by the canary: exit 8, the deciding signal and its numbers; the evaluation on clean
    // images had promoted it.
    assert_eq!(r.code, 8, "{}", r.describe());
    let j = r.json();
    assert_eq!(j["category"], "model_rejected", "{}", r.describe());
    let canary = &j["canary"];
    assert_eq!(canary["analysis"]["promote"], false, "{}", r.describe());
    let decided = canary["analysis"]["decided_by"]
        .as_str()
        .unwrap_or_default();
    assert!(
        ["labels", "confidence"].contains(&decided),
        "decided by {decided}: {}",
        r.describe()
    );
    let error = j["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("aborted by {decided}: ")),
        "{error}"
    );
    eprintln!("reported: {}", error.lines().next().unwrap_or_default());
    let checks: &Vec<Value> = canary["analysis"]["checks"].as_array().unwrap();
    for check in checks {
        eprintln!("  {}: {}", check["signal"], check["detail"]);
    }
    let unknown = checks
        .iter()
        .find(|c| c["signal"] == "unknown_rate")
        .unwrap();
    assert!(
        unknown["skipped"]
            .as_str()
            .unwrap_or_default()
            .contains("out-of-distribution rule"),
        "v1 has none: {unknown}"
    );
    assert!(canary["canary_signals"]["requests"].as_f64().unwrap() >= 150.0);
    eprintln!(
        "measured: canary {:.1}s in all (window {:.1}s, {} canary vs {} stable predictions, share {} by pods, {:.3} observed)",
        canary["seconds"].as_f64().unwrap_or(f64::NAN),
        canary["window_seconds"].as_f64().unwrap_or(f64::NAN),
        canary["canary_signals"]["requests"],
        canary["stable_signals"]["requests"],
        canary["achieved_share"],
        canary["observed_share"].as_f64().unwrap_or(f64::NAN),
    );
    eprintln!(
        "measured: release with evaluation and canary {:.1}s (the evaluation {:.1}s)",
        r.seconds,
        stamp(
            &r.stderr,
            "Deployment/celestial-bodies-classifier-deployment-canary: starting"
        )
        .unwrap_or(f64::NAN)
    );

    // The previous model serves every request: the Deployment untouched, the canary gone, the
    // abort in the history.
    assert_eq!(image_of(&deployment(&env, ns.name()).await), serving_image);
    assert!(canary_left(&env, ns.name()).await.is_none());
    let served: Value = keep_alive_client()
        .get(format!("{url}model"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["version"], shipped_version.as_str());
    let mut h = args(&["history", "-f", &f, "-o", "json"]);
    h.extend(c.clone());
    let r = run(h, None).await;
    let entry = &r.json()["entries"][0];
    assert_eq!(entry["outcome"], "aborted", "{}", r.describe());
    assert_eq!(entry["model"]["version"], "1.0.0", "{}", r.describe());

    let mut del = args(&["delete", "-f", &f, "--timeout", "120s"]);
    del.extend(c);
    let r = run(del, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
}
