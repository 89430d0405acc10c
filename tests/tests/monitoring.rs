//! kubernetes/monitoring/, checked without a cluster: the PrometheusRule and the PodMonitor against
//! prometheus-operator's CRDs (kubeconform, strict, with a broken copy of each refused); the
//! PodMonitor against the Deployment it scrapes; the alerts' runbook lines against
//! docs/monitoring.md; the rules' and the dashboard's queries against the metrics the server
//! registers. promtool's checks and unit tests of the rules are scripts/check-alerts.
//!
//! And in the test environment: `deployer apply --monitoring`, as the least-privileged CI account,
//! once the same CRDs are installed in the cluster, applies the three objects into the release's
//! namespace (what it does without them is proven against the scripted API server,
//! `deployer/src/commands/monitoring/tests.rs`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use celestial_e2e::TestEnv;
use celestial_e2e::deployer::{Scratch, args, deployment, fake_image, least_privilege_args, run};
use celestial_e2e::monitoring::{
    alerts, crd_dir, kubeconform, monitoring_dir, write_crd_schemas, yaml_document, yaml_documents,
};
use celestial_e2e::repo_root;
use serde_json::{Value, json};

/// Metric names the rules use before the server registers them (none now). Once the server
/// registers one, the test says to remove it here.
const AWAITED: &[&str] = &[];

/// Runs kubeconform on `files` with the schemas in `schemas`: (succeeded, output).
fn kubeconform_on(schemas: &Path, files: &[&Path]) -> (bool, String) {
    let location = format!(
        "{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        schemas.display()
    );
    let out = Command::new(kubeconform())
        .args(["-strict", "-summary", "-schema-location", &location])
        .args(files)
        .stdin(Stdio::null())
        .output()
        .expect("running kubeconform");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn prometheus_rule_and_pod_monitor_pass_the_prometheus_operator_crds() {
    let s = Scratch::new("monitoring-crds");
    let crds = crd_dir();
    let mut names = Vec::new();
    for crd in ["prometheusrules", "podmonitors"] {
        let doc = yaml_document(&crds.join(format!("monitoring.coreos.com_{crd}.yaml")));
        names.extend(write_crd_schemas(&doc, s.path()));
    }
    assert!(
        names.contains(&"prometheusrule-monitoring-v1.json".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"podmonitor-monitoring-v1.json".to_string()),
        "{names:?}"
    );

    let rule = monitoring_dir().join("prometheus-rule.yaml");
    let monitor = monitoring_dir().join("podmonitor.yaml");
    let (ok, text) = kubeconform_on(s.path(), &[&rule, &monitor]);
    assert!(ok, "kubeconform failed:\n{text}");
    assert!(text.contains("Valid: 2, Invalid: 0, Errors: 0"), "{text}");

    // Broken copies are refused: a duration the CRD's pattern does not allow, a misspelt field.
    let bad_rule = s.path().join("bad-rule.yaml");
    let good = std::fs::read_to_string(&rule).unwrap();
    std::fs::write(&bad_rule, good.replacen("for: 5m", "for: 5 minutes", 1)).unwrap();
    let bad_monitor = s.path().join("bad-monitor.yaml");
    let good = std::fs::read_to_string(&monitor).unwrap();
    std::fs::write(
        &bad_monitor,
        good.replace("podMetricsEndpoints:", "podMetricEndpoints:"),
    )
    .unwrap();
    let (ok, text) = kubeconform_on(s.path(), &[&bad_rule, &bad_monitor]);
    assert!(!ok, "kubeconform accepted the broken copies:\n{text}");
    assert!(text.contains("Invalid: 2"), "{text}");
    assert!(
        text.contains("5 minutes") && text.contains("podMetricEndpoints"),
        "{text}"
    );
}

#[test]
fn the_pod_monitor_scrapes_the_deployments_pods_on_a_port_they_have() {
    let monitor = yaml_document(&monitoring_dir().join("podmonitor.yaml"));
    let deployment = yaml_documents(&repo_root().join("kubernetes/deployment.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment in kubernetes/deployment.yaml");
    let pod = &deployment["spec"]["template"];
    let labels = pod["metadata"]["labels"].as_object().unwrap();
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(labels.get(k), Some(v), "the pods have no label {k}={v}");
    }
    let ports: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .map(|p| &p["name"])
        .collect();
    for endpoint in monitor["spec"]["podMetricsEndpoints"].as_array().unwrap() {
        assert!(
            ports.contains(&&endpoint["port"]),
            "no container port {}",
            endpoint["port"]
        );
        assert_eq!(endpoint["path"], "/metrics");
    }

    // The job label comes from a pod label; the alerts on `up` select that job.
    let job_label = monitor["spec"]["jobLabel"].as_str().expect("jobLabel");
    let job = labels[job_label]
        .as_str()
        .expect("the pods carry the jobLabel");
    let rule = yaml_document(&monitoring_dir().join("prometheus-rule.yaml"));
    let up: Vec<String> = alerts(&rule)
        .into_iter()
        .filter_map(|(_, r)| {
            r["expr"]
                .as_str()
                .filter(|e| e.contains("up{"))
                .map(String::from)
        })
        .collect();
    assert!(!up.is_empty(), "no alert on up");
    for expr in up {
        assert!(
            expr.contains(&format!("up{{job=\"{job}\"}}")),
            "{expr} does not select job {job}"
        );
    }
}

#[test]
fn every_alert_has_a_severity_a_summary_and_its_runbook_in_docs_monitoring_md() {
    let rule = yaml_document(&monitoring_dir().join("prometheus-rule.yaml"));
    let docs = std::fs::read_to_string(repo_root().join("docs/monitoring.md")).unwrap();
    let sections = sections(&docs);
    let alerts = alerts(&rule);
    assert!(alerts.len() >= 8, "{} alerts", alerts.len());
    for (name, r) in &alerts {
        let severity = r["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description", "runbook"] {
            let text = r["annotations"][key].as_str().unwrap_or_default();
            assert!(
                text.len() > 20,
                "{name}: annotation {key} is missing or short"
            );
        }
        let section = sections
            .iter()
            .find(|(title, _)| title == &format!("`{name}`"))
            .unwrap_or_else(|| panic!("docs/monitoring.md has no section ### `{name}`"));
        let runbook = words(r["annotations"]["runbook"].as_str().unwrap());
        assert!(
            words(&section.1).contains(&runbook),
            "docs/monitoring.md, `{name}`: the runbook line differs from the rule's:\n{runbook}"
        );
        let head = format!(
            "**{severity}**, `for: {}`",
            r["for"].as_str().unwrap_or_default()
        );
        assert!(
            section.1.contains(&head),
            "docs/monitoring.md, `{name}`: no {head}"
        );
    }
    let documented: BTreeSet<&str> = sections
        .iter()
        .filter_map(|(t, _)| t.strip_prefix('`')?.strip_suffix('`'))
        .filter(|t| t.starts_with("Celestial"))
        .collect();
    let named: BTreeSet<&str> = alerts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        documented, named,
        "docs/monitoring.md documents other alerts than the rules have"
    );
}

