//! The canary: the new pod template run as the Deployment `NAME-canary` whose pods keep every
//! label of the template, so the Services that select the serving pods select them too and send
//! them a share of live traffic; how many replicas make that share; the two groups of pods (the
//! canary's and the stable ones) and their `/metrics`, read through the API server's pod proxy
//! (RBAC `pods/proxy` get); and removing the canary, waiting until its pods are gone.
//!
//! The canary's own selector is [`ROLE_LABEL`]`=canary` and [`CANARY_OF_LABEL`]`=NAME`, which
//! the serving Deployment's pods never carry. The serving Deployment's selector does match the
//! canary's pods, but a controller only adopts pods nobody owns, so neither Deployment takes the
//! other's; the serving Deployment's PodDisruptionBudget and autoscaler do count them while the
//! canary runs.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};

use super::candidate::{ROLE_LABEL, side_deployment};
use super::cluster::Cluster;
use super::error::{ApplyError, api_error};
use super::manifests::Manifest;
use super::model::{endpoint, is_ready, proxy_path, proxy_text};

/// What the canary's name ends with.
pub const SUFFIX: &str = "-canary";
/// The label naming the Deployment a canary's pods are the canary of.
pub const CANARY_OF_LABEL: &str = "celestial.dev/canary-of";
/// How long one scrape of a pod's `/metrics` may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the pods are listed while waiting for the canary's to be gone.
const GONE_POLL: Duration = Duration::from_secs(1);

/// The canary Deployment's name for the Deployment `name`.
pub fn name_of(name: &str) -> String {
    format!("{name}{SUFFIX}")
}

/// How many canary replicas give the canary `share` of the traffic beside `serving` replicas
/// (at least one), and the share they give: `k / (serving + k)`, the nearest achievable.
pub fn replicas(share: f64, serving: i32) -> (i32, f64) {
    let serving = serving.max(1);
    let exact = share / (1.0 - share) * f64::from(serving);
    let k = (exact.round() as i32).max(1);
    (k, f64::from(k) / f64::from(serving + k))
}

/// `name` as a label value (at most 63 characters, ending alphanumeric).
fn label_value(name: &str) -> String {
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// The selector of the canary of the Deployment `name`.
pub fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (ROLE_LABEL.to_string(), "canary".to_string()),
        (CANARY_OF_LABEL.to_string(), label_value(name)),
    ])
}

/// The canary Deployment for the Deployment manifest `d` (the new pod template), in `ns`, with
/// `replicas`: the template's labels kept (the Services select its pods), the canary's own
/// selector added.
pub fn canary_object(d: &Manifest, ns: &str, replicas: i32) -> Value {
    let mut spec = d.object.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["replicas"] = json!(replicas);
    spec["revisionHistoryLimit"] = json!(1);
    let own = selector(&d.name);
    spec["selector"] = json!({"matchLabels": own});
    if spec.pointer("/template/metadata/labels").is_none() {
        spec["template"]["metadata"]["labels"] = json!({});
    }
    if let Some(labels) = spec
        .pointer_mut("/template/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.extend(own.iter().map(|(k, v)| (k.clone(), json!(v))));
    }
    side_deployment(&name_of(&d.name), ns, "canary", spec)
}

/// The serving Deployment as it is now (None when it does not exist).
pub async fn serving(
    cluster: &Cluster,
    ns: &str,
    name: &str,
) -> Result<Option<Deployment>, ApplyError> {
    Api::<Deployment>::namespaced(cluster.client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| api_error(&format!("Deployment/{name}"), "get", e, ""))
}

/// One pod of a group, as the analysis needs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GroupPod {
    pub name: String,
    /// Ready (its server answers; only these are scraped).
    pub ready: bool,
    /// Its containers' restarts so far.
    pub restarts: i32,
}

/// The pods `selector` matches (a label selector string) that are not being deleted, without
/// those of a canary when `stable` (the serving Deployment's selector matches the canary's pods
/// too).
pub async fn group(
    cluster: &Cluster,
    ns: &str,
    selector: &str,
    stable: bool,
) -> Result<Vec<GroupPod>, ApplyError> {
    let lp = ListParams::default().labels(selector);
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| api_error(&format!("pods {selector}"), "list pods", e, ""))?;
    let canary = |p: &Pod| {
        p.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ROLE_LABEL))
            .is_some_and(|r| r == "canary")
    };
    Ok(pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !(stable && canary(p)))
        .map(|p| GroupPod {
            name: p.metadata.name.clone().unwrap_or_default(),
            ready: is_ready(p),
            restarts: restarts(p),
        })
        .collect())
}

/// The restarts of a pod's containers.
fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

/// `GET /metrics` of the server in `pod` (its pod template `template`), through the API server's
/// proxy: the text exposition, or why there is none.
pub async fn scrape(
    cluster: &Cluster,
    ns: &str,
    (pod, template): (&str, &Value),
    api_key: Option<&str>,
) -> Result<String, String> {
    let request = http::Request::get(proxy_path(ns, pod, endpoint(template), "metrics"));
    let what = format!("GET /metrics of pod {pod} through the API server");
    proxy_text(
        cluster,
        request,
        api_key,
        (SCRAPE_TIMEOUT, Vec::new()),
        &what,
    )
    .await
}

/// Waits until no pod `selector` matches is left (the canary's, being deleted), at most
/// `timeout`: true when they are gone.
pub async fn wait_gone(cluster: &Cluster, ns: &str, selector: &str, timeout: Duration) -> bool {
    let api = Api::<Pod>::namespaced(cluster.client.clone(), ns);
    let lp = ListParams::default().labels(selector);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(list) = api.list(&lp).await
            && list.items.is_empty()
        {
            return true;
        }
        if tokio::time::Instant::now() + GONE_POLL > deadline {
            return false;
        }
        tokio::time::sleep(GONE_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::manifests::parse_str;
    use std::path::Path;

    #[test]
    fn the_share_is_by_pod_count() {
        assert_eq!(replicas(0.25, 3), (1, 0.25));
        assert_eq!(replicas(0.5, 2), (2, 0.5));
        // 10 % of 2 replicas is a fifth of a pod: one pod, a third of the traffic
        let (k, share) = replicas(0.1, 2);
        assert_eq!(k, 1);
        assert!((share - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(replicas(0.2, 8), (2, 0.2));
        assert_eq!(replicas(0.3, 0).0, 1, "nothing serving counts as one");
    }

    #[test]
    fn the_canary_keeps_the_templates_labels_and_selects_its_own() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec: {containers: [{name: s, image: r.io/new@sha256:1}]}\n";
        let m = parse_str(Path::new("m.yaml"), text).unwrap();
        let c = canary_object(&m[0], "prod", 2);
        assert_eq!(c["metadata"]["name"], "web-canary");
        assert_eq!(c["spec"]["replicas"], 2);
        assert_eq!(
            c["spec"]["selector"]["matchLabels"],
            json!({ROLE_LABEL: "canary", CANARY_OF_LABEL: "web"})
        );
        assert_eq!(
            c["spec"]["template"]["metadata"]["labels"],
            json!({"app": "web", ROLE_LABEL: "canary", CANARY_OF_LABEL: "web"})
        );
        assert_eq!(
            c["spec"]["template"]["spec"],
            m[0].object["spec"]["template"]["spec"]
        );
        assert_eq!(
            label_value(&format!("{}-x", "a".repeat(62))),
            "a".repeat(62)
        );
    }
}
