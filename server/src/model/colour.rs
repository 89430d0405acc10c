//! The colour check of `known` (`celestial.colour_ood`): ten colour statistics of the picture the
//! model sees, and their distance to the augmented training pictures of the class the model
//! predicts. A known body photographed darker, greyer or recoloured stays near its own class's
//! variants; a body the model does not know, taken for a known one, has colours unlike all of
//! them. A leaf module: plain arithmetic on one input tensor.

use serde::Serialize;

/// How many colour statistics [`features`] computes.
pub const FEATURES: usize = 10;

/// The statistics of one picture, in the order of `model/celestial/robust.py`'s
/// `colour_features`: per channel R, G, B mean and standard deviation, then the brightness-weighted
/// mean and spread of the chromaticities `r / (r + g + b)` and `g / (r + g + b)`.
pub type Features = [f64; FEATURES];

/// The running sums the ten statistics are made of (values `p / 255` of R, G and B).
#[derive(Default)]
struct Sums {
    n: f64,
    sum: [f64; 3],
    sq: [f64; 3],
    /// Sum of the brightness weights `w = (r + g + b) / 3`.
    w_sum: f64,
    /// Sums of `chromaticity * w` and of `chromaticity^2 * w`, for `r / (r + g + b)` and
    /// `g / (r + g + b)`.
    cw: [f64; 2],
    c2w: [f64; 2],
}

impl Sums {
    /// The statistics, with the same small constants as the training code. The spreads come from
    /// the sums of squares (`sum((x - m)^2 w) = sum(x^2 w) - m^2 sum(w)`), equal to the training
    /// code's two passes up to rounding.
    fn finish(&self) -> Features {
        let n = f64::max(self.n, 1.0);
        let big_w = self.w_sum + 1e-6;
        let mut f = [0.0; FEATURES];
        for c in 0..3 {
            f[c] = self.sum[c] / n;
            f[3 + c] = (self.sq[c] / n - f[c] * f[c]).max(0.0).sqrt();
        }
        for c in 0..2 {
            let m = self.cw[c] / big_w;
            f[6 + c] = m;
            f[8 + c] = ((self.c2w[c] - m * m * (self.w_sum + 2e-6)) / big_w)
                .max(0.0)
                .sqrt();
        }
        f
    }
}

/// The ten statistics of a picture given as its pixels `(R, G, B)` with values in 0..1 (the
/// pixels divided by 255), in f64: for a picture given as a model input tensor.
pub fn features(pixels: impl Iterator<Item = (f64, f64, f64)>) -> Features {
    let mut s = Sums::default();
    for (r, g, b) in pixels {
        s.n += 1.0;
        s.sum[0] += r;
        s.sum[1] += g;
        s.sum[2] += b;
        s.sq[0] += r * r;
        s.sq[1] += g * g;
        s.sq[2] += b * b;
        let inv = 1.0 / (r + g + b + 1e-3);
        let w = (r + g + b) / 3.0;
        let (cr, cg) = (r * inv * w, g * inv * w);
        s.w_sum += w;
        s.cw[0] += cr;
        s.cw[1] += cg;
        s.c2w[0] += cr * r * inv;
        s.c2w[1] += cg * g * inv;
    }
    s.finish()
}

/// Per value of `r + g + b` (8-bit channels, 0..=765), the factors that turn a channel value `v`
/// into its chromaticity terms: `v * t[0] = (v / 255) * w / (p + 1e-3)` and
/// `v * v * t[1] = (v / 255)^2 * w / (p + 1e-3)^2`, with `p = (r + g + b) / 255`, `w = p / 3`.
fn chromaticity_factors() -> &'static [[f64; 2]; 766] {
    static FACTORS: std::sync::OnceLock<[[f64; 2]; 766]> = std::sync::OnceLock::new();
    FACTORS.get_or_init(|| {
        std::array::from_fn(|s| {
            let p = s as f64 / 255.0;
            let (inv, w) = (1.0 / (p + 1e-3), p / 3.0);
            [inv * w / 255.0, inv * inv * w / (255.0 * 255.0)]
        })
    })
}

