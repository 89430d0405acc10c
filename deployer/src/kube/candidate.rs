//! The candidate of an evaluation before traffic: the new pod template run as a Deployment of its
//! own, `NAME-candidate`, with one replica, whose pods no Service, PodDisruptionBudget or the
//! serving Deployment's selector matches: every label those select on gets `-candidate` appended
//! to its value (and the pods carry [`ROLE_LABEL`]`=candidate`). So the candidate gets no traffic,
//! is not counted as the serving Deployment's (its rollout, its autoscaler's metrics, its
//! disruption budget), and the Services' selectors do not change (a selector that new labels must
//! match first would leave a Service without endpoints until the pods carry them).

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};

use super::apply::FIELD_MANAGER;
use super::cluster::Cluster;
use super::error::{ApplyError, api_error};
use super::manifests::Manifest;
use super::rollout::{Limits, RolloutError, RolloutReport, wait_rollout};
use crate::progress::Progress;

/// What the candidate's name and its pods' selected label values end with.
pub const SUFFIX: &str = "-candidate";
/// The label every candidate object and pod carries.
pub const ROLE_LABEL: &str = "celestial.dev/role";
/// A label value's longest form (Kubernetes' limit).
const MAX_LABEL_VALUE: usize = 63;

/// The candidate Deployment's name for the Deployment `name`.
pub fn name_of(name: &str) -> String {
    format!("{name}{SUFFIX}")
}

/// The label keys that select the server's pods: the Deployment's `matchLabels` and every
/// Service's `selector` in the manifests.
pub fn selected_keys(manifests: &[Manifest], deployment: &Manifest) -> BTreeSet<String> {
    let mut keys: BTreeSet<String> = BTreeSet::new();
    let selectors = manifests
        .iter()
        .filter(|m| m.kind == "Service")
        .filter_map(|m| m.object.pointer("/spec/selector"))
        .chain(deployment.object.pointer("/spec/selector/matchLabels"));
    for s in selectors {
        keys.extend(s.as_object().into_iter().flatten().map(|(k, _)| k.clone()));
    }
    keys
}

/// `value` with [`SUFFIX`], within the label value limit.
fn candidate_value(value: &str) -> String {
    let keep = value.len().min(MAX_LABEL_VALUE - SUFFIX.len());
    let cut = (0..=keep)
        .rev()
        .find(|i| value.is_char_boundary(*i))
        .unwrap_or(0);
    format!("{}{SUFFIX}", value[..cut].trim_end_matches(['-', '.', '_']))
}

/// Appends [`SUFFIX`] to the values of `keys` in the label map at `labels` (when there).
fn relabel(labels: Option<&mut Value>, keys: &BTreeSet<String>) {
    let Some(map) = labels.and_then(Value::as_object_mut) else {
        return;
    };
    for (k, v) in map.iter_mut() {
        if let (true, Some(s)) = (keys.contains(k), v.as_str()) {
            *v = json!(candidate_value(s));
        }
    }
}

/// The candidate Deployment for the Deployment manifest `d` (the new pod template), in `ns`:
/// one replica, its selector and pod labels out of reach of `keys` (see [`selected_keys`]).
pub fn candidate_object(d: &Manifest, ns: &str, keys: &BTreeSet<String>) -> Value {
    let mut spec = d.object.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["replicas"] = json!(1);
    spec["revisionHistoryLimit"] = json!(1);
    relabel(spec.pointer_mut("/selector/matchLabels"), keys);
    relabel(spec.pointer_mut("/template/metadata/labels"), keys);
    if let Some(labels) = spec
        .pointer_mut("/template/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.insert(ROLE_LABEL.into(), json!("candidate"));
    }
    side_deployment(&name_of(&d.name), ns, "candidate", spec)
}

/// A Deployment the deployer runs beside the serving one for a while (the evaluation's candidate,
/// the canary): `name` in `ns` with `spec`, labelled with its `role` and as the deployer's.
pub fn side_deployment(name: &str, ns: &str, role: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {ROLE_LABEL: role, "app.kubernetes.io/managed-by": FIELD_MANAGER},
        },
        "spec": spec,
    })
}

/// Applies the candidate (or canary) Deployment `object` (taking over what an earlier,
/// interrupted run left) and waits until its pods are available; `what` says what it is.
pub async fn start(
    cluster: &Cluster,
    ns: &str,
    (object, what): (&Value, &str),
    limits: Limits,
    progress: &mut dyn Progress,
) -> Result<RolloutReport, RolloutError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    progress.line(&format!("Deployment/{name}: starting {what}"));
    api.patch(name, &pp, &Patch::Apply(object))
        .await
        .map_err(|e| api_error(&format!("Deployment/{name}"), "apply", e, "the candidate"))?;
    wait_rollout(cluster, ns, name, limits, progress).await
}

/// Deletes the candidate (or canary) Deployment `name` and its pods (in the background).
pub async fn remove(cluster: &Cluster, ns: &str, name: &str) -> Result<(), ApplyError> {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(api_error(&format!("Deployment/{name}"), "delete", e, "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::manifests::parse_str;
    use std::path::Path;

    const MANIFESTS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: server, app.kubernetes.io/name: web}}
    spec:
      containers: [{name: celestial-server, image: r.io/new@sha256:1}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app.kubernetes.io/name: web}
  ports: [{port: 80}]
"#;

    #[test]
    fn the_candidate_runs_the_new_template_out_of_every_selectors_reach() {
        let m = parse_str(Path::new("m.yaml"), MANIFESTS).unwrap();
        let keys = selected_keys(&m, &m[0]);
        assert_eq!(
            keys.iter().map(String::as_str).collect::<Vec<_>>(),
            ["app", "app.kubernetes.io/name"]
        );
        let c = candidate_object(&m[0], "prod", &keys);
        assert_eq!(c["metadata"]["name"], "web-candidate");
        assert_eq!(c["metadata"]["namespace"], "prod");
        assert_eq!(c["spec"]["replicas"], 1);
        assert_eq!(
            c["spec"]["selector"]["matchLabels"],
            json!({"app": "web-candidate"})
        );
        assert_eq!(
            c["spec"]["template"]["metadata"]["labels"],
            json!({"app": "web-candidate", "tier": "server",
                "app.kubernetes.io/name": "web-candidate", ROLE_LABEL: "candidate"})
        );
        assert_eq!(
            c["spec"]["template"]["spec"], m[0].object["spec"]["template"]["spec"],
            "the same pod spec: the new image, its probes, its placement"
        );
        let long = "x".repeat(63);
        let v = candidate_value(&long);
        assert!(v.len() <= 63 && v.ends_with(SUFFIX), "{v}");
    }
}
