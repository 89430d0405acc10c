//! The canary's verdict (pure): the canary pods' signals against the stable pods' over the same
//! window, one check per signal, each with its numbers. The rules:
//!
//! - **errors**: the canary's 5xx ratio of prediction requests exceeds the stable pods' by more than
//!   `--canary-error-margin`, by more than chance explains (one-sided binomial test at
//!   `--canary-alpha` against the stable ratio plus the margin: 1 error in 50 requests is not news);
//! - **latency_p99**: the canary's p99 (from the histogram buckets) is above both `--canary-latency-factor`
//!   times the stable pods' and theirs plus [`LATENCY_SLACK`];
//! - **unknown_rate**: more `known: false` answers, the difference significant at `--canary-alpha`
//!   (chi-squared, 2x2);
//! - **confidence**: the distribution of the predicted label's probability differs at `--canary-alpha`
//!   and the canary's mean is lower;
//! - **labels**: the distribution of predicted labels differs at `--canary-alpha` (chi-squared over
//!   the labels, rare ones pooled): both groups see the same stream, split at random, so two models
//!   that agree answer it alike.
//!
//! A canary whose containers restarted during the window fails before all of these
//! ([`with_restarts`]). The first failed check decides (in the order above); every check is
//! reported.

use std::collections::BTreeSet;

use super::signals::{Signals, mean, per_bucket, quantile};
use super::stats::{binomial_tail, homogeneity};

/// Latency differences smaller than this never fail a canary: the buckets are coarse and pods on
/// different nodes differ by as much.
pub const LATENCY_SLACK: f64 = 0.1;

/// What the analysis holds a canary to (the `--canary-*` flags).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Limits {
    /// Each statistical test's significance level.
    pub alpha: f64,
    /// The fewest canary predictions the analysis judges on.
    pub min_predictions: f64,
    pub error_margin: f64,
    pub latency_factor: f64,
}

/// One signal compared.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Check {
    /// `errors`, `latency_p99`, `unknown_rate`, `confidence`, `labels`.
    pub signal: &'static str,
    /// The canary's and the stable pods' value (a ratio, seconds, a mean; None when they have none).
    pub canary: Option<f64>,
    pub stable: Option<f64>,
    /// The test's p-value, for the statistical checks.
    pub p_value: Option<f64>,
    /// Failed (it decides), passed, or not judged (`skipped` says why).
    pub failed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// The comparison in words, with its numbers.
    pub detail: String,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Analysis {
    pub promote: bool,
    /// The signal of the first failed check.
    pub decided_by: Option<&'static str>,
    /// Fewer canary predictions than the minimum: nothing was judged on live traffic.
    pub too_little_traffic: bool,
    pub checks: Vec<Check>,
}

/// Judges the canary's signals against the stable pods'.
pub fn decide(canary: &Signals, stable: &Signals, limits: Limits) -> Analysis {
    if canary.predictions() < limits.min_predictions {
        return Analysis {
            promote: true,
            decided_by: None,
            too_little_traffic: true,
            checks: Vec::new(),
        };
    }
    let checks = vec![
        errors(canary, stable, limits),
        latency(canary, stable, limits),
        unknown(canary, stable, limits),
        confidence(canary, stable, limits),
        labels(canary, stable, limits),
    ];
    let decided_by = checks.iter().find(|c| c.failed).map(|c| c.signal);
    Analysis {
        promote: decided_by.is_none(),
        decided_by,
        too_little_traffic: false,
        checks,
    }
}

/// A canary whose containers restarted during the window is aborted whatever its metrics say (a
/// restart resets them, and a crash is the worst answer there is).
pub fn with_restarts(mut a: Analysis, restarts: i32) -> Analysis {
    if restarts <= 0 {
        return a;
    }
    let check = Check {
        signal: "restarts",
        canary: Some(f64::from(restarts)),
        stable: None,
        p_value: None,
        failed: true,
        skipped: None,
        detail: format!("the canary's containers restarted {restarts} time(s) during the window"),
    };
    a.checks.insert(0, check);
    a.promote = false;
    a.decided_by = Some("restarts");
    a.too_little_traffic = false;
    a
}

fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole)
}

fn skipped(signal: &'static str, why: String) -> Check {
    Check {
        signal,
        canary: None,
        stable: None,
        p_value: None,
        failed: false,
        detail: format!("not judged: {why}"),
        skipped: Some(why),
    }
}

fn errors(canary: &Signals, stable: &Signals, limits: Limits) -> Check {
    let (Some(c), s) = (
        ratio(canary.errors, canary.requests),
        ratio(stable.errors, stable.requests).unwrap_or(0.0),
    ) else {
        return skipped("errors", "no HTTP prediction requests on the canary".into());
    };
    // More errors than the stable pods' rate plus the margin explains, by chance, at alpha.
    let allowed = (s + limits.error_margin).min(1.0);
    let p = binomial_tail(canary.errors, canary.requests, allowed);
    Check {
        signal: "errors",
        canary: Some(c),
        stable: Some(s),
        p_value: Some(p),
        failed: c > allowed && p < limits.alpha,
        skipped: None,
        detail: format!(
            "5xx ratio {c:.4} ({}/{}) vs {s:.4} ({}/{}) stable; fails above {allowed:.4} (+{} --canary-error-margin), {}",
            canary.errors,
            canary.requests,
            stable.errors,
            stable.requests,
            limits.error_margin,
            describe_p(Some(p), limits.alpha)
        ),
    }
}

