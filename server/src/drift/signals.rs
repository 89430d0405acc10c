//! The drift signals and their tests: each compares one aspect of a window of answers
//! ([`Snapshot`]) with the model's reference ([`DriftReference`]) and gives a statistic, a threshold
//! derived from the false-alarm rate, and their ratio, the score (an alert at 1 or more).
//!
//! The reference is itself a sample (150 pictures for the served model): a test that took its
//! shares and means as exact would alert on clean traffic that differs from it by chance. Every
//! test therefore allows the live traffic to differ from the reference as much as another sample
//! of as many pictures would: the variance of a share or mean is taken as `v = 1/window +
//! 2/pictures` (window sampling, plus twice the reference's), not `1/window`.

use serde::Serialize;

use super::stats::{chi2_quantile, normal_two_sided};
use super::window::Snapshot;
use crate::model::{COLOUR_STATISTICS, DriftReference};

/// One signal of the drift monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// The predicted labels' shares against the reference's (chi-squared).
    Labels,
    /// The confidence's quantile bins against the reference's (chi-squared).
    Confidence,
    /// The share of `known: false` answers, above the reference's (one-sided).
    Unknown,
    /// The pictures' per-channel means and spreads (exposure, contrast; max |z|).
    Brightness,
    /// The pictures' chromaticities and their spreads (grayscale, tint; max |z|).
    Colour,
}

impl Signal {
    /// The `signal` label of the metrics and the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Labels => "labels",
            Signal::Confidence => "confidence",
            Signal::Unknown => "unknown",
            Signal::Brightness => "brightness",
            Signal::Colour => "colour",
        }
    }

    /// Which colour statistics a colour signal looks at.
    fn statistics(self) -> std::ops::Range<usize> {
        match self {
            Signal::Brightness => 0..6,
            Signal::Colour => 6..10,
            _ => 0..0,
        }
    }
}

/// A signal's test, with its threshold fixed at start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Test {
    pub signal: Signal,
    /// What is computed, in words (for `/model/drift`).
    pub test: String,
    /// The statistic's alert threshold.
    pub threshold: f64,
}

/// A signal's outcome on one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub statistic: f64,
    /// `statistic / threshold`.
    pub score: f64,
    /// The colour statistic that moved most (brightness and colour).
    pub worst: Option<&'static str>,
}

/// Reference shares of `counts`, kept off zero: `(c + 0.5) / (n + 0.5 k)`.
fn shares(counts: &[u64]) -> Vec<f64> {
    let n: u64 = counts.iter().sum();
    let k = counts.len() as f64;
    counts
        .iter()
        .map(|c| (*c as f64 + 0.5) / (n as f64 + 0.5 * k))
        .collect()
}

/// The variance factor of a share or mean over `answers` answers against a reference of
/// `pictures` (the module's text).
fn variance(answers: u64, pictures: u64) -> f64 {
    1.0 / answers.max(1) as f64 + 2.0 / pictures as f64
}

/// The tests of a model with this reference, each at `tail` (its share of the false-alarm rate);
/// `with_confidence`, `with_known`, `with_colours`: whether the model's answers carry them.
pub fn tests(r: &DriftReference, tail: f64, present: [bool; 3]) -> Vec<Test> {
    let [with_confidence, with_known, with_colours] = present;
    let chi = |signal, k: usize, what: &str| Test {
        signal,
        test: format!(
            "chi-squared of the window's {what} against the reference's, {} degrees of freedom",
            k - 1
        ),
        threshold: chi2_quantile((k - 1) as f64, tail),
    };
    let mut out = vec![chi(Signal::Labels, r.labels.len().max(2), "label shares")];
    if with_confidence {
        out.push(chi(
            Signal::Confidence,
            r.confidence_counts.len().max(2),
            "shares of the confidence's quantile bins",
        ));
    }
    if with_known {
        out.push(Test {
            signal: Signal::Unknown,
            test: "z of the window's share of known=false answers above the reference's".into(),
            // one-sided: P(Z > z) = tail
            threshold: normal_two_sided(2.0 * tail),
        });
    }
    if with_colours {
        for signal in [Signal::Brightness, Signal::Colour] {
            let range = signal.statistics();
            let names = COLOUR_STATISTICS[range.clone()].join(", ");
            out.push(Test {
                signal,
                test: format!("largest |z| of the window's means of {names} against the reference"),
                threshold: normal_two_sided(tail / range.len() as f64),
            });
        }
    }
    out
}

