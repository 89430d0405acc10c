//! `--monitoring` against the scripted API server (`crate::kube::tests`), with the repository's
//! own `kubernetes/deployment.yaml` in namespace `prod`: a cluster with prometheus-operator's
//! CRDs gets the three objects in the release's namespace with the release's labels, beside the
//! Deployment, and `apply` succeeds; a cluster without them gets the dashboard's ConfigMap, a
//! warning that names what is missing and how to install it, and `apply` still ends with 0; a
//! dry run asks for the same objects with `dryRun=All`.

use clap::Parser;
use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::cli::Cli;
use crate::cli::apply::ApplyArgs;
use crate::cli::command::Command;
use crate::commands::apply::{self, Outcome, prepare};
use crate::commands::diff;
use crate::commands::{Report, diff::load_manifests};
use crate::exit::ExitCode;
use crate::interrupt::Interrupt;
use crate::kube::tests::api_server::{Scenario, status};
use crate::kube::tests::apply::resources;
use crate::kube::tests::objects::{NS, deployment, rolled_out};
use crate::progress::Recorded;
use crate::render::{Format, render};

const DEPLOYMENT: &str = "celestial-bodies-classifier-deployment";
const DEPLOYMENT_NAME: &str = "Deployment/celestial-bodies-classifier-deployment";
const APP: &str = "celestial-bodies-classifier";
const OPERATOR: &str = "/apis/monitoring.coreos.com/v1";
const RULE: &str =
    "/apis/monitoring.coreos.com/v1/namespaces/prod/prometheusrules/celestial-bodies-classifier";
const MONITOR: &str =
    "/apis/monitoring.coreos.com/v1/namespaces/prod/podmonitors/celestial-bodies-classifier";
const DASHBOARD: &str = "/api/v1/namespaces/prod/configmaps/celestial-bodies-classifier-dashboard";
const DEPLOYMENTS: &str =
    "/apis/apps/v1/namespaces/prod/deployments/celestial-bodies-classifier-deployment";

/// `deployer apply --monitoring -f kubernetes/deployment.yaml` with `flags`, waiting for nothing
/// but the rollout and recording no history.
fn apply_args(flags: &[&str]) -> ApplyArgs {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../kubernetes/deployment.yaml");
    let mut argv = vec!["deployer", "apply", "--monitoring", "-f", file];
    argv.extend(["--no-wait-lb", "--history-limit", "0"]);
    argv.extend(flags);
    let Command::Apply(a) = Cli::try_parse_from(argv).expect("valid flags").command else {
        panic!("not apply")
    };
    a
}

/// prometheus-operator's resources as discovery lists them.
fn operator_resources() -> Value {
    resources(
        "monitoring.coreos.com/v1",
        &[
            ("prometheusrules", "PrometheusRule"),
            ("podmonitors", "PodMonitor"),
            ("servicemonitors", "ServiceMonitor"),
        ],
    )
}

fn not_found(path: &str) -> Value {
    status(404, "NotFound", &format!("{path} not found"))
}

/// Expects the apply of a new object at `path` (its kind discovered at `discovery`): the
/// discovery, the get (404) and the server-side apply, answered with `object`.
fn expect_created(s: &mut Scenario, (discovery, listed): (&str, Value), path: &str, object: Value) {
    s.get(discovery).reply(200, listed);
    s.get(path).reply(404, not_found(path));
    s.on(Method::PATCH, path)
        .query("fieldManager", "deployer")
        .query("fieldValidation", "Strict")
        .reply(201, object);
}

/// The objects `--monitoring` applies with the shipped Deployment, as the API server echoes them.
fn fitted_objects() -> Vec<Value> {
    let (manifests, _) = load_manifests(&apply_args(&[]).manifests, None).expect("manifests");
    fitted(&manifests)
        .expect("fitted")
        .into_iter()
        .map(|m| m.object)
        .collect()
}

/// The shipped Deployment as the API server has it after the apply: rolled out.
fn live_deployment() -> Value {
    let mut d = deployment(rolled_out());
    d["metadata"]["name"] = json!(DEPLOYMENT);
    d
}

