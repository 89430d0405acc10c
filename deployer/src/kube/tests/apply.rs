//! Server-side apply against the API server's answers: what each object's apply did (created,
//! configured, unchanged; on a dry run, what it would do), the request it makes (field manager,
//! strict validation, force, dry run, the replica count an autoscaler owns), and the refusals:
//! a field conflict (409), a forbidden apply (403), an invalid object (422), a kind the cluster
//! does not serve.

use std::path::PathBuf;

use http::Method;
use serde_json::{Value, json};

use super::api_server::{Scenario, status};
use super::exit_code;
use super::objects::*;
use crate::exit::ExitCode;
use crate::kube::apply::{Action, Applied, apply_all};
use crate::kube::error::ApplyError;
use crate::kube::manifests::{Manifest, Origin};
use crate::progress::Recorded;

/// The manifest of `object`, from document `document` of `m.yaml`.
pub fn manifest(object: Value, document: usize) -> Manifest {
    Manifest {
        origin: Origin {
            path: PathBuf::from("m.yaml"),
            document,
        },
        api_version: object["apiVersion"].as_str().expect("apiVersion").into(),
        kind: object["kind"].as_str().expect("kind").into(),
        name: object["metadata"]["name"].as_str().expect("name").into(),
        namespace: Some(NS.into()),
        object,
    }
}

/// The Deployment and Service manifests (without status, as written).
pub fn manifests() -> Vec<Manifest> {
    let mut d = deployment(Value::Null);
    let mut s = service(Value::Null);
    for o in [&mut d, &mut s] {
        let meta = o["metadata"].as_object_mut().expect("metadata");
        meta.retain(|k, _| k == "name" || k == "namespace");
        o.as_object_mut().expect("an object").remove("status");
    }
    vec![manifest(d, 1), manifest(s, 2)]
}

/// The API resources kube's discovery reads for a group version (`/api/v1`, `/apis/apps/v1`).
pub fn resources(group_version: &str, resources: &[(&str, &str)]) -> Value {
    let resources: Vec<Value> = resources
        .iter()
        .map(|(name, kind)| {
            json!({"name": name, "singularName": "", "namespaced": true, "kind": kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
        "resources": resources})
}

/// Expects the discovery of Deployments (`apps/v1`).
pub fn discover_deployments(s: &mut Scenario) {
    let apps = resources("apps/v1", &[("deployments", "Deployment")]);
    s.get("/apis/apps/v1").reply(200, apps);
}

/// Expects the discovery of Services (core `v1`).
pub fn discover_services(s: &mut Scenario) {
    s.get("/api/v1")
        .reply(200, resources("v1", &[("services", "Service")]));
}

/// Expects the server-side apply of the object at `path` with the deployer's field manager and
/// strict field validation.
fn expect_apply<'s>(s: &'s mut Scenario, path: &str) -> &'s mut super::api_server::Exchange {
    s.on(Method::PATCH, path)
        .query("fieldManager", "deployer")
        .query("fieldValidation", "Strict")
}

const NOT_FOUND: u16 = 404;

fn not_found(what: &str) -> Value {
    status(NOT_FOUND, "NotFound", &format!("{what} not found"))
}

/// Applies `manifests` against `scenario`: the result, what was applied, and the progress.
async fn apply(
    scenario: Scenario,
    manifests: &[Manifest],
    force: bool,
    dry_run: bool,
) -> (Result<(), ApplyError>, Vec<Applied>, Vec<String>) {
    let (cluster, server) = scenario.serve();
    let mut progress = Recorded::default();
    let mut applied = Vec::new();
    let result = apply_all(
        &cluster,
        manifests,
        force,
        dry_run,
        &mut progress,
        &mut applied,
    )
    .await;
    server.verify();
    (result, applied, progress.lines)
}

