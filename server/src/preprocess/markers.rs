//! A JPEG's layout from its markers alone, without decoding a pixel: the frame (size, components
//! and their sampling factors, coding process) and every scan with the length of its entropy-coded
//! data. One pass over the file (`memchr` over the entropy-coded data), cheap enough for every upload.
//!
//! Two uses: the memory a decoder needs (a progressive or multi-scan file keeps every DCT
//! coefficient of the image: [`JpegLayout::coefficient_bytes`]), and a cheap truncation check
//! ([`JpegLayout::short_scan`]): Huffman coding spends at least one bit per block on its DC
//! coefficient and, in a sequential scan, at least one more on the end of its AC coefficients, so a
//! scan whose data is shorter than that for the declared size cannot hold the image. A leaf module.

use image::metadata::Orientation;

/// One image component as the frame header declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    pub id: u8,
    /// Horizontal and vertical sampling factors (1..=4).
    pub h: u8,
    pub v: u8,
}

/// One scan: which components, which coefficients, how many bytes of entropy-coded data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Indexes into [`JpegLayout::components`].
    pub components: Vec<usize>,
    /// Spectral selection start (0 for a sequential scan and a progressive DC scan).
    pub ss: u8,
    /// Bytes from the end of the scan header to the next marker that is not a restart marker.
    pub data_bytes: u64,
}

/// The coding process of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// Huffman-coded baseline or extended sequential DCT (SOF0, SOF1).
    Sequential,
    /// Huffman-coded progressive DCT (SOF2).
    Progressive,
    /// Lossless, hierarchical or arithmetic-coded: no lower bound on the data length is known.
    Other,
}

/// What the markers of a JPEG say, up to its first EOI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegLayout {
    pub width: u32,
    pub height: u32,
    pub process: Process,
    pub components: Vec<Component>,
    pub scans: Vec<Scan>,
    /// From the first Exif segment (APP1) before the first scan that has one, as libjpeg reads it.
    pub orientation: Orientation,
}

/// A scan whose entropy-coded data is too short for the declared image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShortScan {
    pub data_bytes: u64,
    pub min_bytes: u64,
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
    ])))
}

/// Parse the markers of `bytes` (a file that starts with SOI). `None` when they are malformed
/// (left to the decoders, which report it precisely) or there is no frame header.
pub fn parse(bytes: &[u8]) -> Option<JpegLayout> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let mut layout: Option<JpegLayout> = None;
    let mut orientation = None;
    let mut i = 2;
    loop {
        // A marker: 0xFF, any number of 0xFF fill bytes, then the code.
        if *bytes.get(i)? != 0xFF {
            return None;
        }
        while *bytes.get(i + 1)? == 0xFF {
            i += 1;
        }
        let code = bytes[i + 1];
        match code {
            0xD9 => break,                // EOI
            0x01 | 0xD0..=0xD7 => i += 2, // standalone markers
            0xD8 | 0x00 => return None,   // a second SOI, or not a marker
            _ => {
                let len = be16(bytes, i + 2)?;
                if len < 2 {
                    return None;
                }
                let seg = bytes.get(i + 4..i + 2 + len)?;
                i += 2 + len;
                match code {
                    0xC0..=0xCF if !matches!(code, 0xC4 | 0xC8 | 0xCC) => {
                        if layout.is_some() {
                            return None; // a second frame header
                        }
                        layout = Some(frame(code, seg)?);
                    }
                    0xDA => {
                        let l = layout.as_mut()?;
                        let mut scan = scan_header(seg, &l.components)?;
                        let end = entropy_end(bytes, i);
                        scan.data_bytes = (end - i) as u64;
                        l.scans.push(scan);
                        i = end;
                        if i >= bytes.len() {
                            break; // no EOI (a truncation the caller detects separately)
                        }
                    }
                    // Before the first scan, as libjpeg's header reads them.
                    0xE1 if orientation.is_none()
                        && layout.as_ref().is_none_or(|l| l.scans.is_empty()) =>
                    {
                        orientation = seg
                            .strip_prefix(b"Exif\0\0")
                            .and_then(Orientation::from_exif_chunk);
                    }
                    _ => {}
                }
            }
        }
    }
    layout.map(|l| JpegLayout {
        orientation: orientation.unwrap_or(Orientation::NoTransforms),
        ..l
    })
}

