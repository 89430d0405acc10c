//! The seam between HTTP and inference: the HTTP layer sees a [`Classifier`], never ONNX Runtime.
//! [`crate::engine::Engine`] implements it with ONNX Runtime sessions on worker threads;
//! `crate::testing::FakeClassifier` implements it without, so the router is tested in-process.
//!
//! Imports only the model description and the image error.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::model::ModelSpec;
use crate::preprocess::PreprocessError;

/// One picture to classify: its encoded bytes (decoded and preprocessed on a worker, as `/predict`
/// does), or the model's input tensor for one picture, already preprocessed by the caller
/// ([`ModelSpec::tensor_len`] finite values in the model's layout; the Open Inference Protocol's
/// FP32 input).
#[derive(Debug, Clone)]
pub enum Input {
    Encoded(Bytes),
    Tensor(Arc<[f32]>),
}

impl From<Bytes> for Input {
    fn from(bytes: Bytes) -> Input {
        Input::Encoded(bytes)
    }
}

/// One image's answer.
#[derive(Debug, Clone, Default)]
pub struct Prediction {
    /// Index of the most probable label.
    pub best: usize,
    /// One probability per label, in label order (softmax of the logits, temperature 1).
    pub probabilities: Vec<f32>,
    /// The calibrated top probability (`celestial.temperature`), for a model that has one.
    pub confidence: Option<f32>,
    /// Whether the image looks like one of the labels (`celestial.ood_score` and
    /// `celestial.ood_threshold`, and the colour check of `celestial.colour_ood`), for a model that
    /// has the rule.
    pub known: Option<bool>,
}

/// A finished job: one result per image, plus where the time went.
#[derive(Debug)]
pub struct JobOutput {
    pub results: Vec<Result<Prediction, PreprocessError>>,
    pub queue_wait: Duration,
    pub preprocess: Duration,
    pub inference: Duration,
    /// Images in the ONNX Runtime call that classified this job's (adaptive batching: other
    /// requests' images included); 0 when none of this job's images could be decoded.
    pub batch_images: usize,
}

/// Why a job got no answer (an image's own failure is a [`PreprocessError`] in its slot instead).
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The classifier was closed (the server is shutting down).
    #[error("the inference workers are gone")]
    Closed,
    /// A server fault (e.g. ONNX Runtime failed).
    #[error("{0}")]
    Failed(String),
}

/// The answer of [`Classifier::classify`], boxed so the trait can be used as `dyn Classifier`.
pub type Classification<'a> =
    Pin<Box<dyn Future<Output = Result<JobOutput, ClassifyError>> + Send + 'a>>;

/// What the HTTP layer needs from a model: its description and a way to classify images.
pub trait Classifier: Send + Sync {
    /// The served model (labels, input spec, name and version).
    fn spec(&self) -> &Arc<ModelSpec>;
    /// The inference runtime's version (`/model`, `/metrics`).
    fn runtime_version(&self) -> &str;
    /// Number of inference workers (`/model`).
    fn workers(&self) -> usize;
    /// Decode, preprocess (or take as they are, for tensors) and classify `inputs` (one result per
    /// input, in order).
    fn classify(&self, inputs: Vec<Input>) -> Classification<'_>;
    /// Stop taking jobs and wait for the running ones (blocking; called once, at shutdown).
    fn close(&self);
}