/// [`features`] of an RGB8 picture (interleaved R, G, B bytes), the pixels the model sees as
/// decoded: the same statistics, computed without a division per pixel (the channel sums are
/// exact integers, the chromaticity terms come from a table indexed by `r + g + b`), equal to
/// [`features`] of the pixels divided by 255 up to rounding.
pub fn features_rgb8(rgb: &[u8]) -> Features {
    let [sum, sq] = channel_sums(rgb);
    let [cw, c2w] = chromaticity_sums(rgb);
    Sums {
        n: (rgb.len() / 3) as f64,
        sum: sum.map(|v| v as f64 / 255.0),
        sq: sq.map(|v| v as f64 / (255.0 * 255.0)),
        w_sum: sum.iter().sum::<u64>() as f64 / (3.0 * 255.0),
        cw,
        c2w,
    }
    .finish()
}

/// Bytes in one block of [`channel_sums`]: 16 pixels, so that every byte position belongs to one
/// channel (its position modulo 3).
const BLOCK: usize = 48;

/// Blocks whose sums of squares fit a `u32` per position (65,535 x 255^2 < 2^32).
const BLOCKS_PER_RUN: usize = 65_535;

/// Per channel R, G, B: the sum of the values and of their squares, exact. The pixels are taken
/// 16 at a time as one block of 48 bytes whose sums are kept per byte position: the same
/// arithmetic for every position, which the compiler turns into vector instructions (a loop over
/// 3-byte pixels would not be), folded into channels at the end.
fn channel_sums(rgb: &[u8]) -> [[u64; 3]; 2] {
    let (mut sum, mut sq) = ([0u64; 3], [0u64; 3]);
    let (blocks, tail) = rgb.split_at(rgb.len() - rgb.len() % BLOCK);
    for run in blocks.chunks(BLOCK * BLOCKS_PER_RUN) {
        let (mut s1, mut s2) = ([0u32; BLOCK], [0u32; BLOCK]);
        for block in run.chunks_exact(BLOCK) {
            for j in 0..BLOCK {
                let v = u32::from(block[j]);
                s1[j] += v;
                s2[j] += v * v;
            }
        }
        for j in 0..BLOCK {
            sum[j % 3] += u64::from(s1[j]);
            sq[j % 3] += u64::from(s2[j]);
        }
    }
    for (j, &v) in tail.iter().enumerate() {
        let v = u64::from(v);
        sum[j % 3] += v;
        sq[j % 3] += v * v;
    }
    [sum, sq]
}

/// The sums of `chromaticity * w` and `chromaticity^2 * w` of an RGB8 picture, for R and G. Each
/// pixel's R and G sit side by side (one vector multiply-add serves both), and four pixels go to
/// four sets of sums (independent additions keep the FPU busy; one chain of additions would wait
/// on each), added together at the end.
fn chromaticity_sums(rgb: &[u8]) -> [[f64; 2]; 2] {
    let factors = chromaticity_factors();
    let (mut first, mut second) = ([[0.0_f64; 2]; 4], [[0.0_f64; 2]; 4]);
    let mut add = |lane: usize, px: &[u8]| {
        let [t1, t2] = factors[usize::from(px[0]) + usize::from(px[1]) + usize::from(px[2])];
        let rg = [f64::from(px[0]), f64::from(px[1])];
        for c in 0..2 {
            first[lane][c] += rg[c] * t1;
            second[lane][c] += rg[c] * rg[c] * t2;
        }
    };
    let quads = rgb.chunks_exact(12);
    let tail = quads.remainder();
    for quad in quads {
        for lane in 0..4 {
            add(lane, &quad[3 * lane..3 * lane + 3]);
        }
    }
    for px in tail.chunks_exact(3) {
        add(0, px);
    }
    let total = |l: &[[f64; 2]; 4], c: usize| (l[0][c] + l[1][c]) + (l[2][c] + l[3][c]);
    [
        [total(&first, 0), total(&first, 1)],
        [total(&second, 0), total(&second, 1)],
    ]
}

