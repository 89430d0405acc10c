//! How `deployer` switches on the server's API keys and TLS in a Deployment: the environment
//! variables `celestial-server` reads them from, and its default HTTPS port. The server's flags
//! and the deployer's manifest changes both use these names.

/// File of API keys, one per line (`--api-keys-file`).
pub const API_KEYS_FILE: &str = "CELESTIAL_API_KEYS_FILE";
/// TLS certificate chain, PEM (`--tls-cert`).
pub const TLS_CERT: &str = "CELESTIAL_TLS_CERT";
/// TLS private key, PEM (`--tls-key`).
pub const TLS_KEY: &str = "CELESTIAL_TLS_KEY";
/// The HTTPS listener's port (`--tls-port`) and its default.
pub const TLS_PORT: &str = "CELESTIAL_TLS_PORT";
pub const DEFAULT_TLS_PORT: u16 = 3443;
