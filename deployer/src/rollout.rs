//! Waiting: a Deployment's rollout (failing fast with the pod's own reason), a LoadBalancer's
//! address, and rolling a failed rollout back to the previous spec.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::Value;
use tokio::time::Instant;

use crate::apply::{ApplyError, FIELD_MANAGER, api_error};
use crate::cluster::Cluster;
use crate::progress::Progress;

const POLL: Duration = Duration::from_millis(400);

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

fn selector_string(labels: &BTreeMap<String, String>) -> String {
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

/// The address a LoadBalancer Service is reachable at, formatted for a URL host.
pub fn lb_address(svc: &Service) -> Option<String> {
    let ing = svc
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    match (&ing.ip, &ing.hostname) {
        (Some(ip), _) if ip.contains(':') => Some(format!("[{ip}]")),
        (Some(ip), _) => Some(ip.clone()),
        (None, Some(h)) => Some(h.clone()),
        _ => None,
    }
}

/// The public URL of a LoadBalancer Service (first port), once it has an address.
pub fn service_url(svc: &Service) -> Option<String> {
    let addr = lb_address(svc)?;
    let port = svc.spec.as_ref()?.ports.as_ref()?.first()?.port;
    Some(format!("http://{addr}:{port}/"))
}

async fn latest_event(cluster: &Cluster, ns: &str, name: &str) -> Option<String> {
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), ns);
    let lp = ListParams::default().fields(&format!(
        "involvedObject.kind=Service,involvedObject.name={name}"
    ));
    let mut items = events.list(&lp).await.ok()?.items;
    items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
    items.last().map(|e| {
        format!(
            "{}: {}",
            e.reason.clone().unwrap_or_default(),
            e.message.clone().unwrap_or_default()
        )
    })
}

const PENDING_HINT: &str = "no load-balancer controller has set status.loadBalancer.ingress yet. A cloud provider usually \
takes 1-3 minutes; a local cluster needs one (MetalLB, `minikube tunnel`, k3s servicelb), otherwise it stays pending forever";

/// Waits for a LoadBalancer Service's address and returns its URL; explains while pending.
pub async fn wait_load_balancer(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    timeout: Duration,
    progress: &mut dyn Progress,
) -> Result<String, RolloutError> {
    let start = Instant::now();
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), ns);
    let object = format!("Service/{name}");
    let mut next_event_check = start;
    let mut event: Option<String> = None;
    loop {
        let svc = api
            .get(name)
            .await
            .map_err(|e| api_error(&object, "get", e, ""))?;
        if let Some(url) = service_url(&svc) {
            return Ok(url);
        }
        let waited = start.elapsed();
        if Instant::now() >= next_event_check {
            event = latest_event(cluster, ns, name).await;
            next_event_check = Instant::now() + Duration::from_secs(5);
        }
        let mut msg = format!(
            "{object}: waiting for the load-balancer address ({}s)",
            waited.as_secs()
        );
        if waited >= Duration::from_secs(5) {
            msg.push_str(&format!(": {PENDING_HINT}"));
        }
        if let Some(e) = &event {
            msg.push_str(&format!("; latest event: {e}"));
        }
        progress.set(&msg);
        if waited >= timeout {
            let mut hint = PENDING_HINT.to_string();
            if let Some(e) = event {
                hint.push_str(&format!("; latest event: {e}"));
            }
            return Err(RolloutError::LoadBalancerTimeout {
                service: name.into(),
                seconds: timeout.as_secs(),
                hint,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

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
        .map(|t| serde_json::to_value(t).expect("serializes"))
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
    timeout: Duration,
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
                api_error(name, "apply", e, "")
            ),
        };
    }
    match wait_rollout(cluster, ns, name, timeout, progress).await {
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
fn owned_by(rs: &ReplicaSet, uid: Option<&str>) -> bool {
    rs.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| Some(o.uid.as_str()) == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn urls() {
        let s: Service = serde_json::from_value(
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.2"}]}}}),
        )
        .unwrap();
        assert_eq!(service_url(&s).unwrap(), "http://127.0.0.2:80/");
        let s: Service = serde_json::from_value(
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 8080}]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.invalid"}]}}}),
        )
        .unwrap();
        assert_eq!(service_url(&s).unwrap(), "http://lb.example.invalid:8080/");
        let s: Service = serde_json::from_value(
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "fd00::1"}]}}}),
        )
        .unwrap();
        assert_eq!(service_url(&s).unwrap(), "http://[fd00::1]:80/");
        let pending: Service =
            serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}, "status": {"loadBalancer": {}}}))
                .unwrap();
        assert!(service_url(&pending).is_none());
    }
}
