//! One function per documented operation (and its request body), in the order of the document.

use serde_json::{Value, json};
use utoipa::openapi::encoding::EncodingBuilder;
use utoipa::openapi::path::{Operation, OperationBuilder};
use utoipa::openapi::request_body::{RequestBody, RequestBodyBuilder};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Required, Response};

use super::common::{error_example, error_response, json_response, schema, schema_ref};
use crate::errors::ErrorCode;
use crate::routes;

const SERVICE_APIS: &str = "Service APIs";
const INFRASTRUCTURE: &str = "Infrastructure";

/// The tags the operations use, in the document's order.
pub const TAGS: [&str; 2] = [SERVICE_APIS, INFRASTRUCTURE];

/// What an `image` part is.
const PICTURE: &str = "Planet image to analyze (JPEG, PNG, WebP, GIF or BMP)";

/// The schema of one picture sent to `POST /predict`, as the part `image` or the raw body: bytes,
/// at least one (an empty body or part is answered 400 `empty_body`).
fn picture() -> Value {
    json!({"type": "string", "format": "binary", "minLength": 1})
}

/// The schema of one `image` part: a file (`contentMediaType`, as OpenAPI 3.1 spells one).
fn image_part(mut bytes: Value, description: &str) -> Value {
    bytes["contentMediaType"] = json!("application/octet-stream");
    bytes["description"] = json!(description);
    bytes
}

/// The bytes a part's name cannot have, as inclusive ranges: control characters but tab, as in
/// any header's text (RFC 9110); a part named with one is a malformed body (400).
const PART_NAME_EXCLUDED: [(u8, u8); 3] = [(0x00, 0x08), (0x0A, 0x1F), (0x7F, 0x7F)];

/// [`PART_NAME_EXCLUDED`] as a JSON Schema pattern.
fn part_name_pattern() -> String {
    let ranges: String = PART_NAME_EXCLUDED
        .iter()
        .map(|&(low, high)| match low == high {
            true => format!("\\x{low:02X}"),
            false => format!("\\x{low:02X}-\\x{high:02X}"),
        })
        .collect();
    format!("^[^{ranges}]*$")
}

/// A multipart/form-data body whose part `image` has the schema `image`. Other parts are read and
/// ignored; their names are header text ([`PART_NAME_EXCLUDED`]).
fn multipart_content(image: Value) -> ContentBuilder {
    ContentBuilder::new().schema(Some(schema(json!({
        "type": "object", "title": "Input", "required": ["image"],
        "properties": {"image": image},
        "propertyNames": {"type": "string", "pattern": part_name_pattern()}
    }))))
}

/// `POST /predict`'s body: the multipart part `image`, or a raw body of any accepted media type.
fn predict_body() -> RequestBody {
    let mut body = RequestBodyBuilder::new()
        .description(Some(
            "The image, as the multipart part `image` or as the raw body.",
        ))
        .required(Some(Required::True))
        .content(
            "multipart/form-data",
            // The part may declare any media type of a raw body (the server reads the picture's
            // format from its bytes either way); tools that generate requests from the document
            // send a picture of the type they pick.
            multipart_content(image_part(picture(), PICTURE))
                .encoding(
                    "image",
                    EncodingBuilder::new()
                        .content_type(Some(routes::RAW_IMAGE_TYPES.join(", ")))
                        .build(),
                )
                .build(),
        );
    for t in routes::RAW_IMAGE_TYPES {
        body = body.content(
            t,
            ContentBuilder::new()
                .schema(Some(schema(picture())))
                .build(),
        );
    }
    body.build()
}

/// `POST /predict/batch`'s body: one to `max_batch` `image` parts. Any bytes make a valid part: a
/// part that is not a picture (even an empty one) gets an error object in its place in the 200
/// answer, so the parts have no length or media type to keep to.
fn batch_body(max_batch: usize) -> RequestBody {
    let part = image_part(
        json!({"type": "string", "format": "binary"}),
        &format!("{PICTURE}; a part that is not one gets an error object in its place"),
    );
    RequestBodyBuilder::new()
        .required(Some(Required::True))
        .content(
            "multipart/form-data",
            multipart_content(json!({
                "type": "array", "minItems": 1, "maxItems": max_batch, "items": part
            }))
            .build(),
        )
        .build()
}

