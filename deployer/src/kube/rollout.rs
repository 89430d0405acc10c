//! A Deployment's rollout: its state, the pod reasons that make it hopeless, and waiting for it
//! (failing fast with the pod's own reason).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use tokio::time::Instant;

use super::apply::{ApplyError, api_error};
use super::cluster::Cluster;
use crate::progress::Progress;

pub const POLL: Duration = Duration::from_millis(400);

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
                    "pod {name} container {}: {}",
                    cs.name,
                    w.message.clone().unwrap_or_else(|| r.to_string())
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

pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The pods of the Deployment's newest ReplicaSet (or all its pods when that is not known yet).
async fn new_pods(cluster: &Cluster, ns: &str, d: &Deployment) -> Result<Vec<Pod>, kube::Error> {
    let Some(labels) = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
    else {
        return Ok(vec![]);
    };
    let sel = selector_string(&labels);
    let revision = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .cloned();
    let rss: Api<ReplicaSet> = Api::namespaced(cluster.client.clone(), ns);
    let uid = d.metadata.uid.clone();
    let hash = rss
        .list(&ListParams::default().labels(&sel))
        .await?
        .items
        .into_iter()
        .filter(|rs| owned_by(rs, uid.as_deref()))
        .find(|rs| {
            rs.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                == revision.as_ref()
        })
        .and_then(|rs| {
            rs.metadata
                .labels
                .and_then(|l| l.get("pod-template-hash").cloned())
        });
    let sel = match hash {
        Some(h) => format!("{sel},pod-template-hash={h}"),
        None => sel,
    };
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
    Ok(pods.list(&ListParams::default().labels(&sel)).await?.items)
}

/// Waits until the Deployment's rollout is complete: generation observed, updated = available =
/// desired, no old replicas. Fails fast on a pod's fatal reason or ProgressDeadlineExceeded.
pub async fn wait_rollout(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    timeout: Duration,
    progress: &mut dyn Progress,
) -> Result<RolloutReport, RolloutError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    let object = format!("Deployment/{name}");
    loop {
        let d = match api.get_opt(name).await {
            Ok(Some(d)) => d,
            Ok(None) => return Err(RolloutError::Gone(name.into())),
            Err(e) => return Err(api_error(&object, "get", e, "").into()),
        };
        let (state, desc) = rollout_state(&d);
        match state {
            Ok(true) => {
                let c = counts(&d);
                return Ok(RolloutReport {
                    deployment: name.into(),
                    revision: d
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
                        .cloned(),
                    replicas: c.desired,
                    seconds: start.elapsed().as_secs_f64(),
                });
            }
            Err((reason, message)) => {
                return Err(RolloutError::Failed {
                    deployment: name.into(),
                    reason,
                    message,
                    rollback: None,
                });
            }
            Ok(false) => {}
        }
        // Pod reasons count only once the controller has seen the current spec: right after a
        // change (or a rollback) the revision annotation still names the previous ReplicaSet.
        let (generation, observed) = generations(&d);
        let pods = if observed < generation {
            Vec::new()
        } else {
            new_pods(cluster, ns, &d)
                .await
                .map_err(|e| api_error(&object, "list pods", e, ""))?
        };
        if let Some((reason, message)) = pods.iter().find_map(pod_failure) {
            return Err(RolloutError::Failed {
                deployment: name.into(),
                reason,
                message,
                rollback: None,
            });
        }
        progress.set(&format!("{object}: {desc}"));
        if Instant::now() >= deadline {
            return Err(RolloutError::Timeout {
                deployment: name.into(),
                seconds: timeout.as_secs(),
                state: desc,
                rollback: None,
            });
        }
        tokio::time::sleep(POLL).await;
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
    }
}
