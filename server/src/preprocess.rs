//! Image bytes -> model input: format sniffing, header-only size check (before any pixel is decoded),
//! decoding, EXIF orientation, alpha compositing onto black, colour conversion, resize and scaling.

use std::io::Cursor;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::config::{ColorMode, Layout, ResizeFilter};
use crate::model::ModelSpec;

/// Why an uploaded image cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("unsupported image format{0}; send JPEG, PNG, WebP, GIF or BMP")]
    UnsupportedFormat(String),
    #[error("the image is {width}x{height} = {pixels} pixels, more than the limit of {limit} pixels")]
    TooLarge { width: u32, height: u32, pixels: u64, limit: u64 },
    #[error("the image has no pixels ({width}x{height})")]
    ZeroSized { width: u32, height: u32 },
    #[error("the {format} image is truncated")]
    Truncated { format: &'static str },
    #[error("the {format} image cannot be decoded: {reason}")]
    Undecodable { format: &'static str, reason: String },
}

/// Formats the server decodes.
pub const SUPPORTED: [ImageFormat; 5] = [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP, ImageFormat::Gif, ImageFormat::Bmp];

/// Format from the magic bytes, if it is one we decode.
pub fn sniff(bytes: &[u8]) -> Result<ImageFormat, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    match image::guess_format(bytes) {
        Ok(f) if SUPPORTED.contains(&f) => Ok(f),
        Ok(f) => Err(PreprocessError::UnsupportedFormat(format!(" ({})", format_name(f)))),
        Err(_) => Err(PreprocessError::UnsupportedFormat(String::new())),
    }
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Ico => "ICO",
        ImageFormat::Avif => "AVIF",
        ImageFormat::Hdr => "HDR",
        ImageFormat::OpenExr => "OpenEXR",
        ImageFormat::Pnm => "PNM",
        ImageFormat::Tga => "TGA",
        ImageFormat::Qoi => "QOI",
        ImageFormat::Dds => "DDS",
        ImageFormat::Farbfeld => "farbfeld",
        _ => "unknown",
    }
}

/// A JPEG whose last scan is not followed by an EOI marker was cut short. (0xFF 0xD9 cannot occur
/// inside entropy-coded data, which stuffs every 0xFF with 0x00.)
fn jpeg_is_truncated(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let last_eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    match (last_sos, last_eoi) {
        (Some(sos), Some(eoi)) => eoi < sos,
        (Some(_), None) => true,
        (None, _) => false, // no scan at all: the decoder reports it
    }
}

/// Decode an image: sniff the format, read only the header to check the size against
/// `max_pixels`, then decode and apply the EXIF orientation.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, PreprocessError> {
    let format = sniff(bytes)?;
    let name = format_name(format);
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    let mut limits = image::Limits::default();
    // 16-bit RGBA is 8 bytes per pixel; leave room for decoder scratch space.
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(limits);
    let map_err = |e: image::ImageError| classify(e, name);
    let mut decoder = reader.into_decoder().map_err(map_err)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > max_pixels {
        return Err(PreprocessError::TooLarge { width, height, pixels, limit: max_pixels });
    }
    if pixels == 0 {
        return Err(PreprocessError::ZeroSized { width, height });
    }
    if format == ImageFormat::Jpeg && jpeg_is_truncated(bytes) {
        return Err(PreprocessError::Truncated { format: name });
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(map_err)?;
    img.apply_orientation(orientation);
    Ok(img)
}

fn classify(e: image::ImageError, name: &'static str) -> PreprocessError {
    use image::ImageError as E;
    match e {
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => PreprocessError::Truncated { format: name },
        E::Unsupported(u) => PreprocessError::UnsupportedFormat(format!(" ({name}: {u})")),
        E::Limits(l) => PreprocessError::Undecodable { format: name, reason: format!("decoder limit exceeded: {l}") },
        other => {
            let reason = other.to_string();
            let lower = reason.to_ascii_lowercase();
            if lower.contains("eof") || lower.contains("end of file") || lower.contains("truncated") || lower.contains("unexpected end") {
                PreprocessError::Truncated { format: name }
            } else {
                PreprocessError::Undecodable { format: name, reason }
            }
        }
    }
}

