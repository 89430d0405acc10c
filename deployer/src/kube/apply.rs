//! Server-side apply with the field manager `deployer`, server-side dry runs and diffs, deletion.

use std::collections::HashMap;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use kube::runtime::wait::conditions;
use serde_json::Value;

use super::cluster::Cluster;
use super::error::{ApplyError, api_error};
use super::manifests::Manifest;
use super::watch;
use crate::progress::Progress;
use crate::support::error_chain;

/// The field manager name `deployer` applies with.
pub const FIELD_MANAGER: &str = "deployer";

/// What an apply did (or would do) to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
}

impl Action {
    /// What happened, as `apply` reports it.
    pub fn past(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Configured => "configured",
            Action::Unchanged => "unchanged",
        }
    }

    /// What would happen, as a dry run reports it.
    pub fn conditional(self) -> &'static str {
        match self {
            Action::Created => "would be created",
            Action::Configured => "would change",
            Action::Unchanged => "unchanged",
        }
    }
}

/// The result for one object.
#[derive(Debug, Clone)]
pub struct Applied {
    pub kind: String,
    pub name: String,
    pub namespace: Option<String>,
    pub action: Action,
    /// The live object before the apply (None when it did not exist).
    pub before: Option<Value>,
    /// The object after the apply (or what it would be, on a dry run).
    pub after: Value,
}

impl Applied {
    pub fn display_name(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// Resolves kinds to API resources once per command.
pub struct Resolver {
    cache: HashMap<String, (ApiResource, ApiCapabilities)>,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    pub fn new() -> Self {
        Resolver {
            cache: HashMap::new(),
        }
    }

    /// The typed-less API for a manifest's object, in its namespace (or the cluster's default).
    pub async fn api(
        &mut self,
        cluster: &Cluster,
        m: &Manifest,
    ) -> Result<(Api<DynamicObject>, Option<String>), ApplyError> {
        let key = format!("{}/{}", m.api_version, m.kind);
        if !self.cache.contains_key(&key) {
            let (group, version) = m.group_version();
            let gvk = GroupVersionKind::gvk(group, version, &m.kind);
            let found = kube::discovery::pinned_kind(&cluster.client, &gvk)
                .await
                .map_err(|e| match e {
                    kube::Error::Discovery(_) | kube::Error::Api(_) => ApplyError::UnknownKind {
                        object: m.display_name(),
                        api_version: m.api_version.clone(),
                        kind: m.kind.clone(),
                        message: error_chain(&e),
                    },
                    other => {
                        api_error(&m.display_name(), "discovery", other, &m.origin.to_string())
                    }
                })?;
            self.cache.insert(key.clone(), found);
        }
        let (ar, caps) = &self.cache[&key];
        Ok(match caps.scope {
            Scope::Cluster => (Api::all_with(cluster.client.clone(), ar), None),
            Scope::Namespaced => {
                let ns = m
                    .namespace
                    .clone()
                    .unwrap_or_else(|| cluster.namespace.clone());
                (
                    Api::namespaced_with(cluster.client.clone(), &ns, ar),
                    Some(ns),
                )
            }
        })
    }
}

async fn get_opt(api: &Api<DynamicObject>, m: &Manifest) -> Result<Option<Value>, ApplyError> {
    match api.get_opt(&m.name).await {
        Ok(o) => Ok(o.map(|o| serde_json::to_value(o).expect("a DynamicObject serializes"))),
        Err(e) => Err(api_error(
            &m.display_name(),
            "get",
            e,
            &m.origin.to_string(),
        )),
    }
}

/// An HPA in the same manifests scales this Deployment: `spec.replicas` then belongs to the HPA.
fn scaled_by_hpa(manifests: &[Manifest], deployment: &Manifest) -> bool {
    manifests.iter().any(|h| {
        h.kind == "HorizontalPodAutoscaler"
            && h.namespace == deployment.namespace
            && h.object
                .pointer("/spec/scaleTargetRef/kind")
                .and_then(Value::as_str)
                == Some("Deployment")
            && h.object
                .pointer("/spec/scaleTargetRef/name")
                .and_then(Value::as_str)
                == Some(deployment.name.as_str())
    })
}

/// Server-side applies every manifest (in order) and reports what changed, in `out` as each one
/// is applied (so a caller that stops this midway knows what was). With `dry_run` the API server
/// computes the result (admission, defaults, validation) without persisting anything.
pub async fn apply_all(
    cluster: &Cluster,
    manifests: &[Manifest],
    force: bool,
    dry_run: bool,
    progress: &mut dyn Progress,
    out: &mut Vec<Applied>,
) -> Result<(), ApplyError> {
    let mut resolver = Resolver::new();
    for m in manifests {
        let (api, namespace) = resolver.api(cluster, m).await?;
        let before = get_opt(&api, m).await?;
        let mut body = m.object.clone();
        // Once the Deployment exists, its replica count belongs to its HorizontalPodAutoscaler.
        // Applying the manifest's number would scale it back; dropping the field would make the
        // API server reset it to 1 (a field this manager stops applying is removed). Applying the
        // live value keeps the replica count as the HPA set it, without a conflict.
        if m.kind == "Deployment"
            && scaled_by_hpa(manifests, m)
            && let Some(live) = before
                .as_ref()
                .and_then(|b| b.pointer("/spec/replicas"))
                .cloned()
            && let Some(spec) = body.get_mut("spec").and_then(Value::as_object_mut)
        {
            spec.insert("replicas".into(), live);
        }
        let mut pp = PatchParams::apply(FIELD_MANAGER).validation_strict();
        if force {
            pp = pp.force();
        }
        if dry_run {
            pp = pp.dry_run();
        }
        let after = api
            .patch(&m.name, &pp, &Patch::Apply(&body))
            .await
            .map_err(|e| api_error(&m.display_name(), "apply", e, &m.origin.to_string()))?;
        let after = serde_json::to_value(after).expect("a DynamicObject serializes");
        let action = match &before {
            None => Action::Created,
            Some(b) if dry_run => {
                if normalize(b) == normalize(&after) {
                    Action::Unchanged
                } else {
                    Action::Configured
                }
            }
            Some(b) => {
                if b.pointer("/metadata/resourceVersion")
                    == after.pointer("/metadata/resourceVersion")
                {
                    Action::Unchanged
                } else {
                    Action::Configured
                }
            }
        };
        let applied = Applied {
            kind: m.kind.clone(),
            name: m.name.clone(),
            namespace,
            action,
            before,
            after,
        };
        progress.line(&format!(
            "{}: {}",
            applied.display_name(),
            applied.action.past()
        ));
        out.push(applied);
    }
    Ok(())
}

/// An object without the fields that change on every write or are not ours to compare.
pub fn normalize(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            meta.remove(k);
        }
        if meta
            .get("annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.is_empty())
        {
            meta.remove("annotations");
        }
    }
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
    }
    v
}

