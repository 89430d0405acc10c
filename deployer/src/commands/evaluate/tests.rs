//! The evaluation before traffic against the scripted API server (`crate::kube::tests`): the
//! candidate started out of every selector's reach, one of its pods and one serving pod asked
//! through the pod proxy, the candidate deleted, and the verdict: promoted, refused (exit 8,
//! recorded), judged against the floor alone on a first release, not judged when nothing is new,
//! and a candidate that cannot run (exit 4, nothing serving changed).

use clap::Parser;
use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::cli::Cli;
use crate::cli::command::Command;
use crate::exit::ExitCode;
use crate::kube::manifests::parse_str;
use crate::kube::tests::api_server::{Scenario, status};
use crate::kube::tests::history::{history_path, written};
use crate::kube::tests::objects::*;
use crate::progress::Recorded;

/// The new image the manifests run.
const NEW: &str = "registry.invalid/server:3";
const CANDIDATE: &str = "d-candidate";
const CANDIDATE_POD: &str = "d-candidate-c1-x";

/// The manifests: Deployment `d` (selector app=a) running [`NEW`], Service `s` selecting app=a.
fn manifests() -> Vec<Manifest> {
    let text = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d, namespace: prod}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: a}}}}\n  template:\n    metadata: {{labels: {{app: a}}}}\n    spec: {{containers: [{{name: server, image: \"{NEW}\"}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: prod}}\nspec: {{type: LoadBalancer, selector: {{app: a}}, ports: [{{port: 80}}]}}\n"
    );
    parse_str(std::path::Path::new("m.yaml"), &text).unwrap()
}

/// `--evaluate` with `flags`, and `Mars/` of three images as the evaluation set (one label, so
/// the answers do not depend on the order the predictions arrive in).
fn eval_args(flags: &[&str]) -> (EvalArgs, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("Mars")).unwrap();
    for f in ["a.jpg", "b.jpg", "c.jpg"] {
        std::fs::write(dir.path().join("Mars").join(f), b"jpeg").unwrap();
    }
    let set = dir.path().to_str().unwrap().to_string();
    let mut argv = vec!["deployer", "apply", "--evaluate", "--eval-set", &set];
    argv.extend(flags);
    let Command::Apply(a) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not apply")
    };
    (a.eval, dir)
}

/// The candidate Deployment as the API server has it, with `status`.
fn candidate(status: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": CANDIDATE, "namespace": NS, "uid": "uid-of-c", "generation": 1,
            "resourceVersion": LISTED, "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a-candidate"}},
            "template": {"metadata": {"labels": {"app": "a-candidate", "celestial.dev/role": "candidate"}},
                "spec": {"containers": [{"name": "server", "image": NEW}]}}},
        "status": status})
}

fn candidate_done() -> Value {
    json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
        "availableReplicas": 1})
}

/// Expects a Ready pod of a Deployment looked up: the Deployment, its ReplicaSets, its pods.
fn expect_target(
    s: &mut Scenario,
    deployment: Value,
    sets: Vec<Value>,
    pods: Vec<Value>,
    selector: &str,
) {
    let name = deployment["metadata"]["name"].as_str().unwrap().to_string();
    s.get(&one(DEPLOYMENTS, &name)).reply(200, deployment);
    s.get(REPLICASETS)
        .query("labelSelector", selector)
        .reply(200, list("ReplicaSet", sets));
    s.get(PODS)
        .query("labelSelector", selector)
        .reply(200, list("Pod", pods));
}

/// The serving Deployment `d` and its Ready pod d-h2-a.
fn expect_serving_target(s: &mut Scenario) {
    let pods = vec![pod("d-h2-a", "h2", ready())];
    expect_target(s, deployment(rolled_out()), both_sets(), pods, SELECTOR);
}

/// The candidate and its Ready pod.
fn expect_candidate_target(s: &mut Scenario) {
    let mut rs = replica_set("c1", 1, NEW);
    rs["metadata"]["name"] = json!("d-candidate-c1");
    rs["metadata"]["ownerReferences"][0]["uid"] = json!("uid-of-c");
    let mut p = pod(CANDIDATE_POD, "c1", ready());
    p["metadata"]["labels"]["app"] = json!("a-candidate");
    expect_target(
        s,
        candidate(candidate_done()),
        vec![rs],
        vec![p],
        "app=a-candidate",
    );
}

/// `n` predictions of `label` (`known`) through the proxy to `pod`.
fn expect_predictions(s: &mut Scenario, pod: &str, label: &str, known: bool, n: usize) {
    for _ in 0..n {
        s.on(Method::POST, &format!("{PODS}/{pod}:3000/proxy/predict"))
            .reply(
                200,
                json!({"prediction": label, "probabilities": {label: 0.9}, "known": known}),
            );
    }
}

