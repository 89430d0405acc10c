//! The release history, kept in the cluster next to what it describes: the ConfigMap
//! [`CONFIGMAP`] in the server's namespace, its data key [`DATA_KEY`] a JSON array of
//! [`Entry`]s, oldest first, at most `limit` of them (the oldest go first). Every `apply`,
//! `release` and `rollback` appends one; `history` shows them and `rollback --to-model` restores
//! the pod template a promoted entry recorded, so going back needs neither CI artifacts nor the
//! ReplicaSets the Deployment still keeps.
//!
//! Written with get, then create or update (RBAC `configmaps`: get, create, update): an update
//! carries the resourceVersion it read, so two deployers writing at once do not lose an entry
//! (the second is refused with 409 and reads again).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::Value;

use super::apply::FIELD_MANAGER;
use super::cluster::Cluster;
use super::error::{ApplyError, api_error};
use super::model::ModelInfo;

/// The ConfigMap holding the history, in the server's namespace.
pub const CONFIGMAP: &str = "celestial-releases";
/// Its data key: the entries as a JSON array, oldest first.
pub const DATA_KEY: &str = "releases.json";
/// How often a write that lost a race (409) reads and tries again.
const ATTEMPTS: usize = 5;
/// The most the data may take: a ConfigMap holds at most 1 MiB, and its other fields need room.
const MAX_BYTES: usize = 900 * 1024;

/// How a release ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// It rolled out and passed its checks: it serves.
    Promoted,
    /// It failed and the previous version was restored.
    RolledBack,
    /// It failed and was not rolled back (or the rollback did not restore).
    Failed,
    /// Evaluated before traffic and refused (`--evaluate`): it never served.
    Refused,
    /// Served a share of live traffic as a canary (`--canary`) and was aborted by the analysis:
    /// the canary was deleted and the previous version serves every request.
    Aborted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::Refused => "refused",
            Outcome::Aborted => "aborted",
        }
    }
}

/// One release of one Deployment.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// When it ended (RFC 3339, UTC).
    pub time: String,
    /// `apply`, `release` or `rollback`.
    pub command: String,
    pub deployment: String,
    /// The server image reference.
    pub image: Option<String>,
    /// `sha256:...` of the image.
    pub digest: Option<String>,
    /// The model its pods reported (`GET /model`), when they could be asked.
    pub model: Option<ModelInfo>,
    /// The Deployment's revision it became (promoted entries).
    pub revision: Option<String>,
    pub outcome: Outcome,
    /// Why it failed or was rolled back; what a rollback restored.
    pub reason: Option<String>,
    /// The pod template that serves (promoted entries): what `rollback --to-model` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<Value>,
}

impl Entry {
    /// When `other` records the same release as this one (a re-apply that changed nothing).
    pub fn same_release(&self, other: &Entry) -> bool {
        self.deployment == other.deployment
            && self.outcome == other.outcome
            && self.revision == other.revision
            && self.image == other.image
    }
}

/// The ConfigMap's name as messages say it.
fn object() -> String {
    format!("ConfigMap/{CONFIGMAP}")
}

/// A refusal to read or write the history, with what it needs.
fn refused(ns: &str, action: &'static str, e: kube::Error) -> ApplyError {
    match api_error(&object(), action, e, "") {
        ApplyError::Forbidden {
            object,
            action,
            message,
        } => ApplyError::Forbidden {
            object,
            action,
            message: format!(
                "{message} (the release history needs get, create and update on configmaps in namespace {ns}; --history-limit 0 keeps none)"
            ),
        },
        other => other,
    }
}

/// The entries of the history in `ns`, oldest first (none when there is no history yet).
pub async fn read(cluster: &Cluster, ns: &str) -> Result<Vec<Entry>, ApplyError> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), ns);
    let cm = api
        .get_opt(CONFIGMAP)
        .await
        .map_err(|e| refused(ns, "get", e))?;
    cm.as_ref().map_or(Ok(Vec::new()), |cm| entries(cm, ns))
}

