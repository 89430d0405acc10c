//! `--monitoring`: the objects of `kubernetes/monitoring/` (a PrometheusRule, a PodMonitor, the
//! Grafana dashboard's ConfigMap), built into deployer from those files (they stay the one source),
//! fitted to the release's Deployment; and whether the cluster serves prometheus-operator's kinds.
//!
//! Fitted: the objects go to the Deployment's namespace; the PodMonitor selects the Deployment's
//! pods by the Deployment's own selector; the job Prometheus gives the scraped series is the
//! pods' `jobLabel` label (`app.kubernetes.io/name`), so the alerts' `job="..."` matchers, the
//! objects' `app.kubernetes.io/name` label and their names follow that label's value. With the
//! shipped manifests nothing but the namespace changes.

use std::path::Path;

use serde_json::{Value, json};

use super::cluster::Cluster;
use super::error::{ApplyError, api_error};
use super::manifests::{Manifest, ManifestError, parse_str};
use super::secure::HTTPS_PORT_NAME;

/// prometheus-operator's API group and version.
pub const GROUP_VERSION: &str = "monitoring.coreos.com/v1";
/// The kinds of [`GROUP_VERSION`] `--monitoring` applies.
pub const OPERATOR_KINDS: [&str; 2] = ["PrometheusRule", "PodMonitor"];

/// The label the shipped objects name their application with (and the PodMonitor's `jobLabel`).
const APP_LABEL: &str = "app.kubernetes.io/name";

/// The files of `kubernetes/monitoring/`, as built into deployer: (path, text).
const FILES: [(&str, &str); 3] = [
    (
        "kubernetes/monitoring/prometheus-rule.yaml",
        include_str!("../../../kubernetes/monitoring/prometheus-rule.yaml"),
    ),
    (
        "kubernetes/monitoring/podmonitor.yaml",
        include_str!("../../../kubernetes/monitoring/podmonitor.yaml"),
    ),
    (
        "kubernetes/monitoring/grafana-dashboard.yaml",
        include_str!("../../../kubernetes/monitoring/grafana-dashboard.yaml"),
    ),
];

/// The monitoring objects as shipped, in file order (rule, monitor, dashboard).
pub fn shipped() -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for (path, text) in FILES {
        out.extend(parse_str(Path::new(path), text)?);
    }
    Ok(out)
}

/// Whether `m` is of prometheus-operator's API (needs its CRDs).
pub fn is_operator_kind(m: &Manifest) -> bool {
    m.api_version == GROUP_VERSION
}

/// The monitoring objects for the release in `release`: fitted to its first Deployment (as the
/// release's namespace is that Deployment's).
pub fn for_release(release: &[Manifest]) -> Result<Vec<Manifest>, ManifestError> {
    let deployment = release
        .iter()
        .find(|m| m.kind == "Deployment")
        .ok_or_else(|| {
            ManifestError::Monitoring("no Deployment in the manifests: nothing to monitor".into())
        })?;
    let mut objects = shipped()?;
    fit(&mut objects, deployment)?;
    Ok(objects)
}

/// Fits the shipped `objects` to `deployment` (see the module's documentation).
fn fit(objects: &mut [Manifest], deployment: &Manifest) -> Result<(), ManifestError> {
    let monitor = objects
        .iter()
        .find(|m| m.kind == "PodMonitor")
        .ok_or_else(|| ManifestError::Monitoring("no PodMonitor in the shipped files".into()))?;
    let job_label = monitor.object["spec"]["jobLabel"]
        .as_str()
        .unwrap_or(APP_LABEL)
        .to_string();
    let shipped_app = monitor.object["metadata"]["labels"][APP_LABEL]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let pod_labels = deployment.object.pointer("/spec/template/metadata/labels");
    let Some(app) = pod_labels.and_then(|l| l[&job_label].as_str()) else {
        return Err(ManifestError::Object {
            origin: deployment.origin.clone(),
            message: format!(
                "--monitoring: the pods of {} have no `{job_label}` label: the PodMonitor names \
                 the job of their series after it, and the alerts select that job; add it to \
                 the pod template's labels",
                deployment.display_name()
            ),
        });
    };
    let selector = deployment.object["spec"]["selector"].clone();
    for m in objects.iter_mut() {
        m.namespace.clone_from(&deployment.namespace);
        let meta = &mut m.object["metadata"];
        match &deployment.namespace {
            Some(ns) => meta["namespace"] = Value::String(ns.clone()),
            None => {
                if let Some(meta) = meta.as_object_mut() {
                    meta.remove("namespace");
                }
            }
        }
        if meta["labels"].get(APP_LABEL).is_some() {
            meta["labels"][APP_LABEL] = Value::String(app.into());
        }
        if !shipped_app.is_empty() && app != shipped_app {
            m.name = m.name.replacen(&shipped_app, app, 1);
            meta["name"] = Value::String(m.name.clone());
        }
        match m.kind.as_str() {
            "PodMonitor" => m.object["spec"]["selector"] = selector.clone(),
            "PrometheusRule" => retarget_rules(&mut m.object, &shipped_app, app),
            _ => {}
        }
    }
    Ok(())
}

