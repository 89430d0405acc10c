//! Building blocks of the OpenAPI document: schemas from JSON, references, the example answer and
//! error responses with their examples. A leaf of `docs`.

use serde_json::{Value, json};
use utoipa::openapi::example::{Example, ExampleBuilder};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, Schema};

use crate::errors::ErrorCode;
use crate::model::ModelSpec;

/// A schema written as JSON (a constant of this crate, so it always deserializes).
pub fn schema(v: Value) -> Schema {
    serde_json::from_value(v)
        .unwrap_or_else(|e| unreachable!("static schema must deserialize: {e}"))
}

/// A reference to `#/components/schemas/{name}`.
pub fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// An example answer: the first label likely, the rest sharing the remainder; `confidence` (the
/// largest probability) and `known` when the model defines them.
pub fn example_prediction(spec: &ModelSpec) -> Value {
    let n = spec.labels.len();
    let mut probs = serde_json::Map::new();
    for (i, l) in spec.labels.iter().enumerate() {
        let p = if i == 0 {
            0.97
        } else {
            0.03 / (n.max(2) - 1) as f64
        };
        probs.insert(l.clone(), json!((p * 1e6).round() / 1e6));
    }
    let mut example = json!({"prediction": spec.labels[0], "probabilities": probs});
    // The answer's probabilities are softmax(logits / T): logits T ln(p) give exactly these.
    let t = spec.calibration.temperature.unwrap_or(1.0);
    let logits: Vec<f32> = probs
        .values()
        .map(|p| (t * p.as_f64().unwrap_or(0.0).ln()) as f32)
        .collect();
    if spec.calibration.temperature.is_some() {
        example["confidence"] = example["probabilities"][&spec.labels[0]].clone();
    }
    // (no picture: the example's `known` is the score's alone)
    if let Some(known) = spec.calibration.known(&logits, None) {
        example["known"] = json!(known);
    }
    example
}

/// The error body of `code`, with its example message.
pub fn error_example(code: ErrorCode) -> Value {
    json!({"error": code.example_message(), "code": code.as_str()})
}

/// A JSON response of `schema` with one example.
pub fn json_response(description: &str, schema: RefOr<Schema>, example: Option<Value>) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(schema))
                .example(example)
                .build(),
        )
        .build()
}

/// An error response that can carry any of `codes`, with an example of each.
pub fn error_response(description: &str, codes: &[ErrorCode]) -> Response {
    let mut content = ContentBuilder::new().schema(Some(schema_ref("Error")));
    if let [only] = codes {
        content = content.example(Some(error_example(*only)));
    } else {
        let examples: Vec<(String, Example)> = codes
            .iter()
            .map(|c| {
                let ex = ExampleBuilder::new()
                    .summary(c.as_str())
                    .value(Some(error_example(*c)))
                    .build();
                (c.as_str().to_string(), ex)
            })
            .collect();
        content = content.examples_from_iter(examples);
    }
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content.build())
        .build()
}
