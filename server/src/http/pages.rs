//! The other routes: Swagger UI and its assets, the documents (`/docs.json`, `/schema.json`,
//! `/model`), the drift monitor's status (`/model/drift`), health, metrics, and the answers for unknown routes and methods.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::middleware::SwaggerAsset;
use super::state::{AppState, Shared};
use crate::errors::ApiError;

// Documentation, health, metrics, model.

fn json_bytes(b: &Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], b.clone()).into_response()
}

pub async fn openapi_json(State(state): Shared) -> Response {
    json_bytes(&state.openapi_json)
}

pub async fn schema_json(State(state): Shared) -> Response {
    json_bytes(&state.schema_json)
}

pub async fn model_info(State(state): Shared) -> Response {
    json_bytes(&state.model_json)
}

/// The drift monitor's last scores (`{"enabled": false, "reason": ...}` without one).
pub async fn model_drift(State(state): Shared) -> Response {
    Json(state.drift.status()).into_response()
}

fn swagger_file(state: &AppState, path: &str) -> Option<Response> {
    let file = utoipa_swagger_ui::serve(path, Arc::clone(&state.swagger))
        .ok()
        .flatten()?;
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, file.content_type)],
        file.bytes.into_owned(),
    )
        .into_response();
    if file.gzpipped {
        resp.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Some(resp)
}

pub async fn swagger_index(State(state): Shared) -> Response {
    swagger_file(&state, "index.html").unwrap_or_else(|| {
        ApiError::Internal("Swagger UI assets are missing".into()).into_response()
    })
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

pub async fn livez() -> Response {
    Json(Health { status: "ok" }).into_response()
}

pub async fn readyz(State(state): Shared) -> Response {
    if state.is_draining() {
        ApiError::Draining.into_response()
    } else {
        Json(Health { status: "ok" }).into_response()
    }
}

pub async fn metrics(State(state): Shared) -> Response {
    let ready = !state.is_draining();
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.render(ready),
    )
        .into_response()
}

pub async fn fallback(State(state): Shared, method: Method, uri: axum::http::Uri) -> Response {
    if method == Method::GET
        && let Some(mut resp) = swagger_file(&state, uri.path().trim_start_matches('/'))
    {
        resp.extensions_mut().insert(SwaggerAsset);
        return resp;
    }
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into_response()
}

/// 404 for every path (the probes-only listener's fallback: no Swagger assets there).
pub async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::NotFound {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into_response()
}

pub async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into_response()
}
