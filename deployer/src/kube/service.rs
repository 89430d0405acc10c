//! A LoadBalancer Service's address: its public URL, and waiting for it while explaining why it
//! is still pending.

use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Event, Service};
use kube::api::{Api, ListParams};
use tokio::time::Instant;

use super::cluster::Cluster;
use super::error::ApplyError;
use super::rollout::RolloutError;
use super::secure::{HTTPS_PORT_NAME, HTTPS_SERVICE_PORT};
use super::watch;
use crate::progress::Progress;

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

/// The public URL of a LoadBalancer Service (first port), once it has an address: `https` when
/// that port is named `https` (as `--tls-secret` makes it) or is 443.
pub fn service_url(svc: &Service) -> Option<String> {
    let addr = lb_address(svc)?;
    let port = svc.spec.as_ref()?.ports.as_ref()?.first()?;
    let tls =
        port.name.as_deref() == Some(HTTPS_PORT_NAME) || i64::from(port.port) == HTTPS_SERVICE_PORT;
    let scheme = if tls { "https" } else { "http" };
    Some(format!("{scheme}://{addr}:{}/", port.port))
}

/// The Service's public URL now, or that it has none yet (a line for a state report).
pub async fn describe(cluster: &Cluster, ns: &str, name: &str) -> String {
    let api: Api<Service> = Api::namespaced(cluster.client.clone(), ns);
    match api.get_opt(name).await {
        Ok(Some(svc)) => match service_url(&svc) {
            Some(url) => format!("Service/{name}: {url}"),
            None => format!("Service/{name}: no load-balancer address yet"),
        },
        Ok(None) => format!("Service/{name}: does not exist"),
        Err(e) => format!("Service/{name}: cannot read it: {e}"),
    }
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

/// Waits for a LoadBalancer Service's address and returns its URL; explains while pending. The
/// Service is followed through a watch; the progress line counts the seconds and shows the
/// Service's latest event (looked up every 5 s).
///
/// The event lookup runs *inside* the `select!`, beside the watch, never between its polls: a
/// watch request suspended mid-flight can hold kube's exec-credential lock (it is held across the
/// plugin run), so awaiting another request of the same client while the watch is not polled
/// waits for that lock forever. That hung a release whose exec plugin's refresh failed.
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
    let mut states = std::pin::pin!(watch::object(api, name));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut next_event_check = start;
    let mut event: Option<String> = None;
    let mut lookup: Option<BoxFuture<'_, Option<String>>> = None;
    loop {
        if lookup.is_none() && Instant::now() >= next_event_check {
            lookup = Some(latest_event(cluster, ns, name).boxed());
        }
        tokio::select! {
            next = states.next() => match next.expect("a watch does not end") {
                Ok(Some(svc)) => match service_url(&svc) {
                    Some(url) => return Ok(url),
                    None => continue,
                },
                Ok(None) => {
                    return Err(RolloutError::Api(ApplyError::Api {
                        object,
                        action: "watch",
                        message: "the Service does not exist (any more)".into(),
                    }));
                }
                Err(e) => {
                    progress.set(&watch::check(e, &object)?);
                    continue;
                }
            },
            found = async { lookup.as_mut().expect("guarded by the branch condition").await },
                if lookup.is_some() =>
            {
                event = found;
                lookup = None;
                next_event_check = Instant::now() + Duration::from_secs(5);
            }
            _ = tick.tick() => {}
            _ = tokio::time::sleep_until(start + timeout) => {
                return Err(RolloutError::LoadBalancerTimeout {
                    service: name.into(),
                    seconds: timeout.as_secs(),
                    hint: with_event(PENDING_HINT.to_string(), &event),
                });
            }
        }
        let waited = start.elapsed();
        let mut msg = format!(
            "{object}: waiting for the load-balancer address ({}s)",
            waited.as_secs()
        );
        if waited >= Duration::from_secs(5) {
            msg.push_str(&format!(": {PENDING_HINT}"));
        }
        progress.set(&with_event(msg, &event));
    }
}

/// `text`, followed by the latest event when there is one.
fn with_event(mut text: String, event: &Option<String>) -> String {
    if let Some(e) = event {
        text.push_str(&format!("; latest event: {e}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let tls: Service = serde_json::from_value(
            json!({"metadata": {"name": "s"}, "spec": {"ports": [{"name": "https", "port": 8443}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.2"}]}}}),
        )
        .unwrap();
        assert_eq!(service_url(&tls).unwrap(), "https://127.0.0.2:8443/");
    }
}
