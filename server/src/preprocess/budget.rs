//! What one image may cost ([`DecodeLimits`]: pixels from the header, bytes of memory for
//! decoding and resizing it), what it becomes ([`Target`], the model input), and the interface of
//! row-by-row decoding ([`RowSink`]). A leaf module.

use image::metadata::Orientation;

/// Limits on one image, checked from its header before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels (width x height) an image may have (`--max-image-pixels`).
    pub max_pixels: u64,
    /// Most bytes of memory decoding and resizing one image may use (`--max-decode-bytes`): the
    /// decoder's buffers, the decoded pixels, their conversions and the resize's scratch space.
    pub max_bytes: u64,
}

impl DecodeLimits {
    /// No limit at all (benchmarks and tools on trusted files).
    pub const UNLIMITED: DecodeLimits = DecodeLimits {
        max_pixels: u64::MAX,
        max_bytes: u64::MAX,
    };

    /// A pixel limit and no memory limit.
    pub fn pixels(max_pixels: u64) -> DecodeLimits {
        DecodeLimits {
            max_pixels,
            ..DecodeLimits::UNLIMITED
        }
    }
}

/// The size and channels (1 or 3) of the model input an image is resized to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub width: u32,
    pub height: u32,
    pub channels: usize,
    /// Resized by image-rs with a filter other than the triangle filter (which copies the source).
    pub generic_resize: bool,
}

/// Receives an image row by row, top to bottom, as interleaved RGB8 with any alpha composited
/// onto black (what [`crate::preprocess::to_rgb8_on_black`] makes of a whole image).
pub trait RowSink {
    /// Called once before the first row: the size of the rows to come and the orientation to
    /// apply to the result.
    fn start(&mut self, width: u32, height: u32, orientation: Orientation);
    /// One row of `width` RGB8 pixels.
    fn row(&mut self, rgb: &[u8]);
}

/// Mebibytes (2^20 bytes, rounded up), for messages.
pub fn mebibytes(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}
