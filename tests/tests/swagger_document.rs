//! The OpenAPI document behind the Swagger page is generated from the served model:
//! title, version, description and the list of labels, example request and response, and every
//! error response with its schema. Checked for the embedded model and for a different model
//! served with `--model` (the guide-recipe fixture, described by flags), so nothing can be
//! hard-coded to one model.

use celestial_e2e::browser::server;
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, ensure};
use serde_json::Value;

/// Resolve a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix('#')
            .and_then(|p| doc.pointer(p))
            .unwrap_or(&Value::Null),
        None => v,
    }
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Everything the issue asks of the document, for a model with these `name`, `version` and
/// `labels`. Returns every problem found (empty = fine).
fn problems(doc: &Value, name: &str, version: &str, labels: &[String]) -> Vec<String> {
    let mut p = Vec::new();
    let label_set: BTreeSet<String> = labels.iter().cloned().collect();

    // Title, version, description with the model and its labels.
    if doc
        .pointer("/info/title")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        p.push("info.title is missing".into());
    }
    if doc.pointer("/info/version").and_then(Value::as_str) != Some(version) {
        p.push(format!(
            "info.version is {}, the model's version is {version:?}",
            doc["info"]["version"]
        ));
    }
    let description = doc
        .pointer("/info/description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !description.contains(name) {
        p.push(format!("info.description does not name the model {name:?}"));
    }
    for l in labels {
        if !description.contains(l.as_str()) {
            p.push(format!("info.description does not list the label {l:?}"));
        }
    }

    // Example request: multipart part `image` (binary, required), and the raw image body.
    let predict = &doc["paths"]["/predict"]["post"];
    let body = &predict["requestBody"]["content"];
    let multipart = resolve(doc, &body["multipart/form-data"]["schema"]);
    if !strings(&multipart["required"]).contains("image") {
        p.push("POST /predict multipart body does not require the part `image`".into());
    }
    if resolve(doc, &multipart["properties"]["image"])["format"] != "binary" {
        p.push("POST /predict multipart part `image` is not a binary string".into());
    }
    for t in ["image/jpeg", "image/png", "application/octet-stream"] {
        if body.get(t).is_none() {
            p.push(format!("POST /predict does not document a raw {t} body"));
        }
    }

    // Example response: a label of this model and every label's probability; the schema names the labels.
    let ok = &predict["responses"]["200"]["content"]["application/json"];
    let example = ok
        .get("example")
        .or_else(|| resolve(doc, &ok["schema"]).get("example"))
        .cloned()
        .unwrap_or(Value::Null);
    match example["prediction"].as_str() {
        Some(l) if label_set.contains(l) => {}
        other => p.push(format!(
            "the 200 example's prediction {other:?} is not one of the labels"
        )),
    }
    let example_labels: BTreeSet<String> = example["probabilities"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if example_labels != label_set {
        p.push(format!(
            "the 200 example's probabilities cover {example_labels:?}, not the labels"
        ));
    }
    let prediction_schema = resolve(doc, &ok["schema"]);
    if strings(&prediction_schema["properties"]["probabilities"]["required"]) != label_set {
        p.push("the 200 schema's probabilities do not require exactly the labels".into());
    }
    let schema_text = prediction_schema["properties"]["prediction"].to_string();
    if !labels
        .iter()
        .all(|l| schema_text.contains(&format!("\"{l}\"")))
    {
        p.push("the 200 schema's prediction does not enumerate the labels".into());
    }

    // Every error response of every operation: a JSON body with a schema requiring error + code,
    // and an example of that shape.
    let error_codes = |schema: &Value| strings(&schema["properties"]["code"]["enum"]);
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                if !status.starts_with('4') && !status.starts_with('5') {
                    continue;
                }
                let what = format!("{} {path} {status}", method.to_uppercase());
                let resp = resolve(doc, resp);
                let Some(media) = resp.pointer("/content/application~1json") else {
                    p.push(format!("{what} has no application/json body"));
                    continue;
                };
                let schema = resolve(doc, &media["schema"]);
                let required = strings(&schema["required"]);
                if !(required.contains("error") && required.contains("code")) {
                    p.push(format!("{what}: schema does not require error and code"));
                }
                let known = error_codes(schema);
                let mut examples: Vec<&Value> = media["examples"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(_, e)| &e["value"])
                    .collect();
                if let Some(e) = media.get("example") {
                    examples.push(e);
                }
                if examples.is_empty() {
                    p.push(format!("{what} has no example"));
                }
                for e in examples {
                    let code = e["code"].as_str().unwrap_or_default();
                    if e["error"].as_str().is_none_or(str::is_empty) || !known.contains(code) {
                        p.push(format!("{what}: example {e} is not a documented error"));
                    }
                }
            }
        }
    }
    for status in ["400", "413", "415", "422", "429", "503", "504"] {
        if predict["responses"].get(status).is_none() {
            p.push(format!("POST /predict does not document {status}"));
        }
    }
    if predict
        .pointer("/responses/429/headers/Retry-After")
        .is_none()
    {
        p.push("POST /predict 429 does not document the Retry-After header".into());
    }
    p
}

async fn check(server: &server::Server) -> anyhow::Result<(String, Vec<String>)> {
    let doc: Value = reqwest::get(server.url("/docs.json"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let model: Value = reqwest::get(server.url("/model"))
        .await?
        .error_for_status()?
        .json()
        .await?;
    let name = model["name"].as_str().context("GET /model has no name")?;
    let version = model["version"]
        .as_str()
        .context("GET /model has no version")?;
    let labels: Vec<String> = strings(&model["labels"]).into_iter().collect();
    ensure!(!labels.is_empty(), "GET /model lists no labels");
    Ok((name.to_string(), problems(&doc, name, version, &labels)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_describes_the_embedded_model() -> anyhow::Result<()> {
    let server = server::Server::start(&[]).await?;
    let (name, problems) = check(&server).await?;
    server.stop().await?;
    ensure!(
        problems.is_empty(),
        "the OpenAPI document of {name} is incomplete:\n- {}",
        problems.join("\n- ")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_follows_the_served_model() -> anyhow::Result<()> {
    // A different model with different labels, name and version: the document must follow.
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../model/testdata/guide-recipe.onnx");
    let labels = "Alpha,Bravo,Charlie,Delta,Echo,Foxtrot,Golf,Hotel,India,Juliett";
    let server = server::Server::start(&[
        "--model",
        model.to_str().context("model path")?,
        "--labels",
        labels,
        "--input-layout",
        "NHWC",
        "--color-mode",
        "grayscale",
        "--model-name",
        "guide-recipe-fixture",
        "--model-version",
        "0.0.7-test",
    ])
    .await?;
    let (name, problems) = check(&server).await?;
    let doc: Value = reqwest::get(server.url("/docs.json")).await?.json().await?;
    server.stop().await?;
    ensure!(name == "guide-recipe-fixture", "GET /model names {name:?}");
    ensure!(
        doc["info"]["version"] == "0.0.7-test",
        "info.version is {}",
        doc["info"]["version"]
    );
    for l in labels.split(',') {
        ensure!(
            doc.to_string().contains(l),
            "the document never mentions the label {l}"
        );
    }
    ensure!(
        problems.is_empty(),
        "the OpenAPI document of {name} is incomplete:\n- {}",
        problems.join("\n- ")
    );
    Ok(())
}
