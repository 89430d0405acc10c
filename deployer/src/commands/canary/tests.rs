//! The canary against the scripted API server (`crate::kube::tests`): the canary Deployment
//! applied beside the serving one with the Services' labels and a replica count for the share,
//! every canary and stable pod's `/metrics` read through the pod proxy at the window's start and
//! end, and the verdict: aborted by the signal that moved (exit 8, the canary deleted and waited
//! for, the abort recorded), promoted (the canary deleted, nothing recorded yet), promoted on
//! the evaluation alone with too little traffic, and no canary on a first release.

use std::time::Duration;

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

const NEW: &str = "registry.invalid/server:3";
const CANARY: &str = "d-canary";
const CANARY_POD: &str = "d-canary-k1-x";
const CANARY_SELECTOR: &str = "celestial.dev/canary-of=d,celestial.dev/role=canary";
const STABLE_PODS: [&str; 2] = ["d-h2-a", "d-h2-b"];

/// Deployment `d` (selector app=a) running [`NEW`], and the Service `s` selecting app=a.
fn manifests() -> Vec<Manifest> {
    let text = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d, namespace: prod}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: a}}}}\n  template:\n    metadata: {{labels: {{app: a}}}}\n    spec: {{containers: [{{name: server, image: \"{NEW}\"}}]}}\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: s, namespace: prod}}\nspec: {{type: LoadBalancer, selector: {{app: a}}, ports: [{{port: 80}}]}}\n"
    );
    parse_str(std::path::Path::new("m.yaml"), &text).unwrap()
}

fn canary_args(flags: &[&str]) -> CanaryArgs {
    let mut argv = vec!["deployer", "apply", "--canary", "0.33"];
    argv.extend(flags);
    let Command::Apply(a) = Cli::try_parse_from(argv).unwrap().command else {
        panic!("not apply")
    };
    a.canary
}

/// The canary Deployment as the API server has it: available.
fn canary_deployment() -> Value {
    let labels =
        json!({"app": "a", "celestial.dev/role": "canary", "celestial.dev/canary-of": "d"});
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": CANARY, "namespace": NS, "uid": "uid-of-k", "generation": 1,
            "resourceVersion": LISTED, "annotations": {"deployment.kubernetes.io/revision": "1"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"celestial.dev/role": "canary", "celestial.dev/canary-of": "d"}},
            "template": {"metadata": {"labels": labels},
                "spec": {"containers": [{"name": "server", "image": NEW}]}}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
            "readyReplicas": 1, "availableReplicas": 1}})
}

/// The canary's pod, Ready, with `restarts`.
fn canary_pod(restarts: i32) -> Value {
    let mut p = pod(CANARY_POD, "k1", ready());
    p["metadata"]["labels"] =
        json!({"app": "a", "celestial.dev/role": "canary", "celestial.dev/canary-of": "d"});
    p["status"]["containerStatuses"][0]["restartCount"] = json!(restarts);
    p
}

/// A server's `/metrics`: `labels` predictions of each label, as many `/predict` requests
/// answered 200 in under 25 ms, `errors` more answered 503, and `unknown` answers known=false.
fn metrics(labels: &[(&str, u32)], errors: u32, unknown: u32) -> String {
    let n: u32 = labels.iter().map(|(_, c)| c).sum();
    let mut m = String::from("# TYPE celestial_predictions counter\n");
    for (l, c) in labels {
        m.push_str(&format!(
            "celestial_predictions_total{{label=\"{l}\"}} {c}\n"
        ));
    }
    m.push_str(&format!(
        "celestial_unknown_predictions_total{{label=\"Mars\"}} {unknown}\n"
    ));
    m.push_str(&format!(
        "celestial_http_requests_total{{route=\"/predict\",method=\"POST\",status=\"200\"}} {n}\n\
         celestial_http_requests_total{{route=\"/predict\",method=\"POST\",status=\"503\"}} {errors}\n\
         celestial_http_requests_total{{route=\"/metrics\",method=\"GET\",status=\"200\"}} 3\n"
    ));
    let total = n + errors;
    for (le, c) in [("0.01", total / 2), ("0.025", total), ("+Inf", total)] {
        m.push_str(&format!(
            "celestial_http_request_duration_seconds_bucket{{route=\"/predict\",le=\"{le}\"}} {c}\n"
        ));
    }
    m
}

/// One scrape of both groups: the canary's pods listed and read, then the stable ones (the
/// serving Deployment's selector lists the canary's pod too: it is left out).
fn expect_scrape(s: &mut Scenario, canary: &str, stable: [&str; 2], restarts: i32) {
    s.get(PODS)
        .query("labelSelector", CANARY_SELECTOR)
        .reply(200, list("Pod", vec![canary_pod(restarts)]));
    s.get(&format!("{PODS}/{CANARY_POD}:3000/proxy/metrics"))
        .reply_text(canary);
    let stable_pods = STABLE_PODS
        .iter()
        .map(|p| pod(p, "h2", ready()))
        .chain([canary_pod(restarts)])
        .collect();
    s.get(PODS)
        .query("labelSelector", SELECTOR)
        .reply(200, list("Pod", stable_pods));
    for (p, text) in STABLE_PODS.iter().zip(stable) {
        s.get(&format!("{PODS}/{p}:3000/proxy/metrics"))
            .reply_text(text);
    }
}

