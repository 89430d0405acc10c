//! [`InferenceError`]: the engine's failures (the library, the model, a run, the workers).

use crate::model::ModelError;

/// Failures of the engine.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(
        "ONNX Runtime library not found (looked for {looked}); run scripts/onnxruntime.sh to install it, or set ORT_DYLIB_PATH / --ort-dylib-path"
    )]
    LibraryMissing { looked: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    LibraryLoad { path: String, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("the inference workers are gone")]
    WorkersGone,
}
