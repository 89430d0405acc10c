//! The Kubernetes side against the API server's answers, scripted ([`api_server`]): the rollout
//! wait, watches that break and resume, rollback, apply, delete and the load-balancer wait. They
//! run on tokio's paused clock, so deadlines and graces of minutes take milliseconds.
//!
//! Each failure is also followed to the exit code a CI job sees, through the one mapping in
//! `crate::error`.
//!
//! What only a real cluster proves (an image pull, pods that run, the API server's own merge and
//! conflict rules, a load-balancer controller) stays in `tests/tests/deployer_*.rs`.

pub(crate) mod api_server;
pub(crate) mod apply;
mod delete;
pub(crate) mod history;
mod load_balancer;
mod monitoring;
pub(crate) mod objects;
mod rollback;
mod rollout;
mod watches;

/// The exit code `deployer` ends with for an error of the kube layer.
pub(crate) fn exit_code(e: impl Into<crate::error::Error>) -> crate::exit::ExitCode {
    e.into().exit_code()
}
