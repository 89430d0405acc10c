//! Image bytes -> pixels: format sniffing, a header-only size check (before any pixel is
//! decoded), decoding (JPEG through the libjpeg-turbo fast path when it can), EXIF orientation.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::error::PreprocessError;
use super::jpeg;

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

/// Decode an image: sniff the format, read only the header to check the size against
/// `max_pixels`, then decode and apply the EXIF orientation.
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage, PreprocessError> {
    decode_reusing(bytes, max_pixels, Vec::new())
}

/// [`decode`], with `buf`'s allocation reused for the pixels where the decoder allows it.
pub fn decode_reusing(
    bytes: &[u8],
    max_pixels: u64,
    buf: Vec<u8>,
) -> Result<DynamicImage, PreprocessError> {
    let format = sniff(bytes)?;
    if format == ImageFormat::Jpeg
        && let jpeg::Fast::Image(img) = jpeg::decode(bytes, max_pixels, buf)?
    {
        return Ok(img);
    }
    decode_general(bytes, format, max_pixels)
}

/// Any supported format through image-rs.
fn decode_general(
    bytes: &[u8],
    format: ImageFormat,
    max_pixels: u64,
) -> Result<DynamicImage, PreprocessError> {
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
    PreprocessError::check_size(width, height, max_pixels)?;
    if format == ImageFormat::Jpeg && jpeg::is_truncated(bytes) {
        return Err(PreprocessError::Truncated { format: name });
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
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
            jpeg::decode(&marked, u64::MAX, Vec::new()),
            Ok(jpeg::Fast::Fallback)
        ));
        let img = decode(&marked, u64::MAX).expect("image-rs decodes it (it counts real scans)");
        assert_eq!(img.dimensions(), (40, 24));
    }
}