/// The serving Deployment read, the canary applied and already available.
fn expect_started(s: &mut Scenario) {
    s.get(&one(DEPLOYMENTS, NAME))
        .reply(200, deployment(rolled_out()));
    s.on(Method::PATCH, &one(DEPLOYMENTS, CANARY))
        .query("fieldManager", "deployer")
        .query("force", "true")
        .reply(200, canary_deployment());
    s.get(&one(DEPLOYMENTS, CANARY))
        .reply(200, canary_deployment());
}

fn expect_deleted(s: &mut Scenario) {
    s.on(Method::DELETE, &one(DEPLOYMENTS, CANARY))
        .reply(200, canary_deployment());
}

struct Ran {
    result: Result<Option<CanaryReport>, Error>,
    applied: Vec<Value>,
    scraped: Vec<crate::kube::tests::api_server::Seen>,
    recorded: Vec<Entry>,
}

async fn run_canary(s: Scenario, args: &CanaryArgs) -> Ran {
    let (cluster, server) = s.serve();
    let manifests = manifests();
    let c = Canary {
        cluster: &cluster,
        ns: NS,
        manifests: &manifests,
        args,
        limits: rollout::Limits {
            timeout: Duration::from_secs(60),
            unschedulable_grace: Duration::ZERO,
        },
        container: None,
        api_key: Some("k3y"),
        model: None,
        command: "release",
        history_limit: 20,
    };
    let result = run(&c, 0.33, &mut Recorded::default()).await;
    server.verify();
    let applied = server.requests(Method::PATCH, &one(DEPLOYMENTS, CANARY));
    let recorded = server
        .requests(Method::POST, CONFIGMAPS)
        .iter()
        .flat_map(|w| written(&w.body))
        .collect();
    Ran {
        result,
        applied: applied.into_iter().map(|r| r.body).collect(),
        scraped: server.requests(
            Method::GET,
            &format!("{PODS}/{CANARY_POD}:3000/proxy/metrics"),
        ),
        recorded,
    }
}

const START: &str = "celestial_predictions_total{label=\"Mars\"} 0\n";

/// Stable pods that answered `mars` and `moon` each over the window (from [`START`]).
fn stable_end(mars: u32, moon: u32) -> String {
    metrics(&[("Mars", mars), ("Moon", moon)], 0, 0)
}

/// A canary that answers "Moon" where the stable pods answer "Mars" is aborted by the labels
/// test: exit 8 with its numbers, the canary deleted and its pods waited for, the abort recorded.
#[tokio::test(start_paused = true)]
async fn a_canary_whose_labels_moved_is_aborted_by_the_labels_signal() {
    let mut s = Scenario::new();
    expect_started(&mut s);
    expect_scrape(&mut s, START, [START, START], 0);
    let canary = metrics(&[("Mars", 20), ("Moon", 80)], 0, 0);
    let stable = stable_end(80, 20);
    expect_scrape(&mut s, &canary, [&stable, &stable], 0);
    expect_deleted(&mut s);
    s.get(PODS)
        .query("labelSelector", CANARY_SELECTOR)
        .reply(200, list("Pod", vec![]));
    s.get(&history_path())
        .reply(404, status(404, "NotFound", "absent"));
    s.on(Method::POST, CONFIGMAPS).reply(201, json!({}));
    let r = run_canary(s, &canary_args(&["--canary-duration", "5s"])).await;
    let e = r.result.unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::ModelRejected);
    let text = e.to_string();
    assert!(
        text.starts_with("the new model was aborted by its canary on live traffic: canary: aborted by labels: predicted labels of 100 vs 200 predictions, chi-squared "),
        "{text}"
    );
    assert!(text.contains("most moved: Moon 0.800 vs 0.200"), "{text}");
    assert!(
        text.contains("share 0.330 asked, 0.333 by pods (1 beside 2), 0.333 observed"),
        "{text}"
    );
    assert!(
        text.ends_with("the canary was deleted and the previous model serves every request"),
        "{text}"
    );
    let j: Value = serde_json::from_str(
        &crate::render::render(&Err(e), crate::render::Format::Json)
            .stdout
            .unwrap(),
    )
    .unwrap();
    assert_eq!(j["exit_code"], 8);
    assert_eq!(j["canary"]["analysis"]["decided_by"], "labels");
    assert_eq!(j["canary"]["canary_signals"]["labels"]["Moon"], 80.0);
    assert_eq!(j["canary"]["stable_signals"]["requests"], 200.0);
    let confidence = j["canary"]["analysis"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["signal"] == "confidence")
        .unwrap()
        .clone();
    assert_eq!(
        confidence["skipped"],
        "the canary pods do not export celestial_prediction_confidence"
    );
    // The canary: one replica beside two, the Services' label kept, its own selector.
    let c = &r.applied[0];
    assert_eq!(c["spec"]["replicas"], 1);
    assert_eq!(c["spec"]["template"]["metadata"]["labels"]["app"], "a");
    assert_eq!(
        c["spec"]["selector"]["matchLabels"],
        json!({"celestial.dev/role": "canary", "celestial.dev/canary-of": "d"})
    );
    assert_eq!(r.scraped.len(), 2);
    assert_eq!(r.scraped[0].headers["x-api-key"], "k3y");
    let [entry] = r.recorded.as_slice() else {
        panic!("{:?}", r.recorded)
    };
    assert_eq!(entry.outcome, Outcome::Aborted);
    assert_eq!(entry.image.as_deref(), Some(NEW));
    assert!(
        entry
            .reason
            .as_deref()
            .unwrap()
            .starts_with("canary: aborted by labels")
    );
}

