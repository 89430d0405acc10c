//! Image bytes -> model input: decoding (`decode`, with the JPEG fast path in `jpeg`), alpha
//! compositing onto black, colour conversion, resize and scaling ([`Preprocessor`]).
//!
//! Inside: `error` (a leaf), `jpeg` (imports `error`), `decode` (imports `error` and `jpeg`);
//! this file imports them and the model description. A new image format goes into
//! `decode::SUPPORTED` (and `crate::routes::RAW_IMAGE_TYPES` for its media type).

mod decode;
mod error;
mod jpeg;

use std::borrow::Cow;
use std::sync::Arc;

use image::imageops::FilterType;
use image::{DynamicImage, GenericImageView, GrayImage, RgbImage};

pub use decode::{SUPPORTED, decode, decode_reusing, sniff};
pub use error::PreprocessError;

use crate::model::{ColorMode, Layout, ModelSpec, ResizeFilter};

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

/// One axis of a triangle-filter resize: per output index the first source index and its
/// normalised weights (stored flat), computed exactly as image-rs computes them.
#[derive(Debug, Clone, PartialEq)]
struct AxisPlan {
    src: u32,
    dst: u32,
    /// Per output index: (first source index, offset into `weights`, number of taps).
    taps: Vec<(usize, usize, usize)>,
    weights: Vec<f32>,
}

impl AxisPlan {
    fn new(src: u32, dst: u32) -> AxisPlan {
        let ratio = src as f32 / dst as f32;
        let sratio = if ratio < 1.0 { 1.0 } else { ratio };
        let support = sratio;
        let mut taps = Vec::with_capacity(dst as usize);
        let mut weights = Vec::new();
        for o in 0..dst {
            let input = (o as f32 + 0.5) * ratio;
            let left = ((input - support).floor() as i64).clamp(0, i64::from(src) - 1);
            let right = ((input + support).ceil() as i64).clamp(left + 1, i64::from(src));
            let input = input - 0.5;
            let offset = weights.len();
            let mut sum = 0f32;
            for i in left..right {
                let x = (i as f32 - input) / sratio;
                let wt = if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 };
                weights.push(wt);
                sum += wt;
            }
            for wt in &mut weights[offset..] {
                *wt /= sum;
            }
            taps.push((left as usize, offset, (right - left) as usize));
        }
        AxisPlan {
            src,
            dst,
            taps,
            weights,
        }
    }

    #[inline]
    fn get(&self, o: usize) -> (usize, &[f32]) {
        let (first, offset, n) = self.taps[o];
        (first, &self.weights[offset..offset + n])
    }
}

/// `t.clamp(0, 255).round() as u8` (round half away from zero) without a libm call, branch-free so
/// that it vectorises: for non-negative `t` below 256, `t - floor(t)` is exact in f32.
#[inline(always)]
fn round_u8(t: f32) -> u8 {
    #[allow(clippy::manual_clamp)]
    // clamp would keep a NaN; max/min return the number, which the unchecked cast needs
    let t = t.max(0.0).min(255.0);
    // SAFETY: `t` is a number within 0..=255 here, so it fits an i32.
    let i = unsafe { t.to_int_unchecked::<i32>() };
    (i + i32::from(t - i as f32 >= 0.5)) as u8
}

/// Reusable state of the triangle resize: the two axis plans (kept while the source size repeats)
/// and the f32 scratch planes.
#[derive(Debug, Default)]
struct TriangleResizer {
    plans: Option<(AxisPlan, AxisPlan)>,
    /// One output row of the vertical pass.
    acc: Vec<f32>,
    /// Vertical pass output, transposed: per source column, its `nh * channels` values.
    cols_t: Vec<f32>,
    /// Horizontal pass output, transposed: per output column, its `nh * channels` values.
    out_t: Vec<f32>,
    /// `out_t` rounded to 8 bits.
    out_t8: Vec<u8>,
}