fn filter(f: ResizeFilter) -> FilterType {
    match f {
        ResizeFilter::Nearest => FilterType::Nearest,
        ResizeFilter::Triangle => FilterType::Triangle,
        ResizeFilter::CatmullRom => FilterType::CatmullRom,
        ResizeFilter::Lanczos3 => FilterType::Lanczos3,
    }
}

/// RGB8 with any alpha composited onto black (`c * a / 255`, rounded).
pub fn to_rgb8_on_black(img: &DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for p in rgba.pixels() {
        let a = u32::from(p[3]);
        for c in &p.0[..3] {
            out.push(((u32::from(*c) * a + 127) / 255) as u8);
        }
    }
    RgbImage::from_raw(w, h, out).unwrap_or_else(|| unreachable!("buffer size matches dimensions"))
}

/// Antialiased triangle-filter resize of interleaved 8-bit pixels, bit-identical to image-rs's
/// `imageops::resize(.., FilterType::Triangle)` (same weights, same f32 operations in the same
/// order: vertical pass into f32, then horizontal pass, clamp and round), but with the weights
/// computed once per row/column and contiguous inner loops: several times faster.
pub fn resize_triangle(src: &[u8], width: u32, height: u32, channels: usize, new_width: u32, new_height: u32) -> Vec<u8> {
    let (w, h, nw, nh) = (width as usize, height as usize, new_width as usize, new_height as usize);
    debug_assert_eq!(src.len(), w * h * channels);
    if (w, h) == (nw, nh) || w == 0 || h == 0 {
        return if (w, h) == (nw, nh) { src.to_vec() } else { vec![0; nw * nh * channels] };
    }
    let stride = w * channels;
    let mut tmp = vec![0f32; stride * nh];
    for (outy, (top, ws)) in triangle_weights(height, new_height).into_iter().enumerate() {
        let out = &mut tmp[outy * stride..(outy + 1) * stride];
        for (k, wk) in ws.iter().enumerate() {
            let row = &src[(top + k) * stride..(top + k + 1) * stride];
            for (o, v) in out.iter_mut().zip(row) {
                *o += f32::from(*v) * wk;
            }
        }
    }
    let mut out = vec![0u8; nw * nh * channels];
    let cols = triangle_weights(width, new_width);
    for y in 0..nh {
        let row = &tmp[y * stride..(y + 1) * stride];
        let dst = &mut out[y * nw * channels..(y + 1) * nw * channels];
        for (outx, (left, ws)) in cols.iter().enumerate() {
            for c in 0..channels {
                let mut t = 0f32;
                for (k, wk) in ws.iter().enumerate() {
                    t += row[(left + k) * channels + c] * wk;
                }
                dst[outx * channels + c] = t.clamp(0.0, 255.0).round() as u8;
            }
        }
    }
    out
}

/// Per output index: the first source index and the normalised triangle weights.
fn triangle_weights(src: u32, dst: u32) -> Vec<(usize, Vec<f32>)> {
    let ratio = src as f32 / dst as f32;
    let sratio = if ratio < 1.0 { 1.0 } else { ratio };
    let support = sratio;
    (0..dst)
        .map(|o| {
            let input = (o as f32 + 0.5) * ratio;
            let left = ((input - support).floor() as i64).clamp(0, i64::from(src) - 1);
            let right = ((input + support).ceil() as i64).clamp(left + 1, i64::from(src));
            let input = input - 0.5;
            let mut ws = Vec::with_capacity((right - left) as usize);
            let mut sum = 0f32;
            for i in left..right {
                let x = (i as f32 - input) / sratio;
                let wt = if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 };
                ws.push(wt);
                sum += wt;
            }
            for wt in ws.iter_mut() {
                *wt /= sum;
            }
            (left as usize, ws)
        })
        .collect()
}

/// The resized RGB8 pixels the model sees (before scaling), for RGB models. This is what the golden
/// fixtures' `pixels_rgb8_base64` holds.
pub fn resize_rgb(img: &DynamicImage, spec: &ModelSpec) -> RgbImage {
    let rgb = to_rgb8_on_black(img);
    if spec.resize_filter == ResizeFilter::Triangle {
        let (w, h) = rgb.dimensions();
        let px = resize_triangle(rgb.as_raw(), w, h, 3, spec.width, spec.height);
        return RgbImage::from_raw(spec.width, spec.height, px).unwrap_or_else(|| unreachable!("buffer size matches dimensions"));
    }
    image::imageops::resize(&rgb, spec.width, spec.height, filter(spec.resize_filter))
}

