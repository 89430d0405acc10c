//! What the workspace's binaries must agree on, written once: the syntax of duration flags
//! (`celestial-server --request-timeout 1.5s`, `deployer apply --timeout 1m30s`). A leaf crate
//! with no dependencies; every crate of the workspace may use it.

pub mod duration;

pub use duration::parse_duration;
