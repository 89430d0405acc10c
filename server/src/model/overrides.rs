//! The model description flags (`--labels`, `--input-layout`, ...), flattened into the server's
//! configuration; they fill in or override the model's metadata.

use clap::Args;

use super::kinds::{ColorMode, JpegDctScaling, Layout, OutputKind, ResizeFilter};

/// Model description flags: they fill in (and override) the model's `celestial.*` metadata, so a model
/// without metadata (e.g. the guide's own export) can be served.
#[derive(Debug, Clone, Default, Args)]
pub struct ModelOverrides {
    /// Class labels in output order, comma-separated (overrides `celestial.labels`).
    #[arg(long, env = "CELESTIAL_LABELS", value_delimiter = ',')]
    pub labels: Option<Vec<String>>,

    /// Name of the model input to feed (overrides `celestial.input_name`; default: the only input).
    #[arg(long, env = "CELESTIAL_INPUT_NAME")]
    pub input_name: Option<String>,

    /// Name of the model output to read (overrides `celestial.output_name`; default: the first output).
    #[arg(long, env = "CELESTIAL_OUTPUT_NAME")]
    pub output_name: Option<String>,

    /// Input tensor layout (overrides `celestial.input_layout`; default: inferred from the input shape).
    #[arg(long, env = "CELESTIAL_INPUT_LAYOUT", value_enum)]
    pub input_layout: Option<Layout>,

    /// Input height in pixels (overrides `celestial.input_height`; default: from the input shape).
    #[arg(long, env = "CELESTIAL_INPUT_HEIGHT")]
    pub input_height: Option<u32>,

    /// Input width in pixels (overrides `celestial.input_width`; default: from the input shape).
    #[arg(long, env = "CELESTIAL_INPUT_WIDTH")]
    pub input_width: Option<u32>,

    /// Colour mode (overrides `celestial.color_mode`; default: from the channel count).
    #[arg(long, env = "CELESTIAL_COLOR_MODE", value_enum)]
    pub color_mode: Option<ColorMode>,

    /// R,G,B weights for grayscale models (overrides `celestial.grayscale_coefficients`; default 0.299,0.587,0.114).
    #[arg(long, env = "CELESTIAL_GRAYSCALE_COEFFICIENTS", value_delimiter = ',')]
    pub grayscale_coefficients: Option<Vec<f32>>,

    /// Resize filter (overrides `celestial.resize_filter`; default triangle).
    #[arg(long, env = "CELESTIAL_RESIZE_FILTER", value_enum)]
    pub resize_filter: Option<ResizeFilter>,

    /// How JPEGs are decoded (overrides `celestial.jpeg_dct_scaling`; default full): `draft` decodes
    /// them at a reduced size in the DCT domain as Pillow's `Image.draft` does, `full` at full size.
    #[arg(long, env = "CELESTIAL_JPEG_DCT_SCALING", value_enum)]
    pub jpeg_dct_scaling: Option<JpegDctScaling>,

    /// Multiplier applied to 0..255 pixel values (overrides `celestial.scale`; default 1/255).
    #[arg(long, env = "CELESTIAL_SCALE")]
    pub scale: Option<f32>,

    /// Per-channel mean subtracted after scaling, comma-separated (overrides `celestial.mean`; default 0).
    #[arg(long, env = "CELESTIAL_MEAN", value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,

    /// Per-channel standard deviation divided by after the mean, comma-separated (overrides `celestial.std`; default 1).
    #[arg(long, env = "CELESTIAL_STD", value_delimiter = ',')]
    pub std: Option<Vec<f32>>,

    /// Whether the output holds logits or probabilities (overrides `celestial.output_kind`; default logits).
    #[arg(long, env = "CELESTIAL_OUTPUT_KIND", value_enum)]
    pub output_kind: Option<OutputKind>,

    /// Model name reported by /model and the docs (overrides `celestial.model_name`).
    #[arg(long, env = "CELESTIAL_MODEL_NAME")]
    pub model_name: Option<String>,

    /// Model version reported by /model and the docs (overrides `celestial.model_version`).
    #[arg(long, env = "CELESTIAL_MODEL_VERSION")]
    pub model_version: Option<String>,
}
