//! Image bytes -> model input: decoding (`decode`, with the JPEG fast path in `jpeg`), alpha
//! compositing onto black, colour conversion, re-framing (`frame`, resize mode `content_square`),
//! resize and scaling ([`Preprocessor`]).
//!
//! Memory: every image is checked against a [`DecodeLimits`] budget from its header, before any
//! pixel is decoded (`decode`); one too large to hold whole is decoded row by row into a
//! [`resize::StreamResizer`] (a JPEG scaled down in the DCT first), or refused with the memory it
//! would need ([`PreprocessError::OverBudget`]). For a model that re-frames its pictures, a
//! picture decoded row by row is only reduced ([`Target::stream_size`]), then re-framed whole.
//!
//! Inside: `budget`, `frame`, `markers` and `resize` (leaves), `error` (imports `budget`), `jpeg` and
//! `png_rows` (import `budget` and `error`), `decode` (imports them all); this file imports them
//! and the model description. A new image format goes into `decode::SUPPORTED` (and
//! `crate::routes::RAW_IMAGE_TYPES` for its media type).

mod budget;
mod decode;
mod error;
mod frame;
mod jpeg;
mod markers;
mod png_rows;
mod resize;

use std::borrow::Cow;
use std::sync::Arc;

use image::imageops::FilterType;
use image::metadata::Orientation;
use image::{DynamicImage, GenericImageView, GrayImage, RgbImage};

pub use budget::{DecodeLimits, Target};
pub use decode::{SUPPORTED, decode, sniff};
pub use error::PreprocessError;
pub use resize::resize_triangle;

use budget::RowSink;
use decode::{Decoded, decode_bounded, swaps_axes};
use resize::{StreamResizer, TriangleResizer};

use crate::model::{ColorMode, JpegDctScaling, Layout, ModelSpec, ResizeFilter, ResizeMode};

fn filter(f: ResizeFilter) -> FilterType {
    match f {
        ResizeFilter::Nearest => FilterType::Nearest,
        ResizeFilter::Triangle => FilterType::Triangle,
        ResizeFilter::CatmullRom => FilterType::CatmullRom,
        ResizeFilter::Lanczos3 => FilterType::Lanczos3,
    }
}

/// The image's pixels as interleaved RGB8, with any alpha composited onto black (`c * a / 255`,
/// rounded). Borrowed when the decoder already produced RGB8 (the JPEG case), converted otherwise.
fn rgb8_on_black(img: &DynamicImage) -> Cow<'_, [u8]> {
    match img {
        DynamicImage::ImageRgb8(rgb) => Cow::Borrowed(rgb.as_raw()),
        _ if !img.color().has_alpha() => Cow::Owned(img.to_rgb8().into_raw()),
        _ => {
            let rgba = img.to_rgba8();
            let mut out = Vec::with_capacity(rgba.as_raw().len() / 4 * 3);
            for p in rgba.as_raw().chunks_exact(4) {
                let a = u32::from(p[3]);
                for c in &p[..3] {
                    out.push(((u32::from(*c) * a + 127) / 255) as u8);
                }
            }
            Cow::Owned(out)
        }
    }
}

/// RGB8 with any alpha composited onto black (`c * a / 255`, rounded).
pub fn to_rgb8_on_black(img: &DynamicImage) -> RgbImage {
    let (w, h) = img.dimensions();
    RgbImage::from_raw(w, h, rgb8_on_black(img).into_owned())
        .unwrap_or_else(|| unreachable!("buffer size matches dimensions"))
}

/// Luma of interleaved RGB8 with the model's coefficients; with the default ones exactly Pillow's
/// `convert("L")` (ITU-R 601 in 16-bit fixed point).
fn luma(rgb: &[u8], [kr, kg, kb]: [f32; 3], out: &mut Vec<u8>) {
    out.clear();
    if [kr, kg, kb] == [0.299, 0.587, 0.114] {
        out.extend(rgb.chunks_exact(3).map(|p| {
            ((19595 * u32::from(p[0]) + 38470 * u32::from(p[1]) + 7471 * u32::from(p[2]) + 32768)
                >> 16) as u8
        }));
    } else {
        out.extend(rgb.chunks_exact(3).map(|p| {
            (kr * f32::from(p[0]) + kg * f32::from(p[1]) + kb * f32::from(p[2]))
                .round()
                .clamp(0.0, 255.0) as u8
        }));
    }
}

/// Largest buffer a [`Preprocessor`] keeps from one image to the next (a 1.4-megapixel RGB8 image).
const KEEP_BYTES: usize = 4 << 20;

/// Decoded image -> model input, reusing its plans, lookup tables and buffers from one image to the
/// next. Each inference worker owns one.
#[derive(Debug)]
pub struct Preprocessor {
    spec: Arc<ModelSpec>,
    resizer: TriangleResizer,
    /// For images decoded row by row.
    stream: StreamResizer,
    /// `(v * scale - mean[c]) / std[c]` for every channel `c` and 8-bit value `v`.
    lut: Vec<f32>,
    luma: Vec<u8>,
    /// Finds the square a `content_square` model's picture is cut to.
    body: frame::BodySearch,
    /// That square.
    framed: Vec<u8>,
    pixels: Vec<u8>,
    /// The last decoded RGB8 image's buffer, reused by the next decode.
    decoded: Vec<u8>,
}

