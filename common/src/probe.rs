//! The header that marks a request as the deployer's own probe, not live traffic: the predictions
//! of an evaluation before traffic (through the API server's pod proxy) and of the smoke test.
//! The server answers them as any other, and keeps them out of what describes live traffic (the
//! per-label counters, the drift windows), which a release's own requests would distort.

/// The header's name (HTTP header names are case-insensitive; this is the lowercase form).
pub const HEADER: &str = "celestial-probe";
/// Its value on the deployer's requests.
pub const EVALUATION: &str = "evaluation";
