//! Image bytes -> pixels: format sniffing, a header-only size check (before any pixel is
//! decoded), decoding (JPEG through the libjpeg-turbo fast path when it can), EXIF orientation.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::budget::{DecodeLimits, RowSink, Target, scaled};
use super::error::PreprocessError;
use super::frame::max_side;
use super::markers::{self, JpegLayout, Process};
use super::resize::{StreamResizer, TriangleResizer};
use super::{jpeg, png_rows};

/// Formats the server decodes.
pub const SUPPORTED: [ImageFormat; 5] = [
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
    ImageFormat::Bmp,
];

/// Format from the magic bytes, if it is one we decode.
pub fn sniff(bytes: &[u8]) -> Result<ImageFormat, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    match image::guess_format(bytes) {
        Ok(f) if SUPPORTED.contains(&f) => Ok(f),
        Ok(f) => Err(PreprocessError::UnsupportedFormat(format!(
            " ({})",
            format_name(f)
        ))),
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

/// What [`decode_bounded`] made of an image.
pub enum Decoded {
    /// The whole image.
    Image(DynamicImage),
    /// The image was too large to hold whole within the memory budget: it went row by row into
    /// the sink, which has the result.
    Streamed,
}

/// Decoders' own buffers and small allocations (Huffman tables, zlib window, row buffers of usual
/// widths), on top of what the formulas below count.
const SLACK: u64 = 1 << 20;

/// Decode an image without a memory limit: sniff the format, read only the header to check the
/// size against `max_pixels`, then decode and apply the EXIF orientation.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, PreprocessError> {
    decode_whole(bytes, max_pixels, &full())
}

/// A target that asks for a full-size decode.
fn full() -> Target {
    Target {
        width: 1,
        height: 1,
        channels: 3,
        generic_resize: false,
        reframe: false,
        jpeg_draft: false,
    }
}

/// Like [`decode`], with JPEGs decoded as `target` says (DCT-scaled for a `draft` model).
pub fn decode_whole(
    bytes: &[u8],
    max_pixels: u64,
    target: &Target,
) -> Result<DynamicImage, PreprocessError> {
    match decode_bounded(
        bytes,
        DecodeLimits::pixels(max_pixels),
        target,
        Vec::new(),
        None,
    )? {
        Decoded::Image(img) => Ok(img),
        // Without a memory limit every image is decoded whole.
        Decoded::Streamed => Err(PreprocessError::Undecodable {
            format: "uploaded",
            reason: "it was decoded row by row".into(),
        }),
    }
}

/// Decode an image within `limits`, reusing `buf`'s allocation for the pixels where the decoder
/// allows it. From the header alone, before any pixel is decoded: the size check against
/// `limits.max_pixels`, a JPEG's truncation checks, and the memory the image needs (decoder,
/// pixels, conversions, the resize to `target`). Within `limits.max_bytes` the image is decoded
/// whole; above, a non-interlaced PNG or a Huffman-coded JPEG goes row by row into `sink` (a JPEG
/// scaled down in the DCT first), and anything else is refused with the memory it would need.
pub fn decode_bounded(
    bytes: &[u8],
    limits: DecodeLimits,
    target: &Target,
    buf: Vec<u8>,
    sink: Option<&mut dyn RowSink>,
) -> Result<Decoded, PreprocessError> {
    match sniff(bytes)? {
        ImageFormat::Jpeg => decode_jpeg(bytes, limits, target, buf, sink),
        ImageFormat::Png => decode_png(bytes, limits, target, sink),
        format => decode_general(bytes, format, limits, target, None).map(Decoded::Image),
    }
}

/// The decoded pixels of a whole image: bytes per pixel and whether they have alpha.
#[derive(Debug, Clone, Copy)]
struct Pixels {
    bytes: u64,
    alpha: bool,
}

const RGB8: Pixels = Pixels {
    bytes: 3,
    alpha: false,
};

