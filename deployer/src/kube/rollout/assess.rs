//! A rollout's state from its Deployment, ReplicaSets and pods, as the cluster shows them at one
//! moment (no API calls: [`super::wait`] feeds it what its watches see).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::time::Instant;

use super::failure::{Failure, UNSCHEDULABLE, pod_failure};

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
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.since.values().min().map(|s| *s + self.grace)
    }
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

/// Where a rollout stands.
#[derive(Debug, PartialEq)]
pub enum Progressing {
    /// Complete: every replica updated and available, no old one left.
    Done,
    /// Hopeless without a change.
    Failed(Failure),
    /// Still going.
    Going,
}

/// A rollout's state and where its replicas stand in words, for a report ("2/2 updated, 1/2
/// available, 2 total", "waiting for the controller to observe generation 3").
#[derive(Debug, PartialEq)]
pub struct RolloutState {
    pub progressing: Progressing,
    pub desc: String,
}

impl RolloutState {
    fn going(desc: String) -> Self {
        Self {
            progressing: Progressing::Going,
            desc,
        }
    }

    fn failed(failure: Failure, desc: String) -> Self {
        Self {
            progressing: Progressing::Failed(failure),
            desc,
        }
    }
}

/// The rollout's state as the Deployment alone shows it (its status and conditions). Only a
/// progress deadline fails it here; the pods' reasons are [`assess`]'s.
pub fn rollout_state(d: &Deployment) -> RolloutState {
    let c = counts(d);
    let (generation, observed) = generations(d);
    if let Some(cond) = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Progressing"))
        && cond.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return RolloutState {
            progressing: Progressing::Failed(Failure {
                reason: "ProgressDeadlineExceeded".into(),
                message: cond.message.clone().unwrap_or_default(),
            }),
            desc: "progress deadline exceeded".into(),
        };
    }
    if observed < generation {
        return RolloutState::going(format!(
            "waiting for the controller to observe generation {generation}"
        ));
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
        return RolloutState::going(format!("{desc}; {old} old replica(s) terminating"));
    }
    RolloutState {
        progressing: if done {
            Progressing::Done
        } else {
            Progressing::Going
        },
        desc,
    }
}

/// The annotation holding a Deployment's (and its ReplicaSets') revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

/// The revision a Deployment or ReplicaSet carries (its [`REVISION`] annotation).
pub fn revision(meta: &ObjectMeta) -> Option<&String> {
    meta.annotations.as_ref()?.get(REVISION)
}

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
    let current = revision(&d.metadata);
    let uid = d.metadata.uid.as_deref();
    let hash = sets
        .iter()
        .filter(|rs| owned_by(rs, uid))
        .find(|rs| revision(&rs.metadata) == current)
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

