//! The documents the server answers with, rendered once at start-up ([`documents`]): the OpenAPI
//! 3.1 document (`/docs.json`, [`openapi`]), the BentoML service description (`/schema.json`)
//! that `bentoml.SyncHTTPClient` reads, and the model description (`/model`).
//!
//! Inside: `common` (schema helpers, a leaf), `description` (the text atop the Swagger page and
//! the limits it states), `operations` (one function per route), `components` (one function per
//! schema), `v2` (the Open Inference Protocol's routes and schemas), `openapi` (assembles them). Imports the classifier's description of the model, the
//! error codes and the routes; never the HTTP layer.

mod common;
mod components;
mod description;
mod openapi;
mod operations;
mod v2;

use axum::body::Bytes;
use serde_json::{Value, json};

pub use common::example_prediction;
pub use description::DocLimits;
pub use openapi::{SECURITY_SCHEMES, openapi, openapi_secured};

use crate::classifier::Classifier;
use crate::model::ModelSpec;
use crate::routes;

/// The serialized documents.
#[derive(Debug, Clone)]
pub struct Documents {
    pub openapi: Bytes,
    pub schema: Bytes,
    pub model: Bytes,
}

/// Render every document for `classifier`'s model (no API keys).
pub fn documents(classifier: &dyn Classifier, service_name: &str, limits: &DocLimits) -> Documents {
    documents_secured(classifier, service_name, limits, &[])
}

/// Render every document for `classifier`'s model; the `protected` routes need an API key.
pub fn documents_secured(
    classifier: &dyn Classifier,
    service_name: &str,
    limits: &DocLimits,
    protected: &[&str],
) -> Documents {
    let openapi = openapi_secured(classifier.spec(), limits, protected)
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    Documents {
        openapi: Bytes::from(openapi),
        schema: Bytes::from(bentoml_schema(service_name).to_string()),
        model: Bytes::from(model_document(classifier).to_string()),
    }
}

/// The `/model` document.
pub fn model_document(classifier: &dyn Classifier) -> Value {
    let s = classifier.spec();
    json!({
        "name": s.name,
        "version": s.version,
        // The model's own text (its ONNX description): for the served model, how a picture is
        // turned into its input, in words. The Swagger page's description is the server's own.
        "description": s.description,
        "labels": s.labels,
        "input": {
            "name": s.input_name,
            "layout": s.layout,
            "height": s.height,
            "width": s.width,
            "color_mode": s.color_mode,
            "grayscale_coefficients": (s.channels() == 1).then_some(s.grayscale_coefficients),
            "alpha": s.alpha,
            "resize_filter": s.resize_filter,
            "resize_mode": s.resize_mode,
            "jpeg_dct_scaling": s.jpeg_dct_scaling,
            "scale": s.scale,
            "mean": s.mean,
            "std": s.std,
        },
        "output": output_document(s),
        "trained_at": s.trained_at,
        "validation_accuracy": s.validation_accuracy,
        "onnxruntime_version": classifier.runtime_version(),
        "server_version": env!("CARGO_PKG_VERSION"),
        "workers": classifier.workers(),
        // How the start-up self-check against the model's golden set went; null when none ran.
        "self_check": classifier.self_check(),
    })
}

/// `/model`'s `output`: the tensor, and the rules of `confidence` and `known` when the model has them.
fn output_document(s: &ModelSpec) -> Value {
    let mut out = json!({"name": s.output_name, "kind": s.output_kind});
    if let Some(t) = s.calibration.temperature {
        out["confidence"] = json!({
            "rule": "max_k softmax(logits / temperature)[k], the largest of the answer's probabilities",
            "probabilities": "softmax(logits / temperature)",
            "temperature": t,
        });
    }
    if let Some(rule) = &s.calibration.ood {
        out["known"] = json!({
            "rule": "score <= threshold",
            "score": rule.score,
            "score_formula": rule.formula,
            "threshold": rule.threshold,
            "false_flag_rate": rule.false_flag_rate,
        });
        if let Some(c) = &s.calibration.colour {
            out["known"]["rule"] =
                json!("score <= threshold and colour.distance <= colour.threshold");
            out["known"]["colour"] = json!({
                "formula": c.formula,
                "k": c.k,
                "threshold": c.threshold,
                "bank_sizes": c.bank_sizes,
            });
        }
    }
    out
}

/// The service description BentoML's client reads (`GET /schema.json`).
pub fn bentoml_schema(service_name: &str) -> Value {
    json!({
        "name": service_name,
        "type": "service",
        "routes": [{
            "name": "predict",
            "route": routes::PREDICT,
            "batchable": false,
            "input": {
                "properties": {
                    "image": {
                        "description": "Planet image to analyze",
                        "format": "image",
                        "pil": true,
                        "title": "Image",
                        "type": "file"
                    }
                },
                "required": ["image"],
                "title": "Input",
                "type": "object"
            },
            "output": {"type": "string", "media_type": "application/json"},
            "is_task": false
        }],
        "paths": {(routes::PREDICT): {"mounted": false}}
    })
}
