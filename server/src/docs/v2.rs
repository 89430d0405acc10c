//! The Open Inference Protocol's REST routes in the OpenAPI document: one operation per route and
//! the schemas of their bodies ([`schemas`]), from the served model (its name, version, input
//! shape and outputs) and [`crate::oip`].

use serde_json::{Value, json};
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, Parameter, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Required, Response, Schema};

use super::common::{error_response, json_response, schema, schema_ref};
use crate::errors::ErrorCode;
use crate::model::ModelSpec;
use crate::oip::{self, OutputKind};
use crate::routes;

/// The tag of these operations.
pub const TAG: &str = "Open Inference Protocol (v2)";

/// Every operation, by path.
pub fn paths(spec: &ModelSpec, max_batch: usize) -> Vec<(&'static str, PathItem)> {
    let get = |op| PathItem::new(HttpMethod::Get, op);
    let post = |op| PathItem::new(HttpMethod::Post, op);
    vec![
        (routes::V2_LIVE, get(live())),
        (routes::V2_READY, get(ready())),
        (routes::V2_SERVER, get(server_metadata())),
        (routes::V2_MODEL, get(model_metadata(spec, false))),
        (routes::V2_MODEL_VERSION, get(model_metadata(spec, true))),
        (routes::V2_MODEL_READY, get(model_ready(spec, false))),
        (routes::V2_MODEL_VERSION_READY, get(model_ready(spec, true))),
        (routes::V2_INFER, post(infer(spec, max_batch, false))),
        (routes::V2_INFER_VERSION, post(infer(spec, max_batch, true))),
    ]
}

fn op(id: &str, summary: &str, description: &str) -> OperationBuilder {
    OperationBuilder::new()
        .tag(TAG)
        .operation_id(Some(id))
        .summary(Some(summary))
        .description(Some(description))
}

/// The `{name}` (and `{version}`) path parameters: the served model's.
fn model_params(spec: &ModelSpec, versioned: bool) -> Vec<Parameter> {
    let param = |name: &str, value: &str, what: &str| {
        ParameterBuilder::new()
            .name(name)
            .parameter_in(ParameterIn::Path)
            .required(Required::True)
            .description(Some(what))
            .schema(Some(schema(json!({"type": "string", "enum": [value]}))))
            .build()
    };
    let mut params = vec![param(
        "name",
        &spec.name,
        "The model's name (another is answered 404 `model_not_found`).",
    )];
    if versioned {
        params.push(param(
            "version",
            &spec.version,
            "The model's version (another is answered 404 `model_not_found`).",
        ));
    }
    params
}

fn not_found() -> Response {
    error_response("No such model or version.", &[ErrorCode::ModelNotFound])
}

fn draining() -> Response {
    error_response("Not ready: shutting down.", &[ErrorCode::Draining])
}

