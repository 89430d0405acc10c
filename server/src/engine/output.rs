//! One output row -> the answer: probabilities (softmax for logits), the arg-max, and the
//! calibrated confidence and `known` when the model's metadata defines them.

use crate::classifier::Prediction;
use crate::model::{ColourFeatures, ModelSpec, OutputKind, argmax};

/// Probabilities from one output row (softmax for logits) and the arg-max; the calibrated
/// confidence and `known` when the model's metadata defines them (`colours`: the picture's colour
/// statistics, [`ModelSpec::colours`], for a model with a colour check).
pub fn to_prediction(
    row: &[f32],
    spec: &ModelSpec,
    colours: Option<&ColourFeatures>,
) -> Prediction {
    let probabilities = match spec.output_kind {
        OutputKind::Probabilities => row.to_vec(),
        OutputKind::Logits => softmax(row),
    };
    Prediction {
        best: argmax(&probabilities),
        probabilities,
        output: row.to_vec(),
        confidence: spec.calibration.confidence(row),
        known: spec.calibration.known(row, colours),
        colours: colours.copied(),
    }
}

/// Numerically stable softmax.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 3.0, 2.0, 1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let spec = |output_kind| ModelSpec {
            output_kind,
            labels: vec!["a".into(), "b".into(), "c".into()],
            ..crate::testing::spec()
        };
        let pred = to_prediction(&[1.0, 3.0, 2.0], &spec(OutputKind::Logits), None);
        assert_eq!((pred.best, pred.confidence, pred.known), (1, None, None));
        assert!(p[3] > 0.99 && p.iter().all(|v| v.is_finite()));
        let pred = to_prediction(&[0.2, 0.5, 0.3], &spec(OutputKind::Probabilities), None);
        assert_eq!((pred.best, pred.probabilities), (1, vec![0.2, 0.5, 0.3]));
    }
}