/// The resized single-channel pixels for grayscale models: luma of the composited RGB8 image (with the
/// default coefficients exactly Pillow's `convert("L")`), then resized.
pub fn resize_gray(img: &DynamicImage, spec: &ModelSpec) -> GrayImage {
    let rgb = to_rgb8_on_black(img);
    let [kr, kg, kb] = spec.grayscale_coefficients;
    let (w, h) = rgb.dimensions();
    let luma: Vec<u8> = if [kr, kg, kb] == [0.299, 0.587, 0.114] {
        // Exactly Pillow's convert("L"): ITU-R 601 in 16-bit fixed point.
        rgb.pixels()
            .map(|p| ((19595 * u32::from(p[0]) + 38470 * u32::from(p[1]) + 7471 * u32::from(p[2]) + 32768) >> 16) as u8)
            .collect()
    } else {
        rgb.pixels()
            .map(|p| (kr * f32::from(p[0]) + kg * f32::from(p[1]) + kb * f32::from(p[2])).round().clamp(0.0, 255.0) as u8)
            .collect()
    };
    if spec.resize_filter == ResizeFilter::Triangle {
        let px = resize_triangle(&luma, w, h, 1, spec.width, spec.height);
        return GrayImage::from_raw(spec.width, spec.height, px).unwrap_or_else(|| unreachable!("buffer size matches dimensions"));
    }
    let gray = GrayImage::from_raw(w, h, luma).unwrap_or_else(|| unreachable!("buffer size matches dimensions"));
    image::imageops::resize(&gray, spec.width, spec.height, filter(spec.resize_filter))
}

/// Write the model input for one decoded image into `out` (length `spec.tensor_len()`), in the
/// model's layout: `(pixel * scale - mean[c]) / std[c]`.
pub fn fill_tensor(img: &DynamicImage, spec: &ModelSpec, out: &mut [f32]) {
    debug_assert_eq!(out.len(), spec.tensor_len());
    let (h, w) = (spec.height as usize, spec.width as usize);
    match spec.color_mode {
        ColorMode::Rgb => {
            let px = resize_rgb(img, spec);
            write_planes(px.as_raw(), 3, h * w, spec, out);
        }
        ColorMode::Grayscale => {
            let px = resize_gray(img, spec);
            write_planes(px.as_raw(), 1, h * w, spec, out);
        }
    }
}

fn write_planes(raw: &[u8], channels: usize, plane: usize, spec: &ModelSpec, out: &mut [f32]) {
    // Precompute a lookup table per channel: 256 values each.
    let mut lut = vec![0f32; 256 * channels];
    for c in 0..channels {
        for v in 0..256 {
            lut[c * 256 + v] = (v as f32 * spec.scale - spec.mean[c]) / spec.std[c];
        }
    }
    match spec.layout {
        Layout::Nhwc => {
            for (i, v) in raw.iter().enumerate() {
                out[i] = lut[(i % channels) * 256 + *v as usize];
            }
        }
        Layout::Nchw => {
            for (i, px) in raw.chunks_exact(channels).enumerate() {
                for c in 0..channels {
                    out[c * plane + i] = lut[c * 256 + px[c] as usize];
                }
            }
        }
    }
}