fn frame(code: u8, seg: &[u8]) -> Option<JpegLayout> {
    let height = be16(seg, 1)? as u32;
    let width = be16(seg, 3)? as u32;
    let n = usize::from(*seg.get(5)?);
    let mut components = Vec::with_capacity(n);
    for c in 0..n {
        let at = 6 + 3 * c;
        let (id, hv) = (*seg.get(at)?, *seg.get(at + 1)?);
        let (h, v) = (hv >> 4, hv & 0x0F);
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
            return None;
        }
        components.push(Component { id, h, v });
    }
    if components.is_empty() {
        return None;
    }
    let process = match code {
        0xC0 | 0xC1 => Process::Sequential,
        0xC2 => Process::Progressive,
        _ => Process::Other,
    };
    Some(JpegLayout {
        width,
        height,
        process,
        components,
        scans: Vec::new(),
        orientation: Orientation::NoTransforms,
    })
}

/// The scan header (after the length): its components (as indexes into the frame's) and bands.
fn scan_header(seg: &[u8], frame: &[Component]) -> Option<Scan> {
    let n = usize::from(*seg.first()?);
    let mut components = Vec::with_capacity(n);
    for c in 0..n {
        let id = *seg.get(1 + 2 * c)?;
        components.push(frame.iter().position(|f| f.id == id)?);
    }
    let at = 1 + 2 * n;
    // Then Se and Ah/Al, which the bounds here do not need.
    seg.get(at + 2)?;
    Some(Scan {
        components,
        ss: seg[at],
        data_bytes: 0,
    })
}

/// Where the entropy-coded data starting at `from` ends: at the first 0xFF that is neither a
/// stuffed zero byte (0xFF 0x00), a restart marker (0xFF 0xD0..=0xD7) nor a fill byte before one;
/// the end of the file if there is none.
fn entropy_end(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    while let Some(off) = memchr::memchr(0xFF, &bytes[i..]) {
        let at = i + off;
        match bytes.get(at + 1) {
            None => return bytes.len(),
            Some(0x00 | 0xD0..=0xD7 | 0xFF) => i = at + 1,
            Some(_) => return at,
        }
    }
    bytes.len()
}

impl JpegLayout {
    /// Largest horizontal and vertical sampling factors.
    fn max_sampling(&self) -> (u32, u32) {
        self.components.iter().fold((1, 1), |(h, v), c| {
            (h.max(u32::from(c.h)), v.max(u32::from(c.v)))
        })
    }

    /// Blocks of component `c` (not padded to whole MCUs: a lower bound for any scan).
    fn blocks(&self, c: &Component) -> u64 {
        let (hmax, vmax) = self.max_sampling();
        let w = u64::from(self.width) * u64::from(c.h);
        let h = u64::from(self.height) * u64::from(c.v);
        w.div_ceil(u64::from(hmax)).div_ceil(8) * h.div_ceil(u64::from(vmax)).div_ceil(8)
    }

    /// Whether a decoder keeps every DCT coefficient of the image in memory before it outputs a
    /// row (libjpeg's "full buffer"): progressive files, and sequential ones whose first scan does
    /// not hold every component.
    pub fn buffers_coefficients(&self) -> bool {
        self.process != Process::Sequential
            || self.scans.len() > 1
            || self
                .scans
                .first()
                .is_some_and(|s| s.components.len() < self.components.len())
    }

    /// Bytes of that coefficient buffer (as libjpeg allocates it: per component, blocks rounded up
    /// to its sampling factors, 64 coefficients of 2 bytes each); 0 when not needed.
    pub fn coefficient_bytes(&self) -> u64 {
        if !self.buffers_coefficients() {
            return 0;
        }
        let (hmax, vmax) = self.max_sampling();
        let (w, h) = (u64::from(self.width), u64::from(self.height));
        self.components
            .iter()
            .map(|c| {
                let (ch, cv) = (u64::from(c.h), u64::from(c.v));
                let bw = (w * ch).div_ceil(u64::from(hmax) * 8).next_multiple_of(ch);
                let bh = (h * cv).div_ceil(u64::from(vmax) * 8).next_multiple_of(cv);
                bw * bh * 128
            })
            .sum()
    }

