//! What `apply` does after a failed check, against the scripted API server
//! (`crate::kube::tests`): a model the server refused is rolled back whatever
//! `--rollback-on-failure` says, a failed smoke test is rolled back with it, and each outcome ends
//! with its exit code.

use clap::Parser;
use http::Method;
use serde_json::{Value, json};

use super::waiting::{Waiting, smoke_test};
use crate::cli::Cli;
use crate::cli::apply::WaitArgs;
use crate::cli::command::Command;
use crate::error::Error;
use crate::exit::ExitCode;
use crate::kube::apply::{Action, Applied};
use crate::kube::rollout::{MODEL_CHECK_FAILED, RolloutError};
use crate::kube::tests::api_server::{Exchange, Scenario};
use crate::kube::tests::objects::*;
use crate::progress::Recorded;
use crate::render::{Format, render};
use crate::smoke::Access;

/// `apply`'s waiting flags with `flags` (and the rollout's grace at 0s).
pub fn wait_args(flags: &[&str]) -> WaitArgs {
    let mut argv = vec!["deployer", "apply", "--unschedulable-grace", "0s"];
    argv.extend(flags);
    let Command::Apply(a) = Cli::try_parse_from(argv).expect("valid flags").command else {
        panic!("not apply")
    };
    a.wait
}

/// Deployment `d` as this apply changed it: from [`PREVIOUS_IMAGE`] to [`IMAGE`] (or, with
/// `changed` false, re-applied as it was).
pub fn applied(changed: bool) -> Applied {
    let mut before = deployment(rolled_out());
    if changed {
        before["spec"]["template"] = template(PREVIOUS_IMAGE);
    }
    Applied {
        kind: "Deployment".into(),
        name: NAME.into(),
        namespace: Some(NS.into()),
        action: if changed {
            Action::Configured
        } else {
            Action::Unchanged
        },
        before: Some(before),
        after: deployment(rolling()),
    }
}

/// The forced server-side apply a rollback makes.
pub fn expect_rollback_apply(s: &mut Scenario) -> &mut Exchange {
    s.on(Method::PATCH, &one(DEPLOYMENTS, NAME))
        .query("fieldManager", "deployer")
        .query("force", "true")
}

/// Expects the rollback of `d` to the previous spec: its apply (all pods at once), the wait until
/// it is available again (9 s), then the apply that sets its own strategy back.
pub fn expect_rollback(s: &mut Scenario) {
    expect_rollback_apply(s).reply(200, deployment(rolling()));
    let mut back = Rollout::rolling();
    back.deployment_events = vec![(secs(9), event("MODIFIED", deployment(rolled_out()), "30"))];
    back.script(s);
    expect_rollback_apply(s).reply(200, deployment(rolled_out()));
}

/// The two applies of a rollback: the spec with `maxSurge: 100%`, then the same spec with its own
/// strategy.
pub fn assert_rollback_applies(patches: &[Value]) {
    assert_eq!(patches.len(), 2, "a rollback applies twice: {patches:#?}");
    let (fast, own) = (&patches[0]["spec"], &patches[1]["spec"]);
    assert_eq!(fast["strategy"]["rollingUpdate"]["maxSurge"], "100%");
    assert_eq!(fast["template"], own["template"]);
    assert_ne!(own["strategy"]["rollingUpdate"]["maxSurge"], "100%");
}

