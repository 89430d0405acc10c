//! The OpenAPI 3.1 document (`/docs.json`, generated from the served model with utoipa's builders)
//! and the BentoML service description (`/schema.json`) that `bentoml.SyncHTTPClient` reads.

use serde_json::{Value, json};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathsBuilder, Ref,
    RefOr, Required, Schema, Tag,
};

use crate::http::ErrorCode;
use crate::model::ModelSpec;

/// Media types accepted as a raw image body by POST /predict.
pub const RAW_IMAGE_TYPES: [&str; 6] = [
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/bmp",
    "application/octet-stream",
];

fn schema(v: Value) -> Schema {
    serde_json::from_value(v)
        .unwrap_or_else(|e| unreachable!("static schema must deserialize: {e}"))
}

fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// An example probabilities map: the first label likely, the rest sharing the remainder.
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
    json!({"prediction": spec.labels[0], "probabilities": probs})
}

fn error_response(description: &str, codes: &[ErrorCode]) -> utoipa::openapi::Response {
    let mut content = ContentBuilder::new().schema(Some(schema_ref("Error")));
    let examples: Vec<(String, utoipa::openapi::example::Example)> = codes
        .iter()
        .map(|c| {
            let ex = utoipa::openapi::example::ExampleBuilder::new()
                .summary(c.as_str())
                .value(Some(
                    json!({"error": c.example_message(), "code": c.as_str()}),
                ))
                .build();
            (c.as_str().to_string(), ex)
        })
        .collect();
    if let [only] = codes {
        content = content.example(Some(
            json!({"error": only.example_message(), "code": only.as_str()}),
        ));
    } else {
        content = content.examples_from_iter(examples);
    }
    ResponseBuilder::new()
        .description(description)
        .content("application/json", content.build())
        .build()
}

fn overload_response() -> utoipa::openapi::Response {
    let mut r = error_response(
        "Too many predictions in progress (over --max-concurrency); retry after the given seconds.",
        &[ErrorCode::Overloaded],
    );
    r.headers.insert(
        "Retry-After".into(),
        utoipa::openapi::HeaderBuilder::new()
            .schema(Some(schema(json!({"type": "integer", "minimum": 0}))))
            .description(Some("Seconds to wait before retrying."))
            .build()
            .into(),
    );
    r
}