impl Preprocessor {
    pub fn new(spec: Arc<ModelSpec>) -> Preprocessor {
        let channels = spec.channels();
        let mut lut = vec![0f32; 256 * channels];
        for c in 0..channels {
            for v in 0..256 {
                lut[c * 256 + v] = (v as f32 * spec.scale - spec.mean[c]) / spec.std[c];
            }
        }
        Preprocessor {
            spec,
            resizer: TriangleResizer::default(),
            stream: StreamResizer::default(),
            lut,
            luma: Vec::new(),
            body: frame::BodySearch::default(),
            framed: Vec::new(),
            pixels: Vec::new(),
            decoded: Vec::new(),
        }
    }

    pub fn spec(&self) -> &Arc<ModelSpec> {
        &self.spec
    }

    /// What images are resized to, for the memory estimates.
    fn target(&self) -> Target {
        Target {
            width: self.spec.width,
            height: self.spec.height,
            channels: self.spec.channels(),
            generic_resize: self.spec.resize_filter != ResizeFilter::Triangle,
            reframe: self.spec.resize_mode == ResizeMode::ContentSquare,
            jpeg_draft: self.spec.jpeg_dct_scaling == JpegDctScaling::Draft,
        }
    }

    /// Decode `bytes` as [`Preprocessor::run`] does (a JPEG DCT-scaled for a `draft` model), whole
    /// and without a memory limit: the pixels before the resize (the golden fixtures'
    /// `decoded_rgb8_base64`).
    pub fn decode(&self, bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, PreprocessError> {
        decode::decode_whole(bytes, max_pixels, &self.target())
    }

    /// Decode `bytes` within `limits` and write the model input into `out` (length
    /// `spec.tensor_len()`).
    pub fn run(
        &mut self,
        bytes: &[u8],
        limits: DecodeLimits,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let target = self.target();
        let buf = std::mem::take(&mut self.decoded);
        let mut sink = Sink {
            spec: &self.spec,
            target,
            resizer: &mut self.stream,
            luma: &mut self.luma,
            orientation: Orientation::NoTransforms,
            size: (0, 0),
        };
        // The row-by-row resize is the triangle filter's.
        let streamable = !target.generic_resize;
        let decoded = decode_bounded(
            bytes,
            limits,
            &target,
            buf,
            streamable.then_some(&mut sink as &mut dyn RowSink),
        );
        let (orientation, size) = (sink.orientation, sink.size);
        let result = match decoded {
            Ok(Decoded::Image(img)) => {
                self.fill_tensor(&img, out);
                if let DynamicImage::ImageRgb8(rgb) = img {
                    self.decoded = rgb.into_raw();
                }
                Ok(())
            }
            Ok(Decoded::Streamed) => self
                .finish_stream(orientation, size)
                .map(|()| self.normalise(out)),
            Err(e) => Err(e),
        };
        self.trim();
        result
    }

    /// The pixels of an image decoded row by row: resized while it arrived to `(w, h)`
    /// ([`Target::stream_size`]: the model input's size, or its transpose when the orientation
    /// swaps the axes), then oriented; for a re-framing model the reduced picture is then
    /// re-framed and resized as a whole one.
    fn finish_stream(
        &mut self,
        orientation: Orientation,
        (w, h): (u32, u32),
    ) -> Result<(), PreprocessError> {
        let truncated = PreprocessError::Truncated { format: "uploaded" };
        let px = self.stream.finish().ok_or(truncated.clone())?;
        let reframe = self.spec.resize_mode == ResizeMode::ContentSquare;
        let mut img = match (reframe, self.spec.color_mode) {
            (false, ColorMode::Grayscale) => {
                GrayImage::from_raw(w, h, px).map(DynamicImage::ImageLuma8)
            }
            _ => RgbImage::from_raw(w, h, px).map(DynamicImage::ImageRgb8),
        }
        .ok_or(truncated)?;
        img.apply_orientation(orientation);
        if reframe {
            self.pixels(&img);
        } else {
            self.pixels = img.into_bytes();
        }
        Ok(())
    }

    /// Let go of buffers a large image grew: a worker keeps at most [`KEEP_BYTES`] per buffer (4
    /// buffers) and 1 MiB of resize weights between images, so one 40-megapixel upload does not
    /// pin 120 MB for the process's lifetime.
    fn trim(&mut self) {
        fn cap<T>(v: &mut Vec<T>) {
            if v.capacity() * size_of::<T>() > KEEP_BYTES {
                *v = Vec::new();
            }
        }
        cap(&mut self.decoded);
        cap(&mut self.luma);
        cap(&mut self.framed);
        self.body.trim(KEEP_BYTES);
        self.resizer.trim(KEEP_BYTES);
        // Nothing of a row-by-row decode is worth keeping (its buffers are sized per image).
        self.stream = StreamResizer::default();
    }

    /// The resized 8-bit pixels the model sees, interleaved: RGB for RGB models (what the golden
    /// fixtures' `pixels_rgb8_base64` holds), luma for grayscale ones (luma of the composited RGB8
    /// image, then resized). A `content_square` model's picture is cut to the square around the
    /// body first (found on the RGB8 picture).
    pub fn pixels(&mut self, img: &DynamicImage) -> &[u8] {
        let spec = &self.spec;
        let (mut w, mut h) = img.dimensions();
        let (nw, nh) = (spec.width, spec.height);
        let rgb = rgb8_on_black(img);
        let square = match spec.resize_mode {
            ResizeMode::ContentSquare => self.body.square(&rgb, w, h),
            ResizeMode::Stretch => None,
        };
        let (mut src, channels): (&[u8], usize) = match spec.color_mode {
            ColorMode::Rgb => (&rgb, 3),
            ColorMode::Grayscale => {
                luma(&rgb, spec.grayscale_coefficients, &mut self.luma);
                (&self.luma, 1)
            }
        };
        if let Some(sq) = square {
            frame::crop(src, (w, h), channels, sq, &mut self.framed);
            (src, w, h) = (&self.framed, sq.side, sq.side);
        }
        if spec.resize_filter == ResizeFilter::Triangle {
            self.resizer
                .resize(src, (w, h), channels, (nw, nh), &mut self.pixels);
        } else {
            let f = filter(spec.resize_filter);
            self.pixels = match channels {
                3 => image::imageops::resize(
                    &RgbImage::from_raw(w, h, src.to_vec()).unwrap_or_else(|| unreachable!()),
                    nw,
                    nh,
                    f,
                )
                .into_raw(),
                _ => image::imageops::resize(
                    &GrayImage::from_raw(w, h, src.to_vec()).unwrap_or_else(|| unreachable!()),
                    nw,
                    nh,
                    f,
                )
                .into_raw(),
            };
        }
        &self.pixels
    }

    /// The resized 8-bit pixels of the image [`Preprocessor::run`] last preprocessed (as
    /// [`Preprocessor::pixels`] returns them).
    pub fn model_pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// Write the model input for one decoded image into `out`, in the model's layout:
    /// `(pixel * scale - mean[c]) / std[c]`.
    pub fn fill_tensor(&mut self, img: &DynamicImage, out: &mut [f32]) {
        self.pixels(img);
        self.normalise(out);
    }

    /// Write the model input for the resized pixels into `out`.
    fn normalise(&self, out: &mut [f32]) {
        let (spec, raw, lut) = (&self.spec, &self.pixels, &self.lut);
        debug_assert_eq!(out.len(), spec.tensor_len());
        let channels = spec.channels();
        match (spec.layout, channels) {
            (_, 1) => {
                for (o, v) in out.iter_mut().zip(raw) {
                    *o = lut[usize::from(*v)];
                }
            }
            (Layout::Nhwc, _) => {
                for (o, px) in out
                    .chunks_exact_mut(channels)
                    .zip(raw.chunks_exact(channels))
                {
                    for c in 0..channels {
                        o[c] = lut[c * 256 + usize::from(px[c])];
                    }
                }
            }
            (Layout::Nchw, _) => {
                let plane = out.len() / channels;
                for (c, o) in out.chunks_exact_mut(plane).enumerate() {
                    let lut = &lut[c * 256..(c + 1) * 256];
                    for (o, px) in o.iter_mut().zip(raw.chunks_exact(channels)) {
                        *o = lut[usize::from(px[c])];
                    }
                }
            }
        }
    }
}

/// Where an image decoded row by row goes: its luma for grayscale models (not re-framing ones),
/// then the resize.
struct Sink<'a> {
    spec: &'a ModelSpec,
    target: Target,
    resizer: &'a mut StreamResizer,
    luma: &'a mut Vec<u8>,
    orientation: Orientation,
    /// What the rows are resized to ([`Target::stream_size`]).
    size: (u32, u32),
}