/// The rollout's state from the Deployment and its ReplicaSets and pods at `now`. A new pod that is
/// Unschedulable fails the rollout only once it has been so for the grace of `pending` (which
/// remembers since when); any other pod reason fails it at once.
pub fn assess(
    d: &Deployment,
    sets: &[Arc<ReplicaSet>],
    pods: &[Arc<Pod>],
    pending: &mut Pending,
    now: Instant,
) -> RolloutState {
    let state = rollout_state(d);
    if state.progressing != Progressing::Going {
        return state;
    }
    let desc = state.desc;
    // Pod reasons count only once the controller has seen the current spec: right after a
    // change (or a rollback) the revision annotation still names the previous ReplicaSet.
    let (generation, observed) = generations(d);
    if observed < generation {
        pending.since.clear();
        return RolloutState::going(desc);
    }
    let mut waiting = None;
    let mut seen = HashMap::new();
    for pod in new_pods(d, sets, pods) {
        let Some(failure) = pod_failure(pod) else {
            continue;
        };
        if failure.reason != UNSCHEDULABLE {
            return RolloutState::failed(failure, desc);
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let since = pending.since.get(&name).copied().unwrap_or(now);
        seen.insert(name, since);
        let waited = now.saturating_duration_since(since);
        if waited >= pending.grace {
            let message = format!(
                "{} (for {}s, the --unschedulable-grace)",
                failure.message,
                waited.as_secs()
            );
            return RolloutState::failed(Failure { message, ..failure }, desc);
        }
        waiting.get_or_insert((pending.grace - waited, failure.message));
    }
    pending.since = seen;
    match waiting {
        Some((left, message)) => RolloutState::going(format!(
            "{desc}; {UNSCHEDULABLE} (waiting up to {}s more for a node): {message}",
            left.as_secs_f64().ceil()
        )),
        None => RolloutState::going(desc),
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
        assert_eq!(rollout_state(&done).progressing, Progressing::Done);
        let stale = deploy(
            json!({"metadata": {"name": "d", "generation": 3}, "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}}),
        );
        assert_eq!(rollout_state(&stale).progressing, Progressing::Going);
        let old_left = deploy(
            json!({"metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}}),
        );
        let RolloutState { progressing, desc } = rollout_state(&old_left);
        assert_eq!(progressing, Progressing::Going);
        assert!(desc.contains("1 old replica"), "{desc}");
        let deadline = deploy(
            json!({"metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2, "selector": {}, "template": {}},
            "status": {"observedGeneration": 2, "conditions": [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet x has timed out progressing."}]}}),
        );
        let Progressing::Failed(failure) = rollout_state(&deadline).progressing else {
            panic!("a passed progress deadline did not fail the rollout");
        };
        assert_eq!(failure.reason, "ProgressDeadlineExceeded");
        assert_eq!(failure.message, "ReplicaSet x has timed out progressing.");
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
        assert_eq!(
            assess(&d(2), &sets, &old_crashing, &mut at_once(), Instant::now()).progressing,
            Progressing::Going
        );
        assert_eq!(new_pods(&d(2), &sets, &old_crashing).len(), 1);
        let new_failing = vec![
            pod("old", "h1", "ContainerCreating"),
            pod("new", "h2", "ImagePullBackOff"),
        ];
        assert!(matches!(
            assess(&d(2), &sets, &new_failing, &mut at_once(), Instant::now()).progressing,
            Progressing::Failed(f) if f.reason == "ImagePullBackOff" && f.message.starts_with("pod new")
        ));
        // Before the controller has seen the new spec, pod reasons do not count yet.
        assert_eq!(
            assess(&d(3), &sets, &new_failing, &mut at_once(), Instant::now()).progressing,
            Progressing::Going
        );
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
        assert_eq!(
            assess(
                &d(2),
                &rolled_back,
                &failed_pod_left,
                &mut at_once(),
                Instant::now()
            )
            .progressing,
            Progressing::Going
        );
        // Once the store has it as revision 2, its pods decide (and the failed ones do not).
        let current = vec![rs("h1", "2"), rs("h3", "1")];
        assert_eq!(new_pods(&d(2), &current, &failed_pod_left).len(), 1);
        assert_eq!(
            assess(
                &d(2),
                &current,
                &failed_pod_left,
                &mut at_once(),
                Instant::now()
            )
            .progressing,
            Progressing::Going
        );
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
        let RolloutState {
            progressing: Progressing::Going,
            desc,
        } = assess(&d, &sets, &pods, &mut pending, t0)
        else {
            panic!("an unschedulable pod failed the rollout at once");
        };
        assert!(
            desc.contains("; Unschedulable (waiting up to 60s more for a node): pod p1: 0/3 nodes"),
            "{desc}"
        );
        assert_eq!(pending.next_expiry(), Some(t0 + grace));
        let later = t0 + Duration::from_secs(45);
        let RolloutState {
            progressing: Progressing::Going,
            desc,
        } = assess(&d, &sets, &pods, &mut pending, later)
        else {
            panic!("failed before the grace ran out");
        };
        assert!(desc.contains("waiting up to 15s more"), "{desc}");
        // Another pod's fatal reason does not wait for the grace.
        let mixed = vec![
            unschedulable("p1", "h2"),
            pod("p2", "h2", "ImagePullBackOff"),
        ];
        assert!(matches!(
            assess(&d, &sets, &mixed, &mut pending, later).progressing,
            Progressing::Failed(f) if f.reason == "ImagePullBackOff"
        ));
        // Once the grace has passed: failed, with the scheduler's message and how long it waited.
        let Progressing::Failed(Failure { reason, message }) =
            assess(&d, &sets, &pods, &mut pending, t0 + grace).progressing
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
        assert_eq!(
            assess(&d, &sets, &pods, &mut pending, t0 + grace).progressing,
            Progressing::Going
        );
    }
}