/// Expects the candidate started (its apply, then a rollout already complete).
fn expect_started(s: &mut Scenario) {
    s.on(Method::PATCH, &one(DEPLOYMENTS, CANDIDATE))
        .query("fieldManager", "deployer")
        .query("force", "true")
        .reply(200, candidate(candidate_done()));
    s.get(&one(DEPLOYMENTS, CANDIDATE))
        .reply(200, candidate(candidate_done()));
}

/// Expects the candidate's model read, and its deletion.
fn expect_model_and_removal(s: &mut Scenario) {
    expect_candidate_target(s);
    s.get(&format!("{PODS}/{CANDIDATE_POD}:3000/proxy/model"))
        .reply(200, model_document("3.0.0"));
    s.on(Method::DELETE, &one(DEPLOYMENTS, CANDIDATE))
        .reply(200, candidate(candidate_done()));
}

/// What an evaluation came to, and the requests it made.
struct Evaluated {
    result: Result<Option<EvaluationReport>, Error>,
    applied: Vec<Value>,
    asked: Vec<crate::kube::tests::api_server::Seen>,
    recorded: Vec<Entry>,
}

async fn run(s: Scenario, args: &EvalArgs) -> Evaluated {
    let (cluster, server) = s.serve();
    let manifests = manifests();
    let e = Evaluation {
        cluster: &cluster,
        ns: NS,
        manifests: &manifests,
        args,
        limits: rollout::Limits {
            timeout: std::time::Duration::from_secs(60),
            unschedulable_grace: std::time::Duration::ZERO,
        },
        container: None,
        api_key: Some("k3y"),
        command: "release",
        history_limit: 20,
    };
    let result = evaluate(&e, &mut Recorded::default()).await;
    server.verify();
    let applied = server.requests(Method::PATCH, &one(DEPLOYMENTS, CANDIDATE));
    let asked = server.requests(
        Method::POST,
        &format!("{PODS}/{CANDIDATE_POD}:3000/proxy/predict"),
    );
    let recorded = server
        .requests(Method::POST, CONFIGMAPS)
        .iter()
        .flat_map(|w| written(&w.body))
        .collect();
    Evaluated {
        result,
        applied: applied.into_iter().map(|r| r.body).collect(),
        asked,
        recorded,
    }
}

/// A candidate as good as the serving model is promoted: it ran apart (no Service selects it),
/// both pods were asked the same images, and it was deleted.
#[tokio::test(start_paused = true)]
async fn a_candidate_as_good_as_the_serving_model_is_promoted() {
    let mut s = Scenario::new();
    expect_serving_target(&mut s);
    expect_started(&mut s);
    expect_candidate_target(&mut s);
    expect_predictions(&mut s, CANDIDATE_POD, "Mars", true, 3);
    expect_predictions(&mut s, "d-h2-a", "Mars", true, 3);
    expect_model_and_removal(&mut s);
    let (args, _dir) = eval_args(&[]);
    let r = run(s, &args).await;
    let report = r.result.expect("judged").expect("a report");
    assert!(report.verdict.promote, "{report:?}");
    assert_eq!(report.candidate_scores.accuracy, 1.0);
    assert_eq!(report.serving.as_ref().unwrap().scores.accuracy, 1.0);
    assert_eq!(report.agreement, Some(1.0));
    assert_eq!(report.candidate_model.unwrap().version, "3.0.0");
    let c = &r.applied[0];
    assert_eq!(
        c["spec"]["selector"]["matchLabels"],
        json!({"app": "a-candidate"})
    );
    assert_eq!(c["spec"]["template"]["spec"]["containers"][0]["image"], NEW);
    assert_eq!(r.asked.len(), 3);
    assert_eq!(r.asked[0].headers["x-api-key"], "k3y");
    assert_eq!(r.asked[0].headers["content-type"], "image/jpeg");
    // The server keeps the deployer's own predictions out of its live-traffic counters.
    assert_eq!(r.asked[0].headers["celestial-probe"], "evaluation");
    assert!(
        r.recorded.is_empty(),
        "a promotion is recorded by apply, after its rollout"
    );
}

