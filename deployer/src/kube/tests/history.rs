//! The release history and what a Deployment serves, against the API server's answers: the
//! ConfigMap created on the first release, updated (with the resourceVersion it read) and kept to
//! its limit, a write that lost a race read again, content that is not a history refused, a
//! missing permission named; and the model read from a Ready pod through the pod proxy.

use http::Method;
use serde_json::{Value, json};

use super::api_server::{Scenario, status};
use super::exit_code;
use super::objects::*;
use crate::exit::ExitCode;
use crate::kube::error::ApplyError;
use crate::kube::history::{self, CONFIGMAP, DATA_KEY, Entry, Outcome};
use crate::kube::model::{self, ModelInfo};

/// The history ConfigMap's path.
pub fn history_path() -> String {
    one(CONFIGMAPS, CONFIGMAP)
}

/// A promoted release of model `version` at `revision`, running `image`.
pub fn promoted(version: &str, revision: u32, image: &str) -> Entry {
    Entry {
        time: format!("2026-01-0{revision}T10:00:00Z"),
        command: "release".into(),
        deployment: NAME.into(),
        image: Some(image.into()),
        digest: None,
        model: Some(ModelInfo {
            name: "celestial-bodies".into(),
            version: version.into(),
            sha256: None,
            validation_accuracy: Some(0.99),
        }),
        revision: Some(revision.to_string()),
        outcome: Outcome::Promoted,
        reason: None,
        template: Some(template(image)),
    }
}

/// The history ConfigMap holding `entries`, at resourceVersion `rv`.
pub fn history_configmap(entries: &[Entry], rv: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": NS, "resourceVersion": rv},
        "data": {DATA_KEY: serde_json::to_string(entries).unwrap()}})
}

/// The entries a ConfigMap written by the code (a request body) holds.
pub fn written(body: &Value) -> Vec<Entry> {
    serde_json::from_str(body["data"][DATA_KEY].as_str().expect("the data key")).unwrap()
}

fn not_found() -> Value {
    status(
        404,
        "NotFound",
        "configmaps \"celestial-releases\" not found",
    )
}

#[tokio::test(start_paused = true)]
async fn the_first_release_creates_the_history() {
    let mut s = Scenario::new();
    s.get(&history_path()).reply(404, not_found());
    s.get(&history_path()).reply(404, not_found());
    s.on(Method::POST, CONFIGMAPS)
        .query("fieldManager", "deployer")
        .reply(201, history_configmap(&[], "1"));
    let (cluster, server) = s.serve();
    assert!(history::read(&cluster, NS).await.unwrap().is_empty());
    let entry = promoted("1.0.0", 1, IMAGE);
    let held = history::append(&cluster, NS, entry.clone(), 20).await;
    server.verify();
    assert_eq!(held.unwrap(), 1);
    let post = &server.requests(Method::POST, CONFIGMAPS)[0];
    assert_eq!(written(&post.body), [entry]);
    assert_eq!(post.body["metadata"]["name"], CONFIGMAP);
    assert_eq!(
        post.body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "deployer"
    );
}

