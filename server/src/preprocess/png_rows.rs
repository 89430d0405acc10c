//! PNG decoding row by row (the `png` crate, which image-rs uses too): the header without the
//! pixels ([`open`]), then each row converted to RGB8 on black and handed to a [`RowSink`]
//! ([`Png::stream`]), so a large PNG is never held whole. The conversion is image-rs's, value for
//! value: 16-bit samples become `(v + 128) / 257`, gray is expanded to R=G=B, alpha is composited
//! onto black as `(c * a + 127) / 255` after the 8-bit conversion.

use std::io::Cursor;

use image::metadata::Orientation;
use png::{BitDepth, ColorType, DecodingError, Transformations};

use super::budget::RowSink;

/// A PNG whose header was read.
pub struct Png<'a> {
    reader: png::Reader<Cursor<&'a [u8]>>,
}

/// Read the header of `bytes` (with image-rs's transformation: palettes and depths under 8 bits
/// expanded, a tRNS chunk made an alpha channel), allowing the decoder `max_bytes` of memory.
pub fn open(bytes: &[u8], max_bytes: u64) -> Result<Png<'_>, DecodingError> {
    let limits = png::Limits {
        bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
    };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    decoder.set_transformations(Transformations::EXPAND);
    Ok(Png {
        reader: decoder.read_info()?,
    })
}

impl Png<'_> {
    pub fn size(&self) -> (u32, u32) {
        let info = self.reader.info();
        (info.width, info.height)
    }

    pub fn interlaced(&self) -> bool {
        self.reader.info().interlaced
    }

    /// The orientation of the Exif chunk that precedes the pixels, if any (as image-rs reads it).
    pub fn orientation(&self) -> Orientation {
        self.reader
            .info()
            .exif_metadata
            .as_ref()
            .and_then(|exif| Orientation::from_exif_chunk(exif))
            .unwrap_or(Orientation::NoTransforms)
    }

    /// Bytes per pixel of the decoded rows and whether they have alpha.
    pub fn pixel_layout(&self) -> (u64, bool) {
        let (color, depth) = self.reader.output_color_type();
        let bytes = if depth == BitDepth::Sixteen { 2 } else { 1 };
        (
            color.samples() as u64 * bytes,
            matches!(color, ColorType::GrayscaleAlpha | ColorType::Rgba),
        )
    }

    /// Bytes one decoded row takes.
    pub fn row_bytes(&self) -> u64 {
        let (w, _) = self.size();
        u64::from(w) * self.pixel_layout().0
    }

    /// Decode every row (the file must not be interlaced) into `sink` as RGB8 on black; the sink
    /// gets fewer rows than announced when the data ends early.
    pub fn stream(
        mut self,
        sink: &mut dyn RowSink,
        orientation: Orientation,
    ) -> Result<(), DecodingError> {
        let (color, depth) = self.reader.output_color_type();
        let (w, h) = self.size();
        sink.start(w, h, orientation);
        let mut rgb = Vec::with_capacity(w as usize * 3);
        while let Some(row) = self.reader.next_row()? {
            to_rgb8_on_black(row.data(), color, depth == BitDepth::Sixteen, &mut rgb);
            sink.row(&rgb);
        }
        Ok(())
    }
}

/// One decoded row (`color` after expansion: gray, gray+alpha, RGB or RGBA; 8 or 16 bits, big
/// endian) as RGB8 with alpha composited onto black, exactly as image-rs converts a whole image.
fn to_rgb8_on_black(src: &[u8], color: ColorType, sixteen: bool, out: &mut Vec<u8>) {
    out.clear();
    if !sixteen {
        row8(src, color, out);
        return;
    }
    // image-rs's u16 -> u8: (v + 128) / 257, i.e. round(v * 255 / 65535).
    let narrowed: Vec<u8> = src
        .chunks_exact(2)
        .map(|b| ((u32::from(u16::from_be_bytes([b[0], b[1]])) + 128) / 257) as u8)
        .collect();
    row8(&narrowed, color, out);
}

fn row8(src: &[u8], color: ColorType, out: &mut Vec<u8>) {
    let on_black = |c: u8, a: u8| ((u32::from(c) * u32::from(a) + 127) / 255) as u8;
    match color {
        ColorType::Rgb => out.extend_from_slice(src),
        ColorType::Rgba => {
            for p in src.chunks_exact(4) {
                out.extend(p[..3].iter().map(|c| on_black(*c, p[3])));
            }
        }
        ColorType::Grayscale => {
            for l in src {
                out.extend([*l; 3]);
            }
        }
        ColorType::GrayscaleAlpha => {
            for p in src.chunks_exact(2) {
                out.extend([on_black(p[0], p[1]); 3]);
            }
        }
        // EXPAND turns palettes into RGB(A) before any row is returned.
        ColorType::Indexed => {}
    }
}

