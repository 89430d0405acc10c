//! Waiting for a Deployment's rollout through watches of it, its ReplicaSets and its pods, and
//! reading its state once for a report.

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{reflector, watcher};
use tokio::time::Instant;

use super::assess::{Pending, Progressing, RolloutState, assess, counts, revision, rollout_state};
use super::failure::Failure;
use super::{Limits, RolloutError, RolloutReport};
use crate::kube::cluster::Cluster;
use crate::kube::error::api_error;
use crate::kube::watch;
use crate::progress::Progress;

/// The Deployment's rollout now, with the image it runs (a line for a state report).
pub async fn describe(cluster: &Cluster, ns: &str, name: &str) -> String {
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    let d = match api.get_opt(name).await {
        Ok(Some(d)) => d,
        Ok(None) => return format!("Deployment/{name}: does not exist"),
        Err(e) => return format!("Deployment/{name}: cannot read it: {e}"),
    };
    let image = d
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default();
    let RolloutState { progressing, desc } = rollout_state(&d);
    let state = match progressing {
        Progressing::Done => format!("rolled out ({desc})"),
        Progressing::Going => format!("rollout in progress: {desc}"),
        Progressing::Failed(f) => format!("rollout failing: {} ({desc})", f.reason),
    };
    format!("Deployment/{name}: {state}; image {image}")
}

/// A label selector (`app=celestial,tier=web`) from a Deployment's `matchLabels`.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What changed: the Deployment (or its absence), or one of its ReplicaSets or pods.
enum Change {
    /// Boxed: a Deployment is large, and most changes are of pods.
    Deployment(Box<Option<Deployment>>),
    Owned,
}

/// Waits until the Deployment's rollout is complete: generation observed, updated = available =
/// desired, no old replicas. Fails fast on a pod's fatal reason or ProgressDeadlineExceeded (on
/// Unschedulable after `limits.unschedulable_grace`). Follows the Deployment, its ReplicaSets and
/// its pods through watches (see [`crate::kube::watch`]).
pub async fn wait_rollout(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    limits: Limits,
    progress: &mut dyn Progress,
) -> Result<RolloutReport, RolloutError> {
    let timeout = limits.timeout;
    let start = Instant::now();
    let object = format!("Deployment/{name}");
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    let d = api
        .get_opt(name)
        .await
        .map_err(|e| api_error(&object, "get", e, ""))?
        .ok_or_else(|| RolloutError::Gone(name.into()))?;
    let (sets, sets_writer) = reflector::store::<ReplicaSet>();
    let (pods, pods_writer) = reflector::store::<Pod>();
    let mut changes = futures::stream::select_all([
        watch::object(api, name)
            .map(|r| r.map(|d| Change::Deployment(Box::new(d))))
            .boxed(),
        owned_changes(cluster, ns, &d, sets_writer),
        owned_changes(cluster, ns, &d, pods_writer),
    ]);
    let mut latest = d;
    let deadline = start + timeout;
    let mut pending = Pending::new(limits.unschedulable_grace);
    loop {
        let now = Instant::now();
        let state = assess(&latest, &sets.state(), &pods.state(), &mut pending, now);
        match state.progressing {
            Progressing::Done => return Ok(report(name, &latest, start)),
            Progressing::Failed(Failure { reason, message }) => {
                return Err(RolloutError::Failed {
                    deployment: name.into(),
                    reason,
                    message,
                    rollback: None,
                });
            }
            Progressing::Going => {}
        }
        let desc = state.desc;
        progress.set(&format!("{object}: {desc}"));
        // A pending pod's grace may run out without any change to see.
        let wake = pending.next_expiry().map_or(deadline, |e| e.min(deadline));
        let Ok(next) = tokio::time::timeout_at(wake, changes.next()).await else {
            if Instant::now() < deadline {
                continue;
            }
            return Err(RolloutError::Timeout {
                deployment: name.into(),
                seconds: timeout.as_secs(),
                state: desc,
                rollback: None,
            });
        };
        match next.expect("a watch does not end") {
            Ok(Change::Deployment(d)) => match *d {
                Some(d) => latest = d,
                None => return Err(RolloutError::Gone(name.into())),
            },
            Ok(Change::Owned) => {}
            Err(e) => progress.set(&watch::check(e, &object)?),
        }
    }
}

/// Changes of the ReplicaSets or pods the Deployment's selector matches (none without one).
fn owned_changes<K>(
    cluster: &Cluster,
    ns: &str,
    d: &Deployment,
    writer: reflector::store::Writer<K>,
) -> futures::stream::BoxStream<'static, Result<Change, watcher::Error>>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let labels = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref());
    match labels {
        Some(labels) => {
            let api: Api<K> = Api::namespaced(cluster.client.clone(), ns);
            watch::changes(api, &selector_string(labels), writer)
                .map(|r| r.map(|()| Change::Owned))
                .boxed()
        }
        None => futures::stream::pending().boxed(),
    }
}

/// The finished rollout of `d`.
fn report(name: &str, d: &Deployment, start: Instant) -> RolloutReport {
    RolloutReport {
        deployment: name.into(),
        revision: revision(&d.metadata).cloned(),
        replicas: counts(d).desired,
        seconds: start.elapsed().as_secs_f64(),
    }
}
