//! Rolling back: finding the spec to restore (after a failed rollout, the live spec before this
//! apply or the previous revision's ReplicaSet template; for `deployer rollback`, the revision it
//! names) and applying it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::Value;

use super::apply::FIELD_MANAGER;
use super::cluster::Cluster;
use super::error::api_error;
use super::rollout::{Limits, REVISION, Rollback, RolloutError, owned_by, wait_rollout};
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
    let revisions = revisions(cluster, ns, name).await?;
    let Some((_, template)) = revisions.previous() else {
        return Ok(None);
    };
    let mut spec = after.get("spec").cloned().unwrap_or_default();
    spec["template"] = template.clone();
    Ok(Some(spec))
}

/// A Deployment as it is now, and the pod templates of its revisions that its ReplicaSets keep.
#[derive(Debug)]
pub struct Revisions {
    /// The live Deployment.
    pub deployment: Deployment,
    /// Its revision now (None when it has no revision annotation yet).
    pub current: Option<u64>,
    /// Each revision its ReplicaSets keep, oldest first, with its pod template (without the
    /// controller's `pod-template-hash` label, as it is applied).
    pub templates: Vec<(u64, Value)>,
}

impl Revisions {
    /// The newest revision before the current one.
    pub fn previous(&self) -> Option<&(u64, Value)> {
        let current = self.current.unwrap_or(u64::MAX);
        self.templates.iter().rev().find(|(r, _)| *r < current)
    }

    /// Revision `n`.
    pub fn get(&self, n: u64) -> Option<&Value> {
        self.templates.iter().find(|(r, _)| *r == n).map(|(_, t)| t)
    }

    /// The live spec with `template`: what a rollback to it applies.
    pub fn spec_with(&self, template: &Value) -> Value {
        let spec = self.deployment.spec.as_ref();
        let mut spec = serde_json::to_value(spec).expect("a Deployment spec serializes to JSON");
        spec["template"] = template.clone();
        spec
    }
}

/// The revision a Deployment or ReplicaSet carries.
fn revision(annotations: &Option<BTreeMap<String, String>>) -> Option<u64> {
    annotations.as_ref()?.get(REVISION)?.parse().ok()
}

/// The Deployment `name` and the revisions its own ReplicaSets keep (not a namesake's).
pub async fn revisions(cluster: &Cluster, ns: &str, name: &str) -> Result<Revisions, RolloutError> {
    let object = format!("Deployment/{name}");
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    let d = api
        .get(name)
        .await
        .map_err(|e| api_error(&object, "get", e, ""))?;
    let rss: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), ns);
    let uid = d.metadata.uid.clone();
    let mut templates: Vec<(u64, Value)> = rss
        .list(&ListParams::default())
        .await
        .map_err(|e| api_error(&object, "list replicasets", e, ""))?
        .items
        .into_iter()
        .filter(|rs| owned_by(rs, uid.as_deref()))
        .filter_map(|rs| {
            let r = revision(&rs.metadata.annotations)?;
            let template = rs.spec?.template?;
            let mut template = serde_json::to_value(template).expect("a pod template serializes");
            if let Some(labels) = template
                .pointer_mut("/metadata/labels")
                .and_then(Value::as_object_mut)
            {
                labels.remove("pod-template-hash");
            }
            Some((r, template))
        })
        .collect();
    templates.sort_by_key(|(r, _)| *r);
    Ok(Revisions {
        current: revision(&d.metadata.annotations),
        deployment: d,
        templates,
    })
}

/// `spec` with every pod of a rolling update allowed to start at once (`maxSurge: 100%`): a
/// rollback brings back a revision that served before, and the service should have it again as
/// fast as its pods start, not one pod after another (two replicas: one pod start and
/// `minReadySeconds` instead of two). `maxUnavailable` stays, so no old pod goes before a restored
/// one is available, and pods that do not fit wait as in any rollout while old ones make room. A
/// `Recreate` strategy is left alone.
pub fn surging(spec: &Value) -> Value {
    let mut fast = spec.clone();
    let rolling = fast
        .pointer("/strategy/type")
        .and_then(Value::as_str)
        .is_none_or(|t| t == "RollingUpdate");
    if rolling && let Some(s) = fast.as_object_mut() {
        let strategy = s.entry("strategy").or_insert_with(|| serde_json::json!({}));
        strategy["type"] = "RollingUpdate".into();
        if !strategy["rollingUpdate"].is_object() {
            strategy["rollingUpdate"] = serde_json::json!({});
        }
        strategy["rollingUpdate"]["maxSurge"] = "100%".into();
    }
    fast
}

/// The server-side apply of Deployment `name` with `spec` (forced: it takes back fields others
/// changed).
async fn apply_spec(api: &Api<Deployment>, name: &str, ns: &str, spec: &Value) -> kube::Result<()> {
    let body = serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &pp, &Patch::Apply(&body)).await.map(|_| ())
}

/// Applies `spec` (from [`rollback_spec`], or a chosen revision's) with all its pods starting at
/// once ([`surging`]), waits for it to be available again, then applies `spec`'s own strategy
/// (a change of strategy alone starts no rollout). `target` names it in messages ("the previous
/// spec", "revision 3").
pub async fn rollback(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    (spec, target): (&Value, &str),
    limits: Limits,
    progress: &mut dyn Progress,
) -> Rollback {
    let image = first_image(spec);
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    progress.line(&format!(
        "rolling Deployment/{name} back to {target} (image {}), all its pods at once",
        image.as_deref().unwrap_or("?")
    ));
    if let Err(e) = apply_spec(&api, name, ns, &surging(spec)).await {
        return Rollback {
            restored: false,
            image,
            message: format!(
                "restoring {target} failed: {}",
                api_error(&format!("Deployment/{name}"), "apply", e, target)
            ),
        };
    }
    let waited = wait_rollout(cluster, ns, name, limits, progress).await;
    // The strategy goes back even when the wait failed: the next rollout must not surge.
    let strategy = match apply_spec(&api, name, ns, spec).await {
        Ok(()) => String::new(),
        Err(e) => format!(
            "; its rollout strategy could not be set back and is still maxSurge 100% until the next apply ({})",
            api_error(&format!("Deployment/{name}"), "apply", e, target)
        ),
    };
    match waited {
        Ok(r) => Rollback {
            restored: true,
            image: image.clone(),
            message: format!(
                "restored {target} (image {}); it is available again ({} replicas, {:.1}s){strategy}",
                image.as_deref().unwrap_or("?"),
                r.replicas,
                r.seconds
            ),
        },
        Err(e) => Rollback {
            restored: false,
            image,
            message: format!("restored {target} but it did not become available: {e}{strategy}"),
        },
    }
}
