//! The kinds a model's input and output come in (flag values, metadata values and `/model` fields).
//! A leaf module.

use clap::ValueEnum;
use serde::Serialize;

/// Tensor layout of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
pub enum Layout {
    /// [N, C, H, W]
    #[value(name = "NCHW", alias = "nchw")]
    #[serde(rename = "NCHW")]
    Nchw,
    /// [N, H, W, C]
    #[value(name = "NHWC", alias = "nhwc")]
    #[serde(rename = "NHWC")]
    Nhwc,
}

/// Colour mode of the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    /// Three channels, R, G, B.
    Rgb,
    /// One channel: a weighted sum of R, G, B (`--grayscale-coefficients`).
    Grayscale,
}

/// Resize filter (image-rs names; `triangle` is antialiased bilinear, like PIL's BILINEAR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeFilter {
    /// Nearest neighbour.
    Nearest,
    /// Antialiased bilinear.
    Triangle,
    /// Catmull-Rom bicubic.
    #[value(name = "catmull_rom", alias = "catmull-rom")]
    CatmullRom,
    /// Lanczos with a window of 3.
    Lanczos3,
}

/// What the model outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Unnormalised scores; the server applies softmax.
    Logits,
    /// Already probabilities; served as they are.
    Probabilities,
}

impl Layout {
    /// The layout a `celestial.input_layout` value names.
    pub fn from_metadata(v: &str) -> Option<Layout> {
        match v.to_ascii_uppercase().as_str() {
            "NCHW" => Some(Layout::Nchw),
            "NHWC" => Some(Layout::Nhwc),
            _ => None,
        }
    }

    /// `NCHW` or `NHWC`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        }
    }
}

impl ColorMode {
    /// The colour mode a `celestial.color_mode` value names.
    pub fn from_metadata(v: &str) -> Option<ColorMode> {
        match v.to_ascii_lowercase().as_str() {
            "rgb" => Some(ColorMode::Rgb),
            "grayscale" | "gray" | "l" => Some(ColorMode::Grayscale),
            _ => None,
        }
    }

    /// Number of input channels.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Grayscale => 1,
        }
    }
}

impl ResizeFilter {
    /// The filter a `celestial.resize_filter` value names (image-rs and PIL names).
    pub fn from_metadata(v: &str) -> Option<ResizeFilter> {
        match v.to_ascii_lowercase().as_str() {
            "triangle" | "bilinear" => Some(ResizeFilter::Triangle),
            "nearest" => Some(ResizeFilter::Nearest),
            "catmull_rom" | "catmullrom" | "bicubic" => Some(ResizeFilter::CatmullRom),
            "lanczos3" | "lanczos" => Some(ResizeFilter::Lanczos3),
            _ => None,
        }
    }
}

impl OutputKind {
    /// The kind a `celestial.output_kind` value names.
    pub fn from_metadata(v: &str) -> Option<OutputKind> {
        match v.to_ascii_lowercase().as_str() {
            "logits" => Some(OutputKind::Logits),
            "probabilities" | "probs" | "softmax" => Some(OutputKind::Probabilities),
            _ => None,
        }
    }
}