/// The 429 answer, with its `Retry-After` header.
fn overload_response() -> Response {
    let mut r = error_response(
        "Too many predictions in progress (over --max-concurrency, with --max-queue waiting), or too many \
         bodies being received (over --max-uploads); retry after the given seconds.",
        &[ErrorCode::Overloaded],
    );
    r.headers.insert(
        "Retry-After".into(),
        HeaderBuilder::new()
            .schema(Some(schema(json!({"type": "integer", "minimum": 0}))))
            .description(Some("Seconds to wait before retrying."))
            .build()
            .into(),
    );
    r
}

/// The error answers of both prediction routes (`batch`: per-image errors are in the 200 answer,
/// and the batch can be too long).
fn prediction_errors(op: OperationBuilder, batch: bool) -> OperationBuilder {
    let mut bad_request = vec![
        ErrorCode::EmptyBody,
        ErrorCode::MissingImagePart,
        ErrorCode::MissingBoundary,
        ErrorCode::InvalidMultipart,
        ErrorCode::IncompleteBody,
    ];
    let mut too_large = vec![ErrorCode::BodyTooLarge];
    if batch {
        too_large.push(ErrorCode::TooManyImages);
    } else {
        bad_request.extend([
            ErrorCode::MultipleImages,
            ErrorCode::InvalidImage,
            ErrorCode::TruncatedImage,
        ]);
    }
    let unsupported = [
        ErrorCode::UnsupportedMediaType,
        ErrorCode::UnsupportedImageFormat,
    ];
    let mut op = op
        .response(
            "400",
            error_response("The request or the image is malformed.", &bad_request),
        )
        .response(
            "408",
            error_response(
                "The body arrived too slowly: it took over --body-timeout and came at less than \
                 --body-min-rate bytes/s on average. The connection is closed.",
                &[ErrorCode::BodyTimeout],
            ),
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
            error_response("Unsupported content type or image format.", &unsupported),
        );
    if !batch {
        op = op.response(
            "422",
            error_response(
                "The image is over --max-image-pixels, or decoding it would take more memory than \
                 --max-decode-bytes allows (both checked from its header, before decoding).",
                &[ErrorCode::ImageTooLarge, ErrorCode::DecodeBudgetExceeded],
            ),
        );
    }
    op.response("429", overload_response())
        .response(
            "503",
            error_response("The server is shutting down.", &[ErrorCode::Draining]),
        )
        .response(
            "504",
            error_response(
                "The prediction took longer than --request-timeout, counted from the end of the body.",
                &[ErrorCode::Timeout],
            ),
        )
}

/// `POST /predict`.
pub fn predict(labels_md: &str, example: &Value) -> Operation {
    let ok = json_response(
        "The predicted label and the probability of every label (and, for a model that defines them, the calibrated `confidence` and `known`).",
        schema_ref("Prediction"),
        Some(example.clone()),
    );
    let op = OperationBuilder::new()
        .tag(SERVICE_APIS)
        .operation_id(Some("predict"))
        .summary(Some("Classify one image"))
        .description(Some(format!(
            "Returns the most probable of {labels_md} and every label's probability."
        )))
        .request_body(Some(predict_body()))
        .response("200", ok);
    prediction_errors(op, false).build()
}

/// `POST /predict/batch`.
pub fn predict_batch(max_batch: usize, example: &Value) -> Operation {
    let batch_example = json!({"results": [example, error_example(ErrorCode::InvalidImage)]});
    let op = OperationBuilder::new()
        .tag(SERVICE_APIS)
        .operation_id(Some("predict_batch"))
        .summary(Some("Classify several images"))
        .description(Some(format!(
            "Several `image` parts (at most {max_batch}). The results are in the order of the parts; each is a prediction \
             or, for an image that cannot be used, an error object."
        )))
        .request_body(Some(batch_body(max_batch)))
        .response(
            "200",
            json_response(
                "One result per image, in order.",
                schema_ref("BatchResponse"),
                Some(batch_example),
            ),
        );
    prediction_errors(op, true).build()
}

/// An infrastructure operation answering `ok` with 200.
fn infra(id: &str, summary: &str, description: &str, ok: Response) -> OperationBuilder {
    OperationBuilder::new()
        .tag(INFRASTRUCTURE)
        .operation_id(Some(id))
        .summary(Some(summary))
        .description(Some(description))
        .response("200", ok)
}

