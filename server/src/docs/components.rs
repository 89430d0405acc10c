//! One function per component schema of the OpenAPI document.

use serde_json::{Value, json};
use utoipa::openapi::{Components, ComponentsBuilder, Schema};

use super::common::{error_example, schema};
use crate::errors::ErrorCode;
use crate::model::ModelSpec;

/// `Prediction`: the answer of `POST /predict`, with every label of `spec`.
fn prediction(spec: &ModelSpec, example: &Value) -> Schema {
    let label_enum = json!({"type": "string", "enum": spec.labels});
    let probs_props: serde_json::Map<String, Value> = spec
        .labels
        .iter()
        .map(|l| {
            (
                l.clone(),
                json!({"type": "number", "minimum": 0, "maximum": 1}),
            )
        })
        .collect();
    let mut properties = json!({
        "prediction": {"description": "The most probable label.", "allOf": [label_enum]},
        "probabilities": {"type": "object", "description": if spec.calibration.temperature.is_some() {
                "Probability of every label (they sum to 1), calibrated: softmax of the model's logits divided by the \
                 model's temperature, so that answers given with probability 0.9 are right about 9 times in 10."
            } else {
                "Probability of every label (they sum to 1): softmax of the model's output."
            },
            "required": spec.labels, "properties": probs_props, "additionalProperties": false}
    });
    let mut required = vec!["prediction", "probabilities"];
    let cal = &spec.calibration;
    if let Some(t) = cal.temperature {
        required.push("confidence");
        properties["confidence"] = json!({
            "type": "number", "minimum": 0, "maximum": 1,
            "description": format!(
                "The calibrated probability of `prediction`, the largest of `probabilities`: the top probability of \
                 softmax(logits / {t}) (temperature fitted on clean and corrupted validation images, so that it \
                 matches how often such answers are right)."
            )
        });
    }
    if let Some(rule) = &cal.ood {
        required.push("known");
        properties["known"] = json!({
            "type": "boolean",
            "description": format!(
                "Whether the image looks like one of the labels at all: false when the out-of-distribution score `{}` \
                 ({}) is above {} (a threshold that flags {} of validation images). `prediction` is still the most \
                 probable label either way.",
                rule.score.name(),
                rule.formula.as_deref().unwrap_or("see /model"),
                rule.threshold,
                rule.false_flag_rate.map_or("a small share".to_string(), |r| format!("{} %", r * 100.0)),
            ) + &cal.colour.as_ref().map_or(String::new(), |c| format!(
                " Also false when the picture's colours are unlike every training variant of the predicted \
                 label: the distance of its {} colour statistics to the {}-th nearest of them is above {} (a \
                 threshold set together with the score's; see /model).",
                crate::model::COLOUR_FEATURES,
                c.k,
                c.threshold,
            ))
        });
    }
    schema(json!({
        "type": "object", "required": required,
        "properties": properties,
        "example": example
    }))
}

/// `Error`: every error body, with the list of stable codes.
fn error() -> Schema {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    schema(json!({
        "type": "object", "required": ["error", "code"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong, as a sentence."},
            "code": {"type": "string", "enum": codes, "description": "Stable machine-readable code."}
        },
        "example": error_example(ErrorCode::InvalidImage)
    }))
}

/// `BatchResponse`: a prediction or an error per image.
fn batch_response() -> Schema {
    schema(json!({
        "type": "object", "required": ["results"],
        "properties": {"results": {"type": "array", "items": {"oneOf": [
            {"$ref": "#/components/schemas/Prediction"}, {"$ref": "#/components/schemas/Error"}
        ]}}}
    }))
}

/// `Health`: the 200 answer of the health routes (a 503 is an `Error`).
fn health() -> Schema {
    schema(json!({
        "type": "object", "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["ok"]}}
    }))
}

/// `ModelInfo`: the answer of `GET /model`.
fn model_info() -> Schema {
    schema(json!({
        "type": "object",
        "required": ["name", "version", "labels", "input", "onnxruntime_version"],
        "properties": {
            "name": {"type": "string"}, "version": {"type": "string"},
            "description": {"type": ["string", "null"], "description": "The model's own description (for the embedded model: how a picture is turned into its input)."},
            "labels": {"type": "array", "items": {"type": "string"}},
            "input": {"type": "object", "description": "Tensor name, layout, size, colour mode and preprocessing."},
            "output": {"type": "object", "description": "Tensor name and kind; `confidence` (rule, temperature) and `known` (rule, score, score_formula, threshold, false_flag_rate, and with a colour check `colour`: formula, k, threshold, bank_sizes per label) when the model defines them."},
            "trained_at": {"type": ["string", "null"]},
            "validation_accuracy": {"type": ["number", "null"]},
            "onnxruntime_version": {"type": "string"},
            "server_version": {"type": "string"},
            "workers": {"type": "integer"},
            "self_check": {
                "type": ["object", "null"],
                "description": "The start-up self-check against the golden set the model carries (`celestial.golden`): `status` `passed` (with `images`: those that got their recorded answers, `skipped`: those a configured limit refused, `max_logit_diff`: the largest difference of a served output value from the recorded one, `seconds`) or `absent` (the model has no golden set: served unchecked); null when none ran. A model that fails it is never served.",
                "required": ["status"],
                "properties": {
                    "status": {"type": "string", "enum": ["passed", "absent"]},
                    "images": {"type": "integer"},
                    "skipped": {"type": "integer"},
                    "max_logit_diff": {"type": "number"},
                    "seconds": {"type": "number"}
                }
            }
        }
    }))
}

/// `DriftStatus`: the answer of `GET /model/drift`.
fn drift_status() -> Schema {
    schema(json!({
        "type": "object",
        "required": ["enabled", "signals"],
        "properties": {
            "enabled": {"type": "boolean"},
            "reason": {"type": "string", "description": "Why the monitor is off."},
            "window": {"type": "integer", "description": "Answers per window (--drift-window)."},
            "step": {"type": "integer", "description": "The window is scored every this many answers (--drift-step)."},
            "false_alarm_rate": {"type": "number", "description": "The chance that a window of traffic like the reference raises any alert (--drift-false-alarm-rate)."},
            "reference_pictures": {"type": "integer"},
            "answers": {"type": "integer", "description": "Live answers counted since start (probes excluded)."},
            "window_answers": {"type": "integer", "description": "Answers in the last scored window."},
            "scored": {"type": "boolean", "description": "Whether a whole window has been scored yet (until then every score is 0)."},
            "signals": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["signal", "test", "threshold", "statistic", "score", "alert"],
                    "properties": {
                        "signal": {"type": "string", "enum": ["labels", "confidence", "unknown", "brightness", "colour"]},
                        "test": {"type": "string"},
                        "threshold": {"type": "number"},
                        "statistic": {"type": "number"},
                        "score": {"type": "number", "description": "statistic / threshold; the alert is on at 1 or more."},
                        "alert": {"type": "boolean"},
                        "worst": {"type": "string", "description": "The colour statistic that moved most (brightness and colour)."}
                    }
                }
            }
        }
    }))
}

/// Every component schema.
pub fn components(spec: &ModelSpec, example: &Value) -> Components {
    ComponentsBuilder::new()
        .schema("Prediction", prediction(spec, example))
        .schema("Error", error())
        .schema("BatchResponse", batch_response())
        .schema("Health", health())
        .schema("ModelInfo", model_info())
        .schema("DriftStatus", drift_status())
        .build()
}
