//! What the scripted API server answers with: one Deployment `d` in namespace `prod` with its
//! ReplicaSets, pods and Service, as the API server serializes them; lists, watch events and
//! refusals; and the requests a wait makes to follow them.

use std::time::Duration;

use serde_json::{Value, json};

use super::api_server::{End, Scenario, status};

pub const NS: &str = "prod";
pub const NAME: &str = "d";
/// The Deployment's uid (its ReplicaSets' owner).
pub const UID: &str = "uid-of-d";
pub const SELECTOR: &str = "app=a";
/// The image of the Deployment's current spec (revision 2) and of the previous one (revision 1).
pub const IMAGE: &str = "registry.invalid/server:2";
pub const PREVIOUS_IMAGE: &str = "registry.invalid/server:1";
/// The resourceVersion of every initial list; events carry later ones.
pub const LISTED: &str = "10";

pub const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/prod/deployments";
pub const REPLICASETS: &str = "/apis/apps/v1/namespaces/prod/replicasets";
pub const PODS: &str = "/api/v1/namespaces/prod/pods";
pub const SERVICES: &str = "/api/v1/namespaces/prod/services";
pub const EVENTS: &str = "/api/v1/namespaces/prod/events";
pub const CONFIGMAPS: &str = "/api/v1/namespaces/prod/configmaps";
/// The digest the pods of [`IMAGE`] report as their `imageID`.
pub const IMAGE_DIGEST: &str =
    "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// The path of the object `name` in a collection path.
pub fn one(collection: &str, name: &str) -> String {
    format!("{collection}/{name}")
}

/// `seconds` after a watch started.
pub fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// The pod template running `image`.
pub fn template(image: &str) -> Value {
    json!({"metadata": {"labels": {"app": "a"}},
        "spec": {"containers": [{"name": "server", "image": image}]}})
}

/// The Deployment at revision 2 (generation 2, 2 replicas, running [`IMAGE`]) with `status`.
pub fn deployment(status: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": NS, "uid": UID, "generation": 2,
            "resourceVersion": LISTED,
            "annotations": {"deployment.kubernetes.io/revision": "2"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "a"}},
            "template": template(IMAGE)},
        "status": status})
}

/// A rollout under way: one new replica of two, the two old ones still available.
pub fn rolling() -> Value {
    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
        "readyReplicas": 2, "availableReplicas": 2})
}

/// The rollout complete: both replicas updated and available.
pub fn rolled_out() -> Value {
    json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
        "readyReplicas": 2, "availableReplicas": 2})
}

/// The controller gave up on the rollout (`progressDeadlineSeconds` passed).
pub fn deadline_exceeded() -> Value {
    json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 2,
        "conditions": [{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": "ReplicaSet \"d-h2\" has timed out progressing."}]})
}

/// The Deployment's ReplicaSet with pod-template-hash `hash`, at `revision`, running `image`.
pub fn replica_set(hash: &str, revision: u32, image: &str) -> Value {
    let mut template = template(image);
    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
    json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": format!("d-{hash}"), "namespace": NS, "resourceVersion": LISTED,
            "labels": {"app": "a", "pod-template-hash": hash},
            "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": NAME,
                "uid": UID, "controller": true}]},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "a", "pod-template-hash": hash}},
            "template": template}})
}

/// The ReplicaSets of a rollout from revision 1 ([`PREVIOUS_IMAGE`], hash h1) to 2 (h2).
pub fn both_sets() -> Vec<Value> {
    vec![
        replica_set("h1", 1, PREVIOUS_IMAGE),
        replica_set("h2", 2, IMAGE),
    ]
}

/// The pod `name` of the ReplicaSet with `hash`, with `status`.
pub fn pod(name: &str, hash: &str, status: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": LISTED,
            "labels": {"app": "a", "pod-template-hash": hash}},
        "spec": {"containers": [{"name": "server", "image": IMAGE}]},
        "status": status})
}

/// A pod whose container waits with `reason` (and the kubelet's `message`).
pub fn waiting(reason: &str, message: &str) -> Value {
    json!({"phase": "Pending", "containerStatuses": [{"name": "server", "image": IMAGE,
        "imageID": "", "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": reason, "message": message}}}]})
}

/// A pod the scheduler cannot place.
pub fn unschedulable() -> Value {
    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
        "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient cpu."}]})
}

/// A pod whose container runs, ready.
pub fn running() -> Value {
    json!({"phase": "Running", "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [{"name": "server", "image": IMAGE, "imageID": "", "ready": true,
            "restartCount": 0, "state": {"running": {}}}]})
}

/// A pod whose container runs [`IMAGE`] ([`IMAGE_DIGEST`]), Ready: one a command may ask.
pub fn ready() -> Value {
    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "server", "image": IMAGE,
            "imageID": format!("registry.invalid/server@{IMAGE_DIGEST}"), "ready": true,
            "restartCount": 0, "state": {"running": {}}}]})
}

/// The server's `GET /model` answer for model `version`.
pub fn model_document(version: &str) -> Value {
    json!({"name": "celestial-bodies", "version": version, "labels": ["Earth", "Mars"],
        "sha256": format!("{:0>64}", version.replace('.', "")), "validation_accuracy": 0.9933,
        "input": {}, "onnxruntime_version": "1.22.0", "server_version": "0.1.0", "workers": 1})
}

/// The API server's proxy path to `/model` of pod `pod` (plain HTTP on 3000).
pub fn model_proxy(pod: &str) -> String {
    format!("{PODS}/{pod}:3000/proxy/model")
}

/// A pod whose container exited with `code` and will not restart (`restartPolicy: Never`).
pub fn exited(code: i32) -> Value {
    json!({"phase": "Failed", "containerStatuses": [{"name": "server", "image": IMAGE,
        "imageID": "", "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": "Error", "message": "boom"}}}]})
}

