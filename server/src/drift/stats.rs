//! The two distributions the drift thresholds come from: the quantiles of chi-squared (count
//! tests; its tail is celestial-common's, shared with the deployer's canary) and of the standard
//! normal (mean tests), at a given tail probability.

use celestial_common::stats::chi_squared_tail;

/// `P(X > x)` for X chi-squared with `df` degrees of freedom.
pub fn chi2_tail(df: f64, x: f64) -> f64 {
    chi_squared_tail(x, df)
}

/// The `x` with `P(X > x) = tail` for X chi-squared with `df >= 1` degrees of freedom,
/// `0 < tail < 1` (bisection on [`chi2_tail`], to a relative 1e-12).
pub fn chi2_quantile(df: f64, tail: f64) -> f64 {
    let (mut lo, mut hi) = (0.0, df.max(1.0));
    while chi2_tail(df, hi) > tail {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if chi2_tail(df, mid) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= hi * 1e-12 {
            break;
        }
    }
    hi
}

/// The `z` with `P(|Z| > z) = tail` for a standard normal Z: `Z²` is chi-squared with one degree
/// of freedom.
pub fn normal_two_sided(tail: f64) -> f64 {
    chi2_quantile(1.0, tail).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs()
    }

    #[test]
    fn quantiles_agree_with_published_tables() {
        // (df, tail, quantile): standard chi-squared tables (R's qchisq(1 - tail, df)).
        for (df, tail, q) in [
            (1.0, 0.05, 3.841_458_820_694_124),
            (1.0, 1e-4, 15.136_705_226_623_606),
            (4.0, 1e-4, 23.512_742_311_000_21),
            (9.0, 0.05, 16.918_977_604_620_45),
            (9.0, 1e-4, 33.719_938_231_362_29),
        ] {
            let got = chi2_quantile(df, tail);
            assert!(close(got, q, 1e-6), "df {df} tail {tail}: {got} != {q}");
        }
        // qnorm(1 - 0.05 / 2), qnorm(1 - 1e-4 / 2)
        assert!(close(normal_two_sided(0.05), 1.959_963_984_540_054, 1e-6));
        assert!(close(normal_two_sided(1e-4), 3.890_591_886_413_11, 1e-6));
    }

    #[test]
    fn the_tail_is_one_at_zero_and_falls() {
        assert_eq!(chi2_tail(3.0, 0.0), 1.0);
        let mut last = 1.0;
        for x in [0.5, 1.0, 2.0, 5.0, 10.0, 50.0, 200.0] {
            let t = chi2_tail(3.0, x);
            assert!(t < last && t >= 0.0, "{x}: {t}");
            last = t;
        }
    }
}