/// Whether an orientation swaps width and height (`apply_orientation` then makes a rotated copy).
pub fn swaps_axes(o: Orientation) -> bool {
    matches!(
        o,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

/// Bytes a whole decoded `w` x `h` image takes until it is resized: its pixels, a rotated copy
/// (orientations of 90 and 270 degrees), the RGB8 conversion (unless it is RGB8: one copy, and a
/// second with alpha), the luma plane (grayscale models), the square a `content_square` model cuts
/// and the resize (a copy of the source for filters other than the triangle filter).
fn whole_bytes(w: u32, h: u32, px: Pixels, orientation: Orientation, t: &Target) -> u64 {
    let n = u64::from(w) * u64::from(h);
    let decoded = n.saturating_mul(px.bytes);
    let rotated = if swaps_axes(orientation) { decoded } else { 0 };
    let rgb8 = match (px.bytes, px.alpha) {
        (3, false) => 0,
        (_, false) => 3 * n,
        (_, true) => 7 * n,
    };
    let luma = if t.channels == 1 { n } else { 0 };
    let copy = if t.generic_resize {
        n * t.channels as u64
    } else {
        0
    };
    let to = (t.width, t.height);
    let mut resize = TriangleResizer::bytes_needed((w, h), t.channels, to);
    let mut framed = 0;
    if t.reframe {
        // the square is resized instead of the picture, when a body is found
        let side = max_side(w, h);
        framed = u64::from(side) * u64::from(side) * t.channels as u64;
        resize = resize.max(TriangleResizer::bytes_needed((side, side), t.channels, to));
    }
    [decoded, rotated, rgb8, luma, copy, framed, resize, SLACK]
        .into_iter()
        .fold(0u64, u64::saturating_add)
}

/// Bytes of a row-by-row decode whose rows are `w` x `h` RGB8 after the decoder, whose own buffers
/// take `decoder` bytes: the row, its luma (grayscale models), the [`StreamResizer`] and, for a
/// re-framing model, the reduced picture's re-framing and resize (as a whole picture's).
fn stream_bytes(w: u32, h: u32, decoder: u64, orientation: Orientation, t: &Target) -> u64 {
    let dst = t.stream_size((w, h), swaps_axes(orientation));
    let row = u64::from(w) * (3 + u64::from(t.channels == 1));
    let reduced = if t.reframe {
        whole_bytes(dst.0, dst.1, RGB8, Orientation::NoTransforms, t)
    } else {
        0
    };
    [
        decoder,
        row,
        StreamResizer::bytes_needed((w, h), t.stream_channels(), dst),
        reduced,
        SLACK,
    ]
    .into_iter()
    .fold(0u64, u64::saturating_add)
}

fn over_budget(
    (width, height): (u32, u32),
    kind: &'static str,
    needed: u64,
    limits: DecodeLimits,
    hint: &'static str,
) -> PreprocessError {
    PreprocessError::OverBudget {
        width,
        height,
        kind,
        needed,
        budget: limits.max_bytes,
        hint,
    }
}

fn decode_jpeg(
    bytes: &[u8],
    limits: DecodeLimits,
    target: &Target,
    buf: Vec<u8>,
    sink: Option<&mut dyn RowSink>,
) -> Result<Decoded, PreprocessError> {
    // Malformed markers: the decoders say what is wrong (the size check still comes first).
    let Some(layout) = markers::parse(bytes) else {
        return decode_jpeg_whole(bytes, limits, target, buf, None);
    };
    let (width, height) = (layout.width, layout.height);
    PreprocessError::check_size(width, height, limits.max_pixels)?;
    if jpeg::is_truncated(bytes) {
        return Err(PreprocessError::Truncated { format: "JPEG" });
    }
    if let Some(short) = layout.short_scan() {
        return Err(PreprocessError::ShortData {
            format: "JPEG",
            width,
            height,
            data_bytes: short.data_bytes,
            min_bytes: short.min_bytes,
        });
    }
    let scale = target.jpeg_scale((width, height), false);
    let (w, h) = (scaled(width, scale), scaled(height, scale));
    let whole = layout
        .coefficient_bytes()
        .saturating_add(jpeg_rows_bytes(w, &layout))
        .saturating_add(whole_bytes(w, h, RGB8, layout.orientation, target));
    if whole <= limits.max_bytes {
        return decode_jpeg_whole(bytes, limits, target, buf, Some(&layout));
    }
    stream_jpeg(bytes, &layout, limits, target, sink, whole)
}

/// libjpeg's row buffers for output rows `w` pixels wide (the MCU rows of every component, with
/// context rows for upsampling), generously.
fn jpeg_rows_bytes(w: u32, layout: &JpegLayout) -> u64 {
    u64::from(w) * layout.components.len() as u64 * 64
}

/// A JPEG decoded whole: libjpeg-turbo when it can (DCT-scaled as [`Target::jpeg_scale`] says),
/// image-rs otherwise. image-rs has no scaled IDCT: the files it takes (CMYK, arithmetic coding,
/// damaged data) are decoded at full size even for a `draft` model, and the resize then makes
/// pixels close to, not equal to, Pillow's.
fn decode_jpeg_whole(
    bytes: &[u8],
    limits: DecodeLimits,
    target: &Target,
    buf: Vec<u8>,
    layout: Option<&JpegLayout>,
) -> Result<Decoded, PreprocessError> {
    // Markers parsed: truncation checked, scans counted (image-rs caps them), orientation read.
    let checked = layout.map(|l| l.orientation);
    let fast = match layout {
        Some(l) if l.scans.len() > jpeg::MAX_SCANS => jpeg::Fast::Fallback,
        _ => jpeg::decode(bytes, limits, target, buf, checked)?,
    };
    if let jpeg::Fast::Image(img) = fast {
        return Ok(Decoded::Image(img));
    }
    // image-rs keeps a progressive file's coefficients too; without the layout, assume 2 bytes
    // per sample of 3 components.
    let coefficients = layout.map(JpegLayout::coefficient_bytes);
    decode_general(bytes, ImageFormat::Jpeg, limits, target, coefficients).map(Decoded::Image)
}

/// A JPEG too large to decode whole: row by row, scaled in the DCT ([`Target::jpeg_scale`]), or refused
/// when even that does not fit (the coefficients of a progressive file are kept whatever the
/// scale).
fn stream_jpeg(
    bytes: &[u8],
    layout: &JpegLayout,
    limits: DecodeLimits,
    target: &Target,
    sink: Option<&mut dyn RowSink>,
    whole: u64,
) -> Result<Decoded, PreprocessError> {
    let size = (layout.width, layout.height);
    let (kind, hint) = match layout.process {
        Process::Progressive => (
            "progressive JPEG",
            " (a baseline JPEG of the same size needs far less)",
        ),
        _ if layout.buffers_coefficients() => ("multi-scan JPEG", ""),
        _ => ("JPEG", ""),
    };
    let streamable = layout.process != Process::Other
        && layout.components.len() != 4
        && layout.scans.len() <= jpeg::MAX_SCANS;
    let Some(sink) = sink.filter(|_| streamable) else {
        return Err(over_budget(size, kind, whole, limits, hint));
    };
    let num = target.jpeg_scale(size, true);
    let (w, h) = (scaled(size.0, num), scaled(size.1, num));
    let decoder = layout
        .coefficient_bytes()
        .saturating_add(jpeg_rows_bytes(w, layout));
    let needed = stream_bytes(w, h, decoder, layout.orientation, target);
    if needed > limits.max_bytes {
        return Err(over_budget(size, kind, needed, limits, hint));
    }
    jpeg::stream(bytes, num, layout.orientation, sink)?;
    Ok(Decoded::Streamed)
}

fn decode_png(
    bytes: &[u8],
    limits: DecodeLimits,
    target: &Target,
    sink: Option<&mut dyn RowSink>,
) -> Result<Decoded, PreprocessError> {
    // An unreadable header: image-rs says what is wrong.
    let Ok(png) = png_rows::open(bytes, limits.max_bytes) else {
        return decode_general(bytes, ImageFormat::Png, limits, target, None).map(Decoded::Image);
    };
    let (width, height) = png.size();
    PreprocessError::check_size(width, height, limits.max_pixels)?;
    let (bytes_pp, alpha) = png.pixel_layout();
    let px = Pixels {
        bytes: bytes_pp,
        alpha,
    };
    let orientation = png.orientation();
    let whole = whole_bytes(width, height, px, orientation, target).saturating_add(general_extra(
        ImageFormat::Png,
        (width, height),
        px,
        None,
    ));
    if whole <= limits.max_bytes {
        drop(png);
        return decode_general(bytes, ImageFormat::Png, limits, target, None).map(Decoded::Image);
    }
    if png.interlaced() {
        let hint = " (or a non-interlaced PNG, which is decoded row by row)";
        return Err(over_budget(
            (width, height),
            "interlaced PNG",
            whole,
            limits,
            hint,
        ));
    }
    let decoder = 4 * png.row_bytes();
    let needed = stream_bytes(width, height, decoder, orientation, target);
    let Some(sink) = sink.filter(|_| needed <= limits.max_bytes) else {
        return Err(over_budget(
            (width, height),
            "PNG",
            needed.min(whole),
            limits,
            "",
        ));
    };
    png.stream(sink, orientation).map_err(png_error)?;
    Ok(Decoded::Streamed)
}

fn png_error(e: png::DecodingError) -> PreprocessError {
    match e {
        png::DecodingError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            PreprocessError::Truncated { format: "PNG" }
        }
        other => classify(
            image::ImageError::Decoding(image::error::DecodingError::new(
                ImageFormat::Png.into(),
                other,
            )),
            "PNG",
        ),
    }
}

/// A decoder's own memory beyond the decoded pixels of a `w` x `h` image: a PNG's row buffers, a
/// GIF's canvas and frame or a WebP's intermediate planes (as much as the pixels again), a JPEG's
/// coefficients (`jpeg_coefficients`, from its layout; when unknown, 2 bytes for each of 3 samples
/// per pixel, as for a progressive file).
fn general_extra(
    format: ImageFormat,
    (w, h): (u32, u32),
    px: Pixels,
    jpeg_coefficients: Option<u64>,
) -> u64 {
    let n = u64::from(w) * u64::from(h);
    match format {
        ImageFormat::Png => 4 * u64::from(w) * px.bytes,
        ImageFormat::Jpeg => jpeg_coefficients.unwrap_or(6 * n),
        ImageFormat::Gif | ImageFormat::WebP => n.saturating_mul(px.bytes),
        _ => 0,
    }
}

/// Any supported format through image-rs, within `limits` (`jpeg_coefficients`: see
/// [`general_extra`]).
fn decode_general(
    bytes: &[u8],
    format: ImageFormat,
    limits: DecodeLimits,
    target: &Target,
    jpeg_coefficients: Option<u64>,
) -> Result<DynamicImage, PreprocessError> {
    let name = format_name(format);
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    let mut image_limits = image::Limits::default();
    // A backstop for the decoders' own allocations: the budget, or (without one) 16-bit RGBA of
    // the largest image with room for decoder scratch space.
    image_limits.max_alloc = Some(
        limits
            .max_bytes
            .min(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20)),
    );
    reader.limits(image_limits);
    let map_err = |e: image::ImageError| classify(e, name);
    let mut decoder = reader.into_decoder().map_err(map_err)?;
    let (width, height) = decoder.dimensions();
    PreprocessError::check_size(width, height, limits.max_pixels)?;
    if format == ImageFormat::Jpeg && jpeg::is_truncated(bytes) {
        return Err(PreprocessError::Truncated { format: name });
    }
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let color = decoder.color_type();
    let px = Pixels {
        bytes: u64::from(color.bytes_per_pixel()),
        alpha: color.has_alpha(),
    };
    let extra = general_extra(format, (width, height), px, jpeg_coefficients);
    let needed = whole_bytes(width, height, px, orientation, target).saturating_add(extra);
    if needed > limits.max_bytes {
        return Err(over_budget((width, height), name, needed, limits, ""));
    }
    let mut img = DynamicImage::from_decoder(decoder).map_err(map_err)?;
    img.apply_orientation(orientation);
    Ok(img)
}