    /// The first scan whose entropy-coded data is shorter than the least the declared size needs
    /// (Huffman-coded files only; see the module documentation).
    pub fn short_scan(&self) -> Option<ShortScan> {
        let bits_per_block = |s: &Scan| match self.process {
            Process::Sequential => 2, // a DC code and an AC code (at least EOB), >= 1 bit each
            Process::Progressive if s.ss == 0 => 1, // DC first scan (a code) or refinement (a bit)
            _ => 0,                   // AC scans code whole runs of empty blocks in a few bits
        };
        self.scans.iter().find_map(|s| {
            let blocks: u64 = s
                .components
                .iter()
                .map(|&c| self.blocks(&self.components[c]))
                .sum();
            let min_bytes = blocks * bits_per_block(s) / 8;
            (s.data_bytes < min_bytes).then_some(ShortScan {
                data_bytes: s.data_bytes,
                min_bytes,
            })
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use image::{DynamicImage, ImageFormat, RgbImage};

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8])
        }));
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, ImageFormat::Jpeg).unwrap();
        buf.into_inner()
    }

    /// `bytes` with the frame header's size replaced.
    pub(crate) fn with_declared_size(bytes: &[u8], w: u16, h: u16) -> Vec<u8> {
        let mut out = bytes.to_vec();
        let sof = out
            .windows(2)
            .position(|m| m == [0xFF, 0xC0] || m == [0xFF, 0xC2])
            .unwrap();
        out[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        out[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
        out
    }

    #[test]
    fn parses_frame_and_scans_of_a_baseline_file() {
        let j = jpeg(40, 24);
        let l = parse(&j).expect("a valid file parses");
        assert_eq!(
            (l.width, l.height, l.process),
            (40, 24, Process::Sequential)
        );
        assert_eq!(l.components.len(), 3);
        assert_eq!(l.scans.len(), 1);
        assert_eq!(l.scans[0].components, vec![0, 1, 2]);
        let sos = j.windows(2).rposition(|m| m == [0xFF, 0xDA]).unwrap();
        let header = 2 + be16(&j, sos + 2).unwrap();
        assert_eq!(
            l.scans[0].data_bytes as usize,
            j.len() - 2 - (sos + header),
            "everything between the scan header and EOI"
        );
        assert!(!l.buffers_coefficients());
        assert_eq!(l.coefficient_bytes(), 0);
        assert_eq!(l.short_scan(), None);
    }

    #[test]
    fn a_declared_size_the_data_cannot_fill_is_a_short_scan() {
        let j = with_declared_size(&jpeg(8, 8), 6000, 6000);
        let l = parse(&j).unwrap();
        let short = l.short_scan().expect("a few bytes cannot code 6000x6000");
        assert!(short.data_bytes < 100, "{short:?}");
        // 6000x6000 in 4:2:0 (image-rs encodes 4:4:4: 3 x 750 x 750 blocks), 2 bits each.
        assert!(short.min_bytes >= 750 * 750 * 2 / 8, "{short:?}");
    }

    #[test]
    fn the_bound_never_flags_real_files() {
        // Flat images compress best: the bound must hold for them too, at every size.
        for (w, h) in [(1, 1), (8, 8), (17, 9), (640, 480), (1000, 16)] {
            let flat = DynamicImage::ImageRgb8(RgbImage::from_pixel(w, h, image::Rgb([7, 7, 7])));
            let mut buf = std::io::Cursor::new(Vec::new());
            flat.write_to(&mut buf, ImageFormat::Jpeg).unwrap();
            let l = parse(buf.get_ref()).unwrap();
            assert_eq!(l.short_scan(), None, "{w}x{h}");
        }
        let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_YCbCr);
        comp.set_size(333, 222);
        comp.set_progressive_mode();
        let mut started = comp.start_compress(Vec::new()).unwrap();
        started
            .write_scanlines(&vec![128u8; 333 * 222 * 3])
            .unwrap();
        let progressive = started.finish().unwrap();
        let l = parse(&progressive).unwrap();
        assert_eq!(l.process, Process::Progressive);
        assert!(l.scans.len() > 1 && l.buffers_coefficients());
        assert_eq!(l.short_scan(), None);
        // Y 42x28 blocks, Cb and Cr (2x2 subsampled) 21x14 blocks, 128 bytes each.
        assert_eq!(l.coefficient_bytes(), (42 * 28 + 2 * 21 * 14) * 128);
    }

    #[test]
    fn malformed_markers_are_left_to_the_decoders() {
        let j = jpeg(16, 16);
        assert_eq!(parse(b"\xFF\xD8"), None);
        assert_eq!(parse(&j[..20]), None);
        let mut bad = j.clone();
        bad[2] = 0x12; // not a marker where one must be
        assert_eq!(parse(&bad), None);
        // Cut in the scan: parsed, the scan's data runs to the end of the file.
        let cut = &j[..j.len() - 40];
        assert_eq!(parse(cut).unwrap().scans.len(), 1);
    }
}
