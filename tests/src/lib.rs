//! Helpers for end-to-end tests: the real test environment (see tests/env/ and docs/testing.md,
//! "The test environment").
//!
//! [`TestEnv::get`] starts the environment once per test process (`tests/env/testenv up`, which
//! reuses a running one and serialises concurrent callers with a file lock) and hands a test a
//! `kube::Client` for the loopback control plane, the registry addresses and credentials, a
//! configured [`podman::Podman`], and helpers for the load-balancer stand-in ([`lb`]). The
//! environment's own programs are the crate celestial-testenv ([`programs`] finds them).
//! Tests that use it live in files named `env_*.rs` (and `deploy_*`/`container_*` of other parts);
//! they run in CI through `scripts/test`, which brings the environment up before and down after.

pub mod browser;
pub mod ci;
pub mod deployer;
mod env_info;
mod error;
pub mod httpd;
pub mod lb;
pub mod monitoring;
mod namespace;
pub mod otelcol;
pub mod podman;
pub mod programs;
pub mod prometheus;
mod support;
mod test_env;
mod testenv;
mod workspace;

pub use env_info::{BaseImages, EnvInfo, RealNode};
pub use error::EnvError;
pub use lb::FIELD_MANAGER;
pub use namespace::TestNamespace;
pub use podman::{Container, Podman};
pub use support::{free_loopback_port, http_client, unique_name};
pub use test_env::TestEnv;
pub use testenv::{run_testenv, testenv_script};
pub use workspace::{onnxruntime_library, repo_binary, repo_root};
