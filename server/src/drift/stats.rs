//! The two distributions the drift thresholds come from: the quantiles of chi-squared (count
//! tests) and of the standard normal (mean tests), at a given tail probability. Plain arithmetic
//! on the regularised incomplete gamma function; a leaf.

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, n = 9: about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // reflection: Γ(x) Γ(1 - x) = π / sin(πx)
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let sum = G[1..]
        .iter()
        .enumerate()
        .fold(G[0], |s, (i, g)| s + g / (x + i as f64 + 1.0));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

/// The upper regularised incomplete gamma function `Q(a, x) = Γ(a, x) / Γ(a)`, `a > 0`, `x >= 0`:
/// a series below `a + 1`, a continued fraction above (Numerical Recipes, 6.2).
fn gamma_q(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let front = (-x + a * x.ln() - ln_gamma(a)).exp();
    if x < a + 1.0 {
        let (mut ap, mut term) = (a, 1.0 / a);
        let mut sum = term;
        for _ in 0..1000 {
            ap += 1.0;
            term *= x / ap;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        return (1.0 - sum * front).max(0.0);
    }
    let tiny = 1e-300;
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / tiny;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..1000 {
        let an = -(i as f64) * (i as f64 - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < tiny {
            d = tiny;
        }
        c = b + an / c;
        if c.abs() < tiny {
            c = tiny;
        }
        d = 1.0 / d;
        let step = d * c;
        h *= step;
        if (step - 1.0).abs() < 1e-16 {
            break;
        }
    }
    (front * h).clamp(0.0, 1.0)
}

/// `P(X > x)` for X chi-squared with `df` degrees of freedom.
pub fn chi2_tail(df: f64, x: f64) -> f64 {
    gamma_q(df / 2.0, x / 2.0)
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
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }
}
