//! Fast path for JPEG: libjpeg-turbo's decoder (SIMD; the `mozjpeg` crate builds it from source and
//! links it statically) for the common files: YCbCr, grayscale or RGB, baseline or progressive. It
//! decodes these about twice as fast as the pure-Rust decoder, with the same defaults as Pillow
//! (accurate integer IDCT, fancy upsampling), which is what the model's golden fixtures were made with.
//!
//! Anything else (CMYK/YCCK, arithmetic coding, a libjpeg error, or even a warning such as corrupt
//! entropy data) answers [`Fast::Fallback`], and the caller decodes the file with image-rs instead, which then
//! decides between pixels and a precise error. libjpeg reports errors by unwinding (the crate's
//! design), so every call here runs under `catch_unwind`.

use std::cell::Cell;
use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};
use mozjpeg::{ColorSpace, Decompress, Marker};
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error};

use super::budget::{DecodeLimits, RowSink, Target, scaled};
use super::error::PreprocessError;

thread_local! {
    /// Warnings libjpeg emitted during the current decode on this thread.
    static WARNINGS: Cell<u32> = const { Cell::new(0) };
}

extern "C-unwind" fn count_warning(_cinfo: &mut jpeg_common_struct, level: c_int) {
    if level < 0 {
        WARNINGS.with(|w| w.set(w.get() + 1));
    }
}

extern "C-unwind" fn unwind_on_error(cinfo: &mut jpeg_common_struct) {
    // SAFETY: libjpeg calls error_exit with the decompressor it belongs to, whose `err` points to
    // the manager built in `error_manager`.
    let code = unsafe { cinfo.err.as_ref().map_or(-1, |e| e.msg_code) };
    std::panic::resume_unwind(Box::new(format!("libjpeg error {code}")));
}

fn error_manager() -> jpeg_error_mgr {
    // SAFETY: jpeg_std_error fully initialises the (plain C) struct it is given.
    let mut err: jpeg_error_mgr = unsafe { std::mem::zeroed() };
    unsafe { jpeg_std_error(&mut err) };
    err.error_exit = Some(unwind_on_error);
    err.emit_message = Some(count_warning);
    err
}

/// Files with more scan markers than this go to image-rs, whose decoder refuses progressive JPEGs
/// with more than 100 scans: every scan is a pass over all coefficients, so a small file made of
/// thousands of scans would keep a worker busy for minutes. libjpeg has no such cap.
pub const MAX_SCANS: usize = 100;

/// A JPEG whose last scan is not followed by an EOI marker was cut short. (0xFF 0xD9 cannot occur
/// inside entropy-coded data, which stuffs every 0xFF with 0x00.)
pub fn is_truncated(bytes: &[u8]) -> bool {
    // Searched from the end: the EOI of a whole file is in its last bytes, so this reads almost
    // nothing for a good file (it runs on every upload).
    let has_scan = |b: &[u8]| b.windows(2).any(|w| w == [0xFF, 0xDA]);
    match bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]) {
        Some(eoi) => has_scan(&bytes[eoi + 2..]), // a scan after the last EOI
        None => has_scan(bytes), // no EOI: truncated if there is a scan at all (else the decoder reports it)
    }
}

/// What the fast path found.
pub enum Fast {
    /// Decoded RGB8 pixels with the EXIF orientation applied.
    Image(DynamicImage),
    /// Not a file for the fast path: decode it the general way.
    Fallback,
}