/// The outcome of `test` on the window `s`.
pub fn evaluate(test: &Test, r: &DriftReference, s: &Snapshot) -> Outcome {
    let (statistic, worst) = match test.signal {
        Signal::Labels => (chi_squared(&s.labels, &r.labels, r.pictures), None),
        Signal::Confidence => (
            chi_squared(&s.confidence_bins, &r.confidence_counts, r.pictures),
            None,
        ),
        Signal::Unknown => (unknown_z(s, r), None),
        Signal::Brightness | Signal::Colour => largest_z(test.signal, s, r),
    };
    Outcome {
        statistic,
        score: statistic / test.threshold,
        worst,
    }
}

/// `sum_i (p_i - q_i)^2 / q_i / v`: the window's shares `p` against the reference's `q`.
fn chi_squared(window: &[u64], reference: &[u64], pictures: u64) -> f64 {
    let n: u64 = window.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let q = shares(reference);
    let sum: f64 = window
        .iter()
        .zip(&q)
        .map(|(c, q)| {
            let p = *c as f64 / n as f64;
            (p - q) * (p - q) / q
        })
        .sum();
    sum / variance(n, pictures)
}

/// `(p - q) / sqrt(q (1 - q) v)` for the share of unknown answers, 0 below the reference's.
fn unknown_z(s: &Snapshot, r: &DriftReference) -> f64 {
    if s.with_known == 0 {
        return 0.0;
    }
    let q = (r.unknown as f64 + 0.5) / (r.pictures as f64 + 1.0);
    let p = s.unknown as f64 / s.with_known as f64;
    ((p - q) / (q * (1.0 - q) * variance(s.with_known, r.pictures)).sqrt()).max(0.0)
}

/// The largest `|m - mean| / (std sqrt(v))` over the signal's colour statistics, and its name.
fn largest_z(signal: Signal, s: &Snapshot, r: &DriftReference) -> (f64, Option<&'static str>) {
    if s.with_colours == 0 {
        return (0.0, None);
    }
    let n = s.with_colours as f64;
    let v = variance(s.with_colours, r.pictures).sqrt();
    signal
        .statistics()
        .map(|i| {
            let z = (s.colour_sums[i] / n - r.colour_mean[i]) / (r.colour_std[i] * v);
            (z.abs(), Some(COLOUR_STATISTICS[i]))
        })
        .fold((0.0, None), |best, z| if z.0 > best.0 { z } else { best })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::COLOUR_FEATURES;

    fn reference() -> DriftReference {
        DriftReference {
            pictures: 100,
            labels: vec![50, 50],
            confidence_edges: vec![0.9],
            confidence_counts: vec![50, 50],
            unknown: 1,
            colour_mean: [0.3; COLOUR_FEATURES],
            colour_std: [0.1; COLOUR_FEATURES],
        }
    }

    fn window(labels: [u64; 2], unknown: u64, colour: f64) -> Snapshot {
        let n = labels[0] + labels[1];
        Snapshot {
            answers: n,
            labels: labels.to_vec(),
            confidence_bins: vec![n / 2, n - n / 2],
            with_confidence: n,
            unknown,
            with_known: n,
            colour_sums: [colour * n as f64; COLOUR_FEATURES],
            with_colours: n,
        }
    }

    #[test]
    fn thresholds_follow_the_false_alarm_rate() {
        let t = tests(&reference(), 1e-4, [true, true, true]);
        let names: Vec<&str> = t.iter().map(|t| t.signal.name()).collect();
        assert_eq!(
            names,
            ["labels", "confidence", "unknown", "brightness", "colour"]
        );
        assert!((t[0].threshold - 15.1367).abs() < 1e-3, "{t:?}");
        assert!((t[2].threshold - 3.7190).abs() < 1e-3, "{t:?}");
        assert!(
            t[3].threshold > t[4].threshold,
            "six statistics share the rate"
        );
        assert_eq!(tests(&reference(), 1e-4, [false, false, false]).len(), 1);
    }

    #[test]
    fn a_window_like_the_reference_scores_low_and_a_changed_one_high() {
        let r = reference();
        let t = tests(&r, 1e-4, [true, true, true]);
        let score = |s: &Snapshot, i: usize| evaluate(&t[i], &r, s).score;
        let clean = window([200, 200], 4, 0.3);
        for test in &t {
            let o = evaluate(test, &r, &clean);
            assert!(o.score < 0.1, "{}: {o:?}", test.signal.name());
        }
        assert!(score(&window([400, 0], 4, 0.3), 0) > 1.0);
        assert!(score(&window([200, 200], 200, 0.3), 2) > 1.0);
        assert_eq!(
            score(&window([200, 200], 0, 0.3), 2),
            0.0,
            "fewer unknowns is no drift"
        );
        let dim = evaluate(&t[3], &r, &window([200, 200], 4, 0.15));
        assert!(dim.score > 1.0 && dim.worst == Some("mean_r"), "{dim:?}");
        assert!(score(&window([200, 200], 4, 0.15), 4) > 1.0);
        assert_eq!(score(&Snapshot::default(), 0), 0.0);
    }
}
