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

/// How the decoded picture is fitted to the input size (`celestial.resize_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// The whole picture, stretched to the input size (aspect ratio not kept).
    Stretch,
    /// First cut to the square around the body (its bright rows and columns, widened by a tenth,
    /// black past the picture's edges), then resized.
    ContentSquare,
}

/// What the model outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Unnormalised scores; the server applies softmax (at the model's temperature, when it has one).
    Logits,
    /// Already probabilities; served as they are.
    Probabilities,
}

/// A kind whose `celestial.*` metadata value is one of a few names (any case).
pub trait MetadataName: Copy + 'static {
    /// Each variant with its accepted names (space-separated).
    const NAMES: &'static [(&'static str, Self)];
    /// What a refused value is told it should be.
    const EXPECTED: &'static str;

    /// The kind `v` names, if any.
    fn from_metadata(v: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(names, _)| names.split(' ').any(|n| n.eq_ignore_ascii_case(v)))
            .map(|(_, kind)| *kind)
    }
}

impl MetadataName for Layout {
    const NAMES: &'static [(&'static str, Self)] =
        &[("NCHW", Layout::Nchw), ("NHWC", Layout::Nhwc)];
    const EXPECTED: &'static str = "expected NCHW or NHWC";
}

impl MetadataName for ColorMode {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("rgb", ColorMode::Rgb),
        ("grayscale gray l", ColorMode::Grayscale),
    ];
    const EXPECTED: &'static str = "expected rgb or grayscale";
}

/// image-rs and PIL names.
impl MetadataName for ResizeFilter {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("triangle bilinear", ResizeFilter::Triangle),
        ("nearest", ResizeFilter::Nearest),
        ("catmull_rom catmullrom bicubic", ResizeFilter::CatmullRom),
        ("lanczos3 lanczos", ResizeFilter::Lanczos3),
    ];
    const EXPECTED: &'static str = "expected triangle, nearest, catmull_rom or lanczos3";
}

impl MetadataName for ResizeMode {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("stretch", ResizeMode::Stretch),
        ("content_square", ResizeMode::ContentSquare),
    ];
    const EXPECTED: &'static str = "expected stretch or content_square";
}

impl MetadataName for OutputKind {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("logits", OutputKind::Logits),
        ("probabilities probs softmax", OutputKind::Probabilities),
    ];
    const EXPECTED: &'static str = "expected logits or probabilities";
}

impl Layout {
    /// `NCHW` or `NHWC`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        }
    }
}

impl ColorMode {
    /// Number of input channels.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Grayscale => 1,
        }
    }
}

/// How a JPEG is decoded (`celestial.jpeg_dct_scaling`, `--jpeg-dct-scaling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JpegDctScaling {
    /// At its stored size, then resized (the metadata key absent: models exported before the key existed).
    Full,
    /// At a reduced size in the DCT domain, exactly as Pillow's `Image.draft("RGB", (W, H))` asks
    /// libjpeg-turbo for it (W x H the model input): the largest factor `s` in {8, 4, 2, 1} with
    /// `s <= min(w / W, h / H)` for a `w` x `h` file, decoded size `ceil(w / s)` x `ceil(h / s)`;
    /// then resized as usual.
    Draft,
}

impl MetadataName for JpegDctScaling {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("draft", JpegDctScaling::Draft),
        ("full none", JpegDctScaling::Full),
    ];
    const EXPECTED: &'static str = "expected draft or full";
}
