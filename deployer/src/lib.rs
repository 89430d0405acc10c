//! `deployer`: builds and pushes the celestial-server image without a Docker daemon, server-side
//! applies the Kubernetes manifests, waits for the rollout and the load balancer, smoke-tests the
//! public URL, and reports in text or JSON with documented exit codes (see [`exit::ExitCode`]).

pub mod cli;
pub mod commands;
pub mod error;
pub mod exit;
pub mod kube;
pub mod oci;
pub mod options;
pub mod progress;
pub mod render;
pub mod smoke;
pub mod support;

pub use cli::main_with;