impl TriangleResizer {
    /// Antialiased triangle-filter resize of interleaved 8-bit pixels into `out`, bit-identical to
    /// image-rs's `imageops::resize(.., FilterType::Triangle)`: same weights and the same f32
    /// operations in the same order for every output value (vertical pass into f32, then horizontal
    /// pass, clamp, round). Faster because the weights are computed once per size and both passes
    /// run over contiguous memory (the vertical pass stores its rows transposed, so the horizontal
    /// pass is the same row-combining loop), which the compiler vectorises (AVX2 where available).
    fn resize(
        &mut self,
        src: &[u8],
        (w, h): (u32, u32),
        channels: usize,
        (nw, nh): (u32, u32),
        out: &mut Vec<u8>,
    ) {
        debug_assert_eq!(src.len(), w as usize * h as usize * channels);
        out.clear();
        if (w, h) == (nw, nh) || w == 0 || h == 0 {
            if (w, h) == (nw, nh) {
                out.extend_from_slice(src);
            } else {
                out.resize(nw as usize * nh as usize * channels, 0);
            }
            return;
        }
        let fresh = !matches!(&self.plans, Some((cols, rows)) if (cols.src, cols.dst, rows.src, rows.dst) == (w, nw, h, nh));
        if fresh {
            self.plans = Some((AxisPlan::new(w, nw), AxisPlan::new(h, nh)));
        }
        let Some((cols, rows)) = &self.plans else {
            unreachable!("set above")
        };
        let column = nh as usize * channels;
        // Every value of the scratch planes is written before it is read: no clearing needed.
        let scratch = |v: &mut Vec<f32>, len: usize| v.resize(len, 0.0);
        scratch(&mut self.acc, w as usize * channels);
        scratch(&mut self.cols_t, w as usize * column);
        scratch(&mut self.out_t, nw as usize * column);
        self.out_t8.resize(nw as usize * column, 0);
        out.resize(nw as usize * column, 0);
        let bufs = Passes {
            src,
            rows,
            cols,
            acc: &mut self.acc,
            cols_t: &mut self.cols_t,
            out_t: &mut self.out_t,
            out_t8: &mut self.out_t8,
            out,
        };
        match channels {
            1 => bufs.dispatch::<1>(),
            3 => bufs.dispatch::<3>(),
            4 => bufs.dispatch::<4>(),
            n => unreachable!("{n} channels"),
        }
    }
}

/// The buffers of one resize.
struct Passes<'a> {
    src: &'a [u8],
    rows: &'a AxisPlan,
    cols: &'a AxisPlan,
    acc: &'a mut [f32],
    cols_t: &'a mut [f32],
    out_t: &'a mut [f32],
    out_t8: &'a mut [u8],
    out: &'a mut [u8],
}

impl Passes<'_> {
    fn dispatch<const CH: usize>(self) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { self.run_avx2::<CH>() };
        }
        self.run::<CH>();
    }

    /// [`Passes::run`] compiled for AVX2 (without FMA, so every product and sum is rounded exactly
    /// as in the portable build).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2<const CH: usize>(self) {
        self.run::<CH>();
    }

    #[inline(always)]
    fn run<const CH: usize>(self) {
        let Passes {
            src,
            rows,
            cols,
            acc,
            cols_t,
            out_t,
            out_t8,
            out,
        } = self;
        let (nh, nw) = (rows.dst as usize, cols.dst as usize);
        let stride = acc.len();
        let column = nh * CH;
        // Vertical pass: one output row at a time over contiguous source rows, stored transposed.
        for oy in 0..nh {
            let (top, ws) = rows.get(oy);
            combine(
                |k| &src[(top + k) * stride..(top + k + 1) * stride],
                ws,
                acc,
            );
            for (col, px) in cols_t.chunks_exact_mut(column).zip(acc.chunks_exact(CH)) {
                let px: &[f32; CH] = px.try_into().unwrap_or_else(|_| unreachable!());
                col[oy * CH..(oy + 1) * CH].copy_from_slice(px);
            }
        }
        // Horizontal pass: the same combination over the transposed columns.
        for (ox, dst) in out_t.chunks_exact_mut(column).enumerate() {
            let (left, ws) = cols.get(ox);
            combine(
                |k| &cols_t[(left + k) * column..(left + k + 1) * column],
                ws,
                dst,
            );
        }
        // Clamp and round (contiguous, vectorised), then transpose back to interleaved rows.
        for (o, v) in out_t8.iter_mut().zip(out_t.iter()) {
            *o = round_u8(*v);
        }
        for (ox, col) in out_t8.chunks_exact(column).enumerate() {
            for (oy, px) in col.chunks_exact(CH).enumerate() {
                let at = (oy * nw + ox) * CH;
                out[at..at + CH].copy_from_slice(px);
            }
        }
    }
}

