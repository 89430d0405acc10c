//! Predictions of one pod's server, through the API server's pod proxy
//! (`POST /api/v1/namespaces/NS/pods/[https:]NAME:PORT/proxy/predict`, RBAC `pods/proxy` create):
//! what an evaluation before traffic asks the candidate's pod and a serving pod, with images no
//! load balancer has to carry. They carry the probe header (`celestial-probe: evaluation`), so the
//! server keeps them out of its live-traffic counters.

use celestial_common::probe;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use serde_json::Value;

use super::cluster::Cluster;
use super::error::{ApplyError, api_error};
use super::model::{endpoint, proxy_json, proxy_path, ready_pod, server_image};

/// How long one prediction through the proxy may take.
pub const PREDICT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A pod to ask: a Ready pod of a Deployment's current revision, and how the proxy reaches it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Target {
    pub deployment: String,
    pub pod: String,
    /// The server image its template runs.
    pub image: Option<String>,
    #[serde(skip)]
    pub endpoint: (&'static str, u16),
}

/// A Ready pod of the Deployment `name`'s current revision (None when the Deployment does not
/// exist or has no Ready pod of it).
pub async fn target(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    container: Option<&str>,
) -> Result<Option<Target>, ApplyError> {
    let object = format!("Deployment/{name}");
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    let Some(d) = api
        .get_opt(name)
        .await
        .map_err(|e| api_error(&object, "get", e, ""))?
    else {
        return Ok(None);
    };
    let Some(pod) = ready_pod(cluster, ns, &d, &object).await? else {
        return Ok(None);
    };
    let template = d
        .spec
        .as_ref()
        .map(|s| serde_json::to_value(&s.template).expect("a pod template serializes to JSON"));
    let template = template.unwrap_or_default();
    let image = server_image(&template, container);
    Ok(Some(Target {
        deployment: name.into(),
        pod: pod.metadata.name.unwrap_or_default(),
        image,
        endpoint: endpoint(&template),
    }))
}

/// `POST /predict` of `image` (raw body of type `mime`) on `target`'s server: its JSON answer, or
/// why there is none.
pub async fn predict(
    cluster: &Cluster,
    ns: &str,
    target: &Target,
    api_key: Option<&str>,
    (image, mime): (&[u8], &str),
) -> Result<Value, String> {
    let path = proxy_path(ns, &target.pod, target.endpoint, "predict");
    let request = http::Request::post(path)
        .header("content-type", mime)
        .header(probe::HEADER, probe::EVALUATION);
    let what = format!("POST /predict on pod {} through the API server", target.pod);
    let send = (PREDICT_TIMEOUT, image.to_vec());
    proxy_json(cluster, request, api_key, send, &what).await
}
