//! One Service brought to what it should have: an address in its status (or none while held
//! pending), listeners on it, and an Event for every change, named like a cloud controller's.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};

use super::desired::{Desired, desired};
use super::state::{State, key_of};
use super::{BACKEND_ANNOTATION, LbConfig, PENDING_ANNOTATION, forward};

/// Reconciles `svc`: releases what it held when it is no longer a LoadBalancer Service of the
/// stand-in, else gives it its address (or withholds it) and its listeners.
pub(super) async fn reconcile(
    client: &Client,
    recorder: &Recorder,
    cfg: &LbConfig,
    state: &mut State,
    svc: &Service,
) {
    let Some(ns) = svc.namespace() else {
        return;
    };
    let s = Subject {
        recorder,
        cfg,
        svc,
        api: Api::namespaced(client.clone(), &ns),
        key: key_of(svc),
        name: svc.name_any(),
    };
    let Some(want) = s.wanted(state).await else {
        state.release(&s.key);
        return;
    };
    if want.pending {
        s.hold_pending(state, want.status_ip.is_some()).await;
        return;
    }
    state.pending.remove(&s.key);
    let Some(ip) = s.ensure_address(state, want.status_ip).await else {
        return;
    };
    let current = state.listeners.entry(s.key.clone()).or_default();
    for (front, e) in forward::sync(&s.key, current, ip, &want.backends).await {
        let note = format!("load-balancer stand-in: cannot listen on {front}: {e}");
        s.event(EventType::Warning, "SyncLoadBalancerFailed", note)
            .await;
    }
}

/// The Service being reconciled, and where its status and Events go.
struct Subject<'a> {
    recorder: &'a Recorder,
    cfg: &'a LbConfig,
    svc: &'a Service,
    api: Api<Service>,
    /// `namespace/name`, the key of the stand-in's state.
    key: String,
    name: String,
}

impl Subject<'_> {
    /// What the Service should have; None when it is not the stand-in's. An invalid backend
    /// annotation is reported once per value and counts as no backend.
    async fn wanted(&self, state: &mut State) -> Option<Desired> {
        match desired(self.svc, self.cfg.node.as_ref())? {
            Ok(d) => {
                state.bad_backend.remove(&self.key);
                Some(d)
            }
            Err(e) => {
                let msg = e.to_string();
                if state.bad_backend.get(&self.key) != Some(&msg) {
                    tracing::warn!(service = %self.key, error = %e, "ignoring the backend annotation");
                    let note = format!("load-balancer stand-in: {msg}");
                    self.event(EventType::Warning, "SyncLoadBalancerFailed", note)
                        .await;
                    state.bad_backend.insert(self.key.clone(), msg);
                }
                Some(Desired {
                    pending: self
                        .svc
                        .annotations()
                        .get(PENDING_ANNOTATION)
                        .is_some_and(|v| v == "true"),
                    backends: BTreeMap::new(),
                    status_ip: None,
                })
            }
        }
    }

    /// No address while the pending annotation says so: what it held is released, and an address
    /// in its status (`has_address`) is withdrawn.
    async fn hold_pending(&self, state: &mut State, has_address: bool) {
        state.release(&self.key);
        if state.pending.insert(self.key.clone()) {
            self.event(EventType::Normal, "EnsuringLoadBalancer", format!(
                "load-balancer stand-in: held pending (no address) by the annotation {PENDING_ANNOTATION}=true"
            )).await;
        }
        if has_address {
            match self.patch_status(None).await {
                Ok(()) => {
                    tracing::info!(service = %self.key, "pending on request: address withdrawn")
                }
                Err(e) => {
                    tracing::warn!(service = %self.key, error = %e, "could not clear the status")
                }
            }
        }
    }

    /// The Service's address, written to its status when `status_ip` (what the status says now)
    /// differs; None when the pool has none left.
    async fn ensure_address(
        &self,
        state: &mut State,
        status_ip: Option<IpAddr>,
    ) -> Option<Ipv4Addr> {
        let key = &self.key;
        let ip = match state.allocate(key, status_ip) {
            Ok(ip) => ip,
            Err(e) => {
                tracing::error!(service = %key, error = %e, "cannot assign an address");
                let note = format!("load-balancer stand-in: {e}");
                self.event(EventType::Warning, "SyncLoadBalancerFailed", note)
                    .await;
                return None;
            }
        };
        if status_ip == Some(IpAddr::V4(ip)) {
            return Some(ip);
        }
        match self.patch_status(Some(ip)).await {
            Ok(()) => {
                tracing::info!(service = %key, %ip, "assigned the load-balancer address");
                let to = if self.cfg.node.is_some() {
                    format!(
                        "the {BACKEND_ANNOTATION} annotation's backend, else to the Service's node ports on the real nodes"
                    )
                } else {
                    format!("the {BACKEND_ANNOTATION} annotation's backend")
                };
                let note =
                    format!("load-balancer stand-in: assigned {ip} (loopback; forwards to {to})");
                self.event(EventType::Normal, "EnsuredLoadBalancer", note)
                    .await;
            }
            Err(e) => {
                tracing::warn!(service = %key, %ip, error = %e, "could not write the status; will retry on the next event")
            }
        }
        Some(ip)
    }

    /// Writes `ip` as the Service's only ingress address, or clears the ingress.
    async fn patch_status(&self, ip: Option<Ipv4Addr>) -> Result<(), kube::Error> {
        let ingress = match ip {
            Some(ip) => serde_json::json!([{ "ip": ip.to_string(), "ipMode": "VIP" }]),
            None => serde_json::Value::Null,
        };
        let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": ingress } } });
        let pp = PatchParams {
            field_manager: Some(self.cfg.field_manager.clone()),
            ..Default::default()
        };
        self.api
            .patch_status(&self.name, &pp, &Patch::Merge(&patch))
            .await
            .map(|_| ())
    }

    /// Records an Event on the Service (a failure to record is only logged).
    async fn event(&self, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "SyncLoadBalancer".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &self.svc.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "could not record an event");
        }
    }
}
