//! The statistics of the canary analysis (pure): a chi-squared test of homogeneity between two
//! sets of counts over the same categories (the canary's and the stable pods' predicted labels,
//! confidence buckets, known/unknown answers), and the chi-squared distribution's tail it needs.
//!
//! The chi-squared approximation is only trusted when every expected count is at least
//! [`MIN_EXPECTED`] (Cochran's rule); categories with fewer are pooled into one, the rarest
//! first, so that a handful of answers of a rare label cannot decide a release. What that leaves
//! as the test's real false-alarm rate is measured by simulation (`simulation.rs`, docs/deploy.md).

/// The least expected count of a category (on either side) for the test to use it on its own.
pub const MIN_EXPECTED: f64 = 5.0;

/// A chi-squared test of homogeneity of two count vectors.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ChiSquared {
    pub statistic: f64,
    /// Degrees of freedom: the categories after pooling, less one.
    pub df: usize,
    /// The probability of a statistic at least this large when both sides come from one
    /// distribution.
    pub p_value: f64,
}

/// Tests whether the counts `a` and `b` (one entry per category, in the same order) come from one
/// distribution. None when there is nothing to test: an empty side, or fewer than two categories
/// left once the rare ones are pooled.
pub fn homogeneity(a: &[f64], b: &[f64]) -> Option<ChiSquared> {
    let (na, nb): (f64, f64) = (a.iter().sum(), b.iter().sum());
    if na <= 0.0 || nb <= 0.0 || a.len() != b.len() {
        return None;
    }
    let bins = pooled(a, b, na.min(nb) / (na + nb));
    if bins.len() < 2 {
        return None;
    }
    let n = na + nb;
    let mut statistic = 0.0;
    for (x, y) in &bins {
        let total = x + y;
        for (observed, side) in [(x, na), (y, nb)] {
            let expected = side * total / n;
            statistic += (observed - expected).powi(2) / expected;
        }
    }
    let df = bins.len() - 1;
    Some(ChiSquared {
        statistic,
        df,
        p_value: chi_squared_tail(statistic, df as f64),
    })
}

/// The categories as (a, b) pairs, those whose smaller expected count (`small_share` of their
/// total) is under [`MIN_EXPECTED`] pooled together, rarest first, until the pool is large enough
/// itself (or everything is pooled).
fn pooled(a: &[f64], b: &[f64], small_share: f64) -> Vec<(f64, f64)> {
    let mut bins: Vec<(f64, f64)> = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x, *y))
        .filter(|(x, y)| x + y > 0.0)
        .collect();
    // Largest total first: the rarest categories are at the end, where the pool takes them.
    bins.sort_by(|p, q| (q.0 + q.1).total_cmp(&(p.0 + p.1)));
    let large_enough = |(x, y): (f64, f64)| (x + y) * small_share >= MIN_EXPECTED;
    let mut pool: Option<(f64, f64)> = None;
    while let Some(&last) = bins.last() {
        let pool_ok = pool.is_none_or(large_enough);
        if large_enough(last) && pool_ok {
            break;
        }
        bins.pop();
        let (x, y) = pool.unwrap_or((0.0, 0.0));
        pool = Some((x + last.0, y + last.1));
    }
    bins.extend(pool);
    bins
}

pub use celestial_common::stats::chi_squared_tail;
use celestial_common::stats::ln_gamma;