/// A candidate worse than the serving model is refused: exit 8, the numbers in the error, the
/// candidate deleted, the refusal recorded; the serving Deployment is never touched.
#[tokio::test(start_paused = true)]
async fn a_candidate_worse_than_the_serving_model_is_refused_with_its_numbers() {
    let mut s = Scenario::new();
    expect_serving_target(&mut s);
    expect_started(&mut s);
    expect_candidate_target(&mut s);
    expect_predictions(&mut s, CANDIDATE_POD, "Moon", false, 3);
    expect_predictions(&mut s, "d-h2-a", "Mars", true, 3);
    expect_model_and_removal(&mut s);
    s.get(&history_path())
        .reply(404, status(404, "NotFound", "absent"));
    s.on(Method::POST, CONFIGMAPS).reply(201, json!({}));
    let (args, _dir) = eval_args(&[]);
    let r = run(s, &args).await;
    let e = r.result.unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::ModelRejected);
    let text = e.to_string();
    assert!(
        text.starts_with("the new model was refused before it got traffic: accuracy 0.000 is below --eval-floor 0.900; accuracy 0.000 is 1.000 below the serving model's 1.000 (--eval-margin 0.020); unknown rate 1.000 is 1.000 above"),
        "{text}"
    );
    assert!(text.contains("candidate accuracy 0.000 (0/3 "), "{text}");
    assert!(
        text.ends_with("Deployment/d was not changed; the candidate was deleted"),
        "{text}"
    );
    let j: Value = serde_json::from_str(
        &crate::render::render(&Err(e), crate::render::Format::Json)
            .stdout
            .unwrap(),
    )
    .unwrap();
    assert_eq!(j["exit_code"], 8);
    assert_eq!(j["evaluation"]["candidate_scores"]["accuracy"], 0.0);
    assert_eq!(j["evaluation"]["serving"]["scores"]["accuracy"], 1.0);
    assert_eq!(j["evaluation"]["agreement"], 0.0);
    let [entry] = r.recorded.as_slice() else {
        panic!("{:?}", r.recorded)
    };
    assert_eq!(entry.outcome, Outcome::Refused);
    assert_eq!(entry.image.as_deref(), Some(NEW));
    assert_eq!(entry.model.as_ref().unwrap().version, "3.0.0");
}

/// A first release: nothing serves, the floor alone decides.
#[tokio::test(start_paused = true)]
async fn a_first_release_is_judged_against_the_floor_alone() {
    let mut s = Scenario::new();
    s.get(&one(DEPLOYMENTS, NAME)).reply(
        404,
        status(404, "NotFound", "deployments.apps \"d\" not found"),
    );
    expect_started(&mut s);
    expect_candidate_target(&mut s);
    expect_predictions(&mut s, CANDIDATE_POD, "Mars", true, 3);
    expect_model_and_removal(&mut s);
    let (args, _dir) = eval_args(&[]);
    let report = run(s, &args).await.result.unwrap().unwrap();
    assert!(report.verdict.promote);
    assert!(report.serving.is_none() && report.agreement.is_none());
    assert!(
        report.text().contains("first release: --eval-floor only"),
        "{}",
        report.text()
    );
}

/// The serving Deployment already runs the image: nothing new, no candidate.
#[tokio::test(start_paused = true)]
async fn an_image_that_already_serves_is_not_judged_again() {
    let mut s = Scenario::new();
    let mut live = deployment(rolled_out());
    live["spec"]["template"]["spec"]["containers"][0]["image"] = json!(NEW);
    expect_target(
        &mut s,
        live,
        both_sets(),
        vec![pod("d-h2-a", "h2", ready())],
        SELECTOR,
    );
    let (args, _dir) = eval_args(&[]);
    let r = run(s, &args).await;
    assert!(r.result.unwrap().is_none());
    assert!(r.applied.is_empty());
}

/// A candidate that cannot run (here its rollout is past its progress deadline) is deleted, the
/// serving Deployment untouched: exit 4 for a reason other than its model; the server refusing
/// its model is exit 8.
#[tokio::test(start_paused = true)]
async fn a_candidate_that_cannot_run_is_deleted_and_nothing_serving_changes() {
    let mut s = Scenario::new();
    expect_serving_target(&mut s);
    s.on(Method::PATCH, &one(DEPLOYMENTS, CANDIDATE))
        .reply(200, candidate(candidate_done()));
    let mut stuck = deadline_exceeded();
    stuck["observedGeneration"] = json!(1);
    s.get(&one(DEPLOYMENTS, CANDIDATE))
        .reply(200, candidate(stuck));
    s.on(Method::DELETE, &one(DEPLOYMENTS, CANDIDATE))
        .reply(200, candidate(candidate_done()));
    s.get(&history_path())
        .reply(404, status(404, "NotFound", "absent"));
    s.on(Method::POST, CONFIGMAPS).reply(201, json!({}));
    let (args, _dir) = eval_args(&[]);
    let r = run(s, &args).await;
    let e = r.result.unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::Rollout);
    let text = e.to_string();
    assert!(text.contains("ProgressDeadlineExceeded"), "{text}");
    assert!(
        text.ends_with("rollback: the candidate Deployment/d-candidate was deleted; Deployment/d was not changed"),
        "{text}"
    );
    assert_eq!(r.recorded[0].outcome, Outcome::Refused);
    let refused_model = RolloutError::Failed {
        deployment: CANDIDATE.into(),
        reason: rollout::MODEL_CHECK_FAILED.into(),
        message: MODEL_CHECK_REASON.into(),
        rollback: None,
    };
    let e = Error::from(not_started(refused_model, NAME, CANDIDATE, None));
    assert_eq!(e.exit_code(), ExitCode::ModelRejected);
}