/// The entries a ConfigMap holds; a clear error for content that is not a history (it is not
/// overwritten: someone else may own a ConfigMap of that name).
fn entries(cm: &ConfigMap, ns: &str) -> Result<Vec<Entry>, ApplyError> {
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(DATA_KEY)) else {
        return Ok(Vec::new());
    };
    serde_json::from_str(text).map_err(|e| ApplyError::Record {
        object: object(),
        message: format!(
            "data key {DATA_KEY} in namespace {ns} is not a release history ({e}); fix or delete the ConfigMap"
        ),
    })
}

/// Appends `entry` to the history in `ns`, keeping the newest `limit` entries; returns how many
/// it holds then. An entry that records the same release as the newest one is not added again.
pub async fn append(
    cluster: &Cluster,
    ns: &str,
    entry: Entry,
    limit: usize,
) -> Result<usize, ApplyError> {
    let api: Api<ConfigMap> = Api::namespaced(cluster.client.clone(), ns);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let cm = api
            .get_opt(CONFIGMAP)
            .await
            .map_err(|e| refused(ns, "get", e))?;
        let mut list = cm.as_ref().map_or(Ok(Vec::new()), |cm| entries(cm, ns))?;
        let newest = list.iter().rev().find(|e| e.deployment == entry.deployment);
        if newest.is_some_and(|e| e.same_release(&entry)) && list.len() <= limit {
            return Ok(list.len());
        }
        list.push(entry.clone());
        let excess = list.len().saturating_sub(limit);
        list.drain(..excess);
        let text = fit(&mut list);
        let written = list.len();
        let result = match cm {
            Some(mut cm) => {
                cm.data
                    .get_or_insert_with(BTreeMap::new)
                    .insert(DATA_KEY.into(), text);
                api.replace(CONFIGMAP, &post_params(), &cm).await.map(drop)
            }
            None => api
                .create(&post_params(), &new_configmap(ns, text))
                .await
                .map(drop),
        };
        match result {
            Ok(()) => return Ok(written),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < ATTEMPTS => continue,
            Err(e) => return Err(refused(ns, "update", e)),
        }
    }
}

/// The entries as the ConfigMap holds them, dropping the oldest until they fit in [`MAX_BYTES`].
fn fit(list: &mut Vec<Entry>) -> String {
    loop {
        let text = serde_json::to_string_pretty(&list).expect("entries serialize to JSON");
        if text.len() <= MAX_BYTES || list.len() <= 1 {
            return text;
        }
        list.remove(0);
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    }
}

/// A new history ConfigMap holding `text`.
fn new_configmap(ns: &str, text: String) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIGMAP.into()),
            namespace: Some(ns.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                FIELD_MANAGER.to_string(),
            )])),
            annotations: Some(BTreeMap::from([(
                "celestial.dev/description".to_string(),
                format!(
                    "deployer's release history: {DATA_KEY} is a JSON array of releases, oldest first (docs/deploy.md, \"Release history\")"
                ),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(DATA_KEY.to_string(), text)])),
        ..ConfigMap::default()
    }
}

/// The newest promoted entry of `deployment` whose model has `version` and that recorded its
/// template.
pub fn promoted_model<'a>(
    entries: &'a [Entry],
    deployment: &str,
    version: &str,
) -> Option<&'a Entry> {
    entries.iter().rev().find(|e| {
        e.deployment == deployment
            && e.outcome == Outcome::Promoted
            && e.template.is_some()
            && e.model.as_ref().is_some_and(|m| m.version == version)
    })
}

/// The newest promoted entry of `deployment` at `revision` that recorded its template.
pub fn promoted_revision<'a>(
    entries: &'a [Entry],
    deployment: &str,
    revision: u64,
) -> Option<&'a Entry> {
    let revision = revision.to_string();
    entries.iter().rev().find(|e| {
        e.deployment == deployment
            && e.outcome == Outcome::Promoted
            && e.template.is_some()
            && e.revision.as_deref() == Some(revision.as_str())
    })
}
