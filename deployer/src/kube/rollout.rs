//! A Deployment's rollout: its state, the pod reasons that make it hopeless, and waiting for it
//! (failing fast with the pod's own reason).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{reflector, watcher};
use tokio::time::Instant;

use super::cluster::Cluster;
use super::error::{ApplyError, api_error};
use super::watch;
use crate::progress::Progress;

/// Waiting reasons of a container that mean the rollout cannot succeed without a change.
pub const FATAL_WAITING_REASONS: &[&str] = &[
    "ImagePullBackOff",
    "ErrImagePull",
    "CrashLoopBackOff",
    "CreateContainerConfigError",
    "CreateContainerError",
    "InvalidImageName",
    "RunContainerError",
];

/// The pod reason a cluster that adds nodes on demand also shows until the new node is there.
pub const UNSCHEDULABLE: &str = "Unschedulable";

/// How long a rollout waits, and how long a pod may stay Unschedulable before the rollout counts as
/// failed (a cluster autoscaler or GKE Autopilot adds a node for it; a node that is briefly NotReady
/// or under disk pressure is tainted until it recovers).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub unschedulable_grace: Duration,
}

/// The pods seen Unschedulable, since when (by this process's clock: the cluster's may differ).
#[derive(Debug, Default)]
pub struct Pending {
    grace: Duration,
    since: HashMap<String, Instant>,
}

impl Pending {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            since: HashMap::new(),
        }
    }

    /// The earliest moment a pod's grace runs out (to look again then, even without a change).
    fn next_expiry(&self) -> Option<Instant> {
        self.since.values().min().map(|s| *s + self.grace)
    }
}

/// A rollout or a wait that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error("rollout of Deployment/{deployment} failed: {reason}: {message}{}", rollback_note(.rollback))]
    Failed {
        deployment: String,
        reason: String,
        message: String,
        rollback: Option<Rollback>,
    },
    #[error("timed out after {seconds}s waiting for the rollout of Deployment/{deployment} ({state}){}", rollback_note(.rollback))]
    Timeout {
        deployment: String,
        seconds: u64,
        state: String,
        rollback: Option<Rollback>,
    },
    #[error(
        "timed out after {seconds}s waiting for the load-balancer address of Service/{service}: {hint}"
    )]
    LoadBalancerTimeout {
        service: String,
        seconds: u64,
        hint: String,
    },
    #[error("Deployment/{0} disappeared while waiting for its rollout")]
    Gone(String),
    #[error(transparent)]
    Api(#[from] ApplyError),
}

/// What happened when a failed rollout was rolled back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rollback {
    /// True when the previous spec is back and available again.
    pub restored: bool,
    /// The image the previous spec runs (when known).
    pub image: Option<String>,
    pub message: String,
}

fn rollback_note(r: &Option<Rollback>) -> String {
    match r {
        None => String::new(),
        Some(r) => format!("\n  rollback: {}", r.message),
    }
}

impl RolloutError {
    /// Attach the outcome of a rollback to a rollout failure.
    pub fn with_rollback(self, r: Rollback) -> Self {
        match self {
            RolloutError::Failed {
                deployment,
                reason,
                message,
                ..
            } => RolloutError::Failed {
                deployment,
                reason,
                message,
                rollback: Some(r),
            },
            RolloutError::Timeout {
                deployment,
                seconds,
                state,
                ..
            } => RolloutError::Timeout {
                deployment,
                seconds,
                state,
                rollback: Some(r),
            },
            other => other,
        }
    }

    /// True for errors a rollback can help with.
    pub fn is_rollout_failure(&self) -> bool {
        matches!(
            self,
            RolloutError::Failed { .. } | RolloutError::Timeout { .. }
        )
    }
}

/// A finished rollout.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RolloutReport {
    pub deployment: String,
    pub revision: Option<String>,
    pub replicas: i32,
    pub seconds: f64,
}

/// Replica counts of a Deployment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    pub desired: i32,
    pub current: i32,
    pub updated: i32,
    pub ready: i32,
    pub available: i32,
}

/// Reads replica counts from a Deployment.
pub fn counts(d: &Deployment) -> Counts {
    let s = d.status.clone().unwrap_or_default();
    Counts {
        desired: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        current: s.replicas.unwrap_or(0),
        updated: s.updated_replicas.unwrap_or(0),
        ready: s.ready_replicas.unwrap_or(0),
        available: s.available_replicas.unwrap_or(0),
    }
}

