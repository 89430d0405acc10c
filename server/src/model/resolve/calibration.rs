//! `confidence` and `known` from the metadata: the temperature, the OOD rule and the colour check
//! (each optional, each checked against the model it comes with).

use super::meta::{Meta, bad, kind, number};
use crate::model::calibration::{Calibration, OodRule, OodScore};
use crate::model::colour::{ColourRule, FEATURES, Features, MAX_K};
use crate::model::kinds::{ColorMode, OutputKind};
use crate::model::spec::ModelError;

/// `confidence` and `known`: `celestial.temperature` (a positive number), `celestial.ood_score`
/// (a score this server computes from the logits) with `celestial.ood_threshold`. Each is
/// optional, but a score needs its threshold and both need a model that outputs logits.
pub(super) fn calibration(
    meta: &Meta<'_>,
    output_kind: OutputKind,
) -> Result<Calibration, ModelError> {
    let temperature = match meta.get("temperature") {
        None => None,
        Some(v) => match v.parse::<f64>() {
            Ok(t) if t.is_finite() && t > 0.0 => Some(t),
            _ => return Err(bad("temperature", &v, "expected a positive number")),
        },
    };
    if let Some(output) = meta.get("ood_score_output") {
        return Err(bad(
            "ood_score_output",
            &output,
            "a score read from a second model output is not supported by this server (only scores computed from the logits: msp, max_logit, energy)",
        ));
    }
    let threshold = meta.ladder(None, "ood_threshold", number::<f64>("expected a number"))?;
    let ood = match (meta.ladder(None, "ood_score", kind::<OodScore>)?, threshold) {
        (None, None) => None,
        (Some(score), Some(threshold)) if threshold.is_finite() => Some(OodRule {
            score,
            threshold,
            formula: meta.get("ood_score_formula"),
            false_flag_rate: meta.ladder(
                None,
                "ood_false_flag_rate",
                number("expected a number"),
            )?,
        }),
        (Some(_), Some(t)) => return Err(bad("ood_threshold", &t.to_string(), "not finite")),
        (Some(score), None) => {
            return Err(ModelError::Invalid(format!(
                "the metadata names the OOD score `{}` (celestial.ood_score) but no celestial.ood_threshold",
                score.name()
            )));
        }
        (None, Some(_)) => {
            return Err(ModelError::Invalid(
                "the metadata has celestial.ood_threshold but no celestial.ood_score".into(),
            ));
        }
    };
    let calibration = Calibration {
        temperature,
        ood,
        colour: None,
    };
    if output_kind != OutputKind::Logits && calibration != Calibration::default() {
        return Err(ModelError::Invalid(
            "celestial.temperature and celestial.ood_score need a model that outputs logits".into(),
        ));
    }
    Ok(calibration)
}

/// `celestial.colour_ood` as the training pipeline writes it (JSON).
#[derive(serde::Deserialize)]
struct ColourMetadata {
    formula: Option<String>,
    statistics: Vec<String>,
    k: usize,
    threshold: f64,
    mean: Vec<f64>,
    std: Vec<f64>,
    bank: Vec<Vec<Vec<f64>>>,
}

/// The colour check of `known` (`celestial.colour_ood`, optional): it needs an OOD rule, an RGB
/// model and a bank of ten statistics per picture for every label.
pub(super) fn colour(
    meta: &Meta<'_>,
    calibration: &Calibration,
    labels: usize,
    color_mode: ColorMode,
) -> Result<Option<ColourRule>, ModelError> {
    let Some(text) = meta.get("colour_ood") else {
        return Ok(None);
    };
    let invalid = |reason: String| bad("colour_ood", "(JSON)", &reason);
    let m: ColourMetadata =
        serde_json::from_str(&text).map_err(|e| invalid(format!("not the expected JSON: {e}")))?;
    if calibration.ood.is_none() || color_mode != ColorMode::Rgb {
        return Err(invalid(
            "the colour check needs celestial.ood_score and an RGB model".into(),
        ));
    }
    let ten = |v: &[f64], what: &str| -> Result<Features, ModelError> {
        <Features>::try_from(v)
            .map_err(|_| invalid(format!("{what}: {} numbers, expected {FEATURES}", v.len())))
    };
    if m.statistics.len() != FEATURES {
        return Err(invalid(format!(
            "{} statistics, expected {FEATURES}",
            m.statistics.len()
        )));
    }
    if m.bank.len() != labels {
        return Err(invalid(format!(
            "a bank for {} classes, the model has {labels} labels",
            m.bank.len()
        )));
    }
    let bank = m
        .bank
        .iter()
        .map(|class| class.iter().map(|f| ten(f, "a bank picture")).collect())
        .collect::<Result<Vec<Vec<Features>>, _>>()?;
    let (mean, std) = (ten(&m.mean, "mean")?, ten(&m.std, "std")?);
    ColourRule::new(m.k, m.threshold, mean, std, bank, m.formula)
        .map(Some)
        .ok_or_else(|| {
            invalid(format!(
                "k must be 1..={MAX_K} and at most the smallest class bank, std positive, \
                     every number finite"
            ))
        })
}