/// The 200 answer of the health routes.
fn health_ok(what: &str) -> Response {
    json_response(what, schema_ref("Health"), Some(json!({"status": "ok"})))
}

/// A text answer of `media` type.
fn text(description: &str, media: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            media,
            ContentBuilder::new()
                .schema(Some(schema(json!({"type": "string"}))))
                .build(),
        )
        .build()
}

/// A JSON object answer.
fn json_object(description: &str) -> Response {
    json_response(description, schema(json!({"type": "object"})).into(), None)
}

/// The 503 of the readiness routes.
fn not_ready() -> Response {
    error_response("Not ready: shutting down.", &[ErrorCode::Draining])
}

/// `GET /readyz`.
pub fn readyz() -> Operation {
    infra(
        "readyz",
        "Readiness",
        "200 when the model is loaded and the server is not draining, 503 otherwise.",
        health_ok("Ready."),
    )
    .response("503", not_ready())
    .build()
}

/// `GET /healthz`.
pub fn healthz() -> Operation {
    infra(
        "healthz",
        "Health (same as /readyz)",
        "Same as `/readyz`.",
        health_ok("Ready."),
    )
    .response("503", not_ready())
    .build()
}

/// `GET /livez`.
pub fn livez() -> Operation {
    infra(
        "livez",
        "Liveness",
        "200 while the process is alive.",
        health_ok("Alive."),
    )
    .build()
}

/// `GET /metrics`.
pub fn metrics() -> Operation {
    infra(
        "metrics",
        "Prometheus metrics",
        "Requests by route and status, latency histograms, in-flight requests, preprocessing and inference time, predictions by label, rejections by reason, build info.",
        text("Prometheus text format.", "text/plain; version=0.0.4"),
    )
    .build()
}

/// `GET /model`.
pub fn model() -> Operation {
    infra(
        "model",
        "Model information",
        "Name, version, labels, input spec and ONNX Runtime version.",
        json_response("The served model.", schema_ref("ModelInfo"), None),
    )
    .build()
}

/// `GET /model/drift`.
pub fn model_drift() -> Operation {
    infra(
        "model_drift",
        "Drift monitor",
        "How far the recent live answers are from the model's drift reference (`celestial.drift`), \
         per signal: the last window's statistic, its threshold, the score (their ratio) and the \
         alert (score >= 1). Requests with the `celestial-probe` header are left out. A model \
         without a reference (or `--no-drift`): `enabled` false and the `reason`.",
        json_response("The drift monitor.", schema_ref("DriftStatus"), None),
    )
    .build()
}

/// `GET /schema.json`.
pub fn schema_json() -> Operation {
    infra(
        "schema",
        "BentoML service description",
        "What BentoML's Python client (`bentoml.SyncHTTPClient`) reads to discover the `predict` route.",
        json_object("Service description."),
    )
    .build()
}

/// `GET /docs.json`.
pub fn docs_json() -> Operation {
    infra(
        "openapi",
        "This OpenAPI document",
        "The OpenAPI 3.1 description of this service.",
        json_object("OpenAPI document."),
    )
    .build()
}

/// `GET /docs`.
pub fn docs_ui() -> Operation {
    infra(
        "docs",
        "Swagger UI",
        "The interactive documentation (also served at `/`).",
        text("HTML page.", "text/html"),
    )
    .build()
}

