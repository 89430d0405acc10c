//! How an answer's numbers follow from the model's metadata ([`Calibration`]): the calibrated
//! `probabilities` and their largest, `confidence` (`celestial.temperature`), and whether the image
//! looks like one of the classes at all, `known` (`celestial.ood_score` and
//! `celestial.ood_threshold`, and the colour check of `celestial.colour_ood`): plain arithmetic on
//! one row of logits and the picture's colour statistics.

use serde::Serialize;

use super::colour::{ColourRule, Features};
use super::kinds::MetadataName;

/// An out-of-distribution score computed from one row of raw logits (`celestial.ood_score`):
/// higher means less like the classes the model knows. The formulas are the ones
/// `model/celestial/train.py` writes as `celestial.ood_score_formula`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OodScore {
    /// Maximum softmax probability: `s = -max_k softmax(logits)[k]`.
    Msp,
    /// Maximum logit: `s = -max_k logits[k]`.
    MaxLogit,
    /// Energy: `s = -log(sum_k exp(logits[k]))`.
    Energy,
}

impl MetadataName for OodScore {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("msp", OodScore::Msp),
        ("max_logit", OodScore::MaxLogit),
        ("energy", OodScore::Energy),
    ];
    const EXPECTED: &'static str =
        "unknown OOD score; this server computes msp, max_logit or energy from the logits";
}

/// `log(sum_k exp(z[k]))`, stable, in f64.
fn logsumexp(z: &[f32]) -> f64 {
    let max = z
        .iter()
        .map(|v| f64::from(*v))
        .fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + z
        .iter()
        .map(|v| (f64::from(*v) - max).exp())
        .sum::<f64>()
        .ln()
}

/// `max_k softmax(z / t)[k]` in f64: `1 / sum_k exp((z[k] - max z) / t)`.
fn top_softmax(z: &[f32], t: f64) -> f64 {
    let max = z
        .iter()
        .map(|v| f64::from(*v))
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z.iter().map(|v| ((f64::from(*v) - max) / t).exp()).sum();
    1.0 / sum
}

impl OodScore {
    /// The score of one row of logits, in f64 (as the training pipeline computes it).
    pub fn score(self, logits: &[f32]) -> f64 {
        match self {
            OodScore::Msp => -top_softmax(logits, 1.0),
            OodScore::MaxLogit => -logits
                .iter()
                .map(|v| f64::from(*v))
                .fold(f64::NEG_INFINITY, f64::max),
            OodScore::Energy => -logsumexp(logits),
        }
    }

    /// The metadata name.
    pub fn name(self) -> &'static str {
        match self {
            OodScore::Msp => "msp",
            OodScore::MaxLogit => "max_logit",
            OodScore::Energy => "energy",
        }
    }
}

/// `known = (score <= threshold)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OodRule {
    pub score: OodScore,
    pub threshold: f64,
    /// `celestial.ood_score_formula`, as written (for `/model`).
    pub formula: Option<String>,
    /// `celestial.ood_false_flag_rate`: the share of in-distribution images the threshold flags.
    pub false_flag_rate: Option<f64>,
}

/// The metadata behind `confidence` and `known`; both are absent from answers of a model without it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Calibration {
    /// `celestial.temperature`: `probabilities = softmax(logits / temperature)`, `confidence` the
    /// largest of them.
    pub temperature: Option<f64>,
    pub ood: Option<OodRule>,
    /// `celestial.colour_ood` (only with `ood`): `known` also needs the picture's colours to pass.
    pub colour: Option<ColourRule>,
}

impl Calibration {
    /// The answer's probabilities from one row of logits: `softmax(logits / temperature)` in f64
    /// (temperature 1 for a model without one), so that they mean how often such answers are right
    /// and `confidence` is the largest of them.
    pub fn probabilities(&self, logits: &[f32]) -> Vec<f32> {
        let t = self.temperature.unwrap_or(1.0);
        let max = logits
            .iter()
            .map(|v| f64::from(*v))
            .fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = logits
            .iter()
            .map(|v| ((f64::from(*v) - max) / t).exp())
            .collect();
        let sum: f64 = exps.iter().sum();
        exps.into_iter().map(|e| (e / sum) as f32).collect()
    }

