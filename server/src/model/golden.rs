//! The golden set a model carries (`celestial.golden`): image files with the output the training
//! pipeline computed for each, which the server sends through its own decoding, preprocessing and
//! inference at start (`crate::selfcheck`) before it is ever ready. A leaf.

use bytes::Bytes;

/// The model's golden set, as its metadata gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenSet {
    /// At least one.
    pub images: Vec<GoldenImage>,
}

/// One golden image and what the model, as served, must answer for it.
#[derive(Debug, Clone, PartialEq)]
pub struct GoldenImage {
    /// What the reason of a failure calls it (one line, at most [`NAME_MAX_CHARS`] characters).
    pub name: String,
    /// The label the prediction must be; `None` when only the logits are compared (a picture
    /// whose arg-max a one-level pixel difference may flip).
    pub label: Option<String>,
    /// The image file, sent as a request's body would be.
    pub file: Bytes,
    /// The model's output row for it, in output order (logits, as the pipeline computed them).
    pub logits: Vec<f32>,
    /// How far each of the served output values may be from `logits`.
    pub logit_max_abs: f64,
}

/// The longest name kept (a longer one is cut): the reason of a failure stays one short line.
pub const NAME_MAX_CHARS: usize = 80;