/// The image of the spec the rollback applied.
pub fn restored_image(body: &Value) -> &str {
    body["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
}

/// Runs the rollout waits of `apply` for [`applied`] against `scenario`.
async fn rollouts(
    scenario: Scenario,
    flags: &[&str],
) -> (Result<(), Error>, Vec<String>, Vec<Value>) {
    let (cluster, server) = scenario.serve();
    let applied = [applied(true)];
    let wait = wait_args(flags);
    let waiting = Waiting {
        cluster: &cluster,
        applied: &applied,
        wait: &wait,
    };
    let mut p = Recorded::default();
    let result = waiting.rollouts(&mut p).await.map(|_| ());
    server.verify();
    let patches = server.requests(Method::PATCH, &one(DEPLOYMENTS, NAME));
    (
        result,
        p.lines,
        patches.into_iter().map(|r| r.body).collect(),
    )
}

/// The server refuses the new model: the previous revision is restored although
/// `--rollback-on-failure` was not given, and `deployer` ends with 8 and the server's reason.
#[tokio::test(start_paused = true)]
async fn a_model_the_server_refuses_is_rolled_back_without_being_asked_and_exits_8() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    let refused = pod("d-h2-a", "h2", model_check_failed());
    r.pod_events = vec![(secs(4), event("MODIFIED", refused, "11"))];
    r.script(&mut s);
    expect_rollback(&mut s);
    let (result, progress, patches) = rollouts(s, &[]).await;
    assert_rollback_applies(&patches);
    assert_eq!(restored_image(&patches[0]), PREVIOUS_IMAGE);
    let e = result.expect_err("the rollout failed");
    assert!(
        matches!(&e, Error::Rollout(RolloutError::Failed { reason, rollback: Some(rb), .. })
            if reason == MODEL_CHECK_FAILED && rb.restored),
        "{e:?}"
    );
    assert!(
        progress
            .iter()
            .any(|l| l.starts_with("rollback: restored the previous spec")),
        "{progress:#?}"
    );
    let failed = Err(e);
    let text = render(&failed, Format::Text);
    assert_eq!(text.code, ExitCode::ModelRejected);
    let error = text.stderr.expect("an error");
    assert!(error.contains(MODEL_CHECK_REASON), "{error}");
    assert!(
        error.contains("rollback: restored the previous spec"),
        "{error}"
    );
    let j: Value = serde_json::from_str(&render(&failed, Format::Json).stdout.unwrap()).unwrap();
    assert_eq!(
        (j["exit_code"].clone(), j["category"].clone()),
        (json!(8), json!("model_rejected"))
    );
    assert_eq!(j["reason"], MODEL_CHECK_FAILED);
    assert_eq!(j["rollback"]["image"], PREVIOUS_IMAGE);
}

/// Another failure is rolled back only on request, as before: a crash loop without the flag
/// stays where it is, exit 4.
#[tokio::test(start_paused = true)]
async fn another_rollout_failure_is_rolled_back_only_on_request() {
    let mut s = Scenario::new();
    let mut r = Rollout::rolling();
    let crashing = pod("d-h2-a", "h2", waiting("CrashLoopBackOff", "back-off 10s"));
    r.pod_events = vec![(secs(2), event("MODIFIED", crashing, "11"))];
    r.script(&mut s);
    let (result, _, patches) = rollouts(s, &[]).await;
    assert!(
        patches.is_empty(),
        "no rollback without --rollback-on-failure"
    );
    assert_eq!(result.unwrap_err().exit_code(), ExitCode::Rollout);
}

/// A URL nothing answers on: the smoke test fails at once.
const DEAD_URL: &str = "http://127.0.0.1:1/";

/// Runs the smoke test of `apply` through [`DEAD_URL`] for `applied` against `scenario`.
async fn smoke(scenario: Scenario, applied: Applied, flags: &[&str]) -> (Error, Vec<Value>) {
    let (cluster, server) = scenario.serve();
    let applied = [applied];
    let mut all = vec!["--smoke-timeout", "0s"];
    all.extend(flags);
    let wait = wait_args(&all);
    let waiting = Waiting {
        cluster: &cluster,
        applied: &applied,
        wait: &wait,
    };
    let url = DEAD_URL.to_string();
    let mut p = Recorded::default();
    let result = smoke_test(&waiting, Some(&url), &Access::default(), &mut p).await;
    server.verify();
    let patches = server.requests(Method::PATCH, &one(DEPLOYMENTS, NAME));
    let bodies = patches.into_iter().map(|r| r.body).collect();
    (result.expect_err("nothing answers"), bodies)
}

