//! The served model: what it expects and returns ([`ModelSpec`]), resolved from its ONNX metadata
//! (`celestial.*` keys), its input/output signature and the override flags ([`ModelOverrides`]).
//!
//! Inside: `kinds` (layout, colour mode, resize filter, output kind; a leaf), `overrides` (the
//! flags), `spec` (the resolved description and its errors), `resolve` (metadata + flags + shapes
//! -> spec). Imports nothing else from the crate.

mod kinds;
mod overrides;
mod resolve;
mod spec;

pub use kinds::{ColorMode, Layout, OutputKind, ResizeFilter};
pub use overrides::ModelOverrides;
pub use spec::{EMBEDDED_MODEL, ModelError, ModelSpec, TensorInfo};
