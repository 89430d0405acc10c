//! What a Deployment serves now: its revision, the server image and its digest, and the model its
//! pods report. The model is read from one Ready pod of the current revision with `GET /model`
//! through the API server's pod proxy (`/api/v1/namespaces/NS/pods/[https:]NAME:PORT/proxy/model`,
//! RBAC `pods/proxy` get), so it needs neither the load balancer nor a route into the cluster; the
//! API key goes as `X-API-Key` (the API server keeps `Authorization` for itself), and with TLS the
//! proxy speaks HTTPS to the pod's `https` port.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::Value;

use super::cluster::Cluster;
use super::error::{ApplyError, api_error};
use super::rollout::{new_pods, revision, selector_string};
use super::secure::HTTPS_PORT_NAME;

/// The header the server also takes an API key from (the API server's proxy drops
/// `Authorization`, which authenticates the proxy request itself).
pub const API_KEY_HEADER: &str = "X-API-Key";
/// The server's plain HTTP port when the template names none.
pub const DEFAULT_HTTP_PORT: u16 = 3000;
/// How long asking a pod for its model may take: the API server may not reach pods at all (a
/// control plane outside the pod network), and a release must not wait long for a description.
pub const MODEL_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The served model, as the server's `GET /model` describes it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    /// SHA-256 of the model file, when the server reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Accuracy on the validation set, from the model's metadata.
    #[serde(default)]
    pub validation_accuracy: Option<f64>,
}

impl ModelInfo {
    /// `NAME VERSION` (and the accuracy), for a line of text.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.name, self.version);
        if let Some(a) = self.validation_accuracy {
            s.push_str(&format!(" (validation accuracy {a:.4})"));
        }
        s
    }
}

/// What a Deployment serves now.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Serving {
    /// The Deployment's revision (`deployment.kubernetes.io/revision`).
    pub revision: Option<String>,
    /// The server image of its pod template.
    pub image: Option<String>,
    /// `sha256:...`: from the image reference when it has one, else from a pod's `imageID`.
    pub digest: Option<String>,
    /// Its pod template (what a rollback to it applies).
    #[serde(skip)]
    pub template: Option<Value>,
    pub model: Option<ModelInfo>,
    /// Why the model could not be read (the release goes on without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_error: Option<String>,
}

/// The Deployment `name`'s revision, image and model, read now (the model from a Ready pod of
/// the current revision; `api_key` for a server that requires one). An unreadable model is
/// `model_error`, not an error: only the Deployment and its pods must be readable.
pub async fn serving(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    container: Option<&str>,
    api_key: Option<&str>,
) -> Result<Serving, ApplyError> {
    let object = format!("Deployment/{name}");
    let d: Deployment = Api::namespaced(cluster.client.clone(), ns)
        .get(name)
        .await
        .map_err(|e| api_error(&object, "get", e, ""))?;
    let template = d
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).expect("a pod template serializes to JSON"));
    let server = template
        .as_ref()
        .and_then(|t| server_container(t, container));
    let image = server.and_then(|c| c["image"].as_str()).map(str::to_string);
    let mut serving = Serving {
        revision: revision(&d.metadata).cloned(),
        digest: image.as_deref().and_then(digest_of),
        image,
        ..Serving::default()
    };
    let pod = ready_pod(cluster, ns, &d, &object).await?;
    let read = match (&pod, &template) {
        (Some(pod), Some(t)) => {
            let container_name = server.and_then(|c| c["name"].as_str());
            if serving.digest.is_none() {
                serving.digest = container_name.and_then(|c| pod_digest(pod, c));
            }
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            read_model(cluster, ns, &pod_name, endpoint(t), api_key).await
        }
        _ => Err("no Ready pod of the current revision to ask".to_string()),
    };
    match read {
        Ok(m) => serving.model = Some(m),
        Err(e) => serving.model_error = Some(e),
    }
    serving.template = template;
    Ok(serving)
}