/// A failed smoke test with `--rollback-on-failure` restores what this apply changed: the previous
/// version serves, exit 8, and the JSON document says it rolled back.
#[tokio::test(start_paused = true)]
async fn a_failed_smoke_test_rolls_back_on_request_and_exits_8() {
    let mut s = Scenario::new();
    expect_rollback(&mut s);
    let (e, patches) = smoke(s, applied(true), &["--rollback-on-failure"]).await;
    assert_rollback_applies(&patches);
    assert_eq!(restored_image(&patches[0]), PREVIOUS_IMAGE);
    assert!(
        matches!(&e, Error::SmokeRolledBack { rollback, .. } if rollback.restored),
        "{e:?}"
    );
    let failed = Err(e);
    let j: Value = serde_json::from_str(&render(&failed, Format::Json).stdout.unwrap()).unwrap();
    assert_eq!(j["exit_code"], 8);
    assert_eq!(j["rollback"]["restored"], true);
    let error = j["error"].as_str().unwrap();
    assert!(
        error.starts_with("http://127.0.0.1:1/readyz did not answer"),
        "{error}"
    );

    // Without the flag: nothing is rolled back, exit 6 as before.
    let (e, patches) = smoke(Scenario::new(), applied(true), &[]).await;
    assert!(patches.is_empty());
    assert!(matches!(e, Error::Smoke(_)), "{e:?}");
    assert_eq!(e.exit_code(), ExitCode::Smoke);
}

/// A smoke test that fails for a version this apply did not change (it was serving already) is
/// not rolled back to something older: exit 6, and the rollback says why not.
#[tokio::test(start_paused = true)]
async fn a_failed_smoke_test_of_an_unchanged_template_rolls_nothing_back() {
    let (e, patches) = smoke(Scenario::new(), applied(false), &["--rollback-on-failure"]).await;
    assert!(patches.is_empty());
    match &e {
        Error::SmokeRolledBack { rollback, .. } => {
            assert!(!rollback.restored);
            assert!(
                rollback.message.starts_with("not rolled back: "),
                "{}",
                rollback.message
            );
        }
        other => panic!("not a smoke failure: {other:?}"),
    }
    assert_eq!(e.exit_code(), ExitCode::Smoke);
}

/// Records what [`applied`] came to (`failure`) with `--history-limit limit` against `scenario`:
/// the records, and the entries written.
async fn record(
    scenario: Scenario,
    waited: Result<super::Waited, Error>,
    limit: usize,
) -> (super::record::Records, Vec<crate::kube::history::Entry>) {
    use crate::kube::tests::history::{history_path, written};
    let (cluster, server) = scenario.serve();
    let applied = [applied(true)];
    let wait = wait_args(&[]);
    let waiting = Waiting {
        cluster: &cluster,
        applied: &applied,
        wait: &wait,
    };
    let access = Access {
        api_key: Some("k".into()),
        ..Access::default()
    };
    let recorder = super::record::Recorder {
        waiting: &waiting,
        command: "release",
        limit,
        container: None,
        access: &access,
    };
    let records = recorder.record(&waited, &mut Recorded::default()).await;
    server.verify();
    let writes = [
        server.requests(Method::POST, CONFIGMAPS),
        server.requests(Method::PUT, &history_path()),
    ]
    .concat();
    let entries = writes.iter().flat_map(|w| written(&w.body)).collect();
    (records, entries)
}

/// Waits that ended well (without a smoke test: no public URL to ask).
fn passed() -> super::Waited {
    (Vec::new(), Vec::new(), None)
}

/// Expects the history absent, then created.
fn expect_history_created(s: &mut Scenario) {
    use crate::kube::tests::api_server::status;
    use crate::kube::tests::history::{history_configmap, history_path};
    let absent = status(404, "NotFound", "not found");
    s.get(&history_path()).reply(404, absent);
    s.on(Method::POST, CONFIGMAPS)
        .reply(201, history_configmap(&[], "1"));
}