fn latency(canary: &Signals, stable: &Signals, limits: Limits) -> Check {
    let (Some(c), Some(s)) = (
        quantile(0.99, &canary.latency),
        quantile(0.99, &stable.latency),
    ) else {
        return skipped("latency_p99", "no latency observations on one side".into());
    };
    let bound = (s * limits.latency_factor).max(s + LATENCY_SLACK);
    Check {
        signal: "latency_p99",
        canary: Some(c),
        stable: Some(s),
        p_value: None,
        failed: c > bound,
        skipped: None,
        detail: format!(
            "p99 {:.1} ms vs {:.1} ms stable; fails above {:.1} ms (x{} --canary-latency-factor, at least +{:.0} ms)",
            c * 1e3,
            s * 1e3,
            bound * 1e3,
            limits.latency_factor,
            LATENCY_SLACK * 1e3
        ),
    }
}

fn unknown(canary: &Signals, stable: &Signals, limits: Limits) -> Check {
    let (Some(cu), Some(su)) = (canary.unknown, stable.unknown) else {
        let side = if canary.unknown.is_none() {
            "the canary's"
        } else {
            "the stable pods'"
        };
        return skipped(
            "unknown_rate",
            format!(
                "{side} model has no out-of-distribution rule (no celestial_unknown_predictions_total)"
            ),
        );
    };
    let (cn, sn) = (canary.predictions(), stable.predictions());
    let (c, s) = (ratio(cu, cn).unwrap_or(0.0), ratio(su, sn).unwrap_or(0.0));
    let test = homogeneity(&[cu, cn - cu], &[su, sn - su]);
    let p = test.as_ref().map(|t| t.p_value);
    Check {
        signal: "unknown_rate",
        canary: Some(c),
        stable: Some(s),
        p_value: p,
        failed: c > s && p.is_some_and(|p| p < limits.alpha),
        skipped: None,
        detail: format!(
            "unknown rate {c:.3} ({cu}/{cn}) vs {s:.3} ({su}/{sn}) stable, {}",
            describe_p(p, limits.alpha)
        ),
    }
}

fn confidence(canary: &Signals, stable: &Signals, limits: Limits) -> Check {
    let (Some(ch), Some(sh)) = (&canary.confidence, &stable.confidence) else {
        let side = if canary.confidence.is_none() {
            "the canary pods"
        } else {
            "the stable pods"
        };
        return skipped(
            "confidence",
            format!("{side} do not export celestial_prediction_confidence"),
        );
    };
    let bounds = |h: &[(f64, f64)]| h.iter().map(|(b, _)| b.to_bits()).collect::<Vec<_>>();
    if bounds(ch) != bounds(sh) {
        return skipped("confidence", "the two sides' buckets differ".into());
    }
    let (c, s) = (mean(ch), mean(sh));
    let test = homogeneity(&per_bucket(ch), &per_bucket(sh));
    let p = test.as_ref().map(|t| t.p_value);
    let lower = matches!((c, s), (Some(c), Some(s)) if c < s);
    Check {
        signal: "confidence",
        canary: c,
        stable: s,
        p_value: p,
        failed: lower && p.is_some_and(|p| p < limits.alpha),
        skipped: None,
        detail: format!(
            "mean confidence {:.3} vs {:.3} stable (bucket middles), distribution {}",
            c.unwrap_or(f64::NAN),
            s.unwrap_or(f64::NAN),
            describe_p(p, limits.alpha)
        ),
    }
}

fn labels(canary: &Signals, stable: &Signals, limits: Limits) -> Check {
    let names: BTreeSet<&String> = canary.labels.keys().chain(stable.labels.keys()).collect();
    let counts = |s: &Signals| -> Vec<f64> {
        names
            .iter()
            .map(|n| s.labels.get(*n).copied().unwrap_or(0.0))
            .collect()
    };
    let (c, s) = (counts(canary), counts(stable));
    let test = homogeneity(&c, &s);
    let p = test.as_ref().map(|t| t.p_value);
    // The label whose share moved most, to say what changed.
    let (cn, sn) = (canary.predictions(), stable.predictions());
    let moved = names
        .iter()
        .zip(c.iter().zip(&s))
        .map(|(n, (x, y))| (n, x / cn.max(1.0), y / sn.max(1.0)))
        .max_by(|a, b| (a.1 - a.2).abs().total_cmp(&(b.1 - b.2).abs()));
    let most = moved
        .map(|(n, x, y)| format!("; most moved: {n} {x:.3} vs {y:.3}"))
        .unwrap_or_default();
    Check {
        signal: "labels",
        canary: None,
        stable: None,
        p_value: p,
        failed: p.is_some_and(|p| p < limits.alpha),
        skipped: None,
        detail: format!(
            "predicted labels of {cn} vs {sn} predictions, chi-squared {}{most}",
            match &test {
                Some(t) => format!(
                    "{:.1} (df {}), {}",
                    t.statistic,
                    t.df,
                    describe_p(p, limits.alpha)
                ),
                None => "not computable (too few answers of distinct labels)".into(),
            }
        ),
    }
}

fn describe_p(p: Option<f64>, alpha: f64) -> String {
    match p {
        Some(p) if p < alpha => format!("p = {p:.2e} < {alpha} (--canary-alpha)"),
        Some(p) => format!("p = {p:.3}"),
        None => "no test (too few answers)".into(),
    }
}

#[cfg(test)]
mod tests;