/// `out[j] = sum over k of line(k)[j] * ws[k]`, accumulated from 0 in tap order (image-rs's order).
/// The usual tap counts get a loop that keeps the sum in a register across the taps.
#[inline(always)]
fn combine<'a, T: Copy + 'a>(line: impl Fn(usize) -> &'a [T], ws: &[f32], out: &mut [f32])
where
    f32: From<T>,
{
    #[inline(always)]
    fn taps<'a, T: Copy + 'a, const N: usize>(
        line: impl Fn(usize) -> &'a [T],
        ws: &[f32],
        out: &mut [f32],
    ) where
        f32: From<T>,
    {
        let lines: [&[T]; N] = std::array::from_fn(|k| &line(k)[..out.len()]);
        let ws: [f32; N] = std::array::from_fn(|k| ws[k]);
        for (j, o) in out.iter_mut().enumerate() {
            let mut t = 0f32;
            for k in 0..N {
                t += f32::from(lines[k][j]) * ws[k];
            }
            *o = t;
        }
    }
    match ws.len() {
        1 => taps::<T, 1>(line, ws, out),
        2 => taps::<T, 2>(line, ws, out),
        3 => taps::<T, 3>(line, ws, out),
        4 => taps::<T, 4>(line, ws, out),
        5 => taps::<T, 5>(line, ws, out),
        6 => taps::<T, 6>(line, ws, out),
        _ => {
            out.fill(0.0);
            for (k, wk) in ws.iter().enumerate() {
                for (o, v) in out.iter_mut().zip(line(k)) {
                    *o += f32::from(*v) * wk;
                }
            }
        }
    }
}

/// Antialiased triangle-filter resize of interleaved 8-bit pixels (1, 3 or 4 channels),
/// bit-identical to image-rs's `imageops::resize(.., FilterType::Triangle)`.
pub fn resize_triangle(
    src: &[u8],
    width: u32,
    height: u32,
    channels: usize,
    new_width: u32,
    new_height: u32,
) -> Vec<u8> {
    let mut out = Vec::new();
    TriangleResizer::default().resize(
        src,
        (width, height),
        channels,
        (new_width, new_height),
        &mut out,
    );
    out
}

/// Largest buffer a [`Preprocessor`] keeps from one image to the next (a 1.4-megapixel RGB8 image).
const KEEP_BYTES: usize = 4 << 20;

/// Decoded image -> model input, reusing its plans, lookup tables and buffers from one image to the
/// next. Each inference worker owns one.
#[derive(Debug)]
pub struct Preprocessor {
    spec: Arc<ModelSpec>,
    resizer: TriangleResizer,
    /// `(v * scale - mean[c]) / std[c]` for every channel `c` and 8-bit value `v`.
    lut: Vec<f32>,
    luma: Vec<u8>,
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
            lut,
            luma: Vec::new(),
            pixels: Vec::new(),
            decoded: Vec::new(),
        }
    }

    pub fn spec(&self) -> &Arc<ModelSpec> {
        &self.spec
    }

    /// Decode `bytes` and write the model input into `out` (length `spec.tensor_len()`).
    pub fn run(
        &mut self,
        bytes: &[u8],
        max_pixels: u64,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let img = decode_reusing(bytes, max_pixels, std::mem::take(&mut self.decoded))?;
        self.fill_tensor(&img, out);
        if let DynamicImage::ImageRgb8(rgb) = img {
            self.decoded = rgb.into_raw();
        }
        self.trim();
        Ok(())
    }

    /// Let go of buffers a large image grew: a worker keeps at most [`KEEP_BYTES`] per buffer
    /// between images, so one 40-megapixel upload does not pin 120 MB for the process's lifetime.
    fn trim(&mut self) {
        fn cap<T>(v: &mut Vec<T>) {
            if v.capacity() * size_of::<T>() > KEEP_BYTES {
                *v = Vec::new();
            }
        }
        cap(&mut self.decoded);
        cap(&mut self.luma);
        cap(&mut self.resizer.acc);
        cap(&mut self.resizer.cols_t);
    }

    /// The resized 8-bit pixels the model sees, interleaved: RGB for RGB models (what the golden
    /// fixtures' `pixels_rgb8_base64` holds), luma for grayscale ones (luma of the composited RGB8
    /// image, then resized).
    pub fn pixels(&mut self, img: &DynamicImage) -> &[u8] {
        let spec = &self.spec;
        let (w, h) = img.dimensions();
        let (nw, nh) = (spec.width, spec.height);
        let rgb = rgb8_on_black(img);
        let (src, channels): (&[u8], usize) = match spec.color_mode {
            ColorMode::Rgb => (&rgb, 3),
            ColorMode::Grayscale => {
                luma(&rgb, spec.grayscale_coefficients, &mut self.luma);
                (&self.luma, 1)
            }
        };
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

    /// Write the model input for one decoded image into `out`, in the model's layout:
    /// `(pixel * scale - mean[c]) / std[c]`.
    pub fn fill_tensor(&mut self, img: &DynamicImage, out: &mut [f32]) {
        self.pixels(img);
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
    use crate::model::OutputKind;

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
            resize_mode: "stretch".into(),
            scale: 1.0 / 255.0,
            mean: vec![0.0; ch],
            std: vec![1.0; ch],
            output_kind: OutputKind::Logits,
            dynamic_batch: true,
            trained_at: None,
            validation_accuracy: None,
            description: None,
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
        p.run(&small, u64::MAX, &mut out).unwrap();
        assert_eq!(
            p.decoded.capacity(),
            32 * 32 * 3,
            "a small image's buffer is kept for the next one"
        );
        let big = encode(
            &DynamicImage::ImageRgb8(RgbImage::from_pixel(1400, 1100, image::Rgb([1, 2, 3]))),
            ImageFormat::Jpeg,
        );
        p.run(&big, u64::MAX, &mut out).unwrap();
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
}