/// A release that passed: promoted, with the revision, digest, model and template that serve.
#[tokio::test(start_paused = true)]
async fn a_release_that_passed_is_recorded_as_promoted_with_its_model() {
    use crate::kube::history::Outcome;
    use crate::kube::tests::history::expect_serving;
    let mut s = Scenario::new();
    expect_serving(&mut s, Some((200, model_document("1.2.0"))));
    expect_history_created(&mut s);
    let (records, entries) = record(s, Ok(passed()), 20).await;
    assert_eq!(records.model.expect("the model").version, "1.2.0");
    assert_eq!(records.recorded.len(), 1);
    assert_eq!(records.recorded[0].entries, Some(1));
    let [e] = entries.as_slice() else {
        panic!("{entries:?}")
    };
    assert_eq!(
        (e.command.as_str(), e.outcome),
        ("release", Outcome::Promoted)
    );
    assert_eq!(e.revision.as_deref(), Some("2"));
    assert_eq!(e.digest.as_deref(), Some(IMAGE_DIGEST));
    assert_eq!(e.template, Some(template(IMAGE)));
    assert_eq!(e.model.as_ref().unwrap().validation_accuracy, Some(0.9933));
}

/// A model the server refused: rolled back, the server's reason in the entry, no template (it is
/// nothing to go back to).
#[tokio::test(start_paused = true)]
async fn a_refused_model_is_recorded_as_rolled_back_with_the_servers_reason() {
    use crate::kube::history::Outcome;
    use crate::kube::rollout::Rollback;
    let mut s = Scenario::new();
    expect_history_created(&mut s);
    let failed = Error::Rollout(RolloutError::Failed {
        deployment: NAME.into(),
        reason: MODEL_CHECK_FAILED.into(),
        message: format!("pod d-h2-a container server: {MODEL_CHECK_REASON}"),
        rollback: Some(Rollback {
            restored: true,
            image: Some(PREVIOUS_IMAGE.into()),
            message: "restored the previous spec".into(),
        }),
    });
    let (_, entries) = record(s, Err(failed), 20).await;
    let [e] = entries.as_slice() else {
        panic!("{entries:?}")
    };
    assert_eq!(e.outcome, Outcome::RolledBack);
    assert_eq!(e.image.as_deref(), Some(IMAGE), "the image that failed");
    assert!(e.template.is_none() && e.model.is_none());
    let reason = e.reason.as_deref().unwrap();
    assert!(reason.contains(MODEL_CHECK_REASON), "{reason}");
    assert!(
        reason.ends_with("; rollback: restored the previous spec"),
        "{reason}"
    );
}

/// `--history-limit 0` records nothing; an error that is not the release's own (the API server
/// refused a request) is not recorded either.
#[tokio::test(start_paused = true)]
async fn nothing_is_recorded_with_limit_0_or_for_an_api_refusal() {
    let (records, entries) = record(Scenario::new(), Ok(passed()), 0).await;
    assert!(records.recorded.is_empty() && entries.is_empty());
    let refused = Error::Rollout(RolloutError::Api(crate::kube::error::ApplyError::Api {
        object: "Deployment/d".into(),
        action: "get",
        message: "etcd down".into(),
    }));
    let (records, entries) = record(Scenario::new(), Err(refused), 20).await;
    assert!(records.recorded.is_empty() && entries.is_empty());
}

/// A server on loopback that answers every request with `body` (JSON), until dropped.
async fn answering(body: Value) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let body = body.to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(format!("{head}{body}").as_bytes()).await;
        }
    });
    (url, task)
}

/// The API server cannot ask the pods (no `pods/proxy` permission): the model comes through the
/// public URL the smoke test passed, and the entry has it.
#[tokio::test]
async fn the_model_comes_through_the_public_url_when_no_pod_can_be_asked() {
    use crate::kube::tests::api_server::status;
    use crate::kube::tests::history::expect_serving;
    let (url, server) = answering(model_document("1.3.0")).await;
    let mut s = Scenario::new();
    let refusal = status(403, "Forbidden", "cannot get resource pods/proxy");
    expect_serving(&mut s, Some((403, refusal)));
    expect_history_created(&mut s);
    let smoke = crate::smoke::SmokeReport {
        prediction: "Earth".into(),
        probability: 0.9,
        labels: 10,
        latency_ms: 1.0,
    };
    let (records, entries) = record(s, Ok((Vec::new(), vec![url], Some(smoke))), 20).await;
    server.abort();
    assert_eq!(records.model.expect("the model").version, "1.3.0");
    assert_eq!(records.model_error, None);
    assert_eq!(entries[0].model.as_ref().unwrap().version, "1.3.0");
}