/// `celestial.colour_ood`: `d` = the distance from the picture's standardised statistics to the
/// `k`-th nearest bank picture of the predicted class; the colour check passes when
/// `d <= threshold`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColourRule {
    pub k: usize,
    pub threshold: f64,
    /// Bank pictures per class, in label order.
    pub bank_sizes: Vec<usize>,
    /// The formula, as the metadata states it (for `/model`).
    pub formula: Option<String>,
    #[serde(skip)]
    mean: Features,
    #[serde(skip)]
    std: Features,
    /// Per class, the bank pictures' statistics, already standardised.
    #[serde(skip)]
    bank: Vec<ClassBank>,
}

/// One class's bank pictures, standardised, stored statistic by statistic (`columns[i][j]`:
/// statistic `i` of picture `j`), so that the distances of a run of pictures add up one statistic
/// at a time over contiguous numbers, which the compiler turns into vector instructions.
#[derive(Debug, Clone, PartialEq)]
struct ClassBank {
    columns: [Vec<f64>; FEATURES],
}

impl ClassBank {
    fn new(pictures: &[Features], mean: &Features, std: &Features) -> ClassBank {
        ClassBank {
            columns: std::array::from_fn(|i| {
                pictures.iter().map(|f| (f[i] - mean[i]) / std[i]).collect()
            }),
        }
    }

    fn len(&self) -> usize {
        self.columns[0].len()
    }

    /// The squared distances from `z` to the bank pictures `start..` (at most [`RUN`]) into `d`;
    /// how many. The statistics are added one at a time over contiguous numbers (vector
    /// instructions), in order 0..10: the same sum as picture by picture.
    fn squared_distances(&self, z: &Features, start: usize, d: &mut [f64; RUN]) -> usize {
        let n = RUN.min(self.len() - start);
        d[..n].fill(0.0);
        for (column, z) in self.columns.iter().zip(z) {
            for (d, b) in d[..n].iter_mut().zip(&column[start..start + n]) {
                let e = b - z;
                *d += e * e;
            }
        }
        n
    }
}

/// Bank pictures whose distances are computed together (on the stack).
const RUN: usize = 64;

/// The largest `k` a colour rule may have: the nearest distances are kept in an array this long.
pub const MAX_K: usize = 32;

impl ColourRule {
    /// A rule from its parts; the bank's statistics are raw (standardised here). `None` when it
    /// cannot score every class: `k` of 0, above [`MAX_K`] or above a class's bank size, a
    /// non-positive or non-finite spread, or a non-finite number anywhere.
    pub fn new(
        k: usize,
        threshold: f64,
        mean: Features,
        std: Features,
        bank: Vec<Vec<Features>>,
        formula: Option<String>,
    ) -> Option<ColourRule> {
        let finite = |f: &Features| f.iter().all(|v| v.is_finite());
        if k == 0
            || k > MAX_K
            || !threshold.is_finite()
            || !finite(&mean)
            || !std.iter().all(|s| s.is_finite() && *s > 0.0)
            || bank.iter().any(|c| c.len() < k || !c.iter().all(finite))
        {
            return None;
        }
        let bank: Vec<ClassBank> = bank
            .iter()
            .map(|class| ClassBank::new(class, &mean, &std))
            .collect();
        Some(ColourRule {
            k,
            threshold,
            bank_sizes: bank.iter().map(ClassBank::len).collect(),
            formula,
            mean,
            std,
            bank,
        })
    }

    /// The picture's statistics, standardised as the bank's are.
    fn standardise(&self, f: &Features) -> Features {
        std::array::from_fn(|i| (f[i] - self.mean[i]) / self.std[i])
    }