/// Decode `bytes` (already sniffed as JPEG) into RGB8, reusing `buf`'s allocation, scaled in the
/// DCT as [`Target::jpeg_scale`] says for `target` (full size unless the model asks for `draft`).
/// The size check against `limits.max_pixels` uses only the header (the stored size); a truncated
/// file is refused before any decoding, and one whose pixels would take more than
/// `limits.max_bytes` goes to the general decoder (which refuses it with the memory it needs). `checked`: the orientation, when the caller parsed the markers
/// (`super::markers`) and so already knows the file has at most [`MAX_SCANS`] scans and is not
/// truncated (neither is looked for again, and libjpeg keeps no Exif segment).
pub fn decode(
    bytes: &[u8],
    limits: DecodeLimits,
    target: &Target,
    buf: Vec<u8>,
    checked: Option<Orientation>,
) -> Result<Fast, PreprocessError> {
    if checked.is_none()
        && memchr::memmem::find_iter(bytes, &[0xFF, 0xDA])
            .nth(MAX_SCANS)
            .is_some()
    {
        return Ok(Fast::Fallback);
    }
    WARNINGS.with(|w| w.set(0));
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<Fast, PreprocessError> {
        let exif: &[Marker] = if checked.is_some() {
            &[]
        } else {
            &[Marker::APP(1)]
        };
        let Ok(mut header) = Decompress::with_err(error_manager())
            .with_markers(exif)
            .from_mem(bytes)
        else {
            return Ok(Fast::Fallback);
        };
        let (width, height) = (header.width() as u32, header.height() as u32);
        PreprocessError::check_size(width, height, limits.max_pixels)?;
        if checked.is_none() && is_truncated(bytes) {
            return Err(PreprocessError::Truncated { format: "JPEG" });
        }
        let num = target.jpeg_scale((width, height), false);
        let (width, height) = (scaled(width, num), scaled(height, num));
        if u64::from(width) * u64::from(height) * 3 > limits.max_bytes {
            return Ok(Fast::Fallback);
        }
        if !matches!(
            header.color_space(),
            ColorSpace::JCS_YCbCr | ColorSpace::JCS_GRAYSCALE | ColorSpace::JCS_RGB
        ) {
            return Ok(Fast::Fallback);
        }
        let orientation = checked.unwrap_or_else(|| {
            header
                .markers()
                .filter_map(|m| m.data.strip_prefix(b"Exif\0\0"))
                .find_map(Orientation::from_exif_chunk)
                .unwrap_or(Orientation::NoTransforms)
        });
        if num != 8 {
            header.scale(num);
        }
        let Ok(mut started) = header.rgb() else {
            return Ok(Fast::Fallback);
        };
        if (started.width(), started.height()) != (width as usize, height as usize) {
            return Ok(Fast::Fallback); // not the size the memory check and the model expect
        }
        let mut buf = buf;
        buf.resize(width as usize * height as usize * 3, 0); // every byte is overwritten
        if started.read_scanlines_into::<u8>(&mut buf).is_err() || started.finish().is_err() {
            return Ok(Fast::Fallback);
        }
        let Some(rgb) = RgbImage::from_raw(width, height, buf) else {
            return Ok(Fast::Fallback);
        };
        let mut img = DynamicImage::ImageRgb8(rgb);
        img.apply_orientation(orientation);
        Ok(Fast::Image(img))
    }));
    match outcome {
        Ok(Ok(Fast::Image(_))) if WARNINGS.with(Cell::get) > 0 => Ok(Fast::Fallback),
        Ok(result) => result,
        Err(_) => Ok(Fast::Fallback), // a libjpeg error
    }
}

