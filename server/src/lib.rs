//! celestial-server: a BentoML-compatible HTTP prediction server for the celestial-bodies
//! classifier, on axum + tokio with ONNX Runtime (via `ort`).
//!
//! The binary is a thin wrapper around [`run`]: parse a [`Config`], bind a listener, and call
//! `run(config, listener, shutdown_signal)`. [`serve`] does the same with a ready
//! [`Classifier`] (tests serve a [`testing::FakeClassifier`] that needs no ONNX Runtime).

pub mod classifier;
pub mod config;
pub mod docs;
pub mod duration;
pub mod errors;
pub mod http;
pub mod inference;
pub mod metrics;
pub mod model;
pub mod preprocess;
pub mod root_path;
pub mod routes;
pub mod server;
pub mod testing;

pub use classifier::Classifier;
pub use config::{Cli, Command, Config};
pub use inference::{Engine, EngineOptions, InferenceError};
pub use model::{ModelError, ModelSpec};
pub use server::{ServerError, healthcheck, load_engine, model_bytes, run, serve, shutdown_signal};