impl RowSink for Sink<'_> {
    fn start(&mut self, width: u32, height: u32, orientation: Orientation) {
        self.size = self
            .target
            .stream_size((width, height), swaps_axes(orientation));
        self.orientation = orientation;
        self.resizer
            .start((width, height), self.target.stream_channels(), self.size);
    }

    fn row(&mut self, rgb: &[u8]) {
        match (self.target.reframe, self.spec.color_mode) {
            (false, ColorMode::Grayscale) => {
                luma(rgb, self.spec.grayscale_coefficients, self.luma);
                self.resizer.push(self.luma);
            }
            _ => self.resizer.push(rgb),
        }
    }
}

/// The resized RGB8 pixels the model sees (before scaling), for RGB models. This is what the golden
/// fixtures' `pixels_rgb8_base64` holds.
pub fn resize_rgb(img: &DynamicImage, spec: &ModelSpec) -> RgbImage {
    let mut p = Preprocessor::new(Arc::new(ModelSpec {
        color_mode: ColorMode::Rgb,
        ..spec.clone()
    }));
    let px = p.pixels(img).to_vec();
    RgbImage::from_raw(spec.width, spec.height, px)
        .unwrap_or_else(|| unreachable!("buffer size matches dimensions"))
}

/// The resized single-channel pixels for grayscale models: luma of the composited RGB8 image (with the
/// default coefficients exactly Pillow's `convert("L")`), then resized.
pub fn resize_gray(img: &DynamicImage, spec: &ModelSpec) -> GrayImage {
    let mut p = Preprocessor::new(Arc::new(ModelSpec {
        color_mode: ColorMode::Grayscale,
        mean: vec![0.0],
        std: vec![1.0],
        ..spec.clone()
    }));
    let px = p.pixels(img).to_vec();
    GrayImage::from_raw(spec.width, spec.height, px)
        .unwrap_or_else(|| unreachable!("buffer size matches dimensions"))
}