#[cfg(test)]
mod tests {
    use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, LumaA, Rgb, Rgba};

    use super::*;

    /// Collects the rows.
    #[derive(Default)]
    struct Rows {
        size: (u32, u32),
        data: Vec<u8>,
    }

    impl RowSink for Rows {
        fn start(&mut self, width: u32, height: u32, _: Orientation) {
            self.size = (width, height);
        }
        fn row(&mut self, rgb: &[u8]) {
            assert_eq!(rgb.len(), self.size.0 as usize * 3);
            self.data.extend_from_slice(rgb);
        }
    }

    fn encode(img: &DynamicImage) -> Vec<u8> {
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, ImageFormat::Png).unwrap();
        buf.into_inner()
    }

    fn v(x: u32, y: u32, k: u32) -> u16 {
        ((x * 2654 + y * 40503 + k * 9973) % 65536) as u16
    }

    #[test]
    fn rows_are_what_image_rs_makes_of_the_whole_image() {
        let (w, h) = (37, 11);
        let images = [
            DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, y| Luma([v(x, y, 0) as u8]))),
            DynamicImage::ImageLumaA8(ImageBuffer::from_fn(w, h, |x, y| {
                LumaA([v(x, y, 0) as u8, v(x, y, 1) as u8])
            })),
            DynamicImage::ImageRgb8(ImageBuffer::from_fn(w, h, |x, y| {
                Rgb([v(x, y, 0) as u8, v(x, y, 1) as u8, v(x, y, 2) as u8])
            })),
            DynamicImage::ImageRgba8(ImageBuffer::from_fn(w, h, |x, y| {
                Rgba([0, 1, 2, 3].map(|k| v(x, y, k) as u8))
            })),
            DynamicImage::ImageLuma16(ImageBuffer::from_fn(w, h, |x, y| Luma([v(x, y, 0)]))),
            DynamicImage::ImageLumaA16(ImageBuffer::from_fn(w, h, |x, y| {
                LumaA([v(x, y, 0), v(x, y, 1)])
            })),
            DynamicImage::ImageRgb16(ImageBuffer::from_fn(w, h, |x, y| {
                Rgb([0, 1, 2].map(|k| v(x, y, k)))
            })),
            DynamicImage::ImageRgba16(ImageBuffer::from_fn(w, h, |x, y| {
                Rgba([0, 1, 2, 3].map(|k| v(x, y, k)))
            })),
        ];
        for img in images {
            let bytes = encode(&img);
            let whole = crate::preprocess::decode(&bytes, u64::MAX).unwrap();
            let want = crate::preprocess::to_rgb8_on_black(&whole).into_raw();
            let png = open(&bytes, u64::MAX).unwrap();
            assert!(!png.interlaced());
            let mut rows = Rows::default();
            png.stream(&mut rows, Orientation::NoTransforms).unwrap();
            assert_eq!(rows.size, (w, h));
            assert!(rows.data == want, "{:?}", img.color());
        }
    }

    #[test]
    fn palette_with_transparency_is_expanded_like_image_rs() {
        let mut bytes = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut bytes, 3, 2);
            enc.set_color(ColorType::Indexed);
            enc.set_depth(BitDepth::Two);
            enc.set_palette(vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]);
            enc.set_trns(vec![255, 128, 0]);
            let mut w = enc.write_header().unwrap();
            w.write_image_data(&[0b0001_1000, 0b1110_0100]).unwrap();
        }
        let whole = crate::preprocess::decode(&bytes, u64::MAX).unwrap();
        let want = crate::preprocess::to_rgb8_on_black(&whole).into_raw();
        let mut rows = Rows::default();
        open(&bytes, u64::MAX)
            .unwrap()
            .stream(&mut rows, Orientation::NoTransforms)
            .unwrap();
        assert_eq!(rows.data, want);
    }

    #[test]
    fn a_cut_file_is_an_error_not_a_short_image() {
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(64, 64, |x, y| {
            Rgb([v(x, y, 0) as u8, v(x, y, 1) as u8, 7])
        }));
        let bytes = encode(&img);
        let mut rows = Rows::default();
        let png = open(&bytes[..bytes.len() / 2], u64::MAX).unwrap();
        assert!(png.stream(&mut rows, Orientation::NoTransforms).is_err());
        assert!(rows.data.len() < 64 * 64 * 3);
    }
}