/// Build the OpenAPI document for the served model.
pub fn openapi(
    spec: &ModelSpec,
    max_body_bytes: usize,
    max_image_pixels: u64,
    max_batch: usize,
) -> OpenApi {
    let labels_md = spec
        .labels
        .iter()
        .map(|l| format!("`{l}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let accuracy = spec
        .validation_accuracy
        .map(|a| format!(" Validation accuracy: {:.2}%.", a * 100.0))
        .unwrap_or_default();
    let description = format!(
        "Classifies a picture of a celestial body into one of {n} classes: {labels_md}.\n\n\
         Send an image (JPEG, PNG, WebP, GIF or BMP) to `POST /predict`, either as the multipart/form-data part `image` \
         (what the BentoML client and the Try-it-out button send) or as the raw request body. The answer names the most \
         probable class and the probability of every class.\n\n\
         Model `{name}` version `{version}`: input {h}x{w} {color}, {layout}.{accuracy}{extra}\n\n\
         Limits: bodies up to {max_body_bytes} bytes, images up to {max_image_pixels} pixels, {max_batch} images per batch. \
         Every error is JSON `{{\"error\": \"<sentence>\", \"code\": \"<stable_code>\"}}`.",
        n = spec.labels.len(),
        name = spec.name,
        version = spec.version,
        h = spec.height,
        w = spec.width,
        color = if spec.channels() == 3 {
            "RGB"
        } else {
            "grayscale"
        },
        layout = match spec.layout {
            crate::config::Layout::Nchw => "NCHW",
            crate::config::Layout::Nhwc => "NHWC",
        },
        extra = spec
            .description
            .as_deref()
            .map(|d| format!("\n\n{d}"))
            .unwrap_or_default(),
    );
    let example = example_prediction(spec);
    let image_part = json!({
        "type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
        "description": "Planet image to analyze (JPEG, PNG, WebP, GIF or BMP)"
    });

    let mut predict_body = RequestBodyBuilder::new()
        .description(Some("The image, as the multipart part `image` or as the raw body."))
        .required(Some(Required::True))
        .content(
            "multipart/form-data",
            ContentBuilder::new().schema(Some(schema(json!({
                "type": "object", "title": "Input", "required": ["image"], "properties": {"image": image_part}
            })))).build(),
        );
    for t in RAW_IMAGE_TYPES {
        predict_body = predict_body.content(
            t,
            ContentBuilder::new()
                .schema(Some(schema(json!({"type": "string", "format": "binary"}))))
                .build(),
        );
    }
    let ok = ResponseBuilder::new()
        .description("The predicted label and the probability of every label.")
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(schema_ref("Prediction")))
                .example(Some(example.clone()))
                .build(),
        )
        .build();
    let common_errors = |op: OperationBuilder, batch: bool| {
        let mut bad_request = vec![
            ErrorCode::EmptyBody,
            ErrorCode::MissingImagePart,
            ErrorCode::MissingBoundary,
            ErrorCode::InvalidMultipart,
        ];
        if !batch {
            bad_request.extend([ErrorCode::InvalidImage, ErrorCode::TruncatedImage]);
        }
        let mut too_large = vec![ErrorCode::BodyTooLarge];
        if batch {
            too_large.push(ErrorCode::TooManyImages);
        }
        let mut op = op
            .response(
                "400",
                error_response("The request or the image is malformed.", &bad_request),
            )
            .response(
                "413",
                error_response(
                    "The body is over --max-body-bytes (or too many images).",
                    &too_large,
                ),
            )
            .response(
                "415",
                error_response(
                    "Unsupported content type or image format.",
                    &[
                        ErrorCode::UnsupportedMediaType,
                        ErrorCode::UnsupportedImageFormat,
                    ],
                ),
            );
        if !batch {
            op = op.response(
                "422",
                error_response(
                    "The image is over --max-image-pixels (checked from its header).",
                    &[ErrorCode::ImageTooLarge],
                ),
            );
        }
        op.response("429", overload_response())
            .response(
                "503",
                error_response(
                    "Not ready, or shutting down.",
                    &[ErrorCode::NotReady, ErrorCode::Draining],
                ),
            )
            .response(
                "504",
                error_response(
                    "The request took longer than --request-timeout.",
                    &[ErrorCode::Timeout],
                ),
            )
    };
    let predict = common_errors(
        OperationBuilder::new()
            .tag("Service APIs")
            .operation_id(Some("predict"))
            .summary(Some("Classify one image"))
            .description(Some(format!(
                "Returns the most probable of {labels_md} and every label's probability."
            )))
            .request_body(Some(predict_body.build()))
            .response("200", ok),
        false,
    );

    let batch_body = RequestBodyBuilder::new()
        .required(Some(Required::True))
        .content(
            "multipart/form-data",
            ContentBuilder::new().schema(Some(schema(json!({
                "type": "object", "required": ["image"],
                "properties": {"image": {"type": "array", "maxItems": max_batch, "items": image_part}}
            })))).build(),
        )
        .build();
    let batch_example = json!({"results": [example, {"error": ErrorCode::InvalidImage.example_message(), "code": "invalid_image"}]});
    let batch = common_errors(
        OperationBuilder::new()
            .tag("Service APIs")
            .operation_id(Some("predict_batch"))
            .summary(Some("Classify several images"))
            .description(Some(format!(
                "Several `image` parts (at most {max_batch}). The results are in the order of the parts; each is a prediction \
                 or, for an image that cannot be used, an error object."
            )))
            .request_body(Some(batch_body))
            .response(
                "200",
                ResponseBuilder::new()
                    .description("One result per image, in order.")
                    .content("application/json", ContentBuilder::new().schema(Some(schema_ref("BatchResponse"))).example(Some(batch_example)).build())
                    .build(),
            ),
        true,
    );

    let infra = |id: &str, summary: &str, desc: &str, ok: utoipa::openapi::Response| {
        OperationBuilder::new()
            .tag("Infrastructure")
            .operation_id(Some(id))
            .summary(Some(summary))
            .description(Some(desc))
            .response("200", ok)
    };
    let health_ok = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(schema_ref("Health")))
                    .example(Some(json!({"status": "ok"})))
                    .build(),
            )
            .build()
    };
    let not_ready = error_response("Not ready: shutting down.", &[ErrorCode::Draining]);
    let readyz = infra(
        "readyz",
        "Readiness",
        "200 when the model is loaded and the server is not draining, 503 otherwise.",
        health_ok("Ready."),
    )
    .response("503", not_ready.clone());
    let healthz = infra(
        "healthz",
        "Health (same as /readyz)",
        "Same as `/readyz`.",
        health_ok("Ready."),
    )
    .response("503", not_ready);
    let livez = infra(
        "livez",
        "Liveness",
        "200 while the process is alive.",
        health_ok("Alive."),
    );
    let text = |desc: &str, media: &str| {
        ResponseBuilder::new()
            .description(desc)
            .content(
                media,
                ContentBuilder::new()
                    .schema(Some(schema(json!({"type": "string"}))))
                    .build(),
            )
            .build()
    };
    let metrics = infra(
        "metrics",
        "Prometheus metrics",
        "Requests by route and status, latency histograms, in-flight requests, preprocessing and inference time, predictions by label, rejections by reason, build info.",
        text("Prometheus text format.", "text/plain; version=0.0.4"),
    );
    let model = infra(
        "model",
        "Model information",
        "Name, version, labels, input spec and ONNX Runtime version.",
        ResponseBuilder::new()
            .description("The served model.")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(schema_ref("ModelInfo")))
                    .build(),
            )
            .build(),
    );
    let schema_json = infra(
        "schema",
        "BentoML service description",
        "What BentoML's Python client (`bentoml.SyncHTTPClient`) reads to discover the `predict` route.",
        ResponseBuilder::new()
            .description("Service description.")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(schema(json!({"type": "object"}))))
                    .build(),
            )
            .build(),
    );
    let docs_json = infra(
        "openapi",
        "This OpenAPI document",
        "The OpenAPI 3.1 description of this service.",
        ResponseBuilder::new()
            .description("OpenAPI document.")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(schema(json!({"type": "object"}))))
                    .build(),
            )
            .build(),
    );
    let docs_ui = infra(
        "docs",
        "Swagger UI",
        "The interactive documentation (also served at `/`).",
        text("HTML page.", "text/html"),
    );

    let paths = PathsBuilder::new()
        .path("/predict", PathItem::new(HttpMethod::Post, predict))
        .path("/predict/batch", PathItem::new(HttpMethod::Post, batch))
        .path("/livez", PathItem::new(HttpMethod::Get, livez))
        .path("/readyz", PathItem::new(HttpMethod::Get, readyz))
        .path("/healthz", PathItem::new(HttpMethod::Get, healthz))
        .path("/metrics", PathItem::new(HttpMethod::Get, metrics))
        .path("/model", PathItem::new(HttpMethod::Get, model))
        .path("/schema.json", PathItem::new(HttpMethod::Get, schema_json))
        .path("/docs.json", PathItem::new(HttpMethod::Get, docs_json))
        .path("/docs", PathItem::new(HttpMethod::Get, docs_ui));

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
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let components = ComponentsBuilder::new()
        .schema(
            "Prediction",
            schema(json!({
                "type": "object", "required": ["prediction", "probabilities"],
                "properties": {
                    "prediction": {"description": "The most probable label.", "allOf": [label_enum]},
                    "probabilities": {"type": "object", "description": "Probability of every label (they sum to 1).",
                        "required": spec.labels, "properties": probs_props, "additionalProperties": false}
                },
                "example": example
            })),
        )
        .schema(
            "Error",
            schema(json!({
                "type": "object", "required": ["error", "code"],
                "properties": {
                    "error": {"type": "string", "description": "What went wrong, as a sentence."},
                    "code": {"type": "string", "enum": codes, "description": "Stable machine-readable code."}
                },
                "example": {"error": ErrorCode::InvalidImage.example_message(), "code": "invalid_image"}
            })),
        )
        .schema(
            "BatchResponse",
            schema(json!({
                "type": "object", "required": ["results"],
                "properties": {"results": {"type": "array", "items": {"oneOf": [
                    {"$ref": "#/components/schemas/Prediction"}, {"$ref": "#/components/schemas/Error"}
                ]}}}
            })),
        )
        .schema("Health", schema(json!({"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok", "draining", "not_ready"]}}})))
        .schema(
            "ModelInfo",
            schema(json!({
                "type": "object",
                "required": ["name", "version", "labels", "input", "onnxruntime_version"],
                "properties": {
                    "name": {"type": "string"}, "version": {"type": "string"},
                    "labels": {"type": "array", "items": {"type": "string"}},
                    "input": {"type": "object", "description": "Tensor name, layout, size, colour mode and preprocessing."},
                    "output": {"type": "object"},
                    "trained_at": {"type": ["string", "null"]},
                    "validation_accuracy": {"type": ["number", "null"]},
                    "onnxruntime_version": {"type": "string"},
                    "server_version": {"type": "string"},
                    "workers": {"type": "integer"}
                }
            })),
        )
        .build();

    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Celestial bodies classifier")
                .version(spec.version.clone())
                .description(Some(description))
                .build(),
        )
        .paths(paths.build())
        .components(Some(components))
        .tags(Some([Tag::new("Service APIs"), Tag::new("Infrastructure")]))
        .build()
}

/// The service description BentoML's client reads (`GET /schema.json`).
pub fn bentoml_schema(service_name: &str) -> Value {
    json!({
        "name": service_name,
        "type": "service",
        "routes": [{
            "name": "predict",
            "route": "/predict",
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
        "paths": {"/predict": {"mounted": false}}
    })
}
