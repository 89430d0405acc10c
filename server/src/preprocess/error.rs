//! Why an uploaded image cannot be used. A leaf module.

/// Why an uploaded image cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("unsupported image format{0}; send JPEG, PNG, WebP, GIF or BMP")]
    UnsupportedFormat(String),
    #[error(
        "the image is {width}x{height} = {pixels} pixels, more than the limit of {limit} pixels"
    )]
    TooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("the image has no pixels ({width}x{height})")]
    ZeroSized { width: u32, height: u32 },
    #[error("the {format} image is truncated")]
    Truncated { format: &'static str },
    #[error("the {format} image cannot be decoded: {reason}")]
    Undecodable {
        format: &'static str,
        reason: String,
    },
}