/// The `### ` sections of a Markdown page: (title, text up to the next heading).
fn sections(markdown: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in markdown.lines() {
        if let Some(title) = line.strip_prefix("### ") {
            out.push((title.trim().to_string(), String::new()));
        } else if line.starts_with('#') {
            out.push((String::new(), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// `text` with its whitespace runs made single spaces (YAML folding and Markdown wrapping differ).
fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn rules_and_dashboard_query_only_metrics_the_server_registers() {
    let registered = registered_metrics(&repo_root().join("server/src"));
    assert!(
        registered.contains("celestial_http_requests"),
        "{registered:?}"
    );
    for name in AWAITED {
        assert!(
            !registered.contains(*name),
            "the server registers {name} now: remove it from AWAITED in tests/tests/monitoring.rs"
        );
    }
    let known = |metric: &str| {
        let base = ["_total", "_bucket", "_sum", "_count", "_info"]
            .iter()
            .find_map(|s| metric.strip_suffix(s))
            .filter(|b| registered.contains(*b))
            .unwrap_or(metric);
        registered.contains(base) || AWAITED.contains(&base)
    };

    let rule = yaml_document(&monitoring_dir().join("prometheus-rule.yaml"));
    let mut queries: Vec<String> = alerts(&rule)
        .iter()
        .map(|(_, r)| r["expr"].as_str().unwrap().to_string())
        .collect();
    let dashboard = dashboard();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel id {} twice",
            panel["id"]
        );
        assert!(
            panel["gridPos"]["w"].as_u64().unwrap() > 0,
            "{}",
            panel["title"]
        );
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
            queries.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    assert!(queries.len() > 20, "{} queries", queries.len());
    let mut used = BTreeSet::new();
    for q in &queries {
        for metric in metric_names(q) {
            assert!(
                known(&metric),
                "{metric} (in {q}) is not a metric of the server"
            );
            used.insert(metric);
        }
    }
    for wanted in [
        "celestial_http_requests_total",
        "celestial_http_request_duration_seconds_bucket",
        "celestial_inference_batch_images_bucket",
        "celestial_predictions_total",
        "celestial_unknown_predictions_total",
        "celestial_drift_score",
    ] {
        assert!(used.contains(wanted), "nothing shows {wanted}");
    }
}

/// The dashboard JSON of the ConfigMap, with the label Grafana's sidecar loads it by.
fn dashboard() -> Value {
    let cm = yaml_document(&monitoring_dir().join("grafana-dashboard.yaml"));
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let data = cm["data"].as_object().unwrap();
    assert_eq!(data.len(), 1, "one dashboard");
    let (key, text) = data.iter().next().unwrap();
    assert!(key.ends_with(".json"), "{key}");
    let dashboard: Value = serde_json::from_str(text.as_str().unwrap()).expect("dashboard JSON");
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    dashboard
}

/// The names `r.register("celestial_...", ...)` gives in the server's sources: every string
/// literal that is a whole `celestial_` metric name.
fn registered_metrics(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(registered_metrics(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for (i, _) in text.match_indices("\"celestial_") {
                let literal = text[i + 1..].split('"').next().unwrap_or_default();
                if literal.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                    out.insert(literal.to_string());
                }
            }
        }
    }
    out
}

/// The `celestial_*` metric names in a PromQL query.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(i) = rest.find("celestial_") {
        let before = rest[..i].chars().last();
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            names.push(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

/// prometheus-operator's CRDs of `crd_dir()`, installed in the test cluster (server-side apply:
/// the same again is a no-op; no other test needs them absent) and established.
fn install_operator_crds(env: &TestEnv) {
    let crds = crd_dir();
    let mut c = env.kubectl();
    c.args(["apply", "--server-side", "--force-conflicts"]);
    for crd in ["prometheusrules", "podmonitors"] {
        c.arg("-f")
            .arg(crds.join(format!("monitoring.coreos.com_{crd}.yaml")));
    }
    let out = c.output().expect("kubectl apply the CRDs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = env.kubectl();
    c.args(["wait", "--for=condition=Established", "--timeout=60s"]);
    c.args([
        "crd/prometheusrules.monitoring.coreos.com",
        "crd/podmonitors.monitoring.coreos.com",
    ]);
    let out = c.output().expect("kubectl wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl get KIND NAME -n NS -o json`.
fn get(env: &TestEnv, ns: &str, kind: &str, name: &str) -> Value {
    let out = env
        .kubectl()
        .args(["get", kind, name, "-n", ns, "-o", "json"])
        .output()
        .expect("kubectl get");
    assert!(
        out.status.success(),
        "{kind}/{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[tokio::test]
async fn deployer_apply_monitoring_applies_the_three_objects_where_the_operators_crds_are() {
    let env = TestEnv::get().await.expect("test environment");
    install_operator_crds(&env);
    let ns = env.kwok_namespace("monitoring-apply").await.unwrap();
    // As CI runs it: a ServiceAccount holding exactly kubernetes/rbac/deployer-role.yaml.
    let (_account, c) = least_privilege_args(&env, ns.name());
    let image = fake_image(&env, 31);
    let mut a = args(&["apply", "--monitoring", "--image", &image, "--smoke=false"]);
    a.extend(args(&[
        "--no-wait-lb",
        "--timeout",
        "120s",
        "--output",
        "json",
    ]));
    a.extend(c);
    let r = run(a, None).await;
    assert_eq!(r.code, 0, "{}", r.describe());
    let j = r.json();
    let app = "celestial-bodies-classifier";
    assert_eq!(
        j["monitoring"],
        json!({"objects": [format!("PrometheusRule/{app}"), format!("PodMonitor/{app}"),
            format!("ConfigMap/{app}-dashboard")], "missing_kinds": [], "skipped": []}),
        "{}",
        r.describe()
    );
    assert!(
        !r.stderr.contains("warning: --monitoring"),
        "{}",
        r.describe()
    );
    let d = deployment(&env, ns.name()).await;
    let selector = serde_json::to_value(&d.spec.unwrap().selector).unwrap();
    for (kind, name) in [
        ("prometheusrule", app.to_string()),
        ("podmonitor", app.to_string()),
        ("configmap", format!("{app}-dashboard")),
    ] {
        let o = get(&env, ns.name(), kind, &name);
        assert_eq!(o["metadata"]["namespace"], ns.name(), "{kind}");
        assert_eq!(
            o["metadata"]["labels"]["app.kubernetes.io/name"], app,
            "{kind}"
        );
        if kind == "podmonitor" {
            assert_eq!(o["spec"]["selector"], selector);
        }
    }
}
