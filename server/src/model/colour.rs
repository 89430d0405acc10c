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

/// The ten statistics of a picture given as its pixels `(R, G, B)` with values in 0..1 (the
/// pixels divided by 255), in f64, with the same small constants as the training code. One pass:
/// the spreads come from the sums of squares (`sum((x - m)^2 w) = sum(x^2 w) - m^2 sum(w)`), equal
/// to the training code's two passes up to rounding.
pub fn features(pixels: impl Iterator<Item = (f64, f64, f64)>) -> Features {
    let (mut n, mut sum, mut sq) = (0.0, [0.0; 3], [0.0; 3]);
    let (mut w_sum, mut cw, mut c2w) = (0.0, [0.0; 2], [0.0; 2]);
    for (r, g, b) in pixels {
        n += 1.0;
        sum[0] += r;
        sum[1] += g;
        sum[2] += b;
        sq[0] += r * r;
        sq[1] += g * g;
        sq[2] += b * b;
        let inv = 1.0 / (r + g + b + 1e-3);
        let w = (r + g + b) / 3.0;
        let (cr, cg) = (r * inv * w, g * inv * w);
        w_sum += w;
        cw[0] += cr;
        cw[1] += cg;
        c2w[0] += cr * r * inv;
        c2w[1] += cg * g * inv;
    }
    let n = f64::max(n, 1.0);
    let big_w = w_sum + 1e-6;
    let mut f = [0.0; FEATURES];
    for c in 0..3 {
        f[c] = sum[c] / n;
        f[3 + c] = (sq[c] / n - f[c] * f[c]).max(0.0).sqrt();
    }
    for c in 0..2 {
        let m = cw[c] / big_w;
        f[6 + c] = m;
        f[8 + c] = ((c2w[c] - m * m * (w_sum + 2e-6)) / big_w).max(0.0).sqrt();
    }
    f
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

    /// `d` for a picture the model takes for `class` (`None` for a class outside the bank).
    ///
    /// One pass over the class's bank, [`RUN`] pictures at a time, keeping the `k` smallest squared
    /// distances in order (`k` is a handful, a bank hundreds of pictures): no allocation per
    /// picture, and a bank picture farther than the current `k`-th costs one comparison. Each
    /// squared distance adds the statistics in order 0..10, the same sum as picture by picture.
    pub fn distance(&self, f: &Features, class: usize) -> Option<f64> {
        let z: Features = std::array::from_fn(|i| (f[i] - self.mean[i]) / self.std[i]);
        let bank = self.bank.get(class)?;
        let mut nearest = [f64::INFINITY; MAX_K];
        let k = self.k;
        for start in (0..bank.len()).step_by(RUN) {
            let n = RUN.min(bank.len() - start);
            let mut d = [0.0_f64; RUN];
            for (column, z) in bank.columns.iter().zip(&z) {
                for (d, b) in d[..n].iter_mut().zip(&column[start..start + n]) {
                    let e = b - z;
                    *d += e * e;
                }
            }
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

    /// Whether the colours pass: `distance <= threshold`.
    pub fn passes(&self, f: &Features, class: usize) -> bool {
        self.distance(f, class).is_some_and(|d| d <= self.threshold)
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
