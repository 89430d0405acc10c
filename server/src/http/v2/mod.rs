//! The Open Inference Protocol's REST routes (`/v2/...`): health, server and model metadata,
//! model readiness, and inference (JSON, or with the binary tensor extension: `codec`). What they
//! take and answer is [`crate::oip`]'s, shared with the gRPC service; an inference's body is
//! received under the upload limits and its job runs in a prediction slot like `/predict`'s.
//! Errors are the server's JSON error body, whose `error` field is the protocol's.

mod codec;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body;
use super::job::{Traffic, admit, run_job, within_timeout};
use super::state::{AppState, Shared};
use crate::errors::ApiError;
use crate::oip;
use crate::telemetry::RequestTrace;

/// The model (and version) a route names.
#[derive(Deserialize)]
pub struct ModelPath {
    name: String,
    #[serde(default)]
    version: Option<String>,
}

type NamedModel = Result<Path<ModelPath>, PathRejection>;

/// The served model's spec when `path` names it, else 404 (or 400 for a path that does not read).
fn named(state: &AppState, path: NamedModel) -> Result<(), ApiError> {
    let Path(p) = path.map_err(|e| ApiError::InvalidInference(e.body_text()))?;
    oip::check_model(state.classifier.spec(), &p.name, p.version.as_deref())
}

/// `GET /v2/health/live`.
pub async fn live() -> Response {
    Json(json!({"live": true})).into_response()
}

/// `GET /v2/health/ready`: 503 once the server drains.
pub async fn ready(State(state): Shared) -> Result<Response, ApiError> {
    match state.is_draining() {
        true => Err(ApiError::Draining),
        false => Ok(Json(json!({"ready": true})).into_response()),
    }
}

/// `GET /v2`.
pub async fn server_metadata() -> Response {
    Json(json!({
        "name": oip::SERVER_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": oip::EXTENSIONS,
    }))
    .into_response()
}

/// `GET /v2/models/{name}[/versions/{version}]`.
pub async fn model_metadata(State(state): Shared, path: NamedModel) -> Result<Response, ApiError> {
    named(&state, path)?;
    Ok(Json(oip::model_metadata(state.classifier.spec())).into_response())
}

/// `GET /v2/models/{name}[/versions/{version}]/ready`: 503 once the server drains.
pub async fn model_ready(State(state): Shared, path: NamedModel) -> Result<Response, ApiError> {
    named(&state, path)?;
    if state.is_draining() {
        return Err(ApiError::Draining);
    }
    let spec = state.classifier.spec();
    Ok(Json(json!({"name": spec.name, "version": spec.version, "ready": true})).into_response())
}

/// `POST /v2/models/{name}[/versions/{version}]/infer`: the model is checked, the body received,
/// the request read and checked against the model, then a prediction slot taken and the job run;
/// an element that cannot be classified fails the request (400, naming its index).
pub async fn infer(
    State(state): Shared,
    path: NamedModel,
    req: Request,
) -> Result<Response, ApiError> {
    named(&state, path)?;
    let (parts, body) = req.into_parts();
    let trace = parts.extensions.get::<RequestTrace>();
    let (bytes, _memory) = body::upload(&state, &parts.headers, body, trace).await?;
    within_timeout(&state, async {
        let mut request = codec::parse_request(&parts.headers, &bytes)?;
        let spec = state.classifier.spec();
        let names: Vec<String> = request.outputs.iter().map(|(n, _)| n.clone()).collect();
        let kinds = oip::requested_outputs(spec, &names)?;
        let binary = codec::binary_flags(&request, &kinds);
        let inputs = std::mem::take(&mut request.inputs);
        let pictures = oip::pictures(spec, state.limits.max_batch_images, inputs)?;
        let _permit = admit(&state, trace).await?;
        let traffic = Traffic::of(&parts.headers);
        let results = run_job(&state, pictures.items, traffic, trace).await?;
        let tensors = oip::output_tensors(spec, &kinds, &pictures.input, results)?;
        let mut head = Map::new();
        head.insert("model_name".into(), json!(spec.name));
        head.insert("model_version".into(), json!(spec.version));
        if let Some(id) = request.id {
            head.insert("id".into(), Value::String(id));
        }
        Ok(codec::response(
            head,
            &tensors.into_iter().zip(binary).collect::<Vec<_>>(),
        ))
    })
    .await
}