/// A canary that behaves as the stable pods do is promoted; it is deleted without waiting, and
/// nothing is recorded (apply records the promotion after its rollout). The window ends early
/// once --canary-requests are answered (one poll, not the minute).
#[tokio::test(start_paused = true)]
async fn a_canary_like_the_stable_pods_is_promoted_early_once_enough_was_answered() {
    let mut s = Scenario::new();
    expect_started(&mut s);
    expect_scrape(&mut s, START, [START, START], 0);
    let canary = metrics(&[("Mars", 52), ("Moon", 48)], 0, 1);
    let stable = stable_end(100, 100);
    expect_scrape(&mut s, &canary, [&stable, &stable], 0);
    expect_deleted(&mut s);
    let args = canary_args(&["--canary-duration", "1m", "--canary-requests", "100"]);
    let r = run_canary(s, &args).await;
    let report = r.result.expect("judged").expect("a report");
    assert!(report.analysis.promote, "{report:#?}");
    assert!(report.window_seconds <= 5.0, "{}", report.window_seconds);
    assert_eq!(report.canary_signals.predictions(), 100.0);
    assert_eq!(report.stable_signals.predictions(), 400.0);
    assert_eq!(report.canary_pods, [CANARY_POD]);
    assert_eq!(report.stable_pods, STABLE_PODS);
    assert!(
        report
            .summary()
            .starts_with("canary: promoted: every signal within its limit")
    );
    assert!(r.recorded.is_empty());
}

/// Too little traffic: the new model is promoted on the evaluation alone, and the report says
/// so; a restart of the canary's container aborts it whatever its metrics say.
#[tokio::test(start_paused = true)]
async fn too_little_traffic_promotes_on_the_evaluation_and_a_restart_aborts() {
    let mut s = Scenario::new();
    expect_started(&mut s);
    expect_scrape(&mut s, START, [START, START], 0);
    let few = metrics(&[("Mars", 3)], 0, 0);
    expect_scrape(&mut s, &few, [&stable_end(5, 5), &stable_end(5, 5)], 0);
    expect_deleted(&mut s);
    let r = run_canary(s, &canary_args(&["--canary-duration", "5s"])).await;
    let report = r.result.expect("judged").expect("a report");
    assert!(report.analysis.promote && report.analysis.too_little_traffic);
    assert!(
        report.summary().starts_with("canary: promoted on the evaluation alone: too little traffic (3 canary predictions, --canary-min-requests 50)"),
        "{}",
        report.summary()
    );

    let mut s = Scenario::new();
    expect_started(&mut s);
    expect_scrape(&mut s, START, [START, START], 0);
    expect_scrape(&mut s, &few, [&stable_end(5, 5), &stable_end(5, 5)], 1);
    expect_deleted(&mut s);
    s.get(PODS)
        .query("labelSelector", CANARY_SELECTOR)
        .reply(200, list("Pod", vec![]));
    s.get(&history_path())
        .reply(404, status(404, "NotFound", "absent"));
    s.on(Method::POST, CONFIGMAPS).reply(201, json!({}));
    let r = run_canary(s, &canary_args(&["--canary-duration", "5s"])).await;
    let e = r.result.unwrap_err();
    assert_eq!(e.exit_code(), ExitCode::ModelRejected);
    assert!(
        e.to_string()
            .contains("aborted by restarts: the canary's containers restarted 1 time(s)"),
        "{e}"
    );
}

/// On a first release nothing serves: there is nothing to compare with, and no canary runs.
#[tokio::test(start_paused = true)]
async fn no_canary_runs_on_a_first_release() {
    let mut s = Scenario::new();
    s.get(&one(DEPLOYMENTS, NAME))
        .reply(404, status(404, "NotFound", "absent"));
    let r = run_canary(s, &canary_args(&[])).await;
    assert!(r.result.expect("no error").is_none());
    assert!(r.applied.is_empty());
}