/// P(X >= k) for X binomial with `n` trials of probability `p`, summed exactly (in log space)
/// from `k` up: the one-sided test of "more errors than a rate of `p` explains".
pub fn binomial_tail(k: f64, n: f64, p: f64) -> f64 {
    if k <= 0.0 {
        return 1.0;
    }
    if k > n || p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    let (k, n) = (k.round() as u64, n.round() as u64);
    let ln_n = ln_gamma(n as f64 + 1.0);
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let sum: f64 = (k..=n)
        .map(|i| {
            let i = i as f64;
            let ln_choose = ln_n - ln_gamma(i + 1.0) - ln_gamma(n as f64 - i + 1.0);
            (ln_choose + i * lp + (n as f64 - i) * lq).exp()
        })
        .sum();
    sum.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn the_tail_matches_published_critical_values() {
        // (x, df, P(X >= x)): the 5 %, 1 % and 0.1 % critical values of standard tables.
        for (x, df, p) in [
            (3.841_458_8, 1.0, 0.05),
            (6.634_896_6, 1.0, 0.01),
            (10.827_566, 1.0, 0.001),
            (16.918_978, 9.0, 0.05),
            (27.877_165, 9.0, 0.001),
            (124.342_11, 100.0, 0.05),
        ] {
            let got = chi_squared_tail(x, df);
            assert!(close(got, p, p * 1e-5), "x={x} df={df}: {got} != {p}");
        }
        // df 2: the tail is exactly exp(-x/2).
        assert!(close(chi_squared_tail(3.0, 2.0), (-1.5f64).exp(), 1e-12));
        assert_eq!(chi_squared_tail(0.0, 3.0), 1.0);
        assert!(close(ln_gamma(5.0), 24f64.ln(), 1e-12));
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-12
        ));
    }

    #[test]
    fn homogeneity_tests_the_pooled_table() {
        // Identical proportions: statistic 0, p 1.
        let t = homogeneity(&[10.0, 20.0, 30.0], &[20.0, 40.0, 60.0]).unwrap();
        assert!(close(t.statistic, 0.0, 1e-12) && t.df == 2 && close(t.p_value, 1.0, 1e-9));
        // A 2x2 table worked by hand: 30/70 vs 50/50, expected 40/60 each, statistic 8.333.
        let t = homogeneity(&[30.0, 70.0], &[50.0, 50.0]).unwrap();
        assert!(close(t.statistic, 25.0 / 3.0, 1e-9), "{t:?}");
        assert_eq!(t.df, 1);
        assert!(close(t.p_value, 0.003_892_417_2, 1e-8), "{t:?}");
        // Rare categories are pooled: the three rare ones (smaller expected count 7 x 86/261 =
        // 2.3 each) become one bin of 21 (6.9), so three bins are left.
        let a = [40.0, 40.0, 3.0, 2.0, 1.0];
        let b = [80.0, 80.0, 4.0, 5.0, 6.0];
        assert_eq!(homogeneity(&a, &b).unwrap().df, 2);
        // Nothing to test: one side empty, or everything rare.
        assert_eq!(homogeneity(&[0.0, 0.0], &[3.0, 4.0]), None);
        assert_eq!(homogeneity(&[1.0, 1.0], &[2.0, 1.0]), None);
    }

    #[test]
    fn a_shift_of_the_distribution_is_found() {
        // Half the stable pods' traffic, one label answered two and a half times as often.
        let stable = [30.0, 30.0, 30.0, 30.0, 30.0, 30.0];
        let canary = [50.0, 10.0, 10.0, 10.0, 10.0, 10.0];
        let t = homogeneity(&canary, &stable).unwrap();
        assert!(t.p_value < 0.001, "{t:?}");
    }

    #[test]
    fn the_binomial_tail_is_exact() {
        // P(X >= 1) = 1 - (1 - p)^n; P(X >= 3) for n 4, p 1/2 = 5/16.
        assert!(close(
            binomial_tail(1.0, 50.0, 0.01),
            1.0 - 0.99f64.powi(50),
            1e-12
        ));
        assert!(close(binomial_tail(3.0, 4.0, 0.5), 5.0 / 16.0, 1e-12));
        assert_eq!(binomial_tail(0.0, 10.0, 0.1), 1.0);
        assert_eq!(binomial_tail(11.0, 10.0, 0.1), 0.0);
        assert_eq!(binomial_tail(2.0, 10.0, 0.0), 0.0);
        assert!(binomial_tail(10.0, 100.0, 0.01) < 1e-6);
    }
}
