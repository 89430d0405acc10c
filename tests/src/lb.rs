//! The helpers for the load-balancer stand-in (`testenv-lb`, see `celestial_testenv::lb`): point a
//! LoadBalancer Service at a real backend, hold it pending, wait for its address.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};

pub use celestial_testenv::lb::{BACKEND_ANNOTATION, PENDING_ANNOTATION};

use crate::{EnvError, TestEnv};

/// Field manager the helpers use for the annotations they set on Services.
pub const FIELD_MANAGER: &str = "celestial-e2e";

impl TestEnv {
    /// Points the load-balancer stand-in at a real backend for every port of a Service
    /// (annotation [`BACKEND_ANNOTATION`], server-side applied with field manager
    /// [`FIELD_MANAGER`]).
    pub async fn set_lb_backend(
        &self,
        namespace: &str,
        service: &str,
        backend: SocketAddr,
    ) -> Result<(), EnvError> {
        self.annotate_service(namespace, service, BACKEND_ANNOTATION, &backend.to_string())
            .await
    }

    /// Keeps a LoadBalancer Service pending (no address) or lets it get one again.
    pub async fn set_lb_pending(
        &self,
        namespace: &str,
        service: &str,
        pending: bool,
    ) -> Result<(), EnvError> {
        self.annotate_service(
            namespace,
            service,
            PENDING_ANNOTATION,
            if pending { "true" } else { "false" },
        )
        .await
    }

    async fn annotate_service(
        &self,
        namespace: &str,
        service: &str,
        key: &str,
        value: &str,
    ) -> Result<(), EnvError> {
        let api: Api<Service> = Api::namespaced(self.client().await?, namespace);
        let patch = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": service, "annotations": { key: value } }
        });
        api.patch(
            service,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }

    /// Waits until the Service has a load-balancer ingress IP.
    pub async fn wait_lb_address(
        &self,
        namespace: &str,
        service: &str,
        timeout: Duration,
    ) -> Result<IpAddr, EnvError> {
        let api: Api<Service> = Api::namespaced(self.client().await?, namespace);
        let start = Instant::now();
        loop {
            let svc = api.get(service).await?;
            let ip = svc
                .status
                .and_then(|s| s.load_balancer)
                .and_then(|lb| lb.ingress)
                .and_then(|i| i.into_iter().next())
                .and_then(|i| i.ip)
                .and_then(|ip| ip.parse().ok());
            if let Some(ip) = ip {
                return Ok(ip);
            }
            if start.elapsed() > timeout {
                return Err(EnvError::Timeout {
                    what: format!("an address for Service {namespace}/{service}"),
                    secs: timeout.as_secs(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