/// Expects everything `apply` does for the shipped Deployment after `prepare`: its apply, and
/// its rollout wait (complete at once).
fn expect_deployment(s: &mut Scenario) {
    let apps = resources("apps/v1", &[("deployments", "Deployment")]);
    expect_created(s, ("/apis/apps/v1", apps), DEPLOYMENTS, live_deployment());
    s.get(DEPLOYMENTS).reply(200, live_deployment());
}

fn core_resources() -> Value {
    resources("v1", &[("configmaps", "ConfigMap")])
}

/// Runs `deployer apply` with `args` against `scenario` (namespace `prod`, as `-n prod` sets it)
/// as `release` does: [`prepare`], then the apply. Its JSON document, exit code and the bodies
/// the API server got, by path.
async fn run_apply(
    scenario: Scenario,
    args: &ApplyArgs,
) -> (Value, ExitCode, Vec<(String, Value)>) {
    let (mut cluster, server) = scenario.serve();
    cluster.namespace = NS.into();
    let (manifests, _) = load_manifests(&args.manifests, None).expect("manifests");
    let fitted = Some(fitted(&manifests).expect("fitted"));
    let prepared = prepare(cluster, &manifests, fitted, &args.security, &args.record)
        .await
        .expect("prepared");
    let outcome = apply::run(args, None, Some(prepared), "apply", &Interrupt::never()).await;
    server.verify();
    let result = outcome.map(Report::from);
    let rendered = render(&result, Format::Json);
    let document = serde_json::from_str(&rendered.stdout.expect("a JSON document")).expect("JSON");
    let patched = [RULE, MONITOR, DASHBOARD, DEPLOYMENTS]
        .into_iter()
        .flat_map(|p| server.requests(Method::PATCH, p))
        .map(|r| {
            (
                r.uri.split('?').next().unwrap_or_default().to_string(),
                r.body,
            )
        })
        .collect();
    (document, rendered.code, patched)
}

