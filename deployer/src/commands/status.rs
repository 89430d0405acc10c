//! `status`: the deployed image, replicas, each pod's state and reason, the URL.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams};

use crate::cli::cluster::StatusArgs;
use crate::error::Error;
use crate::kube::cluster::Cluster;
use crate::kube::error::{ApplyError, api_error};
use crate::kube::manifests::{self, Manifest};
use crate::kube::rollout::{self, Counts, Progressing};
use crate::kube::service::service_url;

/// What `status` reports.
#[derive(Debug, serde::Serialize)]
pub struct StatusReport {
    pub command: &'static str,
    pub namespace: String,
    pub deployments: Vec<Deployed<LiveDeployment>>,
    pub services: Vec<Deployed<LiveService>>,
}

/// An object of the manifests, and what the cluster runs for it (`live`: nothing when it is not
/// deployed).
#[derive(Debug, serde::Serialize)]
pub struct Deployed<L> {
    pub name: String,
    /// Deployments say their namespace; Services do not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub deployed: bool,
    #[serde(flatten)]
    pub live: Option<L>,
}

/// A deployed Deployment.
#[derive(Debug, serde::Serialize)]
pub struct LiveDeployment {
    pub images: Vec<String>,
    pub replicas: Counts,
    pub rollout: String,
    pub pods: Vec<PodStatus>,
}

/// One pod: `NAME PHASE`, readiness, restarts, the reason it is not running (when any).
#[derive(Debug, serde::Serialize)]
pub struct PodStatus {
    pub pod: String,
    pub ready: bool,
    pub restarts: i32,
    pub reason: Option<String>,
    pub node: Option<String>,
}

/// A deployed Service: its URL once it has an address.
#[derive(Debug, serde::Serialize)]
pub struct LiveService {
    pub url: Option<String>,
}

impl StatusReport {
    pub fn text(&self) -> String {
        let mut text = String::new();
        for d in &self.deployments {
            let Some(live) = &d.live else {
                text.push_str(&format!(
                    "Deployment/{}: not deployed in namespace {}\n",
                    d.name,
                    d.namespace.as_deref().unwrap_or_default()
                ));
                continue;
            };
            let c = &live.replicas;
            text.push_str(&format!(
                "Deployment/{} ({}): image {}\n  replicas: desired {} / updated {} / ready {} / available {} (total {}); rollout {}\n",
                d.name, d.namespace.as_deref().unwrap_or_default(), live.images.join(", "), c.desired, c.updated, c.ready, c.available, c.current, live.rollout
            ));
            for pod in &live.pods {
                text.push_str(&format!(
                    "  pod {}{} restarts {}{}{}\n",
                    pod.pod,
                    if pod.ready { " ready" } else { " not-ready" },
                    pod.restarts,
                    pod.node
                        .as_ref()
                        .map(|n| format!(" on {n}"))
                        .unwrap_or_default(),
                    pod.reason
                        .as_ref()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                ));
            }
        }
        for s in &self.services {
            let state = match &s.live {
                None => "not deployed".to_string(),
                Some(LiveService { url: Some(u) }) => format!("URL: {u}"),
                Some(LiveService { url: None }) => "no load-balancer address (yet)".to_string(),
            };
            text.push_str(&format!("Service/{}: {state}\n", s.name));
        }
        text
    }
}

/// `deployer status`.
pub async fn run(c: &StatusArgs) -> Result<StatusReport, Error> {
    let manifests = manifests::load(&c.manifests.paths())?;
    let cluster = Cluster::connect(&c.cluster.connection()).await?;
    let mut deployments = Vec::new();
    for d in manifests.iter().filter(|x| x.kind == "Deployment") {
        deployments.push(deployment_status(&cluster, d).await?);
    }
    let mut services = Vec::new();
    for s in manifests.iter().filter(|x| x.kind == "Service") {
        let ns = s.namespace.as_deref().unwrap_or(&cluster.namespace);
        let api: Api<Service> = Api::namespaced(cluster.client.clone(), ns);
        let live = api
            .get_opt(&s.name)
            .await
            .map_err(|e| api_error(&s.display_name(), "get", e, ""))?;
        services.push(Deployed {
            name: s.name.clone(),
            namespace: None,
            deployed: live.is_some(),
            live: live.map(|svc| LiveService {
                url: service_url(&svc),
            }),
        });
    }
    Ok(StatusReport {
        command: "status",
        namespace: cluster.namespace,
        deployments,
        services,
    })
}