/// Makes the rules' `job="<shipped>"` matchers select `job="<app>"`.
fn retarget_rules(rule: &mut Value, shipped: &str, app: &str) {
    let (from, to) = (format!("job=\"{shipped}\""), format!("job=\"{app}\""));
    let groups = rule["spec"]["groups"].as_array_mut().into_iter().flatten();
    for group in groups {
        for r in group["rules"].as_array_mut().into_iter().flatten() {
            let retargeted = r["expr"].as_str().map(|e| e.replace(&from, &to));
            if let Some(expr) = retargeted {
                r["expr"] = Value::String(expr);
            }
        }
    }
}

/// How Prometheus reaches the metrics of a server that serves TLS (`--tls-secret`), whose plain
/// port then serves only the probes.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsScrape {
    /// The TLS Secret, in the release's namespace.
    pub secret: String,
    /// Its data key holding what to trust: `ca.crt`, else `tls.crt` (as the smoke test trusts).
    pub trust_key: String,
    /// The name the pods' certificate is checked against (`--tls-server-name`); without it,
    /// their address.
    pub server_name: Option<String>,
}

/// Makes the PodMonitor scrape the pods' HTTPS port, trusting `tls`'s Secret.
pub fn scrape_tls(objects: &mut [Manifest], tls: &TlsScrape) {
    for m in objects.iter_mut().filter(|m| m.kind == "PodMonitor") {
        let endpoints = m.object["spec"]["podMetricsEndpoints"].as_array_mut();
        for e in endpoints.into_iter().flatten() {
            e["port"] = json!(HTTPS_PORT_NAME);
            e["scheme"] = json!("https");
            let mut config = json!({"ca": {"secret": {"name": tls.secret, "key": tls.trust_key}}});
            if let Some(name) = &tls.server_name {
                config["serverName"] = json!(name);
            }
            e["tlsConfig"] = config;
        }
    }
}