/// The rollout state: Ok(true) done, Ok(false) in progress (with a description), Err(reason, message) failed.
pub fn rollout_state(d: &Deployment) -> (Result<bool, (String, String)>, String) {
    let c = counts(d);
    let (generation, observed) = generations(d);
    if let Some(cond) = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"))
        && cond.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return (
            Err((
                "ProgressDeadlineExceeded".into(),
                cond.message.clone().unwrap_or_default(),
            )),
            "progress deadline exceeded".into(),
        );
    }
    if observed < generation {
        return (
            Ok(false),
            format!("waiting for the controller to observe generation {generation}"),
        );
    }
    let desc = format!(
        "{}/{} updated, {}/{} available, {} total",
        c.updated, c.desired, c.available, c.desired, c.current
    );
    let old = c.current - c.updated;
    let done = c.updated >= c.desired
        && c.current == c.updated
        && c.available >= c.updated
        && c.available >= c.desired;
    if !done && old > 0 && c.updated >= c.desired {
        return (
            Ok(false),
            format!("{desc}; {old} old replica(s) terminating"),
        );
    }
    (Ok(done), desc)
}

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
    let state = match rollout_state(&d) {
        (Ok(true), desc) => format!("rolled out ({desc})"),
        (Ok(false), desc) => format!("rollout in progress: {desc}"),
        (Err((reason, _)), desc) => format!("rollout failing: {reason} ({desc})"),
    };
    format!("Deployment/{name}: {state}; image {image}")
}

/// The first pod-level reason that makes the rollout hopeless: (reason, "pod NAME: message").
pub fn pod_failure(pod: &Pod) -> Option<(String, String)> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if let Some(c) = status.conditions.as_ref().and_then(|cs| {
        cs.iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    }) && c.reason.as_deref() == Some("Unschedulable")
    {
        return Some((
            "Unschedulable".into(),
            format!("pod {name}: {}", c.message.clone().unwrap_or_default()),
        ));
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for cs in containers {
        if let Some(w) = cs.state.as_ref().and_then(|s| s.waiting.as_ref())
            && let Some(r) = w.reason.as_deref()
            && FATAL_WAITING_REASONS.contains(&r)
        {
            return Some((
                r.to_string(),
                format!(
                    "pod {name} container {}: {}{}",
                    cs.name,
                    w.message.clone().unwrap_or_else(|| r.to_string()),
                    last_exit(cs)
                ),
            ));
        }
    }
    if status.phase.as_deref() == Some("Failed") {
        // The container's own termination reason says more than the pod's phase.
        let terminated = status.container_statuses.iter().flatten().find_map(|cs| {
            cs.state
                .as_ref()?
                .terminated
                .as_ref()
                .filter(|t| t.exit_code != 0)
                .map(|t| (cs.name.clone(), t.clone()))
        });
        if let Some((container, t)) = terminated {
            let reason = t.reason.clone().unwrap_or_else(|| "Error".into());
            return Some((
                format!("PodFailed ({reason})"),
                format!(
                    "pod {name} container {container} exited with code {}: {}",
                    t.exit_code,
                    t.message.clone().unwrap_or(reason)
                ),
            ));
        }
        let reason = status.reason.clone().unwrap_or_else(|| "PodFailed".into());
        return Some((
            reason,
            format!(
                "pod {name}: {}",
                status.message.clone().unwrap_or_else(|| "failed".into())
            ),
        ));
    }
    None
}

/// How the container's previous run ended, when it failed (what a crash loop's waiting message
/// does not say): `; last exit code 1 (Error): <termination message>`. The message is the
/// container's termination log, or with `terminationMessagePolicy: FallbackToLogsOnError` the end
/// of its output; only its last line is kept.
fn last_exit(cs: &k8s_openapi::api::core::v1::ContainerStatus) -> String {
    let Some(t) = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .filter(|t| t.exit_code != 0)
    else {
        return String::new();
    };
    let message = t
        .message
        .as_deref()
        .and_then(|m| m.lines().rev().find(|l| !l.trim().is_empty()))
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    format!(
        "; last exit code {} ({}){message}",
        t.exit_code,
        t.reason.as_deref().unwrap_or("Error")
    )
}

pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

const REVISION: &str = "deployment.kubernetes.io/revision";

