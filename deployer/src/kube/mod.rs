//! The Kubernetes side. Imports `progress` and `support`, never `oci/` or `cli/`.
//!
//! - [`manifests`]: reading and checking the manifests, setting the server image (leaf)
//! - [`secure`]: opt-in API keys and TLS as manifest changes (leaf)
//! - [`secrets`]: the API-key and TLS Secrets in the cluster
//! - [`cluster`]: connecting to the cluster ([`cluster::Connection`]: kubeconfig, context, namespace)
//! - [`error`]: what the API server refused, per object
//! - [`watch`]: following objects through watches that re-establish themselves
//! - [`apply`]: server-side apply, dry runs and diffs, deletion
//! - [`rollout`]: waiting for a Deployment's rollout; its state and the pod failure reasons (pure)
//! - [`rollback`]: restoring the previous spec after a failed rollout, or a chosen revision
//! - [`model`]: what a Deployment serves (revision, image digest, the model its pods report)
//! - [`history`]: the release history in the cluster (the ConfigMap `celestial-releases`)
//! - [`candidate`]: a new pod template run apart, without traffic, to be evaluated
//! - [`canary`]: the new pod template given a share of live traffic; the two groups' `/metrics`
//! - [`predict`]: predictions of one pod's server through the API server's pod proxy
//! - [`service`]: a LoadBalancer's address and URL, waiting for it
//! - [`monitoring`]: `--monitoring`'s objects (built from `kubernetes/monitoring/`, fitted to the
//!   release) and whether the cluster serves prometheus-operator's kinds
//!
//! A new kind of wait goes next to the object it waits for (`rollout/wait.rs`, `service.rs`).

pub mod apply;
pub mod canary;
pub mod candidate;
pub mod cluster;
pub mod error;
pub mod history;
pub mod manifests;
pub mod model;
pub mod monitoring;
pub mod predict;
pub mod rollback;
pub mod rollout;
pub mod secrets;
pub mod secure;
pub mod service;
pub mod watch;

#[cfg(test)]
pub(crate) mod tests;