fn classify(e: image::ImageError, name: &'static str) -> PreprocessError {
    use image::ImageError as E;
    match e {
        E::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            PreprocessError::Truncated { format: name }
        }
        E::Unsupported(u) => PreprocessError::UnsupportedFormat(format!(" ({name}: {u})")),
        E::Limits(l) => PreprocessError::Undecodable {
            format: name,
            reason: format!("decoder limit exceeded: {l}"),
        },
        other => {
            let reason = other.to_string();
            let lower = reason.to_ascii_lowercase();
            if lower.contains("eof")
                || lower.contains("end of file")
                || lower.contains("truncated")
                || lower.contains("unexpected end")
            {
                PreprocessError::Truncated { format: name }
            } else {
                PreprocessError::Undecodable {
                    format: name,
                    reason,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use image::{GenericImageView, RgbImage};

    use super::*;

    #[test]
    fn many_scans_go_to_the_decoder_with_a_scan_cap() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 24, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 10) as u8, ((x + y) * 3) as u8])
        }));
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, ImageFormat::Jpeg).unwrap();
        let jpeg = buf.into_inner();
        // A comment segment holding 101 scan markers: still one real scan, but over the cap.
        let mut comment = vec![0xFF, 0xFE];
        let body: Vec<u8> = [0xFF, 0xDA].repeat(jpeg::MAX_SCANS + 1);
        comment.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
        comment.extend_from_slice(&body);
        let mut marked = jpeg[..2].to_vec();
        marked.extend_from_slice(&comment);
        marked.extend_from_slice(&jpeg[2..]);
        assert!(matches!(
            jpeg::decode(&marked, DecodeLimits::UNLIMITED, &full(), Vec::new(), None),
            Ok(jpeg::Fast::Fallback)
        ));
        let img = decode(&marked, u64::MAX).expect("image-rs decodes it (it counts real scans)");
        assert_eq!(img.dimensions(), (40, 24));
    }
}