/// An update carries the resourceVersion it read and keeps the newest `limit` entries; one that
/// lost a race (409) reads again and adds its entry to what the other writer wrote.
#[tokio::test(start_paused = true)]
async fn a_release_is_appended_to_the_newest_entries_and_a_lost_race_is_retried() {
    let old: Vec<Entry> = (1..=3)
        .map(|r| promoted(&format!("1.{r}.0"), r, PREVIOUS_IMAGE))
        .collect();
    let mut raced = old.clone();
    raced.push(promoted("1.4.0", 4, PREVIOUS_IMAGE));
    let mut s = Scenario::new();
    s.get(&history_path())
        .reply(200, history_configmap(&old, "5"));
    let conflict = status(409, "Conflict", "the object has been modified");
    s.on(Method::PUT, &history_path()).reply(409, conflict);
    s.get(&history_path())
        .reply(200, history_configmap(&raced, "6"));
    s.on(Method::PUT, &history_path())
        .reply(200, history_configmap(&[], "7"));
    let (cluster, server) = s.serve();
    let new = promoted("2.0.0", 5, IMAGE);
    let held = history::append(&cluster, NS, new.clone(), 3).await;
    server.verify();
    assert_eq!(held.unwrap(), 3);
    let puts = server.requests(Method::PUT, &history_path());
    assert_eq!(puts[0].body["metadata"]["resourceVersion"], "5");
    assert_eq!(puts[1].body["metadata"]["resourceVersion"], "6");
    let kept: Vec<String> = written(&puts[1].body)
        .iter()
        .map(|e| e.model.as_ref().unwrap().version.clone())
        .collect();
    assert_eq!(kept, ["1.3.0", "1.4.0", "2.0.0"], "the oldest went first");
}

/// A re-apply that changed nothing records nothing new (and writes nothing).
#[tokio::test(start_paused = true)]
async fn the_same_release_again_is_not_recorded_twice() {
    let old = vec![promoted("1.0.0", 1, IMAGE)];
    let mut s = Scenario::new();
    s.get(&history_path())
        .reply(200, history_configmap(&old, "5"));
    let (cluster, server) = s.serve();
    let mut again = promoted("1.0.0", 1, IMAGE);
    again.time = "2026-02-01T00:00:00Z".into();
    assert_eq!(history::append(&cluster, NS, again, 20).await.unwrap(), 1);
    server.verify();
}