/// The [`OPERATOR_KINDS`] the cluster does not serve, from API discovery of [`GROUP_VERSION`]
/// (a 404: prometheus-operator's CRDs are not installed). Discovery is open to every
/// authenticated user (the `system:discovery` ClusterRole), so it needs no Role rule.
pub async fn missing_kinds(cluster: &Cluster) -> Result<Vec<&'static str>, ApplyError> {
    match cluster.client.list_api_group_resources(GROUP_VERSION).await {
        Ok(list) => Ok(OPERATOR_KINDS
            .into_iter()
            .filter(|k| {
                !list
                    .resources
                    .iter()
                    .any(|r| r.kind == *k && !r.name.contains('/'))
            })
            .collect()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(OPERATOR_KINDS.to_vec()),
        Err(e) => Err(api_error(GROUP_VERSION, "discovery", e, "API discovery")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::*;

    /// The repository's own Deployment (kubernetes/deployment.yaml), as `deployer` reads it.
    fn shipped_deployment() -> Vec<Manifest> {
        let path = PathBuf::from("kubernetes/deployment.yaml");
        let text = include_str!("../../../kubernetes/deployment.yaml");
        parse_str(&path, text).expect("the shipped Deployment parses")
    }

    fn find<'m>(objects: &'m [Manifest], kind: &str) -> &'m Manifest {
        objects.iter().find(|m| m.kind == kind).expect(kind)
    }

    /// Every `job="..."` matcher of the rules' expressions.
    fn job_matchers(rule: &Manifest) -> Vec<String> {
        let groups = rule.object["spec"]["groups"].as_array().expect("groups");
        let exprs = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules"))
            .filter_map(|r| r["expr"].as_str());
        exprs
            .flat_map(|e| e.match_indices("job=\"").map(move |(i, _)| &e[i..]))
            .map(|m| m[..m[5..].find('"').expect("closed") + 6].to_string())
            .collect()
    }

    /// The three files parse as the kinds `--monitoring` applies, and fitting them to the
    /// Deployment they were written for changes nothing (it sets no namespace either).
    #[test]
    fn the_shipped_objects_fit_the_shipped_deployment_unchanged() {
        let shipped = shipped().expect("the built-in files parse");
        let kinds: Vec<(&str, &str)> = shipped
            .iter()
            .map(|m| (m.api_version.as_str(), m.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            [
                (GROUP_VERSION, "PrometheusRule"),
                (GROUP_VERSION, "PodMonitor"),
                ("v1", "ConfigMap")
            ]
        );
        let fitted = for_release(&shipped_deployment()).expect("fits");
        for (f, s) in fitted.iter().zip(&shipped) {
            assert_eq!(f.object, s.object, "{}", f.display_name());
            assert_eq!((&f.name, &f.namespace), (&s.name, &None));
        }
        assert_eq!(
            job_matchers(find(&fitted, "PrometheusRule")),
            ["job=\"celestial-bodies-classifier\""; 2]
        );
    }

    /// Another Deployment (`-f`, its own namespace, labels and selector): the objects go to its
    /// namespace, the PodMonitor selects its pods, and the job, the alerts' matchers, the
    /// objects' app label and names follow its pods' `app.kubernetes.io/name`.
    #[test]
    fn the_objects_follow_another_deployments_namespace_selector_and_name() {
        let mut release = shipped_deployment();
        let d = &mut release[0];
        d.namespace = Some("staging".into());
        d.object["metadata"]["namespace"] = json!("staging");
        let labels = json!({"app": "web", "tier": "api", "app.kubernetes.io/name": "web"});
        d.object["spec"]["template"]["metadata"]["labels"] = labels;
        let selector = json!({"matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["api"]}]});
        d.object["spec"]["selector"] = selector.clone();
        let fitted = for_release(&release).expect("fits");
        let names: Vec<String> = fitted.iter().map(Manifest::display_name).collect();
        assert_eq!(
            names,
            [
                "PrometheusRule/web",
                "PodMonitor/web",
                "ConfigMap/web-dashboard"
            ]
        );
        for m in &fitted {
            assert_eq!(m.namespace.as_deref(), Some("staging"));
            assert_eq!(m.object["metadata"]["namespace"], "staging");
            assert_eq!(m.object["metadata"]["name"], m.name.as_str());
            assert_eq!(m.object["metadata"]["labels"][APP_LABEL], "web");
        }
        assert_eq!(
            find(&fitted, "PodMonitor").object["spec"]["selector"],
            selector
        );
        assert_eq!(
            job_matchers(find(&fitted, "PrometheusRule")),
            ["job=\"web\""; 2]
        );
        let dashboard = find(&fitted, "ConfigMap");
        assert_eq!(
            dashboard.object["metadata"]["labels"]["grafana_dashboard"],
            "1"
        );
    }

    /// Pods without the job label would be scraped under a job no alert selects: refused before
    /// anything is applied (exit 2), naming the Deployment and the label.
    #[test]
    fn pods_without_the_job_label_are_refused() {
        let mut release = shipped_deployment();
        let labels = &mut release[0].object["spec"]["template"]["metadata"]["labels"];
        labels.as_object_mut().expect("labels").remove(APP_LABEL);
        let e = for_release(&release).expect_err("no job label");
        let text = e.to_string();
        assert!(
            text.starts_with("kubernetes/deployment.yaml (document 1): --monitoring: the pods of Deployment/celestial-bodies-classifier-deployment have no `app.kubernetes.io/name` label"),
            "{text}"
        );
        let e = for_release(&[]).expect_err("no Deployment");
        assert_eq!(
            e.to_string(),
            "--monitoring: no Deployment in the manifests: nothing to monitor"
        );
    }

    /// The Role the docs tell users to bind (kubernetes/rbac/deployer-role.yaml, which the
    /// least-privilege end-to-end tests run the deployer under) lets it server-side apply every
    /// object `--monitoring` applies: get (is it there), create and patch.
    #[test]
    fn the_deployer_role_may_apply_every_monitoring_object() {
        let path = PathBuf::from("kubernetes/rbac/deployer-role.yaml");
        let text = include_str!("../../../kubernetes/rbac/deployer-role.yaml");
        let role = &parse_str(&path, text).expect("the Role parses")[0];
        let rules = role.object["rules"].as_array().expect("rules");
        let has = |list: &Value, item: &str| {
            list.as_array()
                .is_some_and(|l| l.iter().any(|v| v == item || v == "*"))
        };
        for m in shipped().expect("the built-in files parse") {
            let (group, _) = m.group_version();
            let resource = format!("{}s", m.kind.to_lowercase());
            for verb in ["get", "create", "patch"] {
                let allowed = rules.iter().any(|r| {
                    has(&r["apiGroups"], group)
                        && has(&r["resources"], &resource)
                        && has(&r["verbs"], verb)
                });
                assert!(
                    allowed,
                    "the deployer Role does not allow {verb} {resource}.{group}"
                );
            }
        }
    }

    /// With `--tls-secret` the PodMonitor scrapes the HTTPS port, trusting the Secret (and
    /// checking `--tls-server-name` when given).
    #[test]
    fn with_tls_the_pod_monitor_scrapes_the_https_port() {
        let mut fitted = for_release(&shipped_deployment()).expect("fits");
        let tls = TlsScrape {
            secret: "celestial-tls".into(),
            trust_key: "ca.crt".into(),
            server_name: Some("celestial.example.com".into()),
        };
        scrape_tls(&mut fitted, &tls);
        let endpoint = &find(&fitted, "PodMonitor").object["spec"]["podMetricsEndpoints"][0];
        assert_eq!(
            *endpoint,
            json!({"port": "https", "path": "/metrics", "scheme": "https", "interval": "15s",
                "scrapeTimeout": "5s", "tlsConfig": {"serverName": "celestial.example.com",
                    "ca": {"secret": {"name": "celestial-tls", "key": "ca.crt"}}}})
        );
        let shipped = shipped().expect("parses");
        assert_eq!(
            fitted[0].object, shipped[0].object,
            "the rules do not change"
        );
    }
}
