//! What the workspace's binaries must agree on, written once: the syntax of duration flags
//! (`celestial-server --request-timeout 1.5s`, `deployer apply --timeout 1m30s`) and the server's
//! environment variables that `deployer` sets for API keys and TLS, the exit status of a server
//! whose model fails its self-check, the header that marks the deployer's own probe requests, and
//! the chi-squared tail both judge counts by.
//! A leaf crate with no dependencies; every crate of the workspace may use it.

pub mod duration;
pub mod probe;
pub mod server_env;
pub mod server_exit;
pub mod stats;

pub use duration::parse_duration;