/// Write the model input for one decoded image into `out` (length `spec.tensor_len()`), in the
/// model's layout: `(pixel * scale - mean[c]) / std[c]`.
pub fn fill_tensor(img: &DynamicImage, spec: &ModelSpec, out: &mut [f32]) {
    Preprocessor::new(Arc::new(spec.clone())).fill_tensor(img, out);
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::{ImageFormat, Rgba, RgbaImage};

    use super::*;
    use crate::model::{Calibration, OutputKind};

    fn spec(color: ColorMode, layout: Layout) -> ModelSpec {
        let ch = if color == ColorMode::Rgb { 3 } else { 1 };
        ModelSpec {
            name: "t".into(),
            version: "0".into(),
            labels: vec!["a".into(), "b".into()],
            input_name: "input".into(),
            output_name: "logits".into(),
            layout,
            height: 4,
            width: 4,
            color_mode: color,
            grayscale_coefficients: [0.299, 0.587, 0.114],
            alpha: "composite_black".into(),
            resize_filter: ResizeFilter::Triangle,
            resize_mode: ResizeMode::Stretch,
            jpeg_dct_scaling: JpegDctScaling::Full,
            scale: 1.0 / 255.0,
            mean: vec![0.0; ch],
            std: vec![1.0; ch],
            output_kind: OutputKind::Logits,
            calibration: Calibration::default(),
            dynamic_batch: true,
            trained_at: None,
            validation_accuracy: None,
            description: None,
            golden: None,
            drift: None,
        }
    }

    fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, format).unwrap();
        buf.into_inner()
    }

    fn solid(w: u32, h: u32, rgba: [u8; 4]) -> DynamicImage {
        DynamicImage::ImageRgba8(RgbaImage::from_pixel(w, h, Rgba(rgba)))
    }

    #[test]
    fn sniffs_supported_and_refuses_others() {
        let img = solid(3, 2, [10, 20, 30, 255]);
        for f in [ImageFormat::Png, ImageFormat::Bmp, ImageFormat::Gif] {
            assert_eq!(sniff(&encode(&img, f)).unwrap(), f);
        }
        assert_eq!(
            sniff(&encode(
                &DynamicImage::ImageRgb8(img.to_rgb8()),
                ImageFormat::Jpeg
            ))
            .unwrap(),
            ImageFormat::Jpeg
        );
        assert_eq!(sniff(b""), Err(PreprocessError::Empty));
        assert!(matches!(
            sniff(b"hello world, not an image"),
            Err(PreprocessError::UnsupportedFormat(_))
        ));
        // TIFF magic: recognised but not served.
        assert!(
            matches!(sniff(b"II*\0\x08\0\0\0rest"), Err(PreprocessError::UnsupportedFormat(s)) if s.contains("TIFF"))
        );
    }

    #[test]
    fn fast_triangle_resize_is_bit_identical_to_image_rs() {
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed >> 24) as u8
        };
        for (w, h, nw, nh) in [
            (128, 128, 64, 64),
            (128, 128, 32, 32),
            (100, 37, 64, 64),
            (3, 5, 64, 64),
            (640, 480, 64, 64),
            (64, 64, 64, 64),
            (1, 1, 64, 64),
            (200, 1, 32, 32),
        ] {
            let rgb: Vec<u8> = (0..w * h * 3).map(|_| next()).collect();
            let img = RgbImage::from_raw(w, h, rgb.clone()).unwrap();
            let want = image::imageops::resize(&img, nw, nh, FilterType::Triangle).into_raw();
            assert_eq!(
                resize_triangle(&rgb, w, h, 3, nw, nh),
                want,
                "rgb {w}x{h} -> {nw}x{nh}"
            );
            let gray: Vec<u8> = (0..w * h).map(|_| next()).collect();
            let img = GrayImage::from_raw(w, h, gray.clone()).unwrap();
            let want = image::imageops::resize(&img, nw, nh, FilterType::Triangle).into_raw();
            assert_eq!(
                resize_triangle(&gray, w, h, 1, nw, nh),
                want,
                "gray {w}x{h} -> {nw}x{nh}"
            );
        }
    }

    #[test]
    fn mutated_images_never_panic() {
        // Deterministic corruption of valid files in every format: each must decode or fail with an
        // error, never panic (the workers also catch panics, but a panic is a bug).
        let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(48, 40, |x, y| {
            Rgba([x as u8 * 5, y as u8 * 6, (x ^ y) as u8, 200])
        }));
        let mut seed = 0x9E37_79B9u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for f in [
            ImageFormat::Png,
            ImageFormat::Gif,
            ImageFormat::Bmp,
            ImageFormat::WebP,
            ImageFormat::Jpeg,
        ] {
            let src = if f == ImageFormat::Jpeg {
                DynamicImage::ImageRgb8(img.to_rgb8())
            } else {
                img.clone()
            };
            let good = encode(&src, f);
            for _ in 0..150 {
                let mut bad = good.clone();
                for _ in 0..1 + next() % 8 {
                    let i = (next() as usize) % bad.len();
                    bad[i] = next() as u8;
                }
                if next() % 4 == 0 {
                    bad.truncate(1 + (next() as usize) % bad.len());
                }
                let _ = decode(&bad, 1 << 24);
            }
        }
    }

    #[test]
    fn alpha_is_composited_on_black() {
        let img = solid(1, 1, [200, 100, 50, 128]);
        let rgb = to_rgb8_on_black(&img);
        assert_eq!(rgb.get_pixel(0, 0).0, [100, 50, 25]);
        let opaque = solid(1, 1, [200, 100, 50, 255]);
        assert_eq!(to_rgb8_on_black(&opaque).get_pixel(0, 0).0, [200, 100, 50]);
        let clear = solid(1, 1, [200, 100, 50, 0]);
        assert_eq!(to_rgb8_on_black(&clear).get_pixel(0, 0).0, [0, 0, 0]);
    }

    #[test]
    fn layouts_and_scaling() {
        let img = solid(8, 8, [255, 0, 51, 255]);
        let s = spec(ColorMode::Rgb, Layout::Nchw);
        let mut out = vec![0f32; s.tensor_len()];
        fill_tensor(&img, &s, &mut out);
        assert!(out[..16].iter().all(|v| (*v - 1.0).abs() < 1e-6));
        assert!(out[16..32].iter().all(|v| *v == 0.0));
        assert!(out[32..].iter().all(|v| (*v - 0.2).abs() < 1e-6));
        let s = spec(ColorMode::Rgb, Layout::Nhwc);
        fill_tensor(&img, &s, &mut out);
        assert!((out[0] - 1.0).abs() < 1e-6 && out[1] == 0.0 && (out[2] - 0.2).abs() < 1e-6);
        let mut s = spec(ColorMode::Grayscale, Layout::Nhwc);
        s.mean = vec![0.5];
        s.std = vec![0.5];
        let mut out = vec![0f32; s.tensor_len()];
        fill_tensor(&solid(8, 8, [255, 255, 255, 255]), &s, &mut out);
        assert!(out.iter().all(|v| (*v - 1.0).abs() < 1e-6), "{out:?}");
    }

    #[test]
    fn header_only_size_check() {
        // A PNG header claiming 100000 x 100000 pixels with no data: refused from the header.
        let mut png = Vec::new();
        png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(b"IHDR");
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&100_000u32.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        png.extend_from_slice(&13u32.to_be_bytes());
        png.extend_from_slice(&ihdr);
        png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
        // A small IDAT (a real bomb would hold a few KB of highly compressible zlib data) and IEND.
        for (kind, data) in [
            (&b"IDAT"[..], &[0x78u8, 0x9c, 0x63, 0, 0, 0, 1, 0, 1][..]),
            (&b"IEND"[..], &[][..]),
        ] {
            let mut chunk = kind.to_vec();
            chunk.extend_from_slice(data);
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            png.extend_from_slice(&chunk);
            png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        match decode(&png, 40_000_000) {
            Err(PreprocessError::TooLarge {
                width: 100_000,
                height: 100_000,
                ..
            }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for b in data {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn large_images_do_not_pin_their_buffers() {
        let s = Arc::new(spec(ColorMode::Rgb, Layout::Nchw));
        let mut p = Preprocessor::new(Arc::clone(&s));
        let mut out = vec![0f32; s.tensor_len()];
        let small = encode(
            &DynamicImage::ImageRgb8(RgbImage::from_pixel(32, 32, image::Rgb([1, 2, 3]))),
            ImageFormat::Jpeg,
        );
        p.run(&small, DecodeLimits::UNLIMITED, &mut out).unwrap();
        assert_eq!(
            p.decoded.capacity(),
            32 * 32 * 3,
            "a small image's buffer is kept for the next one"
        );
        let big = encode(
            &DynamicImage::ImageRgb8(RgbImage::from_pixel(1400, 1100, image::Rgb([1, 2, 3]))),
            ImageFormat::Jpeg,
        );
        p.run(&big, DecodeLimits::UNLIMITED, &mut out).unwrap();
        assert_eq!(p.decoded.capacity(), 0, "a 4.6 MB buffer is released");
        assert!(
            p.resizer.cols_t.capacity() * 4 <= KEEP_BYTES
                && p.resizer.acc.capacity() * 4 <= KEEP_BYTES
        );
    }

    #[test]
    fn jpeg_truncation_is_a_scan_without_a_following_eoi() {
        let jpeg = encode(
            &DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 16, image::Rgb([9, 99, 199]))),
            ImageFormat::Jpeg,
        );
        assert!(!jpeg::is_truncated(&jpeg));
        assert!(jpeg::is_truncated(&jpeg[..jpeg.len() - 2]), "EOI cut off");
        let sos = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
        let mid_scan = sos + (jpeg.len() - sos) / 2;
        assert!(jpeg::is_truncated(&jpeg[..mid_scan]), "cut in the scan");
        assert!(
            !jpeg::is_truncated(&jpeg[..sos]),
            "no scan at all: left to the decoder"
        );
        let mut twice = jpeg.clone();
        twice.extend_from_slice(&jpeg[..mid_scan]); // a second image cut short after the first
        assert!(jpeg::is_truncated(&twice));
    }

    #[test]
    fn truncated_and_garbage_are_rejected() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([x as u8 * 4, y as u8 * 4, 7])
        }));
        for f in [
            ImageFormat::Jpeg,
            ImageFormat::Png,
            ImageFormat::Gif,
            ImageFormat::Bmp,
        ] {
            let bytes = encode(&img, f);
            assert!(decode(&bytes, 1 << 30).is_ok(), "{f:?} should decode");
            let cut = &bytes[..bytes.len() / 2];
            let err = decode(cut, 1 << 30).expect_err(&format!("truncated {f:?} must fail"));
            assert!(
                matches!(
                    err,
                    PreprocessError::Truncated { .. } | PreprocessError::Undecodable { .. }
                ),
                "{f:?}: {err:?}"
            );
        }
        let mut bad = encode(&img, ImageFormat::Png);
        for b in bad.iter_mut().skip(60) {
            *b = 0x5A;
        }
        assert!(decode(&bad, 1 << 30).is_err());
    }

    #[test]
    fn sixteen_bit_grayscale_and_palette_png() {
        let g16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_pixel(
            5,
            5,
            image::Luma([65535u16]),
        ));
        let img = decode(&encode(&g16, ImageFormat::Png), 1 << 20).unwrap();
        assert_eq!(to_rgb8_on_black(&img).get_pixel(0, 0).0, [255, 255, 255]);
        // Palette PNG via the png encoder directly.
        let mut buf = Vec::new();
        {
            let enc = png_palette_encoder(&mut buf);
            enc.write_header()
                .unwrap()
                .write_image_data(&[0, 1, 1, 0])
                .unwrap();
        }
        let img = decode(&buf, 1 << 20).unwrap();
        assert_eq!(to_rgb8_on_black(&img).get_pixel(1, 0).0, [0, 0, 255]);
    }

    fn png_palette_encoder(buf: &mut Vec<u8>) -> png::Encoder<'static, &mut Vec<u8>> {
        let mut enc = png::Encoder::new(buf, 2, 2);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![255, 0, 0, 0, 0, 255]);
        enc
    }

    #[test]
    fn exif_orientation_is_applied() {
        // 2x1 JPEG (red | blue) with EXIF orientation 6 (rotate 90 CW) -> 1x2 (red on top).
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(16, 8, |x, _| {
            if x < 8 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        }));
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let exif: Vec<u8> = {
            let mut e = b"Exif\0\0".to_vec();
            e.extend_from_slice(b"MM\0\x2a\0\0\0\x08"); // big endian TIFF header, IFD at 8
            e.extend_from_slice(&1u16.to_be_bytes()); // one entry
            e.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
            e.extend_from_slice(&3u16.to_be_bytes()); // SHORT
            e.extend_from_slice(&1u32.to_be_bytes()); // count
            e.extend_from_slice(&6u16.to_be_bytes());
            e.extend_from_slice(&[0, 0]);
            e.extend_from_slice(&0u32.to_be_bytes()); // next IFD
            e
        };
        let mut with_exif = vec![0xFF, 0xD8, 0xFF, 0xE1];
        with_exif.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
        with_exif.extend_from_slice(&exif);
        with_exif.extend_from_slice(&jpeg[2..]);
        let out = decode(&with_exif, 1 << 20).unwrap();
        assert_eq!((out.width(), out.height()), (8, 16));
        let rgb = out.to_rgb8();
        assert!(
            rgb.get_pixel(4, 2)[0] > 200,
            "top should be red: {:?}",
            rgb.get_pixel(4, 2)
        );
        assert!(
            rgb.get_pixel(4, 13)[2] > 200,
            "bottom should be blue: {:?}",
            rgb.get_pixel(4, 13)
        );
    }

    /// A 64x64 RGB (or grayscale) model's preprocessor.
    fn prep(color: ColorMode) -> Preprocessor {
        let mut s = spec(color, Layout::Nchw);
        (s.width, s.height) = (64, 64);
        Preprocessor::new(Arc::new(s))
    }

    /// The model's pixels for `bytes` within `limits`, and whether they were streamed.
    fn model_pixels(p: &mut Preprocessor, bytes: &[u8], max_bytes: u64) -> (Vec<u8>, bool) {
        let limits = DecodeLimits {
            max_bytes,
            ..DecodeLimits::UNLIMITED
        };
        let mut out = vec![0f32; p.spec.tensor_len()];
        p.run(bytes, limits, &mut out).unwrap();
        let target = p.target();
        let mut sink = Sink {
            spec: &p.spec,
            target,
            resizer: &mut StreamResizer::default(),
            luma: &mut Vec::new(),
            orientation: Orientation::NoTransforms,
            size: (0, 0),
        };
        let streamed = matches!(
            decode_bounded(bytes, limits, &target, Vec::new(), Some(&mut sink)),
            Ok(Decoded::Streamed)
        );
        (p.pixels.clone(), streamed)
    }

    fn gradient(w: u32, h: u32) -> RgbaImage {
        RgbaImage::from_fn(w, h, |x, y| {
            Rgba([
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x + y) % 256) as u8,
                (128 + (x * y) % 128) as u8,
            ])
        })
    }

    #[test]
    fn over_the_budget_pngs_and_jpegs_are_streamed_to_the_same_pixels() {
        let rgba = gradient(600, 400);
        let images = [
            encode(&DynamicImage::ImageRgba8(rgba.clone()), ImageFormat::Png),
            encode(
                &DynamicImage::ImageRgba16(DynamicImage::ImageRgba8(rgba.clone()).to_rgba16()),
                ImageFormat::Png,
            ),
            encode(
                &DynamicImage::ImageLuma8(DynamicImage::ImageRgba8(rgba.clone()).to_luma8()),
                ImageFormat::Png,
            ),
            // 600x400 is under 4x the model input: libjpeg decodes it unscaled, row by row.
            encode(
                &DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(rgba).to_rgb8()),
                ImageFormat::Jpeg,
            ),
        ];
        for color in [ColorMode::Rgb, ColorMode::Grayscale] {
            let mut p = prep(color);
            for (i, bytes) in images.iter().enumerate() {
                let (whole, streamed) = model_pixels(&mut p, bytes, u64::MAX);
                assert!(!streamed);
                let (rows, streamed) = model_pixels(&mut p, bytes, 1_500_000);
                assert!(streamed, "image {i} must be over a 1.5 MB budget");
                assert!(rows == whole, "image {i} ({color:?}) differs when streamed");
            }
        }
    }

    /// A `w` x `h` black picture with a textured disc of radius `r` centred at (`cx`, `cy`).
    fn body(w: u32, h: u32, (cx, cy, r): (i64, i64, i64)) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (dx, dy) = (i64::from(x) - cx, i64::from(y) - cy);
            if dx * dx + dy * dy > r * r {
                return image::Rgb([0, 0, 0]);
            }
            // the texture moves with the body, and has no detail finer than what reaches the model
            let t = (((dx + 700) / 97 + (dy + 500) / 61) % 9) as u8;
            image::Rgb([150 + 8 * t, 120 + 5 * t, 90 + 3 * t])
        })
    }

    #[test]
    fn a_re_framing_model_cuts_out_the_body_whole_or_streamed() {
        let mut s = spec(ColorMode::Rgb, Layout::Nchw);
        (s.width, s.height, s.resize_mode) = (32, 32, ResizeMode::ContentSquare);
        let mut p = Preprocessor::new(Arc::new(s.clone()));
        // A small body off centre: the model sees it filling its input, as a frame-filling one.
        let small = DynamicImage::ImageRgb8(body(200, 120, (150, 40, 25)));
        let filling = DynamicImage::ImageRgb8(body(55, 55, (27, 27, 25)));
        let (a, b) = (p.pixels(&small).to_vec(), p.pixels(&filling).to_vec());
        let mean = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(x.abs_diff(*y)))
            .sum::<f64>();
        assert!(mean / a.len() as f64 <= 2.0, "{}", mean / a.len() as f64);
        // Too large to hold whole: reduced row by row, then re-framed.
        let big = body(3000, 2000, (2100, 700, 400));
        let png = encode(&DynamicImage::ImageRgb8(big), ImageFormat::Png);
        let (whole, streamed) = model_pixels(&mut p, &png, u64::MAX);
        assert!(!streamed);
        let (rows, streamed) = model_pixels(&mut p, &png, 8 << 20);
        assert!(streamed, "over an 8 MiB budget");
        let diff: Vec<u8> = whole
            .iter()
            .zip(&rows)
            .map(|(x, y)| x.abs_diff(*y))
            .collect();
        let max = diff.iter().max().copied().unwrap_or(0);
        let mean = diff.iter().map(|&d| f64::from(d)).sum::<f64>() / diff.len() as f64;
        eprintln!("re-framed whole vs streamed: max {max}, mean {mean:.3}");
        assert!(max <= 24 && mean <= 1.0, "max {max}, mean {mean}");
        // Grayscale models find the body in colour too.
        s.color_mode = ColorMode::Grayscale;
        (s.mean, s.std) = (vec![0.0], vec![1.0]);
        let mut g = Preprocessor::new(Arc::new(s));
        let (gray, streamed) = model_pixels(&mut g, &png, 8 << 20);
        assert!(streamed && gray.len() == 32 * 32);
    }

    #[test]
    fn large_jpegs_are_scaled_in_the_dct_and_stay_close() {
        let img = DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(gradient(1600, 1200)).to_rgb8());
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let mut p = prep(ColorMode::Rgb);
        let (whole, _) = model_pixels(&mut p, &jpeg, u64::MAX);
        let (scaled, streamed) = model_pixels(&mut p, &jpeg, 4 << 20);
        assert!(streamed);
        let diff: u32 = whole
            .iter()
            .zip(&scaled)
            .map(|(a, b)| u32::from(a.abs_diff(*b)))
            .sum();
        let mean = diff as f64 / whole.len() as f64;
        assert!(mean < 1.5, "mean difference {mean}");
    }

    #[test]
    fn a_draft_model_decodes_jpegs_at_the_draft_scale_whole_or_streamed() {
        // 1600x1200 for a 32x32 input: min(1600/32, 1200/32) = 37, so 1/8: 200x150.
        let img = DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(gradient(1600, 1200)).to_rgb8());
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let mut s = spec(ColorMode::Rgb, Layout::Nchw);
        (s.width, s.height, s.jpeg_dct_scaling) = (32, 32, JpegDctScaling::Draft);
        let mut p = Preprocessor::new(Arc::new(s));
        let decoded = p.decode(&jpeg, u64::MAX).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (200, 150));
        let (whole, streamed) = model_pixels(&mut p, &jpeg, u64::MAX);
        assert!(!streamed);
        assert_eq!(whole, resize_rgb(&decoded, &p.spec).into_raw());
        // Over a smaller budget: row by row at the same scale, so the same pixels.
        let (rows, streamed) = model_pixels(&mut p, &jpeg, 1_150_000);
        assert!(streamed, "must be over the budget");
        assert!(rows == whole, "streamed pixels differ");
        // A full-decode model (v1) decodes it whole at 1600x1200.
        let full = prep(ColorMode::Rgb).decode(&jpeg, u64::MAX).unwrap();
        assert_eq!((full.width(), full.height()), (1600, 1200));
    }

    #[test]
    fn a_streamed_image_is_oriented_after_the_resize() {
        // 96x64 red | blue halves with EXIF orientation 6 (rotate 90 CW): red on top.
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(96, 64, |x, _| {
            if x < 48 {
                image::Rgb([255, 0, 0])
            } else {
                image::Rgb([0, 0, 255])
            }
        }));
        let jpeg = encode(&img, ImageFormat::Jpeg);
        let exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
        let mut oriented = vec![0xFF, 0xD8, 0xFF, 0xE1];
        oriented.extend_from_slice(&((exif.len() + 2) as u16).to_be_bytes());
        oriented.extend_from_slice(exif);
        oriented.extend_from_slice(&jpeg[2..]);
        let mut p = prep(ColorMode::Rgb);
        let (whole, _) = model_pixels(&mut p, &oriented, u64::MAX);
        let (rows, streamed) = model_pixels(&mut p, &oriented, 1_200_000);
        assert!(streamed);
        let top = &rows[(8 * 64 + 32) * 3..][..3];
        let bottom = &rows[(56 * 64 + 32) * 3..][..3];
        assert!(top[0] > 200 && bottom[2] > 200, "{top:?} {bottom:?}");
        let max = whole.iter().zip(&rows).map(|(a, b)| a.abs_diff(*b)).max();
        assert!(max <= Some(1), "max difference {max:?}");
    }

    #[test]
    fn what_cannot_be_streamed_is_refused_with_the_memory_it_needs() {
        let limits = DecodeLimits {
            max_bytes: 4 << 20,
            ..DecodeLimits::UNLIMITED
        };
        let p = prep(ColorMode::Rgb);
        let t = p.target();
        let refused = |bytes: &[u8]| match decode_bounded(bytes, limits, &t, Vec::new(), None) {
            Err(PreprocessError::OverBudget { kind, needed, .. }) => (kind, needed),
            other => panic!("expected OverBudget, got {:?}", other.map(|_| ())),
        };
        // A GIF whose screen is 1200x1000 and whose data is a few bytes: refused from the header.
        let mut gif = b"GIF89a".to_vec();
        gif.extend_from_slice(&1200u16.to_le_bytes());
        gif.extend_from_slice(&1000u16.to_le_bytes());
        gif.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 255, 255, 255, 0x2C, 0, 0, 0, 0]);
        gif.extend_from_slice(&1200u16.to_le_bytes());
        gif.extend_from_slice(&1000u16.to_le_bytes());
        gif.extend_from_slice(&[0, 2, 2, 0x44, 0x01, 0, 0x3B]);
        let (kind, needed) = refused(&gif);
        assert_eq!(kind, "GIF");
        assert!(needed > 1200 * 1000 * 8, "{needed}");
        let bmp = encode(
            &DynamicImage::ImageRgb8(RgbImage::new(1200, 1000)),
            ImageFormat::Bmp,
        );
        assert_eq!(refused(&bmp).0, "BMP");
        // An interlaced PNG header (no pixel is read before the refusal).
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend_from_slice(&4000u32.to_be_bytes());
        ihdr.extend_from_slice(&3000u32.to_be_bytes());
        ihdr.extend_from_slice(&[16, 6, 0, 0, 1]);
        for (kind, data) in [
            (&ihdr[..4], &ihdr[4..]),
            (&b"IDAT"[..], &[0x78u8, 0x9c][..]),
        ] {
            let mut chunk = kind.to_vec();
            chunk.extend_from_slice(data);
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            png.extend_from_slice(&chunk);
            png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        let (kind, needed) = refused(&png);
        assert_eq!(kind, "interlaced PNG");
        assert!(needed > 4000 * 3000 * 8, "{needed}");
        let mut sink = Sink {
            spec: &p.spec,
            target: t,
            resizer: &mut StreamResizer::default(),
            luma: &mut Vec::new(),
            orientation: Orientation::NoTransforms,
            size: (0, 0),
        };
        assert!(matches!(
            decode_bounded(&png, limits, &t, Vec::new(), Some(&mut sink)),
            Err(PreprocessError::OverBudget { .. })
        ));
        // A progressive JPEG keeps its coefficients (here 2000x2000 4:2:0: 6 MB) at any scale.
        let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        comp.set_size(2000, 2000);
        comp.set_progressive_mode();
        let mut started = comp.start_compress(Vec::new()).unwrap();
        started
            .write_scanlines(&vec![90u8; 2000 * 2000 * 3])
            .unwrap();
        let progressive = started.finish().unwrap();
        let (kind, needed) = refused(&progressive);
        assert_eq!(kind, "progressive JPEG");
        assert!(needed > 6_000_000, "{needed}");
    }

    #[test]
    fn a_jpeg_declaring_more_pixels_than_its_data_can_code_is_truncated() {
        // A decompression bomb: one 8x8 block of data under a 6000x6000 header (and a proper EOI).
        let small = encode(
            &DynamicImage::ImageRgb8(RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))),
            ImageFormat::Jpeg,
        );
        let bomb = markers::tests::with_declared_size(&small, 6000, 6000);
        assert!(bomb.len() < 1000);
        match decode(&bomb, 40_000_000) {
            Err(PreprocessError::ShortData {
                width: 6000,
                height: 6000,
                data_bytes,
                min_bytes,
                ..
            }) => assert!(
                data_bytes < 50 && min_bytes > 100_000,
                "{data_bytes} {min_bytes}"
            ),
            other => panic!("expected ShortData, got {:?}", other.map(|_| ())),
        }
    }
}
