//! One output row -> the answer: probabilities (the calibrated softmax for logits), the arg-max,
//! and the confidence (the largest probability) and `known` when the model's metadata defines them.

use crate::classifier::Prediction;
use crate::model::{ColourFeatures, ModelSpec, OutputKind, argmax};

/// Probabilities from one output row (for logits the softmax at the model's temperature,
/// `celestial.temperature`, else 1) and the arg-max; the confidence (the largest probability, so
/// one number for one thing) and `known` when the model's metadata defines them (`colours`: the
/// picture's colour statistics, [`ModelSpec::colours`], for a model with a colour check).
pub fn to_prediction(
    row: &[f32],
    spec: &ModelSpec,
    colours: Option<&ColourFeatures>,
) -> Prediction {
    let probabilities = match spec.output_kind {
        OutputKind::Probabilities => row.to_vec(),
        OutputKind::Logits => spec.calibration.probabilities(row),
    };
    let best = argmax(&probabilities);
    Prediction {
        best,
        confidence: spec.calibration.temperature.map(|_| probabilities[best]),
        probabilities,
        output: row.to_vec(),
        known: spec.calibration.known(row, colours),
        colours: colours.copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_calibrated_and_confidence_is_the_largest() {
        let spec = |output_kind, temperature| {
            let mut spec = ModelSpec {
                output_kind,
                labels: vec!["a".into(), "b".into(), "c".into(), "d".into()],
                ..crate::testing::spec()
            };
            spec.calibration.temperature = temperature;
            spec
        };
        let row = [1.0, 3.0, 2.0, 1000.0];
        let pred = to_prediction(&row, &spec(OutputKind::Logits, None), None);
        assert_eq!((pred.best, pred.confidence, pred.known), (3, None, None));
        assert!((pred.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let pred = to_prediction(
            &[1.0, 3.0, 2.0, 0.0],
            &spec(OutputKind::Logits, Some(0.5)),
            None,
        );
        let p = &pred.probabilities;
        assert_eq!(pred.best, 1);
        assert_eq!(pred.confidence, Some(p[1]));
        // softmax(z / 0.5): the top probability is 1 / (1 + e^-2 + e^-4 + e^-6)
        let want = 1.0 / (1.0 + (-2f64).exp() + (-4f64).exp() + (-6f64).exp());
        assert!((f64::from(p[1]) - want).abs() < 1e-6, "{p:?}");
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let probabilities = spec(OutputKind::Probabilities, None);
        let pred = to_prediction(&[0.2, 0.5, 0.3, 0.0], &probabilities, None);
        assert_eq!(
            (pred.best, pred.probabilities),
            (1, vec![0.2, 0.5, 0.3, 0.0])
        );
    }
}