/// The one-line reason a server gives when its model fails the start-up self-check.
pub const MODEL_CHECK_REASON: &str =
    "celestial-server: error: model self-check failed: 31 of 40 golden images misclassified";

/// A pod whose server refused its model: restarted after exiting with the model-check status
/// (the termination message ends with the server's reason), now in a crash loop.
pub fn model_check_failed() -> Value {
    let code = crate::kube::rollout::MODEL_CHECK_EXIT_STATUS;
    json!({"phase": "Running", "containerStatuses": [{"name": "server", "image": IMAGE,
        "imageID": "", "ready": false, "restartCount": 1,
        "state": {"waiting": {"reason": "CrashLoopBackOff",
            "message": "back-off 10s restarting failed container=server pod=d-h2-a_prod(u)"}},
        "lastState": {"terminated": {"exitCode": code, "reason": "Error",
            "message": format!("loading the model\n{MODEL_CHECK_REASON}\n")}}}]})
}

/// The LoadBalancer Service `s` (port 80), with `ingress` as its load-balancer status.
pub fn service(ingress: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "s", "namespace": NS, "uid": "uid-of-s", "resourceVersion": LISTED},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
        "status": {"loadBalancer": {"ingress": ingress}}})
}

/// A list of `kind` at [`LISTED`].
pub fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"),
        "metadata": {"resourceVersion": LISTED}, "items": items})
}

/// A watch event of `kind` (ADDED, MODIFIED, DELETED) for `object` at `resource_version`.
pub fn event(kind: &str, mut object: Value, resource_version: &str) -> Value {
    object["metadata"]["resourceVersion"] = json!(resource_version);
    json!({"type": kind, "object": object})
}

/// The watch event of an API server that no longer has the history the watch resumed from.
pub fn gone() -> Value {
    json!({"type": "ERROR", "object": status(410, "Expired", "too old resource version: 10 (12)")})
}

/// Expects the list of `path` with `selector` (`fieldSelector` or `labelSelector`, as kube's
/// watcher sends it) answering `items`, then its watch from [`LISTED`] sending `events`.
pub fn watched(
    s: &mut Scenario,
    path: &str,
    selector: (&str, &str),
    items: Vec<Value>,
    events: Vec<(Duration, Value)>,
    end: End,
) {
    let kind = items
        .first()
        .and_then(|i| i["kind"].as_str())
        .unwrap_or("Object")
        .to_string();
    s.get(path)
        .query(selector.0, selector.1)
        .reply(200, list(&kind, items));
    s.watch(path, LISTED)
        .query(selector.0, selector.1)
        .stream(events, end);
}

/// The name selector kube's single-object watch sends.
pub fn named(name: &str) -> (&'static str, String) {
    ("fieldSelector", format!("metadata.name={name}"))
}

/// Expects kube's watch of the one object `name` at `path`: its list by name answering `object`,
/// then the watch sending `events`.
pub fn watched_object(
    s: &mut Scenario,
    (path, name): (&str, &str),
    object: Value,
    events: Vec<(Duration, Value)>,
    end: End,
) {
    let (key, name) = named(name);
    watched(s, path, (key, &name), vec![object], events, end);
}

/// Expects the Deployment listed again (its watch broke and could not resume), still rolling,
/// and its new watch, on which the rollout completes `after` it started.
pub fn relisted_then_complete(s: &mut Scenario, after: Duration) {
    let done = event("MODIFIED", deployment(rolled_out()), "40");
    let d = (DEPLOYMENTS, NAME);
    watched_object(s, d, deployment(rolling()), vec![(after, done)], End::Open);
}

/// What a rollout wait reads: the Deployment (got, then listed and watched by name), its
/// ReplicaSets and pods (listed and watched by its selector), and the events of each watch. The
/// watches of the ReplicaSets and pods stay open.
pub struct Rollout {
    pub deployment: Value,
    pub deployment_events: Vec<(Duration, Value)>,
    /// How the Deployment's watch ends after its events.
    pub deployment_end: End,
    pub sets: Vec<Value>,
    pub pods: Vec<Value>,
    pub pod_events: Vec<(Duration, Value)>,
}

impl Rollout {
    /// A rollout under way from revision 1 to 2 with one new pod starting; no events yet.
    pub fn rolling() -> Rollout {
        Rollout {
            deployment: deployment(rolling()),
            deployment_events: Vec::new(),
            deployment_end: End::Open,
            sets: both_sets(),
            pods: vec![
                pod("d-h1-a", "h1", running()),
                pod("d-h1-b", "h1", running()),
                pod("d-h2-a", "h2", waiting("ContainerCreating", "")),
            ],
            pod_events: Vec::new(),
        }
    }

    /// Expects the wait's requests, in order per path.
    pub fn script(self, s: &mut Scenario) {
        let (pods, events) = (self.pods.clone(), self.pod_events.clone());
        self.script_without_pods(s);
        let by_label = ("labelSelector", SELECTOR);
        watched(s, PODS, by_label, pods, events, End::Open);
    }

    /// Expects the wait's requests but those for the pods (the test scripts them).
    pub fn script_without_pods(self, s: &mut Scenario) {
        s.get(&one(DEPLOYMENTS, NAME))
            .reply(200, self.deployment.clone());
        let (d, events) = (self.deployment, self.deployment_events);
        watched_object(s, (DEPLOYMENTS, NAME), d, events, self.deployment_end);
        let by_label = ("labelSelector", SELECTOR);
        watched(s, REPLICASETS, by_label, self.sets, Vec::new(), End::Open);
    }
}
