//! The Swagger page works for a person, proven in headless Chromium against the real
//! server (started in-process on port 0 with the embedded model) — directly, and through a real
//! nginx reverse proxy that serves the app under `/celestial/`.
//!
//! Needs Debian's `chromium`, `chromium-driver` and `nginx` (installed by `scripts/setup`; the
//! tests fail, never skip, without them) and the dataset at `../shared/dataset` (override
//! `CELESTIAL_DATASET`; skipped with a message when absent). Screenshots and the chromedriver and
//! nginx logs land in `tests/artifacts/`.

use celestial_e2e::browser::{cross_origin, nginx, server, swagger, webdriver};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, ensure};
use serde_json::Value;

/// The browser tests run one at a time: each starts Chromium, and the machine's cores are shared.
static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PREFIX: &str = "/celestial";

/// `../shared/dataset` relative to the repo root, or `$CELESTIAL_DATASET`; `None` (with a
/// printed reason) when it is absent.
fn dataset_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("CELESTIAL_DATASET") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/dataset"),
    };
    if dir.join("raw").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: dataset not found at {} (set CELESTIAL_DATASET to the directory holding raw/<Class>/*.jpg)",
            dir.display()
        );
        None
    }
}

/// A dataset image and its class: the first entry of the model's validation split (images the
/// model never trained on), else the first Earth image.
fn dataset_image(dataset: &Path) -> anyhow::Result<(PathBuf, String)> {
    let split = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/validation-split.txt");
    let rel = std::fs::read_to_string(&split)
        .ok()
        .and_then(|s| {
            s.lines()
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "Earth/Earth_0.jpg".to_string());
    let path = dataset.join("raw").join(&rel);
    ensure!(
        path.is_file(),
        "dataset image {} is missing",
        path.display()
    );
    let class = rel.split('/').next().unwrap_or_default().to_string();
    Ok((path, class))
}

/// Files a person might pick by mistake: a text file, and a `.jpg` that is not a JPEG inside.
fn bad_files(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let text = dir.join("notes.txt");
    std::fs::write(
        &text,
        "These are my notes about Saturn, not a picture of it.\n",
    )?;
    let fake = dir.join("holiday-photo.jpg");
    // A JPEG start-of-image marker followed by text: sniffs as JPEG, cannot be decoded.
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0];
    bytes.extend_from_slice(b"this is not really a JPEG file, just text with a JPEG signature");
    std::fs::write(&fake, bytes)?;
    Ok((text, fake))
}

/// Labels of the served model, from `GET /model`.
async fn labels(base: &str) -> anyhow::Result<Vec<String>> {
    let model: Value = reqwest::get(format!("{base}model"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let labels = model["labels"]
        .as_array()
        .context("GET /model has no labels")?
        .iter()
        .map(|l| {
            l.as_str()
                .map(str::to_string)
                .context("label is not a string")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    ensure!(!labels.is_empty(), "the model has no labels");
    Ok(labels)
}

/// What `POST /predict` answers for `image` when sent without the browser (multipart `image`).
async fn api_prediction(base: &str, image: &Path) -> anyhow::Result<Value> {
    api_prediction_with_key(base, image, None).await
}

/// [`api_prediction`] with an API key (`Authorization: Bearer`).
async fn api_prediction_with_key(
    base: &str,
    image: &Path,
    key: Option<&str>,
) -> anyhow::Result<Value> {
    let bytes = std::fs::read(image)?;
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name("image.jpg")
        .mime_str("image/jpeg")?;
    let form = reqwest::multipart::Form::new().part("image", part);
    let mut request = reqwest::Client::new()
        .post(format!("{base}predict"))
        .multipart(form);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await?;
    ensure!(
        r.status() == 200,
        "POST /predict without the browser answered {}",
        r.status()
    );
    Ok(r.json().await?)
}

/// The prediction shown is a real answer for this model: a label, every label's probability,
/// the label is the most probable one, and it is what the API answers without the browser.
fn check_prediction(
    outcome: &swagger::Outcome,
    labels: &[String],
    api: &Value,
) -> anyhow::Result<String> {
    ensure!(
        outcome.status == 200,
        "Try it out with a dataset image showed {} {}",
        outcome.status,
        outcome.body
    );
    let body = &outcome.body;
    let label = body["prediction"]
        .as_str()
        .with_context(|| format!("no prediction in {body}"))?;
    ensure!(
        labels.iter().any(|l| l == label),
        "predicted {label:?} is not one of the model's labels {labels:?}"
    );
    let probs = body["probabilities"]
        .as_object()
        .with_context(|| format!("no probabilities in {body}"))?;
    let shown: BTreeSet<&str> = probs.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = labels.iter().map(String::as_str).collect();
    ensure!(
        shown == expected,
        "probabilities cover {shown:?}, the model's labels are {expected:?}"
    );
    let sum: f64 = probs.values().filter_map(Value::as_f64).sum();
    ensure!((sum - 1.0).abs() < 1e-3, "probabilities sum to {sum}");
    let best = probs
        .iter()
        .max_by(|a, b| {
            a.1.as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b.1.as_f64().unwrap_or(0.0))
        })
        .map(|(k, _)| k.as_str())
        .unwrap_or_default();
    ensure!(
        best == label,
        "the page shows prediction {label:?} but the most probable label is {best:?}"
    );
    ensure!(
        api["prediction"] == body["prediction"],
        "the browser got {label:?}, the API answers {} for the same image",
        api["prediction"]
    );
    // The calibrated confidence and `known`, when the model defines them, are shown as
    // the API answers them.
    for field in ["confidence", "known"] {
        ensure!(
            body.get(field) == api.get(field),
            "the page shows {field} {:?}, the API answers {:?}",
            body.get(field),
            api.get(field)
        );
    }
    Ok(label.to_string())
}

/// The error the page shows is one `doc` documents for `POST /predict`: its status is listed,
/// the body has the documented schema's required fields and a documented `code`.
fn check_documented_error(outcome: &swagger::Outcome, doc: &Value) -> anyhow::Result<String> {
    let status = outcome.status.to_string();
    let response = doc
        .pointer(&format!("/paths/~1predict/post/responses/{status}"))
        .with_context(|| {
            format!("the page showed {status}, which the document does not list for POST /predict")
        })?;
    let media = response
        .pointer("/content/application~1json")
        .context("documented error has no application/json body")?;
    let schema = swagger::resolve(doc, &media["schema"]);
    let body = outcome
        .body
        .as_object()
        .with_context(|| format!("error body {} is not an object", outcome.body))?;
    for field in schema["required"]
        .as_array()
        .context("error schema lists no required fields")?
    {
        let field = field.as_str().unwrap_or_default();
        ensure!(
            body.get(field)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty()),
            "error body {} lacks the documented field {field:?}",
            outcome.body
        );
    }
    let code = body["code"].as_str().unwrap_or_default();
    let mut documented: Vec<&str> = media["examples"]
        .as_object()
        .map(|ex| {
            ex.values()
                .filter_map(|e| e.pointer("/value/code").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if let Some(c) = media.pointer("/example/code").and_then(Value::as_str) {
        documented.push(c);
    }
    ensure!(
        documented.contains(&code),
        "the page showed {status} with code {code:?}; the document's examples for {status} are {documented:?}"
    );
    Ok(code.to_string())
}

/// Where the generated documents go for the browser to fetch: `base` is the URL the app is
/// served at (with a trailing slash).
async fn fetch_doc(base: &str) -> anyhow::Result<Value> {
    let r = reqwest::get(format!("{base}docs.json")).await?;
    ensure!(
        r.status() == 200,
        "GET {base}docs.json answered {}",
        r.status()
    );
    Ok(r.json().await?)
}

fn report(name: &str, what: &str, o: &swagger::Outcome) {
    println!(
        "[{name}] {what}: {} {} via {} in {} ms (screenshot {})",
        o.status,
        o.body,
        o.request_url,
        o.elapsed_ms,
        o.screenshot.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_page_classifies_a_dataset_image_and_shows_documented_errors() -> anyhow::Result<()>
{
    let Some(dataset) = dataset_dir() else {
        return Ok(());
    };
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let name = "direct";
    let t0 = Instant::now();
    let server = server::Server::start(&[]).await?;
    let base = server.url("/");
    let doc = fetch_doc(&base).await?;
    let labels = labels(&base).await?;
    let (image, class) = dataset_image(&dataset)?;
    let tmp = tempfile::tempdir()?;
    let (text, fake_jpeg) = bad_files(tmp.path())?;
    let api = api_prediction(&base, &image).await?;

    let browser = webdriver::Browser::start(name).await?;
    let started_ms = t0.elapsed().as_millis();
    let result = async {
        let t = Instant::now();
        let (title, shot) = swagger::open_page(&browser, &base, &doc).await?;
        println!(
            "[{name}] page {base}: {title:?}, {} routes, in {} ms ({})",
            swagger::operations(&doc).len(),
            t.elapsed().as_millis(),
            shot.display()
        );
        // A person reads which labels the model knows.
        let description = swagger::description_text(&browser).await?;
        for l in &labels {
            ensure!(
                description.contains(l.as_str()),
                "the page's description does not show the label {l:?}:\n{description}"
            );
        }
        // The same page is also served at /docs.
        let (_, _) = swagger::open_page(&browser, &server.url("/docs"), &doc).await?;

        swagger::try_out_predict(&browser).await?;
        let ok = swagger::execute_with_file(&browser, &image, "predict").await?;
        report(name, "dataset image", &ok);
        let label = check_prediction(&ok, &labels, &api)?;
        println!("[{name}] {} (class {class}) -> {label}", image.display());
        ensure!(
            ok.request_url == format!("{base}predict"),
            "Try it out sent the request to {:?}",
            ok.request_url
        );

        let bad = swagger::execute_with_file(&browser, &fake_jpeg, "bad-jpeg").await?;
        report(name, "not a JPEG", &bad);
        ensure!(
            bad.status == 400,
            "a .jpg that is not a JPEG showed {} {}, expected 400",
            bad.status,
            bad.body
        );
        check_documented_error(&bad, &doc)?;

        let txt = swagger::execute_with_file(&browser, &text, "text-file").await?;
        report(name, "text file", &txt);
        ensure!(
            (400..500).contains(&txt.status),
            "a text file showed {} {}, expected a 4xx",
            txt.status,
            txt.body
        );
        check_documented_error(&txt, &doc)?;
        anyhow::Ok(())
    }
    .await;
    browser.close().await;
    server.stop().await?;
    println!(
        "[{name}] browser start {started_ms} ms, whole test {} ms",
        t0.elapsed().as_millis()
    );
    result
}

/// Through nginx serving the app under `/celestial/`: the page loads its document from
/// `/celestial/docs.json` and "Try it out" posts to `/celestial/predict`. `root_path_flag`:
/// the server is told the prefix by `--root-path` (nginx sends no header), otherwise nginx sends
/// `X-Forwarded-Prefix`.
async fn behind_proxy(name: &str, root_path_flag: bool) -> anyhow::Result<()> {
    let Some(dataset) = dataset_dir() else {
        return Ok(());
    };
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let t0 = Instant::now();
    let server = if root_path_flag {
        server::Server::start(&["--root-path", PREFIX]).await?
    } else {
        server::Server::start(&[]).await?
    };
    let proxy = nginx::Nginx::start(server.port, PREFIX, !root_path_flag).await?;
    let base = format!("http://127.0.0.1:{}{PREFIX}/", proxy.port);
    let doc = fetch_doc(&base).await?;
    let servers = doc["servers"].as_array().cloned().unwrap_or_default();
    ensure!(
        servers.first().and_then(|s| s["url"].as_str()) == Some(PREFIX),
        "behind {PREFIX}/ the document's servers are {servers:?}, expected [{{\"url\": \"{PREFIX}\"}}]"
    );
    // The /docs alias: `/docs/` redirects to `/docs` under the prefix, not out of it.
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = no_follow.get(format!("{base}docs/")).send().await?;
    let location = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .unwrap_or_default()
        .to_string();
    ensure!(
        r.status().is_redirection() && location == format!("{PREFIX}/docs"),
        "GET {base}docs/ answered {} to {location:?}, expected a redirect to {PREFIX}/docs",
        r.status()
    );
    let labels = labels(&base).await?;
    let (image, _class) = dataset_image(&dataset)?;
    let tmp = tempfile::tempdir()?;
    let (_text, fake_jpeg) = bad_files(tmp.path())?;
    let api = api_prediction(&base, &image).await?;

    let browser = webdriver::Browser::start(name).await?;
    let result = async {
        let t = Instant::now();
        let (title, shot) = swagger::open_page(&browser, &base, &doc).await?;
        println!(
            "[{name}] page {base}: {title:?} in {} ms ({})",
            t.elapsed().as_millis(),
            shot.display()
        );
        // Also from the /docs alias, where the document's URL resolves differently.
        swagger::open_page(&browser, &format!("{base}docs"), &doc).await?;
        swagger::try_out_predict(&browser).await?;
        let ok = swagger::execute_with_file(&browser, &image, "predict").await?;
        report(name, "dataset image", &ok);
        check_prediction(&ok, &labels, &api)?;
        ensure!(
            ok.request_url == format!("{base}predict"),
            "behind the proxy, Try it out sent the request to {:?}",
            ok.request_url
        );
        let bad = swagger::execute_with_file(&browser, &fake_jpeg, "bad-jpeg").await?;
        report(name, "not a JPEG", &bad);
        ensure!(
            bad.status == 400,
            "a .jpg that is not a JPEG showed {} {}, expected 400",
            bad.status,
            bad.body
        );
        check_documented_error(&bad, &doc)?;

        // The browser's requests really went through the prefix: the page, its document, the predictions.
        let log = proxy.access_log();
        for needle in [
            format!("GET {PREFIX}/ "),
            format!("GET {PREFIX}/docs "),
            format!("GET {PREFIX}/docs.json "),
            format!("POST {PREFIX}/predict "),
        ] {
            ensure!(
                log.contains(&needle),
                "nginx access log has no {needle:?}:\n{log}"
            );
        }
        // And nothing escaped it (the proxy answers 404 outside the prefix).
        ensure!(
            !log.contains("\" 404 "),
            "a request missed the prefix:\n{log}"
        );
        anyhow::Ok(())
    }
    .await;
    browser.close().await;
    proxy.stop(name).await?;
    server.stop().await?;
    println!("[{name}] whole test {} ms", t0.elapsed().as_millis());
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_page_works_behind_a_proxy_sending_x_forwarded_prefix() -> anyhow::Result<()> {
    behind_proxy("prefix-header", false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_page_works_behind_a_proxy_with_root_path_flag() -> anyhow::Result<()> {
    behind_proxy("prefix-root-path", true).await
}

/// The key of the API-key tests.
const KEY: &str = "browser-test-key-7c1d93";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_page_authorizes_with_an_api_key() -> anyhow::Result<()> {
    let Some(dataset) = dataset_dir() else {
        return Ok(());
    };
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let name = "api-key";
    let server = server::Server::start(&["--api-keys", KEY]).await?;
    let base = server.url("/");
    let doc = fetch_doc(&base).await?;
    ensure!(
        doc.pointer("/components/securitySchemes")
            .and_then(Value::as_object)
            .is_some_and(|s| !s.is_empty()),
        "with keys on, the document has no security scheme"
    );
    let labels = labels(&base).await?;
    let (image, _class) = dataset_image(&dataset)?;
    let api = api_prediction_with_key(&base, &image, Some(KEY)).await?;
    let browser = webdriver::Browser::start(name).await?;
    let result = async {
        swagger::open_page(&browser, &base, &doc).await?;
        swagger::try_out_predict(&browser).await?;
        let denied = swagger::execute_with_file(&browser, &image, "no-key").await?;
        report(name, "without a key", &denied);
        ensure!(
            denied.status == 401,
            "without a key Try it out showed {} {}, expected 401",
            denied.status,
            denied.body
        );
        let code = check_documented_error(&denied, &doc)?;
        ensure!(code == "api_key_missing", "401 with code {code:?}");
        let shot = swagger::authorize(&browser, KEY).await?;
        println!("[{name}] authorized ({})", shot.display());
        let ok = swagger::execute_with_file(&browser, &image, "with-key").await?;
        report(name, "with the key", &ok);
        check_prediction(&ok, &labels, &api)?;
        anyhow::Ok(())
    }
    .await;
    browser.close().await;
    server.stop().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_gets_a_prediction_only_when_cors_allows_it() -> anyhow::Result<()>
{
    let _one = ONE_BROWSER_AT_A_TIME.lock().await;
    let name = "cors";
    let allowed = cross_origin::Page::start().await?;
    let other = cross_origin::Page::start().await?;
    let origin = allowed.origin();
    let server =
        server::Server::start(&["--api-keys", KEY, "--cors-allow-origins", &origin]).await?;
    let base = server.url("/");
    let labels = labels(&base).await?;
    let url = server.url("/predict");
    let browser = webdriver::Browser::start(name).await?;
    let result = async {
        let ok = allowed.predict(&browser, &url, Some(KEY)).await?;
        println!("[{name}] from {origin} with the key: {ok}");
        ensure!(ok["status"] == 200, "from the allowed origin: {ok}");
        let label = ok["body"]["prediction"].as_str().unwrap_or_default();
        ensure!(
            labels.iter().any(|l| l == label),
            "from the allowed origin the page shows {ok}"
        );
        let shot = browser.screenshot("allowed-origin").await?;
        println!("[{name}] screenshot {}", shot.display());
        // Without the key the page can read the 401 (CORS headers are on errors too).
        let no_key = allowed.predict(&browser, &url, None).await?;
        println!("[{name}] from {origin} without a key: {no_key}");
        ensure!(
            no_key["status"] == 401 && no_key["body"]["code"] == "api_key_missing",
            "without a key: {no_key}"
        );
        // Another origin: the browser refuses the answer (a CORS error, no status to read).
        let refused = other.predict(&browser, &url, Some(KEY)).await?;
        println!("[{name}] from {} with the key: {refused}", other.origin());
        ensure!(
            refused["error"]
                .as_str()
                .is_some_and(|e| e.contains("Failed to fetch")),
            "from an origin not allowed the page got {refused}"
        );
        anyhow::Ok(())
    }
    .await;
    browser.close().await;
    server.stop().await?;
    result
}
