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
    /// Cut to the square around the body before the resize (resize mode `content_square`): a
    /// copy of up to the square of 1.1 times the longer side; decoded row by row, the picture is
    /// only reduced to [`Target::stream_size`], then re-framed and resized whole.
    pub reframe: bool,
    /// JPEGs are decoded at a reduced size in the DCT domain as Pillow's `Image.draft` does for
    /// this size (`celestial.jpeg_dct_scaling = draft`); otherwise at full size (and scaled only
    /// when decoded row by row to stay within the memory budget).
    pub jpeg_draft: bool,
}

impl Target {
    /// libjpeg's DCT scaling of a `w` x `h` JPEG, as the numerator `n` of `n/8` (8: full size; the
    /// output is [`scaled`]: `ceil(w * n / 8)` x `ceil(h * n / 8)`). The one place the factor is
    /// chosen, for whole and row-by-row decoding alike:
    /// - `self.jpeg_draft` (`celestial.jpeg_dct_scaling = draft`): what Pillow's
    ///   `Image.draft("RGB", (W, H))` asks libjpeg-turbo for, W x H the model input: the largest `s`
    ///   in {8, 4, 2, 1} with `s <= min(w / W, h / H)` (integer division), so `n = 8 / s` (libjpeg
    ///   treats `1/s` and `(8/s)/8` alike: same IDCT size, same output size);
    /// - otherwise full size, unless `streamed` (too large to decode whole within the budget): then
    ///   as far as the result keeps at least 4 times the model input's size on each side (the
    ///   triangle filter then averages as it would have).
    pub fn jpeg_scale(&self, (w, h): (u32, u32), streamed: bool) -> u8 {
        if self.jpeg_draft {
            let ratio = (w / self.width.max(1)).min(h / self.height.max(1));
            let s = [8u32, 4, 2].into_iter().find(|&s| ratio >= s).unwrap_or(1);
            return (8 / s) as u8;
        }
        if !streamed {
            return 8;
        }
        let least = 4 * self.width.max(self.height);
        [1u8, 2, 4]
            .into_iter()
            .find(|&n| scaled(w, n) >= least && scaled(h, n) >= least)
            .unwrap_or(8)
    }

    /// The size a picture of `w` x `h` rows is resized to while it is decoded row by row: the
    /// model input (its sides swapped when the orientation will swap them), or for a re-framing
    /// model the picture itself, reduced to at most 16 times the input's longer side with its
    /// aspect kept (the body is then found and cut out of it, and resized once whole).
    pub fn stream_size(&self, (w, h): (u32, u32), swapped: bool) -> (u32, u32) {
        if !self.reframe {
            return if swapped {
                (self.height, self.width)
            } else {
                (self.width, self.height)
            };
        }
        let most = 16 * u64::from(self.width.max(self.height).max(1));
        let long = u64::from(w.max(h).max(1));
        let side = |v: u32| (u64::from(v) * most.min(long)).div_ceil(long).max(1) as u32;
        (side(w), side(h))
    }

    /// Channels of the rows a row-by-row decode resizes: RGB for a re-framing model (the body is
    /// found in colour), the model input's otherwise.
    pub fn stream_channels(&self) -> usize {
        if self.reframe { 3 } else { self.channels }
    }
}

/// A side of `v` pixels decoded at `num`/8 by libjpeg: `ceil(v * num / 8)`.
pub fn scaled(v: u32, num: u8) -> u32 {
    (u64::from(v) * u64::from(num)).div_ceil(8) as u32
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
