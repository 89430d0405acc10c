//! What the served model expects and returns ([`ModelSpec`]), and why a model cannot be served
//! ([`ModelError`]).

use std::sync::Arc;

use serde::Serialize;

use super::calibration::Calibration;
use super::colour::{self, Features as ColourFeatures};
use super::drift::DriftReference;
use super::golden::GoldenSet;
use super::kinds::{ColorMode, JpegDctScaling, Layout, OutputKind, ResizeFilter, ResizeMode};

/// The model bundled into the binary (`model/celestial-bodies.onnx`).
pub static EMBEDDED_MODEL: &[u8] = include_bytes!("../../../model/celestial-bodies.onnx");

/// Why a model cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("ONNX Runtime cannot load the model: {0}")]
    Load(String),
    #[error("model has no input named `{0}`")]
    NoSuchInput(String),
    #[error("model has no output named `{0}`")]
    NoSuchOutput(String),
    #[error("model has {0} inputs; pass --input-name to choose one")]
    AmbiguousInput(usize),
    #[error("model has no outputs")]
    NoOutputs,
    #[error("unsupported model input `{name}`: {reason}")]
    UnsupportedInput { name: String, reason: String },
    #[error("unsupported model output `{name}`: {reason}")]
    UnsupportedOutput { name: String, reason: String },
    #[error("model has no labels: it lacks `celestial.labels` metadata, pass --labels")]
    NoLabels,
    #[error("invalid metadata `{key}` = {value:?}: {reason}")]
    BadMetadata {
        key: String,
        value: String,
        reason: String,
    },
    #[error("model outputs {outputs} classes but {labels} labels are configured")]
    LabelCount { outputs: usize, labels: usize },
    #[error("{0}")]
    Invalid(String),
}

/// A tensor's element type and shape (-1 for dynamic dimensions), as far as the spec needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// `None` when the value is not a tensor.
    pub shape: Option<Vec<i64>>,
    pub is_f32: bool,
}

/// Everything the server needs to know to feed the model and read its answer.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSpec {
    pub name: String,
    pub version: String,
    pub labels: Vec<String>,
    pub input_name: String,
    pub output_name: String,
    pub layout: Layout,
    pub height: u32,
    pub width: u32,
    pub color_mode: ColorMode,
    pub grayscale_coefficients: [f32; 3],
    pub alpha: String,
    pub resize_filter: ResizeFilter,
    pub resize_mode: ResizeMode,
    /// How JPEGs are decoded before the resize (`celestial.jpeg_dct_scaling`).
    pub jpeg_dct_scaling: JpegDctScaling,
    pub scale: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub output_kind: OutputKind,
    /// `confidence` and `known` (absent from the answers of a model without this metadata).
    pub calibration: Calibration,
    /// Whether the batch dimension is dynamic (several images per run).
    pub dynamic_batch: bool,
    pub trained_at: Option<String>,
    pub validation_accuracy: Option<f64>,
    pub description: Option<String>,
    /// The golden set of the start-up self-check (`celestial.golden`), for a model that has one.
    #[serde(skip)]
    pub golden: Option<Arc<GoldenSet>>,
    /// The drift reference (`celestial.drift`), for a model that has one: the drift monitor
    /// compares recent answers with it.
    #[serde(skip)]
    pub drift: Option<Arc<DriftReference>>,
}

impl ModelSpec {
    /// Number of input channels (3 for RGB, 1 for grayscale).
    pub fn channels(&self) -> usize {
        self.color_mode.channels()
    }

    /// Number of f32 values of one image's tensor.
    pub fn tensor_len(&self) -> usize {
        self.channels() * self.height as usize * self.width as usize
    }

    /// Whether answers carry the pictures' colour statistics: an RGB model with a colour rule or a
    /// drift reference.
    fn wants_colours(&self) -> bool {
        (self.calibration.colour.is_some() || self.drift.is_some()) && self.channels() == 3
    }

    /// [`ModelSpec::colours`] of a picture given as the RGB8 pixels the model sees (interleaved,
    /// before normalisation): the same statistics, computed from the bytes (cheaper than from the
    /// tensor).
    pub fn colours_rgb8(&self, pixels: &[u8]) -> Option<ColourFeatures> {
        self.wants_colours().then(|| colour::features_rgb8(pixels))
    }

    /// The colour statistics of one picture from its input tensor (`tensor_len` values), for the
    /// colour check of `known` and the drift monitor; `None` when the model has neither a colour
    /// rule nor a drift reference, or is not RGB. The tensor holds `(p * scale - mean[c]) /
    /// std[c]`; the statistics are of `p / 255`.
    pub fn colours(&self, tensor: &[f32]) -> Option<ColourFeatures> {
        if !self.wants_colours() {
            return None;
        }
        let hw = self.height as usize * self.width as usize;
        let unit = 1.0 / (f64::from(self.scale) * 255.0);
        let a: [f64; 3] = std::array::from_fn(|c| f64::from(self.std[c]) * unit);
        let b: [f64; 3] = std::array::from_fn(|c| f64::from(self.mean[c]) * unit);
        let v = |c: usize, t: f32| f64::from(t) * a[c] + b[c];
        let rgb = |(r, g, bl): (f32, f32, f32)| (v(0, r), v(1, g), v(2, bl));
        Some(match self.layout {
            Layout::Nchw => {
                let (r, rest) = tensor[..3 * hw].split_at(hw);
                let (g, bl) = rest.split_at(hw);
                colour::features(
                    r.iter()
                        .zip(g)
                        .zip(bl)
                        .map(|((r, g), bl)| rgb((*r, *g, *bl))),
                )
            }
            Layout::Nhwc => colour::features(
                tensor[..3 * hw]
                    .chunks_exact(3)
                    .map(|p| rgb((p[0], p[1], p[2]))),
            ),
        })
    }

    /// Input shape for a batch of `n` images.
    pub fn input_shape(&self, n: usize) -> [usize; 4] {
        let (c, h, w) = (self.channels(), self.height as usize, self.width as usize);
        match self.layout {
            Layout::Nchw => [n, c, h, w],
            Layout::Nhwc => [n, h, w, c],
        }
    }
}
