//! The served model: what it expects and returns ([`ModelSpec`]), resolved from its ONNX metadata
//! (`celestial.*` keys), its input/output signature and the override flags ([`ModelOverrides`]).
//!
//! Inside: `kinds` (layout, colour mode, resize filter and mode, output kind, JPEG decode rule; a leaf),
//! `colour` (the colour check of `known`: statistics of the input picture, distance to a bank; a
//! leaf), `calibration` (`confidence` and `known` from the logits and the colour check; imports
//! `kinds` and `colour`), `golden` (the golden set of the start-up self-check; a leaf), `drift` (the drift
//! reference; a leaf),
//! `overrides` (the flags), `spec` (the resolved description and its errors), `resolve` (metadata +
//! flags + shapes -> spec). Imports nothing else from the crate.

mod calibration;
mod colour;
mod drift;
mod golden;
mod kinds;
mod overrides;
mod resolve;
mod spec;

pub use calibration::{Calibration, OodRule, OodScore, argmax};
pub use colour::{ColourRule, FEATURES as COLOUR_FEATURES, Features as ColourFeatures};
pub use drift::{COLOUR_STATISTICS, DriftReference};
pub use golden::{GoldenImage, GoldenSet, NAME_MAX_CHARS as GOLDEN_NAME_MAX_CHARS};
pub use kinds::{ColorMode, JpegDctScaling, Layout, OutputKind, ResizeFilter, ResizeMode};
pub use overrides::ModelOverrides;
pub use spec::{EMBEDDED_MODEL, ModelError, ModelSpec, TensorInfo};