/// What the request bodies say, checked on the document as a client reads it and, where the
/// document draws a line the schemathesis run meets only by chance (the names of other multipart
/// parts), against the router.
#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, header};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::super::{DocLimits, documents, openapi};
    use super::PART_NAME_EXCLUDED;
    use crate::classifier::Classifier;
    use crate::http::{AppState, Limits, router};
    use crate::routes;
    use crate::testing::{self, FakeClassifier};

    const LIMITS: DocLimits = DocLimits {
        max_body_bytes: 1 << 20,
        max_image_pixels: 1 << 20,
        max_batch: 5,
        body_timeout: Duration::from_secs(10),
        body_min_rate: 0,
    };

    /// The document as a client reads it.
    fn document() -> Value {
        let json = openapi(&testing::spec(), &LIMITS).to_json().unwrap();
        serde_json::from_str(&json).unwrap()
    }

    fn multipart<'a>(doc: &'a Value, route: &str) -> &'a Value {
        &doc["paths"][route]["post"]["requestBody"]["content"]["multipart/form-data"]
    }

    #[test]
    fn a_picture_is_at_least_one_byte_and_a_batch_one_to_max_batch_parts_of_any_bytes() {
        let doc = document();
        let content = &doc["paths"][routes::PREDICT]["post"]["requestBody"]["content"];
        for t in routes::RAW_IMAGE_TYPES {
            assert_eq!(content[t]["schema"]["minLength"], 1, "{t}");
            assert_eq!(content[t]["schema"]["format"], "binary", "{t}");
        }
        let part = &multipart(&doc, routes::PREDICT)["schema"]["properties"]["image"];
        assert_eq!(part["minLength"], 1);
        let parts = &multipart(&doc, routes::PREDICT_BATCH)["schema"]["properties"]["image"];
        assert_eq!(parts["minItems"], 1);
        assert_eq!(parts["maxItems"], LIMITS.max_batch);
        assert_eq!(parts["items"]["format"], "binary");
        assert!(parts["items"].get("minLength").is_none(), "{parts}");
        for route in [routes::PREDICT, routes::PREDICT_BATCH] {
            let body = &multipart(&doc, route)["schema"];
            assert_eq!(body["required"], serde_json::json!(["image"]), "{route}");
        }
    }

    #[test]
    fn the_single_image_part_may_declare_every_raw_type() {
        let doc = document();
        let declared: Vec<&str> =
            multipart(&doc, routes::PREDICT)["encoding"]["image"]["contentType"]
                .as_str()
                .unwrap()
                .split(", ")
                .collect();
        assert_eq!(declared, routes::RAW_IMAGE_TYPES);
    }

    /// A batch with one picture and another part named `name`.
    fn batch_with_part_named(name: &[u8]) -> Request<Body> {
        let mut png = Vec::new();
        image::RgbImage::new(2, 2)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let mut body = b"--b\r\nContent-Disposition: form-data; name=\"".to_vec();
        body.extend_from_slice(name);
        body.extend_from_slice(
            b"\"\r\n\r\nx\r\n--b\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n",
        );
        body.extend_from_slice(&png);
        body.extend_from_slice(b"\r\n--b--\r\n");
        Request::post(routes::PREDICT_BATCH)
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=b")
            .body(Body::from(body))
            .unwrap()
    }

    #[tokio::test]
    async fn other_parts_are_refused_exactly_when_their_names_have_an_excluded_byte() {
        let doc = document();
        assert_eq!(
            multipart(&doc, routes::PREDICT_BATCH)["schema"]["propertyNames"]["pattern"],
            "^[^\\x00-\\x08\\x0A-\\x1F\\x7F]*$"
        );
        let classifier: Arc<dyn Classifier> = Arc::new(FakeClassifier::default());
        let limits = Limits {
            max_body_bytes: LIMITS.max_body_bytes,
            max_batch_images: LIMITS.max_batch,
            max_concurrency: 4,
            max_queue: 4,
            max_queue_wait: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            retry_after_seconds: 1,
            body_timeout: LIMITS.body_timeout,
            body_min_rate: LIMITS.body_min_rate,
            max_uploads: 4,
            max_body_memory: 1 << 24,
        };
        let docs = documents(classifier.as_ref(), "svc", &LIMITS);
        let state = Arc::new(AppState::new(classifier, limits, docs, &Default::default()));
        // Every ASCII byte inside a name, and two names past ASCII (a letter, a C1 control).
        let names = (0..=0x7f_u8)
            .map(|c| vec![b'a', c, b'b'])
            .chain(["\u{e9}", "\u{85}"].map(|s| s.as_bytes().to_vec()));
        for name in names {
            let answer = router(Arc::clone(&state))
                .oneshot(batch_with_part_named(&name))
                .await
                .unwrap();
            let excluded = name.iter().any(|b| {
                PART_NAME_EXCLUDED
                    .iter()
                    .any(|(low, high)| (low..=high).contains(&b))
            });
            // (A quote ends the quoted name early: still a well-formed part, still ignored.)
            assert_eq!(
                answer.status().is_success(),
                !excluded,
                "part name {name:?}: {}",
                answer.status()
            );
        }
    }
}