/// A Ready pod of the Deployment's current revision, if any.
pub(super) async fn ready_pod(
    cluster: &Cluster,
    ns: &str,
    d: &Deployment,
    object: &str,
) -> Result<Option<Pod>, ApplyError> {
    let Some(labels) = d
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.as_ref())
    else {
        return Ok(None);
    };
    let lp = ListParams::default().labels(&selector_string(labels));
    let sets: Vec<Arc<ReplicaSet>> = Api::namespaced(cluster.client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| api_error(object, "list replicasets", e, ""))?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let pods: Vec<Arc<Pod>> = Api::namespaced(cluster.client.clone(), ns)
        .list(&lp)
        .await
        .map_err(|e| api_error(object, "list pods", e, ""))?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    Ok(new_pods(d, &sets, &pods)
        .into_iter()
        .find(|p| is_ready(p))
        .cloned())
}

/// Running, Ready and not being deleted.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The server container of a pod template (JSON): the one named `container`, else the only one,
/// else the one named `celestial-server`.
pub fn server_container<'a>(template: &'a Value, container: Option<&str>) -> Option<&'a Value> {
    let containers = template.pointer("/spec/containers")?.as_array()?;
    let named = |n: &str| containers.iter().find(|c| c["name"] == n);
    match container {
        Some(n) => named(n),
        None if containers.len() == 1 => containers.first(),
        None => named("celestial-server"),
    }
}

/// The server image of a pod template (JSON), see [`server_container`].
pub fn server_image(template: &Value, container: Option<&str>) -> Option<String> {
    server_container(template, container)
        .and_then(|c| c["image"].as_str())
        .map(str::to_string)
}

/// How the API server's proxy reaches the server in a pod of `template`: HTTPS on the port named
/// `https` when there is one (TLS on: the plain port serves only the probes), else the port named
/// `http`, else [`DEFAULT_HTTP_PORT`]. As the proxy path spells it: `https:` or nothing, and the port.
pub fn endpoint(template: &Value) -> (&'static str, u16) {
    let ports: Vec<&Value> = template
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .collect();
    let port = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
    };
    match port(HTTPS_PORT_NAME) {
        Some(p) => ("https:", p),
        None => ("", port("http").unwrap_or(DEFAULT_HTTP_PORT)),
    }
}

/// The API server's proxy path to `path` (e.g. `model`) on the server in `pod`.
pub fn proxy_path(ns: &str, pod: &str, (scheme, port): (&str, u16), path: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods/{scheme}{pod}:{port}/proxy/{path}")
}

/// `GET /model` of the server in `pod`, through the API server's proxy.
async fn read_model(
    cluster: &Cluster,
    ns: &str,
    pod: &str,
    endpoint: (&str, u16),
    api_key: Option<&str>,
) -> Result<ModelInfo, String> {
    let request = http::Request::get(proxy_path(ns, pod, endpoint, "model"));
    let what = format!("GET /model of pod {pod} through the API server");
    let wait = (MODEL_READ_TIMEOUT, Vec::new());
    let answer = proxy_json(cluster, request, api_key, wait, &what).await?;
    serde_json::from_value(answer).map_err(|e| format!("{what}: not a model description ({e})"))
}

/// Sends `request` (a request through the pod proxy, its body `body`) with the API key, waits at
/// most `timeout`, and reads its JSON answer. Errors start with `what`: no answer in time, the
/// API server's refusal (a missing `pods/proxy` permission), the server's own error answer.
pub async fn proxy_json(
    cluster: &Cluster,
    request: http::request::Builder,
    api_key: Option<&str>,
    send: (std::time::Duration, Vec<u8>),
    what: &str,
) -> Result<Value, String> {
    let text = proxy_text(cluster, request, api_key, send, what).await?;
    serde_json::from_str(&text).map_err(|e| {
        let start: String = text.chars().take(200).collect();
        format!("{what}: not JSON ({e}): {start}")
    })
}