/// A unified diff of two objects rendered as YAML (`---`/`+++` headers name the object).
pub fn diff_text(name: &str, before: Option<&Value>, after: &Value) -> String {
    let old = before
        .map(|b| serde_yaml_ng::to_string(&normalize(b)).unwrap_or_default())
        .unwrap_or_default();
    let new = serde_yaml_ng::to_string(&normalize(after)).unwrap_or_default();
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("live/{name}"), &format!("applied/{name}"))
        .to_string()
}

/// Deletes every manifest's object (in reverse apply order, foreground propagation so that a
/// Deployment goes only after its ReplicaSets and Pods) and waits until all of them are gone.
pub async fn delete_all(
    cluster: &Cluster,
    manifests: &[Manifest],
    timeout: std::time::Duration,
    progress: &mut dyn Progress,
) -> Result<Vec<(String, bool)>, ApplyError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut resolver = Resolver::new();
    let mut pending = Vec::new();
    let mut out = Vec::new();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    for m in manifests.iter().rev() {
        let (api, _) = resolver.api(cluster, m).await?;
        match api.delete(&m.name, &dp).await {
            Ok(deleting) => {
                progress.line(&format!("{}: deleting", m.display_name()));
                // Right: deleted at once; Left: still there (finalizers, foreground deletion).
                let uid = deleting.left().and_then(|o| o.metadata.uid);
                pending.push((api, m, uid));
                out.push((m.display_name(), true));
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                progress.line(&format!("{}: already absent", m.display_name()));
                out.push((m.display_name(), false));
            }
            Err(e) => {
                return Err(api_error(
                    &m.display_name(),
                    "delete",
                    e,
                    &m.origin.to_string(),
                ));
            }
        }
    }
    for (api, m, uid) in pending {
        let gone = match uid {
            Some(uid) => {
                let object = m.display_name();
                let cond = conditions::is_deleted(&uid);
                watch::until(api, &m.name, &object, cond, deadline, progress).await?
            }
            None => true,
        };
        if !gone {
            return Err(ApplyError::DeleteTimeout {
                what: m.display_name(),
                seconds: timeout.as_secs(),
            });
        }
        progress.line(&format!("{}: deleted", m.display_name()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn normalize_drops_volatile_fields() {
        let a = json!({"metadata": {"name": "x", "resourceVersion": "1", "managedFields": [], "uid": "u", "annotations": {}}, "spec": {"a": 1}, "status": {"b": 2}});
        assert_eq!(
            normalize(&a),
            json!({"metadata": {"name": "x"}, "spec": {"a": 1}})
        );
    }

    #[test]
    fn diff_shows_changed_lines_only_when_changed() {
        let a = json!({"metadata": {"name": "x"}, "spec": {"image": "a"}});
        let b = json!({"metadata": {"name": "x", "resourceVersion": "2"}, "spec": {"image": "b"}});
        let d = diff_text("Deployment/x", Some(&a), &b);
        assert!(
            d.contains("-  image: a") && d.contains("+  image: b"),
            "{d}"
        );
        assert!(diff_text("Deployment/x", Some(&a), &a).is_empty());
    }
}
