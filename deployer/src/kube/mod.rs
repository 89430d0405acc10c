//! The Kubernetes side. Imports `options`, `progress` and `support`, never `oci/`.
//!
//! - [`manifests`]: reading and checking the manifests, setting the server image (leaf)
//! - [`secure`]: opt-in API keys and TLS as manifest changes (leaf)
//! - [`secrets`]: the API-key and TLS Secrets in the cluster
//! - [`cluster`]: connecting to the cluster (kubeconfig, context, namespace)
//! - [`error`]: what the API server refused, per object
//! - [`watch`]: following objects through watches that re-establish themselves
//! - [`apply`]: server-side apply, dry runs and diffs, deletion
//! - [`rollout`]: a Deployment's rollout state, pod failure reasons, waiting for it
//! - [`rollback`]: restoring the previous spec after a failed rollout
//! - [`service`]: a LoadBalancer's address and URL, waiting for it
//!
//! A new kind of wait goes next to the object it waits for (`rollout.rs`, `service.rs`).

pub mod apply;
pub mod cluster;
pub mod error;
pub mod manifests;
pub mod rollback;
pub mod rollout;
pub mod secrets;
pub mod secure;
pub mod service;
pub mod watch;

#[cfg(test)]
mod tests;
