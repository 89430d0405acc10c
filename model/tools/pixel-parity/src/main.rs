//! Decode + resize every image of a list with image-rs exactly as the server's contract says
//! (to_rgb8, FilterType::Triangle, stretch) and compare with reference pixels from the Python pipeline.
//!
//! usage: pixel-parity DATASET_RAW LIST REF_128 REF_RESIZED HEIGHT WIDTH OUT_RESIZED REF_GRAY32 OUT_GRAY32
//! REF_128: the pipeline's decoded RGB8 at 128x128 (or an empty file to skip the decode-only check),
//! REF_RESIZED: its resized RGB8 (N*H*W*3 bytes), OUT_RESIZED: where image-rs's resized pixels are written.
//! REF_GRAY32 / OUT_GRAY32: the same for the guide recipe's grayscale 32x32 input (luma
//! round(0.299 R + 0.587 G + 0.114 B) in f32 on the decoded RGB8, then Triangle resize).
use image::imageops::FilterType;
use image::{ImageBuffer, Rgb};

struct Stats {
    hist: [u64; 256],
    per_image_max: [u64; 256],
    sum: u64,
    count: u64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            hist: [0; 256],
            per_image_max: [0; 256],
            sum: 0,
            count: 0,
        }
    }
    fn add(&mut self, a: &[u8], b: &[u8]) {
        let mut m = 0u8;
        for (x, y) in a.iter().zip(b) {
            let d = x.abs_diff(*y);
            self.hist[d as usize] += 1;
            self.sum += d as u64;
            self.count += 1;
            m = m.max(d);
        }
        self.per_image_max[m as usize] += 1;
    }
    fn report(&self, name: &str) {
        let max = self.hist.iter().rposition(|&c| c > 0).unwrap_or(0);
        println!(
            "{name}: max abs diff {max}, mean abs diff {:.4}, values by abs diff {:?}, images by max diff {:?}",
            self.sum as f64 / self.count.max(1) as f64,
            &self.hist[..=max],
            &self.per_image_max[..=max]
        );
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 10 {
        return Err("usage: pixel-parity DATASET_RAW LIST REF_128 REF_RESIZED HEIGHT WIDTH OUT_RESIZED REF_GRAY32 OUT_GRAY32".into());
    }
    let refgray = std::fs::read(&args[8])?;
    let mut gray = Stats::new();
    let mut outgray = Vec::new();
    let (root, list) = (&args[1], std::fs::read_to_string(&args[2])?);
    let (ref128, refrs) = (std::fs::read(&args[3])?, std::fs::read(&args[4])?);
    let (h, w): (u32, u32) = (args[5].parse()?, args[6].parse()?);
    let n = (h * w * 3) as usize;
    let n128 = 128 * 128 * 3;
    let (mut decode, mut resize, mut both) = (Stats::new(), Stats::new(), Stats::new());
    let mut out = Vec::new();
    for (i, rel) in list.lines().filter(|l| !l.is_empty()).enumerate() {
        let img = image::open(format!("{root}/{rel}"))?.to_rgb8();
        let ours = image::imageops::resize(&img, w, h, FilterType::Triangle);
        both.add(ours.as_raw(), &refrs[i * n..(i + 1) * n]);
        out.extend_from_slice(ours.as_raw());
        let (iw, ih) = img.dimensions();
        let luma: Vec<u8> = img
            .pixels()
            .map(|p| {
                (0.299f32 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
                    .round()
                    .clamp(0.0, 255.0) as u8
            })
            .collect();
        let luma: ImageBuffer<image::Luma<u8>, Vec<u8>> =
            ImageBuffer::from_raw(iw, ih, luma).ok_or("size")?;
        let g32 = image::imageops::resize(&luma, 32, 32, FilterType::Triangle);
        gray.add(g32.as_raw(), &refgray[i * 1024..(i + 1) * 1024]);
        outgray.extend_from_slice(g32.as_raw());
        if !ref128.is_empty() && img.dimensions() == (128, 128) {
            let r128 = &ref128[i * n128..(i + 1) * n128];
            decode.add(img.as_raw(), r128);
            let same: ImageBuffer<Rgb<u8>, Vec<u8>> =
                ImageBuffer::from_raw(128, 128, r128.to_vec()).ok_or("size")?;
            let resized = image::imageops::resize(&same, w, h, FilterType::Triangle);
            resize.add(resized.as_raw(), &refrs[i * n..(i + 1) * n]);
        }
    }
    std::fs::write(&args[7], &out)?;
    std::fs::write(&args[9], &outgray)?;
    if decode.count > 0 {
        decode.report("JPEG decode only (128x128)");
        resize.report("resize only (same decoded pixels)");
    }
    both.report("decode + resize (what the server does)");
    gray.report("guide recipe: decode + luma + resize to 32x32 grayscale");
    Ok(())
}