async fn deployment_status(
    cluster: &Cluster,
    d: &Manifest,
) -> Result<Deployed<LiveDeployment>, ApplyError> {
    let ns = d
        .namespace
        .clone()
        .unwrap_or_else(|| cluster.namespace.clone());
    let api: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let live = api
        .get_opt(&d.name)
        .await
        .map_err(|e| api_error(&d.display_name(), "get", e, ""))?;
    let live = match live {
        None => None,
        Some(live) => Some(live_deployment(cluster, &ns, d, &live).await?),
    };
    Ok(Deployed {
        name: d.name.clone(),
        namespace: Some(ns),
        deployed: live.is_some(),
        live,
    })
}

async fn live_deployment(
    cluster: &Cluster,
    ns: &str,
    d: &Manifest,
    live: &Deployment,
) -> Result<LiveDeployment, ApplyError> {
    let state = rollout::rollout_state(live);
    let spec = live.spec.as_ref();
    let images = spec
        .iter()
        .flat_map(|s| s.template.spec.iter())
        .flat_map(|p| p.containers.iter().filter_map(|c| c.image.clone()))
        .collect();
    let mut pods = Vec::new();
    if let Some(labels) = spec.and_then(|s| s.selector.match_labels.as_ref()) {
        let api: Api<Pod> = Api::namespaced(cluster.client.clone(), ns);
        let lp = ListParams::default().labels(&rollout::selector_string(labels));
        let list = api
            .list(&lp)
            .await
            .map_err(|e| api_error(&d.display_name(), "list pods", e, ""))?;
        pods = list.items.iter().map(pod_status).collect();
    }
    Ok(LiveDeployment {
        images,
        replicas: rollout::counts(live),
        rollout: match state.progressing {
            Progressing::Done => "complete".to_string(),
            Progressing::Going => format!("in progress: {}", state.desc),
            Progressing::Failed(f) => format!("failed: {}: {}", f.reason, f.message),
        },
        pods,
    })
}

fn pod_status(pod: &Pod) -> PodStatus {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let containers = status.container_statuses.iter().flatten();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let reason = rollout::pod_failure(pod).map(|f| f.reason).or_else(|| {
        containers
            .clone()
            .find_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
    });
    let phase = if pod.metadata.deletion_timestamp.is_some() {
        "Terminating".to_string()
    } else {
        status.phase.clone().unwrap_or_else(|| "Unknown".into())
    };
    PodStatus {
        pod: format!("{name} {phase}"),
        ready,
        restarts: containers.map(|c| c.restart_count).sum(),
        reason,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_names_each_pods_node_and_reason() {
        let pod = |name: &str, node: Option<&str>, reason: Option<&str>| PodStatus {
            pod: format!("{name} Running"),
            ready: reason.is_none(),
            restarts: i32::from(reason.is_some()),
            reason: reason.map(str::to_string),
            node: node.map(str::to_string),
        };
        let report = StatusReport {
            command: "status",
            namespace: "ns".into(),
            deployments: vec![Deployed {
                name: "d".into(),
                namespace: Some("ns".into()),
                deployed: true,
                live: Some(LiveDeployment {
                    images: vec!["r/i@sha256:1".into()],
                    replicas: Counts::default(),
                    rollout: "complete".into(),
                    pods: vec![
                        pod("p1", Some("real-node"), None),
                        pod("p2", Some("real-node"), Some("CrashLoopBackOff")),
                        pod("p3", None, None),
                    ],
                }),
            }],
            services: vec![],
        };
        let text = report.text();
        assert!(
            text.contains("  pod p1 Running ready restarts 0 on real-node\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  pod p2 Running not-ready restarts 1 on real-node (CrashLoopBackOff)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  pod p3 Running ready restarts 0\n"),
            "{text}"
        );
    }
}