#[tokio::test(start_paused = true)]
async fn an_apply_reports_created_configured_and_unchanged_objects() {
    let mut s = Scenario::new();
    let (d, svc) = (one(DEPLOYMENTS, NAME), one(SERVICES, "s"));
    discover_deployments(&mut s);
    s.get(&d)
        .reply(NOT_FOUND, not_found("deployments.apps \"d\""));
    expect_apply(&mut s, &d).reply(201, deployment(Value::Null));
    discover_services(&mut s);
    s.get(&svc).reply(200, service(json!([])));
    expect_apply(&mut s, &svc).reply(200, service(json!([])));
    let (result, applied, progress) = apply(s, &manifests(), false, false).await;
    result.expect("applied");
    let actions: Vec<Action> = applied.iter().map(|a| a.action).collect();
    assert_eq!(actions, [Action::Created, Action::Unchanged]);
    assert_eq!(progress, ["Deployment/d: created", "Service/s: unchanged"]);
    assert!(applied[0].before.is_none() && applied[1].before.is_some());

    // The same apply once the Deployment exists: a new resourceVersion means it changed.
    let mut s = Scenario::new();
    discover_deployments(&mut s);
    s.get(&d).reply(200, deployment(rolled_out()));
    let changed = event("MODIFIED", deployment(rolled_out()), "11")["object"].clone();
    expect_apply(&mut s, &d).reply(200, changed);
    let (result, applied, _) = apply(s, &manifests()[..1], false, false).await;
    result.expect("applied");
    assert_eq!(applied[0].action, Action::Configured);
}

/// The body applied is the manifest; once an autoscaler in the same manifests owns the replica
/// count, the live count is applied instead of the manifest's.
#[tokio::test(start_paused = true)]
async fn an_apply_keeps_the_replica_count_an_autoscaler_set() {
    let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "d", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME},
            "minReplicas": 2, "maxReplicas": 5}});
    let mut m = manifests();
    m.truncate(1);
    m.push(manifest(hpa.clone(), 3));
    let mut live = deployment(rolled_out());
    live["spec"]["replicas"] = json!(4);
    let mut s = Scenario::new();
    let (d, h) = (
        one(DEPLOYMENTS, NAME),
        "/apis/autoscaling/v2/namespaces/prod/horizontalpodautoscalers/d",
    );
    discover_deployments(&mut s);
    s.get(&d).reply(200, live.clone());
    expect_apply(&mut s, &d).reply(200, live);
    let autoscaling = resources(
        "autoscaling/v2",
        &[("horizontalpodautoscalers", "HorizontalPodAutoscaler")],
    );
    s.get("/apis/autoscaling/v2").reply(200, autoscaling);
    s.get(h).reply(NOT_FOUND, not_found("hpa"));
    expect_apply(&mut s, h).reply(201, hpa);
    let (cluster, server) = s.serve();
    let mut applied = Vec::new();
    apply_all(
        &cluster,
        &m,
        false,
        false,
        &mut Recorded::default(),
        &mut applied,
    )
    .await
    .expect("applied");
    server.verify();
    let body = &server.requests(Method::PATCH, &d)[0].body;
    let mut expected = m[0].object.clone();
    expected["spec"]["replicas"] = json!(4);
    assert_eq!(*body, expected);
}

/// A dry run asks the API server what would happen (`dryRun=All`) and compares its answer with
/// the live object, ignoring what changes on every write.
#[tokio::test(start_paused = true)]
async fn a_dry_run_says_what_would_change_without_persisting() {
    let d = one(DEPLOYMENTS, NAME);
    for (image, action) in [
        (IMAGE, Action::Unchanged),
        ("registry.invalid/server:3", Action::Configured),
    ] {
        let mut s = Scenario::new();
        discover_deployments(&mut s);
        let live = deployment(rolled_out());
        s.get(&d).reply(200, live.clone());
        let mut would = event("MODIFIED", live, "11")["object"].clone();
        would["spec"]["template"] = template(image);
        expect_apply(&mut s, &d)
            .query("dryRun", "All")
            .reply(200, would);
        let (result, applied, _) = apply(s, &manifests()[..1], false, true).await;
        result.expect("dry run");
        assert_eq!(applied[0].action, action, "{image}");
    }
}

