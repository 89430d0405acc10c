//! Rolling a failed rollout back: finding the spec to restore (the live spec before this apply,
//! or the previous revision's ReplicaSet template) and applying it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::apply::FIELD_MANAGER;
use super::cluster::Cluster;
use super::error::api_error;
use super::rollout::{Limits, Rollback, RolloutError, owned_by, wait_rollout};
use crate::progress::Progress;

/// The server container image of a Deployment object (JSON), for messages.
pub fn first_image(spec: &Value) -> Option<String> {
    spec.pointer("/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The spec to roll back to: the live spec before this apply when this apply changed the pod
/// template; otherwise (the failing template was already live, e.g. from an earlier apply) the
/// template of the previous revision's ReplicaSet, as `kubectl rollout undo` does. None when there
/// is no earlier revision.
pub async fn rollback_spec(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    before: Option<&Value>,
    after: &Value,
) -> Result<Option<Value>, RolloutError> {
    let Some(before) = before else {
        return Ok(None);
    };
    if before.pointer("/spec/template") != after.pointer("/spec/template") {
        return Ok(before.get("spec").cloned());
    }
    let object = format!("Deployment/{name}");
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    let d = api
        .get(name)
        .await
        .map_err(|e| api_error(&object, "get", e, ""))?;
    let revision = |annotations: &Option<BTreeMap<String, String>>| -> Option<u64> {
        annotations
            .as_ref()?
            .get("deployment.kubernetes.io/revision")?
            .parse()
            .ok()
    };
    let current = revision(&d.metadata.annotations).unwrap_or(u64::MAX);
    let rss: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), ns);
    let uid = d.metadata.uid.clone();
    let previous = rss
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(&object, "list replicasets", e, ""))?
        .items
        .into_iter()
        .filter(|rs| owned_by(rs, uid.as_deref()))
        .filter_map(|rs| {
            revision(&rs.metadata.annotations)
                .filter(|r| *r < current)
                .map(|r| (r, rs))
        })
        .max_by_key(|(r, _)| *r);
    let Some((_, rs)) = previous else {
        return Ok(None);
    };
    let Some(mut template) = rs
        .spec
        .and_then(|s| s.template)
        .map(|t| serde_json::to_value(t).expect("a pod template serializes to JSON"))
    else {
        return Ok(None);
    };
    if let Some(labels) = template
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove("pod-template-hash");
    }
    let mut spec = after.get("spec").cloned().unwrap_or_default();
    spec["template"] = template;
    Ok(Some(spec))
}

/// Applies `spec` (from [`rollback_spec`]) and waits for it to be available again.
pub async fn rollback(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    spec: &Value,
    limits: Limits,
    progress: &mut dyn Progress,
) -> Rollback {
    let image = first_image(spec);
    let body = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    });
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    progress.line(&format!(
        "rolling Deployment/{name} back to the previous spec (image {})",
        image.as_deref().unwrap_or("?")
    ));
    if let Err(e) = api.patch(name, &pp, &Patch::Apply(&body)).await {
        return Rollback {
            restored: false,
            image,
            message: format!(
                "restoring the previous spec failed: {}",
                api_error(
                    &format!("Deployment/{name}"),
                    "apply",
                    e,
                    "the previous spec"
                )
            ),
        };
    }
    match wait_rollout(cluster, ns, name, limits, progress).await {
        Ok(r) => Rollback {
            restored: true,
            image: image.clone(),
            message: format!(
                "restored the previous spec (image {}); it is available again ({} replicas, {:.1}s)",
                image.as_deref().unwrap_or("?"),
                r.replicas,
                r.seconds
            ),
        },
        Err(e) => Rollback {
            restored: false,
            image,
            message: format!("restored the previous spec but it did not become available: {e}"),
        },
    }
}