/// As [`proxy_json`], the answer as text.
pub async fn proxy_text(
    cluster: &Cluster,
    request: http::request::Builder,
    api_key: Option<&str>,
    (timeout, body): (std::time::Duration, Vec<u8>),
    what: &str,
) -> Result<String, String> {
    let request = match api_key {
        Some(key) => request.header(API_KEY_HEADER, key),
        None => request,
    };
    let verb = if request.method_ref() == Some(&http::Method::GET) {
        "get"
    } else {
        "create"
    };
    let request = request.body(body).map_err(|e| e.to_string())?;
    tokio::time::timeout(timeout, cluster.client.request_text(request))
        .await
        .map_err(|_| format!("{what}: no answer within {}s", timeout.as_secs()))?
        .map_err(|e| format!("{what}: {}", proxy_error(&e, verb)))
}

/// What a failed proxy request says: the API server's refusal (a missing `pods/proxy` permission
/// for `verb`) or the server's own answer.
fn proxy_error(e: &kube::Error, verb: &str) -> String {
    match e {
        kube::Error::Api(s) if s.code == 403 => format!(
            "forbidden (HTTP 403; this needs `{verb}` on `pods/proxy`): {}",
            s.message
        ),
        kube::Error::Api(s) => format!("HTTP {}: {}", s.code, s.message),
        other => crate::support::error_chain(other),
    }
}

/// `sha256:...` of an image reference pinned by digest.
pub fn digest_of(image: &str) -> Option<String> {
    image
        .rsplit_once('@')
        .map(|(_, d)| d.to_string())
        .filter(|d| d.starts_with("sha256:"))
}

/// `sha256:...` of the image the container `container` of `pod` runs (its `imageID`).
fn pod_digest(pod: &Pod, container: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| digest_of(&c.image_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_proxy_reaches_the_https_port_with_tls_and_the_http_port_without() {
        let plain = json!({"spec": {"containers": [{"name": "s", "ports": [{"name": "http", "containerPort": 8080}]}]}});
        assert_eq!(endpoint(&plain), ("", 8080));
        assert_eq!(
            proxy_path("ns", "p", endpoint(&plain), "model"),
            "/api/v1/namespaces/ns/pods/p:8080/proxy/model"
        );
        let tls = json!({"spec": {"containers": [{"name": "s", "ports": [
            {"name": "http", "containerPort": 3000}, {"name": "https", "containerPort": 3443}]}]}});
        assert_eq!(
            proxy_path("ns", "p", endpoint(&tls), "model"),
            "/api/v1/namespaces/ns/pods/https:p:3443/proxy/model"
        );
        assert_eq!(
            endpoint(&json!({"spec": {"containers": [{"name": "s"}]}})),
            ("", 3000)
        );
    }

    #[test]
    fn digests_come_from_pinned_references_only() {
        assert_eq!(
            digest_of("r.io/a/b@sha256:abc").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(
            digest_of("docker-pullable://r.io/a/b@sha256:abc").as_deref(),
            Some("sha256:abc")
        );
        assert_eq!(digest_of("r.io/a/b:1"), None);
    }

    #[test]
    fn the_server_container_is_the_named_the_only_or_celestial_server() {
        let one = json!({"spec": {"containers": [{"name": "x"}]}});
        assert_eq!(server_container(&one, None).unwrap()["name"], "x");
        let two = json!({"spec": {"containers": [{"name": "side"}, {"name": "celestial-server"}]}});
        assert_eq!(
            server_container(&two, None).unwrap()["name"],
            "celestial-server"
        );
        assert_eq!(
            server_container(&two, Some("side")).unwrap()["name"],
            "side"
        );
        assert!(server_container(&two, Some("nope")).is_none());
        assert_eq!(server_image(&one, None), None, "no image");
    }
}