/// Another field manager owns a field: the apply fails (exit 3) naming the field and the way
/// out; with `--force-conflicts` the apply is forced and succeeds.
#[tokio::test(start_paused = true)]
async fn a_field_conflict_is_explained_and_force_takes_the_fields_over() {
    let d = one(DEPLOYMENTS, NAME);
    let conflict = "Apply failed with 1 conflict: conflict with \"someone-else\" using apps/v1: .spec.template.spec.containers[name=\"server\"].image";
    let mut s = Scenario::new();
    discover_deployments(&mut s);
    s.get(&d).reply(200, deployment(rolled_out()));
    expect_apply(&mut s, &d).reply(409, status(409, "Conflict", conflict));
    let (result, applied, _) = apply(s, &manifests(), false, false).await;
    assert!(applied.is_empty(), "nothing applied after the conflict");
    let error = result.expect_err("a conflict");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("Deployment/d: {conflict}"))
            && text.contains("--force-conflicts"),
        "{text}"
    );
    assert!(matches!(error, ApplyError::Conflict { .. }), "{error:?}");
    assert_eq!(exit_code(error), ExitCode::Apply);

    let mut s = Scenario::new();
    discover_deployments(&mut s);
    s.get(&d).reply(200, deployment(rolled_out()));
    let forced = event("MODIFIED", deployment(rolled_out()), "11")["object"].clone();
    expect_apply(&mut s, &d)
        .query("force", "true")
        .reply(200, forced);
    let (result, applied, _) = apply(s, &manifests()[..1], true, false).await;
    result.expect("forced");
    assert_eq!(applied[0].action, Action::Configured);
}

/// A forbidden apply and an invalid object: each refusal keeps the API server's words and says
/// which object (and for an invalid one, which manifest document) it was.
#[tokio::test(start_paused = true)]
async fn refused_applies_say_which_object_and_why() {
    let d = one(DEPLOYMENTS, NAME);
    let forbidden = "deployments.apps \"d\" is forbidden: User \"ci\" cannot patch resource";
    let invalid = "Deployment.apps \"d\" is invalid: spec.replicas: Invalid value: -1";
    for (code, reason, message) in [(403, "Forbidden", forbidden), (422, "Invalid", invalid)] {
        let mut s = Scenario::new();
        discover_deployments(&mut s);
        s.get(&d).reply(200, deployment(rolled_out()));
        expect_apply(&mut s, &d).reply(code, status(code, reason, message));
        let (result, _, _) = apply(s, &manifests(), false, false).await;
        let error = result.expect_err("refused");
        match &error {
            ApplyError::Forbidden {
                object,
                action,
                message: m,
            } if code == 403 => {
                assert_eq!(
                    (object.as_str(), *action, m.as_str()),
                    ("Deployment/d", "apply", forbidden)
                );
            }
            ApplyError::Invalid {
                object,
                origin,
                message: m,
            } if code == 422 => {
                assert_eq!(
                    (object.as_str(), origin.as_str(), m.as_str()),
                    ("Deployment/d", "m.yaml (document 1)", invalid)
                );
            }
            other => panic!("{code}: {other:?}"),
        }
        assert_eq!(exit_code(error), ExitCode::Apply, "{code}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_kind_the_cluster_does_not_serve_is_named() {
    let widget = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "namespace": NS}});
    let mut s = Scenario::new();
    s.get("/apis/example.com/v1").reply(
        NOT_FOUND,
        not_found("the server could not find the requested resource"),
    );
    let (result, _, _) = apply(s, &[manifest(widget, 1)], false, false).await;
    match result.expect_err("unknown kind") {
        ApplyError::UnknownKind {
            object,
            api_version,
            kind,
            ..
        } => {
            assert_eq!(
                (object.as_str(), api_version.as_str(), kind.as_str()),
                ("Widget/w", "example.com/v1", "Widget")
            );
        }
        other => panic!("{other:?}"),
    }
}
