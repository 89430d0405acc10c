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

use crate::model::{ColourFeatures, ModelSpec};
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
    /// One probability per label, in label order (softmax of the logits at the model's temperature,
    /// `celestial.temperature`, else 1).
    pub probabilities: Vec<f32>,
    /// The model's output row as it came out, in label order (logits; the probabilities of a
    /// model whose output kind is probabilities): what the start-up self-check compares.
    pub output: Vec<f32>,
    /// The largest of `probabilities`, for a model with a temperature (`celestial.temperature`).
    pub confidence: Option<f32>,
    /// Whether the image looks like one of the labels (`celestial.ood_score` and
    /// `celestial.ood_threshold`, and the colour check of `celestial.colour_ood`), for a model that
    /// has the rule.
    pub known: Option<bool>,
    /// The picture's colour statistics ([`crate::model::ModelSpec::colours`]), for a model with a
    /// colour check or a drift reference: what the drift monitor compares.
    pub colours: Option<ColourFeatures>,
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

/// How the served model's start-up self-check went (`crate::selfcheck`): what `/model` and
/// `/metrics` report. A failed check never serves, so it has no variant here.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SelfCheck {
    /// Every image of the golden set got its recorded answer.
    Passed {
        /// The golden images that got their recorded answers.
        images: usize,
        /// Those a configured limit (`--max-image-pixels`, `--max-decode-bytes`) refused, so not
        /// compared (each logged as a warning).
        skipped: usize,
        /// The largest difference of a served output value from the recorded one.
        max_logit_diff: f64,
        /// How long the check took.
        seconds: f64,
    },
    /// The model carries no golden set (`celestial.golden`): served unchecked, with a warning.
    Absent,
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
    /// How the served model's start-up self-check went; `None` when none ran (a classifier served
    /// as it is, as tests and benchmarks do).
    fn self_check(&self) -> Option<&SelfCheck> {
        None
    }
}
