//! [`ServerError`]: why the server could not start or stopped abnormally (the binary prints it as
//! one line and exits 1).

use crate::auth::KeysError;
use crate::engine::InferenceError;
use crate::model::ModelError;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("API keys: {0}")]
    Keys(#[from] KeysError),
    #[error("TLS: {0}")]
    Tls(String),
}