    /// `d` for a picture the model takes for `class` (`None` for a class outside the bank): the
    /// rule's measure, which [`ColourRule::passes`] (what answers use) decides without computing
    /// it whole; the tests hold the two together.
    ///
    /// One pass over the class's bank, [`RUN`] pictures at a time, keeping the `k` smallest squared
    /// distances in order (`k` is a handful, a bank hundreds of pictures): no allocation per
    /// picture, and a bank picture farther than the current `k`-th costs one comparison.
    pub fn distance(&self, f: &Features, class: usize) -> Option<f64> {
        let z = self.standardise(f);
        let bank = self.bank.get(class)?;
        let mut nearest = [f64::INFINITY; MAX_K];
        let k = self.k;
        let mut d = [0.0_f64; RUN];
        for start in (0..bank.len()).step_by(RUN) {
            let n = bank.squared_distances(&z, start, &mut d);
            for &d in &d[..n] {
                if d < nearest[k - 1] {
                    let at = nearest[..k - 1].partition_point(|x| *x <= d);
                    nearest.copy_within(at..k - 1, at + 1);
                    nearest[at] = d;
                }
            }
        }
        Some(nearest[k - 1].sqrt())
    }

    /// Whether the colours pass: `distance <= threshold`, decided as soon as `k` bank pictures
    /// within the threshold are found (the `k`-th nearest is within it exactly when `k` pictures
    /// are, `sqrt` being monotone): a known body's picture usually has them in its first run, so
    /// the pictures that pass, most of them, scan a part of the bank.
    pub fn passes(&self, f: &Features, class: usize) -> bool {
        let Some(bank) = self.bank.get(class) else {
            return false;
        };
        let z = self.standardise(f);
        let mut within = 0;
        let mut d = [0.0_f64; RUN];
        for start in (0..bank.len()).step_by(RUN) {
            let n = bank.squared_distances(&z, start, &mut d);
            within += d[..n].iter().filter(|d| d.sqrt() <= self.threshold).count();
            if within >= self.k {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn features_of_a_flat_and_a_two_colour_picture() {
        let f = features(std::iter::repeat_n((0.5, 0.25, 0.25), 4));
        assert_eq!(&f[..6], &[0.5, 0.25, 0.25, 0.0, 0.0, 0.0]);
        // weights w = 1/3 each, W = 4/3 + 1e-6
        let shrink = (4.0 / 3.0) / (4.0 / 3.0 + 1e-6);
        assert!((f[6] - 0.5 / 1.001 * shrink).abs() < 1e-12, "{f:?}");
        assert!((f[7] - 0.25 / 1.001 * shrink).abs() < 1e-12, "{f:?}");
        assert!(f[8] < 1e-6 && f[9] < 1e-6, "{f:?}");
        // Half red, half black: the black half has no weight in the chromaticity.
        let g = features([(1.0, 0.0, 0.0), (0.0, 0.0, 0.0)].into_iter());
        assert_eq!((g[0], g[3]), (0.5, 0.5));
        assert!((g[6] - 1.0 / 1.001).abs() < 1e-5, "{g:?}");
        assert!(g[8] < 1e-3, "{g:?}");
    }

    #[test]
    fn channel_sums_are_exact_past_a_run_of_blocks() {
        // More blocks than one run's u32 sums can hold, then a tail shorter than a block.
        let pixels = BLOCK / 3 * (BLOCKS_PER_RUN + 2) + 5;
        let rgb: Vec<u8> = (0..pixels)
            .flat_map(|i| [255, (i % 251) as u8, (i % 7) as u8])
            .collect();
        let mut expected = [[0u64; 3]; 2];
        for px in rgb.chunks_exact(3) {
            for c in 0..3 {
                expected[0][c] += u64::from(px[c]);
                expected[1][c] += u64::from(px[c]) * u64::from(px[c]);
            }
        }
        assert_eq!(channel_sums(&rgb), expected);
    }

    #[test]
    fn rgb8_statistics_equal_those_of_the_pixels_divided_by_255() {
        // Every value of r + g + b and a spread of colours, black included.
        let rgb: Vec<u8> = (0..32 * 32 * 3)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .chain([0, 0, 0, 255, 255, 255])
            .collect();
        let by_table = features_rgb8(&rgb);
        let direct = features(rgb.chunks_exact(3).map(|p| {
            let v = |x: u8| f64::from(x) / 255.0;
            (v(p[0]), v(p[1]), v(p[2]))
        }));
        for (a, b) in by_table.iter().zip(&direct) {
            assert!((a - b).abs() <= 1e-12, "{by_table:?} vs {direct:?}");
        }
    }

    #[test]
    fn the_kth_nearest_is_the_kth_of_every_distance_sorted() {
        // A seeded pseudo-random bank with ties, against the definition: sort every distance.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 8) as f64 / 4.0
        };
        let bank: Vec<Features> = (0..200).map(|_| std::array::from_fn(|_| next())).collect();
        let probe: Features = std::array::from_fn(|_| next());
        for k in [1, 2, 3, 7, MAX_K] {
            let rule = ColourRule::new(
                k,
                1.0,
                [0.0; FEATURES],
                [1.0; FEATURES],
                vec![bank.clone()],
                None,
            )
            .unwrap();
            let mut all: Vec<f64> = bank
                .iter()
                .map(|b| b.iter().zip(&probe).map(|(b, z)| (b - z) * (b - z)).sum())
                .collect();
            all.sort_by(f64::total_cmp);
            assert_eq!(rule.distance(&probe, 0), Some(all[k - 1].sqrt()), "k = {k}");
        }
        // `passes` decides early; it agrees with the distance at every threshold, ties included.
        for threshold in [0.0, 0.5, 1.0, 1.5, 2.0, 3.0] {
            let rule = ColourRule::new(
                3,
                threshold,
                [0.0; FEATURES],
                [1.0; FEATURES],
                vec![bank.clone()],
                None,
            )
            .unwrap();
            for probe in (0..20).map(|_| std::array::from_fn(|_| next())) {
                let d = rule.distance(&probe, 0).unwrap();
                assert_eq!(rule.passes(&probe, 0), d <= threshold, "{threshold} {d}");
            }
        }
        let too_large = ColourRule::new(
            MAX_K + 1,
            1.0,
            [0.0; FEATURES],
            [1.0; FEATURES],
            vec![bank],
            None,
        );
        assert!(too_large.is_none());
    }

    #[test]
    fn the_kth_nearest_of_the_predicted_class() {
        let at = |x: f64| {
            let mut f = [0.0; FEATURES];
            f[0] = x;
            f
        };
        let rule = ColourRule::new(
            2,
            1.5,
            [0.0; FEATURES],
            [1.0; FEATURES],
            vec![vec![at(0.0), at(1.0), at(5.0)], vec![at(10.0), at(11.0)]],
            None,
        )
        .unwrap();
        assert_eq!(rule.distance(&at(0.0), 0), Some(1.0));
        assert_eq!(rule.distance(&at(0.0), 1), Some(11.0));
        assert!(rule.passes(&at(0.0), 0) && !rule.passes(&at(0.0), 1));
        assert_eq!(rule.distance(&at(0.0), 2), None);
        assert!(!rule.passes(&at(0.0), 2));
        let bad = |k, std: f64| {
            ColourRule::new(
                k,
                1.0,
                [0.0; FEATURES],
                [std; FEATURES],
                vec![vec![at(0.0)]],
                None,
            )
        };
        assert!(bad(2, 1.0).is_none() && bad(0, 1.0).is_none() && bad(1, 0.0).is_none());
        assert!(bad(1, 1.0).is_some());
    }
}