/// The pods of the Deployment's newest ReplicaSet (the one of its revision), from the Deployment's
/// ReplicaSets and pods (what its selector matches). None while that ReplicaSet is not known (not
/// listed yet, or the store still has it with its previous revision, as right after a rollback
/// bumps it): the failed ReplicaSet's pods are still there then and must not decide the rollback.
/// The ReplicaSet's arrival is a change of its own, so the rollout is assessed again then.
pub fn new_pods<'a>(
    d: &Deployment,
    sets: &[Arc<ReplicaSet>],
    pods: &'a [Arc<Pod>],
) -> Vec<&'a Pod> {
    let revision = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION));
    let uid = d.metadata.uid.as_deref();
    let hash = sets
        .iter()
        .filter(|rs| owned_by(rs, uid))
        .find(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                == revision
        })
        .and_then(|rs| rs.metadata.labels.as_ref()?.get("pod-template-hash"));
    let Some(hash) = hash else {
        return Vec::new();
    };
    pods.iter()
        .map(AsRef::as_ref)
        .filter(|p: &&Pod| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"))
                == Some(hash)
        })
        .collect()
}

/// Where a rollout stands: done, hopeless, or still going (with a description).
#[derive(Debug, PartialEq)]
pub enum Progressing {
    Done,
    Failed(String, String),
    Going(String),
}