/// A ConfigMap of that name that is not a history is neither read as one nor overwritten: a
/// usage error (exit 2) that says what to do.
#[tokio::test(start_paused = true)]
async fn a_configmap_that_is_not_a_history_is_refused_not_overwritten() {
    let mut s = Scenario::new();
    let mut cm = history_configmap(&[], "5");
    cm["data"][DATA_KEY] = json!("{\"not\": \"a list\"}");
    s.get(&history_path()).reply(200, cm);
    let (cluster, server) = s.serve();
    let e = history::append(&cluster, NS, promoted("1.0.0", 1, IMAGE), 20)
        .await
        .unwrap_err();
    server.verify();
    assert!(matches!(e, ApplyError::Record { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with("ConfigMap/celestial-releases: data key releases.json in namespace prod is not a release history ("),
        "{text}"
    );
    assert!(text.ends_with("; fix or delete the ConfigMap"), "{text}");
    assert_eq!(exit_code(crate::error::Error::Apply(e)), ExitCode::Usage);
}

/// Without the permission, the refusal says which verbs the history needs, and how to do
/// without it.
#[tokio::test(start_paused = true)]
async fn a_missing_permission_names_what_the_history_needs() {
    let mut s = Scenario::new();
    let refusal = "configmaps \"celestial-releases\" is forbidden: User \"ci\" cannot get resource \"configmaps\"";
    s.get(&history_path())
        .reply(403, status(403, "Forbidden", refusal));
    let (cluster, server) = s.serve();
    let e = history::read(&cluster, NS).await.unwrap_err();
    server.verify();
    assert_eq!(
        e.to_string(),
        format!(
            "ConfigMap/celestial-releases: get forbidden: {refusal} (the release history needs get, create and update on configmaps in namespace prod; --history-limit 0 keeps none)"
        )
    );
    assert_eq!(exit_code(crate::error::Error::Apply(e)), ExitCode::Apply);
}

/// Expects what [`model::serving`] reads: the Deployment, its ReplicaSets and pods, and (when
/// `answer` is given) the model through the pod proxy of the new Ready pod.
pub fn expect_serving(s: &mut Scenario, answer: Option<(u16, Value)>) {
    s.get(&one(DEPLOYMENTS, NAME))
        .reply(200, deployment(rolled_out()));
    s.get(REPLICASETS)
        .query("labelSelector", SELECTOR)
        .reply(200, list("ReplicaSet", both_sets()));
    let pods = vec![
        pod("d-h1-a", "h1", ready()),
        pod("d-h2-b", "h2", running()),
        pod("d-h2-a", "h2", ready()),
    ];
    s.get(PODS)
        .query("labelSelector", SELECTOR)
        .reply(200, list("Pod", pods));
    if let Some((code, body)) = answer {
        s.get(&model_proxy("d-h2-a")).reply(code, body);
    }
}

/// The model comes from a Ready pod of the current revision (not an old one, not one that is not
/// Ready), asked with the API key in `X-API-Key`; the digest from the pod's imageID.
#[tokio::test(start_paused = true)]
async fn what_serves_is_read_from_a_ready_new_pod_through_the_pod_proxy() {
    let mut s = Scenario::new();
    expect_serving(&mut s, Some((200, model_document("1.2.0"))));
    let (cluster, server) = s.serve();
    let serving = model::serving(&cluster, NS, NAME, None, Some("k3y")).await;
    server.verify();
    let serving = serving.unwrap();
    assert_eq!(serving.revision.as_deref(), Some("2"));
    assert_eq!(serving.image.as_deref(), Some(IMAGE));
    assert_eq!(serving.digest.as_deref(), Some(IMAGE_DIGEST));
    assert_eq!(serving.template, Some(template(IMAGE)));
    let m = serving.model.expect("the model");
    assert_eq!(
        (m.name.as_str(), m.version.as_str()),
        ("celestial-bodies", "1.2.0")
    );
    assert_eq!(m.validation_accuracy, Some(0.9933));
    assert_eq!(
        m.sha256.as_deref(),
        Some(format!("{:0>64}", "120").as_str())
    );
    let asked = &server.requests(Method::GET, &model_proxy("d-h2-a"))[0];
    assert_eq!(asked.headers["x-api-key"], "k3y");
}

/// A model that cannot be read (no `pods/proxy` permission) is said, and is not an error: the
/// release is in place all the same.
#[tokio::test(start_paused = true)]
async fn a_model_the_proxy_refuses_is_unknown_with_the_permission_it_needs() {
    let mut s = Scenario::new();
    let refusal = "pods \"d-h2-a\" is forbidden: User \"ci\" cannot get resource \"pods/proxy\"";
    expect_serving(&mut s, Some((403, status(403, "Forbidden", refusal))));
    let (cluster, server) = s.serve();
    let serving = model::serving(&cluster, NS, NAME, None, None)
        .await
        .unwrap();
    server.verify();
    assert!(serving.model.is_none());
    let e = serving.model_error.unwrap();
    assert!(e.contains("needs `get` on `pods/proxy`"), "{e}");
    assert!(
        e.starts_with("GET /model of pod d-h2-a through the API server: forbidden (HTTP 403"),
        "{e}"
    );
    assert!(e.contains(refusal), "{e}");
}

/// A pod the API server cannot reach (a control plane outside the pod network): the model is
/// unknown after the read's own timeout, not after the API server's dial timeout.
#[tokio::test(start_paused = true)]
async fn a_model_read_that_gets_no_answer_gives_up_after_its_timeout() {
    let mut s = Scenario::new();
    expect_serving(&mut s, None);
    let slow = std::time::Duration::from_secs(30);
    s.get(&model_proxy("d-h2-a")).reply_after(
        slow,
        503,
        status(503, "ServiceUnavailable", "dial timeout"),
    );
    let (cluster, server) = s.serve();
    let start = tokio::time::Instant::now();
    let serving = model::serving(&cluster, NS, NAME, None, None)
        .await
        .unwrap();
    assert_eq!(start.elapsed(), model::MODEL_READ_TIMEOUT);
    server.verify();
    let e = serving.model_error.unwrap();
    assert!(e.ends_with("no answer within 5s"), "{e}");
}
