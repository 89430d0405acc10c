//! Predictions through the server's public URL: one, `n` checked, or a stream of them kept going
//! while a test changes the deployment.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

/// One prediction through the public URL (raw JPEG body): the answer's JSON, or why it failed.
pub async fn predict(url: &str, jpeg: &[u8]) -> Result<Value, String> {
    predict_with(&keep_alive_client(), url, jpeg).await
}

/// An HTTP client as real users have one: keep-alive connections reused across requests.
pub fn keep_alive_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An HTTP client that opens a connection for every request: behind a Service, which balances
/// connections and not requests, each request is balanced on its own.
pub fn connection_per_request_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// [`predict`] with `client` (and its pooled connections).
pub async fn predict_with(
    client: &reqwest::Client,
    url: &str,
    jpeg: &[u8],
) -> Result<Value, String> {
    let r = client
        .post(format!("{url}predict"))
        .header("content-type", "image/jpeg")
        .body(jpeg.to_vec())
        .send()
        .await
        .map_err(|e| format!("POST {url}predict: {}", chain(&e)))?;
    let status = r.status();
    let text = r.text().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("POST {url}predict: {status}: {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
}

/// An error with its causes ("error sending request: connection closed before message completed"):
/// reqwest's own message alone does not say what went wrong on the wire.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// `n` predictions of `jpeg` through `url`, each must answer with `label` (any label when None).
pub async fn assert_predictions(url: &str, jpeg: &[u8], label: Option<&str>, n: usize) {
    for i in 0..n {
        let j = predict(url, jpeg)
            .await
            .unwrap_or_else(|e| panic!("prediction {i} through {url}: {e}"));
        let got = j["prediction"].as_str().unwrap_or_default();
        assert!(
            j["probabilities"].get(got).is_some(),
            "prediction {i}: no label in {j}"
        );
        if let Some(label) = label {
            assert_eq!(got, label, "prediction {i}: {j}");
        }
    }
}

/// Predictions of `jpeg` through `url`, one after the other, until the returned flag is set; the
/// task returns (answers, failures).
pub fn keep_predicting(
    url: &str,
    jpeg: &[u8],
) -> (Arc<AtomicBool>, JoinHandle<(usize, Vec<String>)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, url, jpeg) = (stop.clone(), url.to_string(), jpeg.to_vec());
    let task = tokio::spawn(async move {
        let (mut answers, mut failures) = (0, Vec::new());
        while !flag.load(Ordering::Relaxed) {
            match predict(&url, &jpeg).await {
                Ok(_) => answers += 1,
                Err(e) => failures.push(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (answers, failures)
    });
    (stop, task)
}

/// Stops [`keep_predicting`]: every prediction during `what` was answered.
pub async fn assert_kept_answering(
    (stop, task): (Arc<AtomicBool>, JoinHandle<(usize, Vec<String>)>),
    what: &str,
) {
    stop.store(true, Ordering::Relaxed);
    let (answers, failures) = task.await.unwrap();
    assert!(
        failures.is_empty() && answers > 0,
        "{what}: {answers} answered, failed: {failures:?}"
    );
    eprintln!("{what}: the URL answered all {answers} predictions meanwhile");
}
