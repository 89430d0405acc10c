//! celestial-server: a BentoML-compatible HTTP prediction server for the celestial-bodies
//! classifier, on axum + tokio with ONNX Runtime (via `ort`).
//!
//! The binary (`main.rs`) is a thin wrapper around [`run`]: parse a [`Config`], check it once
//! ([`CheckedConfig`]), bind its listeners, and call `run(config, listeners, shutdown_signal)`.
//! [`serve`] does the same with a ready [`Classifier`]; tests serve a
//! `testing::FakeClassifier`, which needs no ONNX Runtime.
//!
//! # Layers
//!
//! From the bottom up; a module imports only from the modules above it in this list
//! (`scripts/check-structure`, run by `scripts/test`, checks that no import cycle exists and the
//! main layer rules). This file only declares and re-exports.
//!
//! | module | what | may import |
//! |---|---|---|
//! | [`routes`] | every path, the metrics route label, the raw media types | nothing |
//! | [`metrics`] | Prometheus counters and histograms (TLS handshakes and certificate expiry included) | nothing |
//! | [`reload`] | files re-read while the server runs (keys file, TLS pair), by content | nothing |
//! | [`auth`] | API keys (hashes, constant-time check), the key headers, `--api-key-scope` | `routes` |
//! | [`model`] | the model's kinds, override flags and resolved [`ModelSpec`] | nothing |
//! | [`preprocess`] | image bytes -> pixels -> input tensor (the hot path) | `model` |
//! | [`classifier`] | the seam: the [`Classifier`] trait and its answers | `model`, `preprocess` (its error) |
//! | [`errors`] | [`errors::ApiError`], stable codes, the one code -> status map | `preprocess` (its error), `routes` (paths in messages), `auth` (key headers, refusal reasons) |
//! | [`oip`] | the Open Inference Protocol (v2), protocol-neutral: inputs -> pictures, outputs, metadata, the model check | `classifier`, `errors`, `model`, `preprocess` (its error) |
//! | [`docs`] | `/docs.json` (one function per operation, security schemes when keys are on), `/schema.json`, `/model` | `classifier`, `errors`, `model`, `routes`, `auth` |
//! | [`drift`] | the drift monitor: lock-free sliding windows of the live answers, their tests against the model's reference, `/model/drift` | `classifier`, `metrics`, `model` |
//! | [`telemetry`] | traces: sampling, W3C `traceparent`, a request's spans, the bounded export queue and the OTLP/HTTP exporter | `metrics` |
//! | [`selfcheck`] | the start-up self-check: the model's golden set through the classifier, before the server is ready | `classifier`, `model` |
//! | [`engine`] | ONNX Runtime behind the seam ([`Engine`]): library lookup, sessions, the batching queue, worker threads, output rows -> predictions | `classifier`, `model`, `preprocess` |
//! | [`http`] | router, middleware, the key check, CORS, handlers over `Arc<dyn Classifier>` (BentoML's routes and the v2 REST routes) | `classifier`, `docs`, `drift`, `errors`, `metrics`, `oip`, `preprocess` (its error), `routes`, `auth`, `telemetry` |
//! | [`grpc`] | the v2 gRPC service (tonic, generated from `server/proto`), sent HTTP/2 `application/grpc` requests on the same listeners; keys, upload limits and metrics as on HTTP | `http` (state, body, job), `oip`, `errors`, `auth`, `routes` |
//! | [`root_path`] | the reverse-proxy prefix middleware | `routes` |
//! | [`connection`] | accept loops (plain and TLS listeners), HTTP/1.1 + h2c, TLS (rustls, certificate swapped per handshake, handshakes counted), connection limit and timeouts, protocol errors as JSON, drain phases | `errors`, `routes`, `metrics` (TLS handshakes) |
//! | [`config`] | the command line (clap) | `model` (its flags), `drift` (its flags), `telemetry` (its flags), `root_path` (its parser), `connection` (its constants), `auth` (scopes, default CORS headers); the duration syntax from `celestial-common` |
//! | [`server`] | the settings checked once ([`CheckedConfig`]), start-up ([`run`], [`serve`]), listeners, keys and TLS set-up and reloads, drain and shutdown, the `healthcheck` probe | all of the above |
//! | `testing` | test support, only in tests and with the `test-util` feature: the fake classifier, the in-process `TestServer` | `server` and below |
//!
//! Only [`engine`] knows ONNX Runtime and only [`http`] (with [`root_path`]) knows axum's
//! routing; the HTTP tests (`server/tests/router.rs`) drive the router with
//! `tower::ServiceExt::oneshot` over the fake classifier.
//!
//! # Where a change goes
//!
//! - **A new route**: its path in [`routes`] (and in [`routes::ALL`]), its handler in
//!   `http/pages.rs` (or a new file beside it) and one `.route(..)` in [`http::router`], its
//!   operation in `docs/operations.rs` and one `.path(..)` in `docs/openapi.rs`. The router tests
//!   check that every route answers and that every documented path is a route.
//! - **A new image format**: the `image` crate feature in `server/Cargo.toml`, the format in
//!   [`preprocess::SUPPORTED`] (and its name in `preprocess/decode.rs`), its media types in
//!   [`routes::RAW_IMAGE_TYPES`] (the handler and the OpenAPI document follow), and the format
//!   lists in the messages of [`preprocess::PreprocessError::UnsupportedFormat`] and the docs.
//! - **A new model output**: a variant of [`model::OutputKind`] (with its metadata names in
//!   `model/kinds.rs`) and how a row becomes a [`classifier::Prediction`] in
//!   [`engine::to_prediction`]; if the answer's shape changes, `PredictionBody` in
//!   `http/predict.rs` and the `Prediction` schema in `docs/components.rs`.

pub mod auth;
pub mod classifier;
pub mod config;
pub mod connection;
pub mod docs;
pub mod drift;
pub mod engine;
pub mod errors;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod model;
pub mod oip;
pub mod preprocess;
pub mod reload;
pub mod root_path;
pub mod routes;
pub mod selfcheck;
pub mod server;
pub mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use classifier::Classifier;
pub use config::{Cli, Command, Config};
pub use engine::{Engine, EngineOptions, InferenceError};
pub use model::{ModelError, ModelSpec};
pub use server::{
    Bound, CheckedConfig, ServerError, bind, healthcheck, load_engine, model_bytes, run, serve,
    shutdown_signal,
};