/// The rollout's state from the Deployment and its ReplicaSets and pods at `now`. A new pod that is
/// Unschedulable fails the rollout only once it has been so for the grace of `pending` (which
/// remembers since when); any other pod reason fails it at once.
pub fn assess(
    d: &Deployment,
    sets: &[Arc<ReplicaSet>],
    pods: &[Arc<Pod>],
    pending: &mut Pending,
    now: Instant,
) -> Progressing {
    let (state, desc) = rollout_state(d);
    match state {
        Ok(true) => return Progressing::Done,
        Err((reason, message)) => return Progressing::Failed(reason, message),
        Ok(false) => {}
    }
    // Pod reasons count only once the controller has seen the current spec: right after a
    // change (or a rollback) the revision annotation still names the previous ReplicaSet.
    let (generation, observed) = generations(d);
    if observed < generation {
        pending.since.clear();
        return Progressing::Going(desc);
    }
    let mut waiting = None;
    let mut seen = HashMap::new();
    for pod in new_pods(d, sets, pods) {
        let Some((reason, message)) = pod_failure(pod) else {
            continue;
        };
        if reason != UNSCHEDULABLE {
            return Progressing::Failed(reason, message);
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let since = pending.since.get(&name).copied().unwrap_or(now);
        seen.insert(name, since);
        let waited = now.saturating_duration_since(since);
        if waited >= pending.grace {
            return Progressing::Failed(
                reason,
                format!(
                    "{message} (for {}s, the --unschedulable-grace)",
                    waited.as_secs()
                ),
            );
        }
        waiting.get_or_insert((pending.grace - waited, message));
    }
    pending.since = seen;
    match waiting {
        Some((left, message)) => Progressing::Going(format!(
            "{desc}; {UNSCHEDULABLE} (waiting up to {}s more for a node): {message}",
            left.as_secs_f64().ceil()
        )),
        None => Progressing::Going(desc),
    }
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
/// its pods through watches (see [`super::watch`]).
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
        let desc = match assess(&latest, &sets.state(), &pods.state(), &mut pending, now) {
            Progressing::Done => return Ok(report(name, &latest, start)),
            Progressing::Failed(reason, message) => {
                return Err(RolloutError::Failed {
                    deployment: name.into(),
                    reason,
                    message,
                    rollback: None,
                });
            }
            Progressing::Going(desc) => desc,
        };
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
        revision: d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .cloned(),
        replicas: counts(d).desired,
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// The Deployment's spec generation and the generation its controller has observed (0 when unset).
fn generations(d: &Deployment) -> (i64, i64) {
    let observed = d
        .status
        .as_ref()
        .and_then(|s| s.observed_generation)
        .unwrap_or(0);
    (d.metadata.generation.unwrap_or(0), observed)
}

/// Whether `rs` is owned by the object with `uid` (a Deployment's ReplicaSets, not a namesake's).
pub fn owned_by(rs: &ReplicaSet, uid: Option<&str>) -> bool {
    rs.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(o.uid.as_str()) == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use serde_json::json;

    fn deploy(v: Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rollout_states() {
        let done = deploy(
            json!({"metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}}),
        );
        assert_eq!(rollout_state(&done).0, Ok(true));
        let stale = deploy(
            json!({"metadata": {"name": "d", "generation": 3}, "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}}),
        );
        assert_eq!(rollout_state(&stale).0, Ok(false));
        let old_left = deploy(
            json!({"metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}}),
        );
        let (s, desc) = rollout_state(&old_left);
        assert_eq!(s, Ok(false));
        assert!(desc.contains("1 old replica"), "{desc}");
        let deadline = deploy(
            json!({"metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet x has timed out progressing."}]}}),
        );
        assert_eq!(
            rollout_state(&deadline).0.unwrap_err().0,
            "ProgressDeadlineExceeded"
        );
    }

    #[test]
    fn pod_failures() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p1"}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available: 2 Insufficient cpu."}]}})).unwrap();
        let (r, m) = pod_failure(&p).unwrap();
        assert_eq!(r, "Unschedulable");
        assert!(m.contains("Insufficient cpu"));
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p2"}, "status": {"containerStatuses": [
            {"name": "server", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]}}))
        .unwrap();
        assert_eq!(pod_failure(&p).unwrap().0, "ImagePullBackOff");
        let ok: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p3"}, "status": {"containerStatuses": [
            {"name": "server", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ContainerCreating"}}}]}}),
        )
        .unwrap();
        assert!(pod_failure(&ok).is_none());
        // A crash loop says how the last run ended (exit code, last line of the termination
        // message), as a real kubelet reports it.
        let p: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p4"}, "status": {"containerStatuses": [
            {"name": "server", "image": "x", "imageID": "", "ready": false, "restartCount": 1,
             "state": {"waiting": {"reason": "CrashLoopBackOff",
                "message": "back-off 10s restarting failed container=server pod=p4_ns(u)"}},
             "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                "message": "starting\ncelestial-server: error: cannot read /m.onnx\n"}}}]}}),
        )
        .unwrap();
        let (r, m) = pod_failure(&p).unwrap();
        assert_eq!(r, "CrashLoopBackOff");
        assert_eq!(
            m,
            "pod p4 container server: back-off 10s restarting failed container=server pod=p4_ns(u); last exit code 1 (Error): celestial-server: error: cannot read /m.onnx"
        );
        // Without a message: the exit code alone.
        let mut p = p;
        p.status
            .as_mut()
            .unwrap()
            .container_statuses
            .as_mut()
            .unwrap()[0]
            .last_state
            .as_mut()
            .unwrap()
            .terminated
            .as_mut()
            .unwrap()
            .message = None;
        assert!(
            pod_failure(&p)
                .unwrap()
                .1
                .ends_with("; last exit code 1 (Error)")
        );
    }

    /// Unschedulable fails at once.
    fn at_once() -> Pending {
        Pending::new(Duration::ZERO)
    }

    fn arc<T: serde::de::DeserializeOwned>(v: Value) -> Arc<T> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    /// A pod of the ReplicaSet with `hash`, its container waiting for `reason`.
    fn pod(name: &str, hash: &str, reason: &str) -> Arc<Pod> {
        arc(
            json!({"metadata": {"name": name, "labels": {"app": "a", "pod-template-hash": hash}},
            "status": {"containerStatuses": [{"name": "server", "image": "x", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"waiting": {"reason": reason}}}]}}),
        )
    }

    #[test]
    fn only_the_new_replica_sets_pods_decide_a_rollout() {
        let d = |generation: i64| {
            deploy(
                json!({"metadata": {"name": "d", "uid": "u1", "generation": generation,
                    "annotations": {"deployment.kubernetes.io/revision": "2"}},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a"}}, "template": {}},
                "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1}}),
            )
        };
        let rs = |hash: &str, revision: &str| -> Arc<ReplicaSet> {
            arc(
                json!({"metadata": {"name": format!("d-{hash}"), "labels": {"pod-template-hash": hash},
                "annotations": {"deployment.kubernetes.io/revision": revision},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "u1"}]},
                "spec": {"selector": {}}}),
            )
        };
        let sets = vec![rs("h1", "1"), rs("h2", "2")];
        let old_crashing = vec![
            pod("old", "h1", "CrashLoopBackOff"),
            pod("new", "h2", "ContainerCreating"),
        ];
        assert!(matches!(
            assess(&d(2), &sets, &old_crashing, &mut at_once(), Instant::now()),
            Progressing::Going(_)
        ));
        assert_eq!(new_pods(&d(2), &sets, &old_crashing).len(), 1);
        let new_failing = vec![
            pod("old", "h1", "ContainerCreating"),
            pod("new", "h2", "ImagePullBackOff"),
        ];
        assert!(matches!(
            assess(&d(2), &sets, &new_failing, &mut at_once(), Instant::now()),
            Progressing::Failed(reason, message) if reason == "ImagePullBackOff" && message.starts_with("pod new")
        ));
        // Before the controller has seen the new spec, pod reasons do not count yet.
        assert!(matches!(
            assess(&d(3), &sets, &new_failing, &mut at_once(), Instant::now()),
            Progressing::Going(_)
        ));
        // Without the ReplicaSet of the Deployment's revision no pod counts yet: not listed yet,
        // or (right after a rollback to revision 1's template, which the controller bumps to
        // revision 2) the store still has it as revision 1 while the failed one's pods are there.
        assert!(new_pods(&d(2), &[], &new_failing).is_empty());
        let rolled_back = vec![rs("h1", "1")];
        let failed_pod_left = vec![
            pod("old", "h1", "ContainerCreating"),
            pod("failed", "h3", "Unschedulable"),
            pod("failed2", "h3", "ImagePullBackOff"),
        ];
        assert!(new_pods(&d(2), &rolled_back, &failed_pod_left).is_empty());
        assert!(matches!(
            assess(
                &d(2),
                &rolled_back,
                &failed_pod_left,
                &mut at_once(),
                Instant::now()
            ),
            Progressing::Going(_)
        ));
        // Once the store has it as revision 2, its pods decide (and the failed ones do not).
        let current = vec![rs("h1", "2"), rs("h3", "1")];
        assert_eq!(new_pods(&d(2), &current, &failed_pod_left).len(), 1);
        assert!(matches!(
            assess(
                &d(2),
                &current,
                &failed_pod_left,
                &mut at_once(),
                Instant::now()
            ),
            Progressing::Going(_)
        ));
    }

    /// A pod of the ReplicaSet with `hash` the scheduler cannot place.
    fn unschedulable(name: &str, hash: &str) -> Arc<Pod> {
        arc(
            json!({"metadata": {"name": name, "labels": {"app": "a", "pod-template-hash": hash}},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient cpu."}]}}),
        )
    }

    #[test]
    fn an_unschedulable_pod_fails_the_rollout_only_after_the_grace() {
        let d = deploy(
            json!({"metadata": {"name": "d", "uid": "u1", "generation": 2,
                "annotations": {"deployment.kubernetes.io/revision": "2"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "a"}}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 0}}),
        );
        let sets: Vec<Arc<ReplicaSet>> = vec![arc(
            json!({"metadata": {"name": "d-h2", "labels": {"pod-template-hash": "h2"},
            "annotations": {"deployment.kubernetes.io/revision": "2"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "d", "uid": "u1"}]},
            "spec": {"selector": {}}}),
        )];
        let t0 = Instant::now();
        let grace = Duration::from_secs(60);
        let mut pending = Pending::new(grace);
        let pods = vec![unschedulable("p1", "h2")];
        // Within the grace: still going, saying why and for how much longer.
        let Progressing::Going(desc) = assess(&d, &sets, &pods, &mut pending, t0) else {
            panic!("an unschedulable pod failed the rollout at once");
        };
        assert!(
            desc.contains("; Unschedulable (waiting up to 60s more for a node): pod p1: 0/3 nodes"),
            "{desc}"
        );
        assert_eq!(pending.next_expiry(), Some(t0 + grace));
        let later = t0 + Duration::from_secs(45);
        let Progressing::Going(desc) = assess(&d, &sets, &pods, &mut pending, later) else {
            panic!("failed before the grace ran out");
        };
        assert!(desc.contains("waiting up to 15s more"), "{desc}");
        // Another pod's fatal reason does not wait for the grace.
        let mixed = vec![
            unschedulable("p1", "h2"),
            pod("p2", "h2", "ImagePullBackOff"),
        ];
        assert!(matches!(
            assess(&d, &sets, &mixed, &mut pending, later),
            Progressing::Failed(reason, _) if reason == "ImagePullBackOff"
        ));
        // Once the grace has passed: failed, with the scheduler's message and how long it waited.
        let Progressing::Failed(reason, message) =
            assess(&d, &sets, &pods, &mut pending, t0 + grace)
        else {
            panic!("still going after the grace");
        };
        assert_eq!(reason, "Unschedulable");
        assert!(
            message.starts_with("pod p1: 0/3 nodes are available"),
            "{message}"
        );
        assert!(
            message.ends_with("(for 60s, the --unschedulable-grace)"),
            "{message}"
        );
        // A pod that got a node is forgotten: when it is unschedulable again, its clock restarts.
        let mut pending = Pending::new(grace);
        assess(&d, &sets, &pods, &mut pending, t0);
        let placed = vec![pod("p1", "h2", "ContainerCreating")];
        assess(
            &d,
            &sets,
            &placed,
            &mut pending,
            t0 + Duration::from_secs(30),
        );
        assert_eq!(pending.next_expiry(), None);
        assert!(matches!(
            assess(&d, &sets, &pods, &mut pending, t0 + grace),
            Progressing::Going(_)
        ));
    }
}