fn live() -> Operation {
    let ok = schema(
        json!({"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}}),
    );
    op(
        "v2_live",
        "Server liveness",
        "200 while the process is alive.",
    )
    .response(
        "200",
        json_response("Alive.", ok.into(), Some(json!({"live": true}))),
    )
    .build()
}

fn ready() -> Operation {
    let ok = schema(
        json!({"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}}}),
    );
    op(
        "v2_ready",
        "Server readiness",
        "200 when the model is loaded and the server is not draining, 503 otherwise.",
    )
    .response(
        "200",
        json_response("Ready.", ok.into(), Some(json!({"ready": true}))),
    )
    .response("503", draining())
    .build()
}

fn server_metadata() -> Operation {
    let example = json!({"name": oip::SERVER_NAME, "version": env!("CARGO_PKG_VERSION"), "extensions": oip::EXTENSIONS});
    op("v2_server_metadata", "Server metadata", "The server's name, version and protocol extensions (`binary_tensor_data`: Triton's binary tensor extension).")
        .response("200", json_response("The server.", schema_ref("V2ServerMetadata"), Some(example)))
        .build()
}

fn model_metadata(spec: &ModelSpec, versioned: bool) -> Operation {
    let id = if versioned {
        "v2_model_version_metadata"
    } else {
        "v2_model_metadata"
    };
    let example = serde_json::to_value(oip::model_metadata(spec)).unwrap_or_default();
    op(id, "Model metadata", "The model's versions, platform, inputs (`image`: encoded pictures; the model's own FP32 tensor) and outputs, with their datatypes and shapes (-1: any number of pictures).")
        .parameters(Some(model_params(spec, versioned)))
        .response("200", json_response("The model.", schema_ref("V2ModelMetadata"), Some(example)))
        .response("404", not_found())
        .build()
}

fn model_ready(spec: &ModelSpec, versioned: bool) -> Operation {
    let id = if versioned {
        "v2_model_version_ready"
    } else {
        "v2_model_ready"
    };
    let ok = schema(json!({"type": "object", "required": ["name", "ready"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"}, "ready": {"type": "boolean"}}}));
    op(
        id,
        "Model readiness",
        "200 when the model is ready, 503 while the server drains.",
    )
    .parameters(Some(model_params(spec, versioned)))
    .response(
        "200",
        json_response(
            "Ready.",
            ok.into(),
            Some(json!({"name": spec.name, "version": spec.version, "ready": true})),
        ),
    )
    .response("404", not_found())
    .response("503", draining())
    .build()
}

/// The binary answer of an inference (the binary tensor extension).
fn binary_answer() -> ContentBuilder {
    ContentBuilder::new().schema(Some(schema(json!({"type": "string", "format": "binary"}))))
}

/// The 200 answer of an inference: JSON, or JSON and binary data.
fn infer_ok() -> Response {
    ResponseBuilder::new()
        .description(
            "The outputs asked for (all by default), for every picture in order. With binary outputs, \
             the body is the JSON followed by their raw data, and `Inference-Header-Content-Length` \
             gives the JSON's length.",
        )
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(schema_ref("V2InferenceResponse")))
                .build(),
        )
        .content("application/octet-stream", binary_answer().build())
        .header(
            "Inference-Header-Content-Length",
            HeaderBuilder::new()
                .schema(Some(schema(json!({"type": "integer", "minimum": 0}))))
                .description(Some("With binary outputs: the length of the JSON part."))
                .build(),
        )
        .build()
}

fn infer(spec: &ModelSpec, max_batch: usize, versioned: bool) -> Operation {
    let id = if versioned {
        "v2_model_version_infer"
    } else {
        "v2_model_infer"
    };
    let body = RequestBodyBuilder::new()
        .required(Some(Required::True))
        .description(Some(
            "An inference request. The schema shows one picture as the model's own tensor in JSON; \
             the server also takes several (shape [N, ...]) and, with the binary tensor extension \
             (`Inference-Header-Content-Length` header, `binary_data_size` parameters, as \
             tritonclient sends them), encoded pictures as the BYTES input `image`.",
        ))
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(schema_ref("V2InferenceRequest")))
                .build(),
        )
        .build();
    let description = format!(
        "Classify 1 to {max_batch} pictures: the BYTES input `image` (one encoded JPEG, PNG, WebP, GIF or BMP \
         per element, as `/predict` takes) or the FP32 input `{}` (the model's tensor, preprocessed by the \
         caller). A picture that cannot be classified fails the whole request (400, naming its index). \
         The request waits in the same queue as `/predict`, under the same limits.",
        spec.input_name
    );
    op(id, "Inference", &description)
        .parameters(Some(model_params(spec, versioned)))
        .request_body(Some(body))
        .response("200", infer_ok())
        .response(
            "400",
            error_response(
                "The request does not fit the model, or a picture cannot be classified.",
                &[ErrorCode::InvalidInferenceRequest],
            ),
        )
        .response("404", not_found())
        .response(
            "408",
            error_response(
                "The body arrived too slowly (--body-timeout, --body-min-rate).",
                &[ErrorCode::BodyTimeout],
            ),
        )
        .response(
            "413",
            error_response(
                "The body is over --max-body-bytes, or the pictures over --max-batch-images.",
                &[ErrorCode::BodyTooLarge, ErrorCode::TooManyImages],
            ),
        )
        .response(
            "429",
            error_response(
                "Too many requests in progress; retry later.",
                &[ErrorCode::Overloaded],
            ),
        )
        .response("503", draining())
        .response(
            "504",
            error_response(
                "The inference took longer than --request-timeout.",
                &[ErrorCode::Timeout],
            ),
        )
        .build()
}

/// The schemas of the bodies: `V2InferenceRequest`, `V2InferenceResponse`, `V2ModelMetadata`,
/// `V2ServerMetadata`.
pub fn schemas(spec: &ModelSpec) -> Vec<(&'static str, Schema)> {
    let served: Vec<&str> = OutputKind::served(spec).iter().map(|k| k.name()).collect();
    let shape = spec.input_shape(1);
    let tensor = json!({
        "type": "object", "required": ["name", "datatype", "shape", "data"],
        "properties": {
            "name": {"type": "string", "enum": [spec.input_name]},
            "datatype": {"type": "string", "enum": ["FP32"]},
            "shape": {"type": "array", "minItems": shape.len(), "maxItems": shape.len(), "items": false,
                "prefixItems": shape.iter().map(|d| json!({"type": "integer", "enum": [d]})).collect::<Vec<_>>()},
            "data": {"type": "array", "minItems": spec.tensor_len(), "maxItems": spec.tensor_len(),
                "description": "The tensor's values, flat in row-major order (or nested as the shape says).",
                "items": {"type": "number", "minimum": -1e30, "maximum": 1e30}}
        }
    });
    let tensor_meta = json!({"type": "object", "required": ["name", "datatype", "shape"],
        "properties": {"name": {"type": "string"}, "datatype": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}}}});
    let output = json!({"type": "object", "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string", "enum": served},
        "datatype": {"type": "string", "enum": ["BYTES", "FP32", "BOOL"]},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"type": "array", "items": {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}}
    }});
    let request = json!({
        "type": "object", "required": ["inputs"],
        "properties": {
            "id": {"type": "string", "description": "Echoed in the answer."},
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean",
                "description": "Answer every output not asked otherwise as binary data."}}},
            "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": tensor},
            "outputs": {"type": "array", "description": "The outputs to answer (none: all).",
                "items": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string", "enum": served},
                    "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}}}}
        }
    });
    let response = json!({
        "type": "object", "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
            "outputs": {"type": "array", "items": output}
        }
    });
    let metadata = json!({
        "type": "object", "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": tensor_meta.clone()},
            "outputs": {"type": "array", "items": tensor_meta}
        }
    });
    let server: Value = json!({"type": "object", "required": ["name", "version", "extensions"],
        "properties": {"name": {"type": "string"}, "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}}}});
    vec![
        ("V2InferenceRequest", schema(request)),
        ("V2InferenceResponse", schema(response)),
        ("V2ModelMetadata", schema(metadata)),
        ("V2ServerMetadata", schema(server)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every keyword of the hand-written schemas survives utoipa's types (a keyword it has no
    /// field for would silently drop the schema around it).
    #[test]
    fn the_schemas_keep_every_keyword() {
        let spec = crate::testing::spec();
        let response = serde_json::to_value(&schemas(&spec)[1].1).unwrap();
        let output = &response["properties"]["outputs"]["items"]["properties"];
        assert_eq!(
            output["data"]["items"]["oneOf"][2],
            json!({"type": "boolean"}),
            "{response}"
        );
        assert_eq!(
            output["parameters"]["properties"]["binary_data_size"]["minimum"],
            0
        );
        let request = serde_json::to_value(&schemas(&spec)[0].1).unwrap();
        let tensor = &request["properties"]["inputs"]["items"];
        let shape = &tensor["properties"]["shape"];
        assert_eq!(
            shape["prefixItems"][1],
            json!({"type": "integer", "enum": [3]}),
            "{request}"
        );
        assert_eq!(
            (&shape["items"], &shape["maxItems"]),
            (&json!(false), &json!(4))
        );
        assert_eq!(tensor["properties"]["data"]["minItems"], 3 * 64 * 64);
        assert_eq!(tensor["properties"]["name"]["enum"], json!(["input"]));
        let outputs = &request["properties"]["outputs"]["items"]["properties"]["name"]["enum"];
        assert_eq!(outputs, &json!(["label", "probabilities"]));
    }
}
