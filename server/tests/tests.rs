//! The server's integration tests, one test binary with a module per concern (one link instead of
//! one per file; the modules share `common`):
//!
//! - `router`: the router in-process over the fake classifier (no port, no ONNX Runtime);
//! - `api`: every route and error status against the real server in-process;
//! - `model`: the model contract (golden preprocessing, `--model` with flags, refusals, accuracy);
//! - `security`: API keys, CORS and TLS;
//! - `hostile_requests`, `hostile_connections`, `hostile_images`: hostile and unlucky clients;
//! - `binary`: the real `celestial-server` binary (start-up failures, drain, `healthcheck`);
//! - `self_check`: the start-up self-check against the model's golden set (in-process and binary).
//! - `drift`: the drift monitor through HTTP (real model; probes; no reference);
//! - `v2`: the Open Inference Protocol, REST and gRPC (fake classifier).

mod common;

mod api;
mod binary;
mod drift;
mod hostile_connections;
mod hostile_images;
mod hostile_requests;
mod model;
mod router;
mod security;
mod self_check;
mod traces;
mod v2;