    /// Whether a picture is like the classes the model knows, when the model has an OOD rule: its
    /// row of logits passes the score's threshold and, with a colour rule, its colour statistics
    /// (`colours`, [`ColourRule`]) pass for the predicted class. Without `colours` only the score
    /// counts (the documentation's example, which has no picture).
    pub fn known(&self, logits: &[f32], colours: Option<&Features>) -> Option<bool> {
        let rule = self.ood.as_ref()?;
        let score = rule.score.score(logits) <= rule.threshold;
        let colour = match (&self.colour, colours) {
            (Some(c), Some(f)) => c.passes(f, argmax(logits)),
            _ => true,
        };
        Some(score && colour)
    }
}

/// The index of the largest value (the first of equal ones): the prediction, from the logits or
/// from the probabilities alike.
pub fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv { (i, v) } else { (bi, bv) }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_follow_their_formulas() {
        let z = [2.0f32, 0.5, -1.0];
        let e: Vec<f64> = z.iter().map(|v| f64::from(*v).exp()).collect();
        let sum: f64 = e.iter().sum();
        assert!((OodScore::Msp.score(&z) + e[0] / sum).abs() < 1e-12);
        assert_eq!(OodScore::MaxLogit.score(&z), -2.0);
        assert!((OodScore::Energy.score(&z) + sum.ln()).abs() < 1e-12);
        // Large logits do not overflow.
        assert!((OodScore::Energy.score(&[1000.0, 1000.0]) + 1000.0 + 2f64.ln()).abs() < 1e-9);
        assert_eq!(OodScore::Msp.score(&[1000.0, -1000.0]), -1.0);
    }

    #[test]
    fn probabilities_and_known_from_the_metadata() {
        let none = Calibration::default();
        assert_eq!(none.known(&[1.0, 0.0], None), None);
        let c = Calibration {
            temperature: Some(0.5),
            ood: Some(OodRule {
                score: OodScore::Msp,
                threshold: -0.6,
                formula: None,
                false_flag_rate: None,
            }),
            colour: None,
        };
        // softmax([1, 0] / 0.5) = softmax([2, 0]) tops at 0.881, while the raw softmax([1, 0]) tops
        // at 0.731 (known: the out-of-distribution score stays on the raw logits).
        let p = c.probabilities(&[1.0, 0.0]);
        assert!((f64::from(p[0]) - 1.0 / (1.0 + (-2f64).exp())).abs() < 1e-6);
        assert!((f64::from(p[0] + p[1]) - 1.0).abs() < 1e-6);
        assert_eq!(none.probabilities(&[0.0, 0.0]), vec![0.5, 0.5]);
        // Large logits do not overflow.
        assert_eq!(c.probabilities(&[1000.0, -1000.0]), vec![1.0, 0.0]);
        assert_eq!(c.known(&[1.0, 0.0], None), Some(true));
        // softmax([0.2, 0]) tops at 0.55 < 0.6: not known.
        assert_eq!(c.known(&[0.2, 0.0], None), Some(false));
        // With a colour rule: the picture's colours must be near the predicted class's bank.
        let at = |x: f64| std::array::from_fn(|i| if i == 0 { x } else { 0.0 });
        let with_colour = Calibration {
            colour: ColourRule::new(
                1,
                0.5,
                [0.0; 10],
                [1.0; 10],
                vec![vec![at(0.0)], vec![at(5.0)]],
                None,
            ),
            ..c.clone()
        };
        assert_eq!(with_colour.known(&[1.0, 0.0], Some(&at(0.2))), Some(true));
        assert_eq!(with_colour.known(&[1.0, 0.0], Some(&at(5.0))), Some(false));
        assert_eq!(with_colour.known(&[0.0, 1.0], Some(&at(5.0))), Some(true));
        assert_eq!(with_colour.known(&[0.2, 0.0], Some(&at(0.0))), Some(false));
        assert_eq!(with_colour.known(&[1.0, 0.0], None), Some(true));
        assert_eq!(OodScore::from_metadata("MSP"), Some(OodScore::Msp));
        assert_eq!(OodScore::from_metadata("knn_cosine"), None);
    }
}