#[tokio::test(start_paused = true)]
async fn with_the_operators_crds_the_rule_the_monitor_and_the_dashboard_are_applied() {
    let objects = fitted_objects();
    let mut s = Scenario::new();
    s.get(OPERATOR).reply(200, operator_resources());
    expect_created(
        &mut s,
        (OPERATOR, operator_resources()),
        RULE,
        objects[0].clone(),
    );
    expect_created(
        &mut s,
        (OPERATOR, operator_resources()),
        MONITOR,
        objects[1].clone(),
    );
    expect_created(
        &mut s,
        ("/api/v1", core_resources()),
        DASHBOARD,
        objects[2].clone(),
    );
    expect_deployment(&mut s);
    let (document, code, patched) = run_apply(s, &apply_args(&[])).await;
    assert_eq!(code, ExitCode::Success, "{document:#}");
    let applied: Vec<&str> = patched.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(applied, [RULE, MONITOR, DASHBOARD, DEPLOYMENTS]);
    for (path, body) in &patched[..3] {
        assert!(path.contains("/namespaces/prod/"), "{path}");
        let labels = &body["metadata"]["labels"];
        assert_eq!(labels["app.kubernetes.io/name"], APP, "{path}");
        assert_eq!(
            labels["app.kubernetes.io/component"], "monitoring",
            "{path}"
        );
    }
    let deployment = &patched[3].1;
    assert_eq!(
        patched[1].1["spec"]["selector"],
        deployment["spec"]["selector"]
    );
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(
        pod_labels[patched[1].1["spec"]["jobLabel"].as_str().unwrap()],
        APP
    );
    assert_eq!(patched[2].1["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        document["monitoring"],
        json!({"objects": [format!("PrometheusRule/{APP}"), format!("PodMonitor/{APP}"),
            format!("ConfigMap/{APP}-dashboard")], "missing_kinds": [], "skipped": []})
    );
    assert_eq!(document["objects"].as_array().map(Vec::len), Some(4));
}

#[tokio::test(start_paused = true)]
async fn without_the_operators_crds_the_dashboard_is_applied_with_a_warning_and_exit_0() {
    let objects = fitted_objects();
    let mut s = Scenario::new();
    s.get(OPERATOR).reply(404, not_found(OPERATOR));
    expect_created(
        &mut s,
        ("/api/v1", core_resources()),
        DASHBOARD,
        objects[2].clone(),
    );
    expect_deployment(&mut s);
    let (document, code, patched) = run_apply(s, &apply_args(&[])).await;
    assert_eq!(code, ExitCode::Success, "{document:#}");
    assert_eq!(document["ok"], true);
    let applied: Vec<&str> = patched.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(applied, [DASHBOARD, DEPLOYMENTS]);
    let m = &document["monitoring"];
    assert_eq!(m["objects"], json!([format!("ConfigMap/{APP}-dashboard")]));
    assert_eq!(m["missing_kinds"], json!(["PrometheusRule", "PodMonitor"]));
    assert_eq!(
        m["skipped"],
        json!([format!("PrometheusRule/{APP}"), format!("PodMonitor/{APP}")])
    );
    assert_eq!(m["warnings"].as_array().map(Vec::len), Some(1));
    let warning = m["warnings"][0].as_str().expect("a warning");
    for part in [
        "warning: --monitoring: the cluster does not serve monitoring.coreos.com/v1 PrometheusRule, PodMonitor",
        "applied ConfigMap/celestial-bodies-classifier-dashboard, not PrometheusRule/celestial-bodies-classifier, PodMonitor/celestial-bodies-classifier",
        INSTALL_HINT,
    ] {
        assert!(warning.contains(part), "{part} in {warning}");
    }
}

/// The text report says the same on stdout; the warning line is what goes to stderr.
#[test]
fn the_text_says_what_was_applied_and_what_not() {
    let fitted = fitted_objects()
        .into_iter()
        .enumerate()
        .map(|(i, o)| crate::kube::tests::apply::manifest(o, i + 1))
        .collect();
    let m = keep_served(fitted, &["PrometheusRule", "PodMonitor"]);
    assert_eq!(
        m.report.text(),
        format!(
            "monitoring: ConfigMap/{APP}-dashboard; not applied: PrometheusRule/{APP}, PodMonitor/{APP} (the cluster does not serve PrometheusRule, PodMonitor)\n"
        )
    );
    let mut p = Recorded::default();
    m.warn(&mut p);
    assert_eq!(p.lines, m.report.warnings);
    assert_eq!(p.lines.len(), 1);
    let all = keep_served(m.objects, &[]);
    assert!(all.report.warnings.is_empty());
    all.warn(&mut p);
    assert_eq!(p.lines.len(), 1, "no warning when nothing is missing");
}

/// `apply --dry-run --monitoring` (and `diff --monitoring`): the objects the cluster can take are
/// dry-run applied and diffed with the release's; the warning goes to the warnings.
#[tokio::test(start_paused = true)]
async fn a_dry_run_shows_the_monitoring_objects_the_cluster_can_take() {
    let objects = fitted_objects();
    let mut s = Scenario::new();
    s.get(OPERATOR).reply(
        200,
        resources(
            "monitoring.coreos.com/v1",
            &[("prometheusrules", "PrometheusRule")],
        ),
    );
    let dry = |s: &mut Scenario, discovery: (&str, Value), path: &str, object: Value| {
        s.get(discovery.0).reply(200, discovery.1);
        s.get(path).reply(404, not_found(path));
        s.on(Method::PATCH, path)
            .query("fieldManager", "deployer")
            .query("dryRun", "All")
            .reply(201, object);
    };
    let operator = resources(
        "monitoring.coreos.com/v1",
        &[("prometheusrules", "PrometheusRule")],
    );
    dry(&mut s, (OPERATOR, operator), RULE, objects[0].clone());
    dry(
        &mut s,
        ("/api/v1", core_resources()),
        DASHBOARD,
        objects[2].clone(),
    );
    let apps = resources("apps/v1", &[("deployments", "Deployment")]);
    dry(
        &mut s,
        ("/apis/apps/v1", apps),
        DEPLOYMENTS,
        live_deployment(),
    );
    let (mut cluster, server) = s.serve();
    cluster.namespace = NS.into();
    let args = apply_args(&["--dry-run"]);
    let (manifests, _) = load_manifests(&args.manifests, None).expect("manifests");
    let fitted = fitted(&manifests).expect("fitted");
    let planned = plan(&cluster, fitted, None).await.expect("planned");
    let mut warnings = Recorded::default();
    let r = diff::dry_run(
        &cluster,
        &manifests,
        Some(planned),
        false,
        "apply",
        &mut warnings,
    )
    .await
    .expect("dry run");
    server.verify();
    let names: Vec<String> = r
        .objects
        .iter()
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect();
    assert_eq!(
        names,
        [
            format!("PrometheusRule/{APP}"),
            format!("ConfigMap/{APP}-dashboard"),
            DEPLOYMENT_NAME.into()
        ]
    );
    assert!(r.objects.iter().all(|o| o.namespace.as_deref() == Some(NS)));
    assert_eq!(warnings.lines.len(), 1);
    assert!(
        warnings.lines[0].contains("does not serve monitoring.coreos.com/v1 PodMonitor"),
        "{}",
        warnings.lines[0]
    );
    let text = Report::from(Outcome::DryRun(r)).text();
    assert!(
        text.contains(&format!("PrometheusRule/{APP}: would be created")),
        "{text}"
    );
    assert!(
        text.contains(&format!("not applied: PodMonitor/{APP}")),
        "{text}"
    );
}

/// `--tls-secret` without `--tls-server-name`: the PodMonitor scrapes the HTTPS port trusting the
/// Secret, and a warning says what the scrapes' certificate check needs.
#[tokio::test(start_paused = true)]
async fn with_tls_the_plan_scrapes_https_and_says_what_the_check_needs() {
    let mut s = Scenario::new();
    s.get(OPERATOR).reply(200, operator_resources());
    let (cluster, server) = s.serve();
    let (manifests, _) = load_manifests(&apply_args(&[]).manifests, None).expect("manifests");
    let fitted = fitted(&manifests).expect("fitted");
    let tls = TlsScrape {
        secret: "celestial-tls".into(),
        trust_key: "tls.crt".into(),
        server_name: None,
    };
    let planned = plan(&cluster, fitted, Some(&tls)).await.expect("planned");
    server.verify();
    let monitor = planned
        .objects
        .iter()
        .find(|m| m.kind == "PodMonitor")
        .expect("a PodMonitor");
    let endpoint = &monitor.object["spec"]["podMetricsEndpoints"][0];
    assert_eq!(
        (&endpoint["port"], &endpoint["scheme"]),
        (&json!("https"), &json!("https"))
    );
    assert_eq!(
        endpoint["tlsConfig"],
        json!({"ca": {"secret": {"name": "celestial-tls", "key": "tls.crt"}}})
    );
    assert_eq!(
        planned.report.warnings.len(),
        1,
        "{:?}",
        planned.report.warnings
    );
    assert!(
        planned.report.warnings[0].contains("give --tls-server-name HOST"),
        "{:?}",
        planned.report.warnings
    );
}

/// The same objects from `-f kubernetes/monitoring/` and from `--monitoring`: refused before
/// anything is applied (exit 2), naming the file.
#[test]
fn monitoring_objects_given_twice_are_refused() {
    let args = apply_args(&[]);
    let (mut manifests, _) = load_manifests(&args.manifests, None).expect("manifests");
    let shipped = crate::kube::monitoring::shipped().expect("built in");
    manifests.extend(shipped);
    let e = fitted(&manifests).expect_err("given twice");
    assert_eq!(
        e.to_string(),
        format!(
            "--monitoring: kubernetes/monitoring/prometheus-rule.yaml (document 1) defines PrometheusRule/{APP} too, which --monitoring applies: give one or the other"
        )
    );
    assert_eq!(Error::from(e).exit_code(), ExitCode::Usage);
}
