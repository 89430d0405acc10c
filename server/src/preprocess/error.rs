//! Why an uploaded image cannot be used. Imports only `budget` (a leaf).

use super::budget::mebibytes;

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
    #[error(
        "the {format} image is truncated: its {width}x{height} pixels need at least {min_bytes} bytes of coded data, it has {data_bytes}"
    )]
    ShortData {
        format: &'static str,
        width: u32,
        height: u32,
        data_bytes: u64,
        min_bytes: u64,
    },
    #[error(
        "decoding this {width}x{height} {kind} needs {} MiB of memory, more than the {} MiB allowed per image; send a smaller image{hint}",
        mebibytes(*.needed), mebibytes(*.budget)
    )]
    OverBudget {
        width: u32,
        height: u32,
        /// What the image is, e.g. "progressive JPEG" or "interlaced PNG".
        kind: &'static str,
        needed: u64,
        budget: u64,
        /// A suggestion after "send a smaller image", or empty.
        hint: &'static str,
    },
    #[error("the {format} image cannot be decoded: {reason}")]
    Undecodable {
        format: &'static str,
        reason: String,
    },
}

impl PreprocessError {
    /// Whether the image was refused by a configured limit (`--max-image-pixels`,
    /// `--max-decode-bytes`) rather than for what it is.
    pub fn is_over_a_limit(&self) -> bool {
        matches!(
            self,
            PreprocessError::TooLarge { .. } | PreprocessError::OverBudget { .. }
        )
    }

    /// The size check both decoders make from the header alone, before any pixel is decoded:
    /// at most `max_pixels`, and not empty. (Once per image: inlined into both decoders.)
    #[inline]
    pub fn check_size(width: u32, height: u32, max_pixels: u64) -> Result<(), PreprocessError> {
        let pixels = u64::from(width) * u64::from(height);
        if pixels > max_pixels {
            return Err(PreprocessError::TooLarge {
                width,
                height,
                pixels,
                limit: max_pixels,
            });
        }
        if pixels == 0 {
            return Err(PreprocessError::ZeroSized { width, height });
        }
        Ok(())
    }
}