/// Decode `bytes` row by row into `sink`, scaled by `scale / 8` in the DCT (libjpeg's scaled
/// decoding, `scale` in 1..=8: 1/8 of the size costs a fraction of the work and of the memory of a
/// full decode). For files the caller found too large to decode whole; any corrupt data is an
/// error here (there is no whole-image fallback within the memory budget).
pub fn stream(
    bytes: &[u8],
    scale: u8,
    orientation: Orientation,
    sink: &mut dyn RowSink,
) -> Result<(), PreprocessError> {
    let corrupt = |reason: String| PreprocessError::Undecodable {
        format: "JPEG",
        reason,
    };
    WARNINGS.with(|w| w.set(0));
    let outcome = catch_unwind(AssertUnwindSafe(|| -> Result<(), PreprocessError> {
        let mut header = Decompress::with_err(error_manager())
            .from_mem(bytes)
            .map_err(|e| corrupt(e.to_string()))?;
        if !matches!(
            header.color_space(),
            ColorSpace::JCS_YCbCr | ColorSpace::JCS_GRAYSCALE | ColorSpace::JCS_RGB
        ) {
            return Err(corrupt(
                "unsupported colour space for a file this large".into(),
            ));
        }
        header.scale(scale.clamp(1, 8));
        let mut started = header.rgb().map_err(|e| corrupt(e.to_string()))?;
        let (width, height) = (started.width(), started.height());
        sink.start(width as u32, height as u32, orientation);
        let mut row = vec![0u8; width * 3];
        for _ in 0..height {
            started
                .read_scanlines_into::<u8>(&mut row)
                .map_err(|_| PreprocessError::Truncated { format: "JPEG" })?;
            sink.row(&row);
        }
        started.finish().map_err(|e| corrupt(e.to_string()))
    }));
    match outcome {
        Ok(Ok(())) if WARNINGS.with(Cell::get) > 0 => {
            Err(corrupt("corrupt entropy-coded data".into()))
        }
        Ok(result) => result,
        Err(e) => Err(corrupt(
            e.downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "libjpeg error".into()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GenericImageView, ImageFormat};

    fn encode_jpeg(img: &DynamicImage) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, ImageFormat::Jpeg).unwrap();
        buf.into_inner()
    }

    /// A model input of this size, JPEGs decoded at full size or `draft`.
    fn target(width: u32, height: u32, jpeg_draft: bool) -> Target {
        Target {
            width,
            height,
            channels: 3,
            generic_resize: false,
            reframe: false,
            jpeg_draft,
        }
    }

    fn fast(bytes: &[u8]) -> Result<Fast, PreprocessError> {
        decode(
            bytes,
            DecodeLimits::UNLIMITED,
            &target(1, 1, false),
            Vec::new(),
            None,
        )
    }

    fn gradient() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(40, 24, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 10) as u8, ((x + y) * 3) as u8])
        }))
    }

    #[test]
    fn decodes_rgb_and_grayscale_close_to_the_pure_rust_decoder() {
        for img in [gradient(), DynamicImage::ImageLuma8(gradient().to_luma8())] {
            let jpeg = encode_jpeg(&img);
            let Ok(Fast::Image(ours)) = fast(&jpeg) else {
                panic!("the fast path must take a plain JPEG")
            };
            let reference = image::load_from_memory_with_format(&jpeg, ImageFormat::Jpeg)
                .unwrap()
                .to_rgb8();
            assert_eq!(ours.dimensions(), reference.dimensions());
            let ours = ours.as_rgb8().expect("RGB8 output");
            let max = ours
                .as_raw()
                .iter()
                .zip(reference.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(max <= 3, "fast path and image-rs differ by {max}");
            if img.color() == image::ColorType::L8 {
                assert!(
                    ours.pixels().all(|p| p[0] == p[1] && p[1] == p[2]),
                    "grayscale is expanded to R=G=B"
                );
            }
        }
    }

    #[test]
    fn cmyk_falls_back_to_the_general_decoder() {
        let mut comp = mozjpeg::Compress::new(ColorSpace::JCS_CMYK);
        comp.set_size(8, 8);
        let mut started = comp.start_compress(Vec::new()).unwrap();
        started.write_scanlines(&[40u8; 8 * 8 * 4]).unwrap();
        let cmyk = started.finish().unwrap();
        assert!(matches!(fast(&cmyk), Ok(Fast::Fallback)));
    }

    #[test]
    fn size_checks_come_from_the_header_and_damage_falls_back() {
        let jpeg = encode_jpeg(&gradient());
        match decode(
            &jpeg,
            DecodeLimits::pixels(100),
            &target(1, 1, false),
            Vec::new(),
            None,
        ) {
            Err(PreprocessError::TooLarge {
                width: 40,
                height: 24,
                pixels: 960,
                limit: 100,
            }) => {}
            _ => panic!("expected TooLarge from the header"),
        }
        assert!(
            matches!(
                fast(&jpeg[..jpeg.len() - 2]),
                Err(PreprocessError::Truncated { .. })
            ),
            "EOI cut off"
        );
        // Garbage entropy-coded data: libjpeg warns (or fails); never an image from the fast path.
        let sos = jpeg.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
        let mut bad = jpeg.clone();
        for b in &mut bad[sos + 20..jpeg.len() - 2] {
            *b = 0xFF;
        }
        assert!(matches!(fast(&bad), Ok(Fast::Fallback)));
        assert!(
            matches!(fast(&jpeg[..sos]), Ok(Fast::Fallback)),
            "no scan at all"
        );
    }
}
