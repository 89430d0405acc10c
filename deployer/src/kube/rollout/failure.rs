//! The pod reasons that make a rollout hopeless, as a named failure (reason and message); among
//! them the server's own verdict that its model is wrong ([`MODEL_CHECK_FAILED`]).

use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};

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

/// The exit status of a `celestial-server` whose model failed its start-up self-check (the golden
/// set it carries): one constant shared with the server, which exits with exactly this status and
/// its one-line reason as the termination message.
pub const MODEL_CHECK_EXIT_STATUS: i32 = celestial_common::server_exit::MODEL_CHECK_FAILED;

/// The reason of a rollout whose server refused its model: a container ended (now or in its
/// previous run) with the server's model-check exit status. Retrying cannot help (the check is
/// deterministic), and the previous model is what should serve.
pub const MODEL_CHECK_FAILED: &str = "ModelCheckFailed";

/// Why a rollout cannot succeed: the Kubernetes reason (`ImagePullBackOff`, `Unschedulable`,
/// `ProgressDeadlineExceeded`) and what it says, naming the pod and container when there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
}

impl Failure {
    fn new(reason: impl Into<String>, message: String) -> Self {
        Self {
            reason: reason.into(),
            message,
        }
    }
}

/// The first pod-level reason that makes the rollout hopeless; its message starts with
/// "pod NAME".
pub fn pod_failure(pod: &Pod) -> Option<Failure> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    if let Some(f) = model_check_failure(&name, status.container_statuses.iter().flatten()) {
        return Some(f);
    }
    if let Some(c) = status.conditions.as_ref().and_then(|cs| {
        cs.iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    }) && c.reason.as_deref() == Some(UNSCHEDULABLE)
    {
        return Some(Failure::new(
            UNSCHEDULABLE,
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
            return Some(Failure::new(
                r,
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
            return Some(Failure::new(
                format!("PodFailed ({reason})"),
                format!(
                    "pod {name} container {container} exited with code {}: {}",
                    t.exit_code,
                    t.message.clone().unwrap_or(reason)
                ),
            ));
        }
        let reason = status.reason.clone().unwrap_or_else(|| "PodFailed".into());
        return Some(Failure::new(
            reason,
            format!(
                "pod {name}: {}",
                status.message.clone().unwrap_or_else(|| "failed".into())
            ),
        ));
    }
    None
}

/// A container that ended with the server's model-check exit status, in its current state or its
/// previous run (a crash loop shows it only there): [`MODEL_CHECK_FAILED`], with the server's
/// one-line reason (the last line of the termination message).
fn model_check_failure<'a>(
    pod: &str,
    containers: impl Iterator<Item = &'a ContainerStatus>,
) -> Option<Failure> {
    let check = |t: &&ContainerStateTerminated| t.exit_code == MODEL_CHECK_EXIT_STATUS;
    containers.into_iter().find_map(|cs| {
        let now = cs.state.as_ref().and_then(|s| s.terminated.as_ref());
        let before = cs.last_state.as_ref().and_then(|s| s.terminated.as_ref());
        let t = now.filter(check).or(before.filter(check))?;
        let reason = last_line(t.message.as_deref())
            .unwrap_or("no termination message (the server's reason is in its log)");
        Some(Failure::new(
            MODEL_CHECK_FAILED,
            format!(
                "pod {pod} container {}: the model failed its self-check (exit status {}): {reason}",
                cs.name, t.exit_code
            ),
        ))
    })
}

/// The last non-empty line of a termination message, trimmed.
fn last_line(message: Option<&str>) -> Option<&str> {
    message?
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
}

/// How the container's previous run ended, when it failed (what a crash loop's waiting message
/// does not say): `; last exit code 1 (Error): <termination message>`. The message is the
/// container's termination log, or with `terminationMessagePolicy: FallbackToLogsOnError` the end
/// of its output; only its last line is kept.
fn last_exit(cs: &ContainerStatus) -> String {
    let Some(t) = cs
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .filter(|t| t.exit_code != 0)
    else {
        return String::new();
    };
    let message = last_line(t.message.as_deref())
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    format!(
        "; last exit code {} ({}){message}",
        t.exit_code,
        t.reason.as_deref().unwrap_or("Error")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_failures() {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p1"}, "status": {"conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes are available: 2 Insufficient cpu."}]}})).unwrap();
        let f = pod_failure(&p).unwrap();
        assert_eq!(f.reason, "Unschedulable");
        assert!(f.message.contains("Insufficient cpu"));
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p2"}, "status": {"containerStatuses": [
            {"name": "server", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"x\""}}}]}}))
        .unwrap();
        assert_eq!(pod_failure(&p).unwrap().reason, "ImagePullBackOff");
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
        let f = pod_failure(&p).unwrap();
        assert_eq!(f.reason, "CrashLoopBackOff");
        assert_eq!(
            f.message,
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
                .message
                .ends_with("; last exit code 1 (Error)")
        );
    }

    /// A container status with `state` and `last_state` (JSON).
    fn with_states(state: serde_json::Value, last: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "status": {"phase": "Running",
            "containerStatuses": [{"name": "server", "image": "x", "imageID": "", "ready": false,
                "restartCount": 1, "state": state, "lastState": last}]}}),
        )
        .unwrap()
    }

    #[test]
    fn the_model_check_exit_status_is_a_model_check_failure_in_any_state() {
        let code = MODEL_CHECK_EXIT_STATUS;
        let refused = json!({"terminated": {"exitCode": code, "reason": "Error",
            "message": "{\"level\":\"INFO\"}\nmodel self-check failed: Earth read as Mars\n\n"}});
        // just exited; crash-looping after it; running again after it (the check runs at start)
        let states = [
            (refused.clone(), json!({})),
            (
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}),
                refused.clone(),
            ),
            (json!({"running": {}}), refused),
        ];
        for (state, last) in states {
            let f = pod_failure(&with_states(state.clone(), last)).expect("a failure");
            assert_eq!(f.reason, MODEL_CHECK_FAILED, "{state}");
            assert_eq!(
                f.message,
                "pod p container server: the model failed its self-check (exit status 3): model self-check failed: Earth read as Mars"
            );
        }
        // Without a termination message the server's reason is in its log.
        let bare = json!({"terminated": {"exitCode": code}});
        let f = pod_failure(&with_states(bare, json!({}))).unwrap();
        assert!(
            f.message.ends_with("(the server's reason is in its log)"),
            "{f:?}"
        );
        // Another exit status is not the model's fault: a crash loop as before.
        let other = json!({"terminated": {"exitCode": 1, "message": "cannot bind"}});
        let crash = json!({"waiting": {"reason": "CrashLoopBackOff"}});
        let f = pod_failure(&with_states(crash, other.clone())).unwrap();
        assert_eq!(f.reason, "CrashLoopBackOff");
        assert!(pod_failure(&with_states(json!({"running": {}}), other)).is_none());
    }
}