/// Decode and preprocess in one step.
pub fn preprocess(bytes: &[u8], spec: &ModelSpec, max_pixels: u64, out: &mut [f32]) -> Result<(), PreprocessError> {
    let img = decode(bytes, max_pixels)?;
    fill_tensor(&img, spec, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OutputKind;
    use image::{Rgba, RgbaImage};

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
        assert_eq!(sniff(&encode(&DynamicImage::ImageRgb8(img.to_rgb8()), ImageFormat::Jpeg)).unwrap(), ImageFormat::Jpeg);
        assert_eq!(sniff(b""), Err(PreprocessError::Empty));
        assert!(matches!(sniff(b"hello world, not an image"), Err(PreprocessError::UnsupportedFormat(_))));
        // TIFF magic: recognised but not served.
        assert!(matches!(sniff(b"II*\0\x08\0\0\0rest"), Err(PreprocessError::UnsupportedFormat(s)) if s.contains("TIFF")));
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
        for (w, h, nw, nh) in [(128, 128, 64, 64), (128, 128, 32, 32), (100, 37, 64, 64), (3, 5, 64, 64), (640, 480, 64, 64), (64, 64, 64, 64), (1, 1, 64, 64), (200, 1, 32, 32)] {
            let rgb: Vec<u8> = (0..w * h * 3).map(|_| next()).collect();
            let img = RgbImage::from_raw(w, h, rgb.clone()).unwrap();
            let want = image::imageops::resize(&img, nw, nh, FilterType::Triangle).into_raw();
            assert_eq!(resize_triangle(&rgb, w, h, 3, nw, nh), want, "rgb {w}x{h} -> {nw}x{nh}");
            let gray: Vec<u8> = (0..w * h).map(|_| next()).collect();
            let img = GrayImage::from_raw(w, h, gray.clone()).unwrap();
            let want = image::imageops::resize(&img, nw, nh, FilterType::Triangle).into_raw();
            assert_eq!(resize_triangle(&gray, w, h, 1, nw, nh), want, "gray {w}x{h} -> {nw}x{nh}");
        }
    }

    #[test]
    fn mutated_images_never_panic() {
        // Deterministic corruption of valid files in every format: each must decode or fail with an
        // error, never panic (the workers also catch panics, but a panic is a bug).
        let img = DynamicImage::ImageRgba8(RgbaImage::from_fn(48, 40, |x, y| Rgba([x as u8 * 5, y as u8 * 6, (x ^ y) as u8, 200])));
        let mut seed = 0x9E37_79B9u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for f in [ImageFormat::Png, ImageFormat::Gif, ImageFormat::Bmp, ImageFormat::WebP, ImageFormat::Jpeg] {
            let src = if f == ImageFormat::Jpeg { DynamicImage::ImageRgb8(img.to_rgb8()) } else { img.clone() };
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
        for (kind, data) in [(&b"IDAT"[..], &[0x78u8, 0x9c, 0x63, 0, 0, 0, 1, 0, 1][..]), (&b"IEND"[..], &[][..])] {
            let mut chunk = kind.to_vec();
            chunk.extend_from_slice(data);
            png.extend_from_slice(&(data.len() as u32).to_be_bytes());
            png.extend_from_slice(&chunk);
            png.extend_from_slice(&crc32(&chunk).to_be_bytes());
        }
        match decode(&png, 40_000_000) {
            Err(PreprocessError::TooLarge { width: 100_000, height: 100_000, .. }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for b in data {
            crc ^= u32::from(*b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    #[test]
    fn truncated_and_garbage_are_rejected() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 4, y as u8 * 4, 7])));
        for f in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::Gif, ImageFormat::Bmp] {
            let bytes = encode(&img, f);
            assert!(decode(&bytes, 1 << 30).is_ok(), "{f:?} should decode");
            let cut = &bytes[..bytes.len() / 2];
            let err = decode(cut, 1 << 30).expect_err(&format!("truncated {f:?} must fail"));
            assert!(matches!(err, PreprocessError::Truncated { .. } | PreprocessError::Undecodable { .. }), "{f:?}: {err:?}");
        }
        let mut bad = encode(&img, ImageFormat::Png);
        for b in bad.iter_mut().skip(60) {
            *b = 0x5A;
        }
        assert!(decode(&bad, 1 << 30).is_err());
    }

    #[test]
    fn sixteen_bit_grayscale_and_palette_png() {
        let g16 = DynamicImage::ImageLuma16(image::ImageBuffer::from_pixel(5, 5, image::Luma([65535u16])));
        let img = decode(&encode(&g16, ImageFormat::Png), 1 << 20).unwrap();
        assert_eq!(to_rgb8_on_black(&img).get_pixel(0, 0).0, [255, 255, 255]);
        // Palette PNG via the png encoder directly.
        let mut buf = Vec::new();
        {
            let enc = png_palette_encoder(&mut buf);
            enc.write_header().unwrap().write_image_data(&[0, 1, 1, 0]).unwrap();
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
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(16, 8, |x, _| if x < 8 { image::Rgb([255, 0, 0]) } else { image::Rgb([0, 0, 255]) }));
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
        assert!(rgb.get_pixel(4, 2)[0] > 200, "top should be red: {:?}", rgb.get_pixel(4, 2));
        assert!(rgb.get_pixel(4, 13)[2] > 200, "bottom should be blue: {:?}", rgb.get_pixel(4, 13));
    }
}
