//! HTTP layer: the router ([`router`]) over a [`Classifier`](crate::classifier::Classifier) held in
//! [`AppState`]. Paths come from [`crate::routes`], errors and their statuses from
//! [`crate::errors`]; nothing here knows about ONNX Runtime.
//!
//! Inside: `state` (shared state, a leaf), `media_type` (the strict `Content-Type` parser, a
//! leaf), `middleware` (request id, timeout, log, metrics), `auth` (the API-key check in front of
//! the protected routes), `body` (receiving an upload under its limits), [`job`] (a prediction
//! slot, the time limit, the classifier's job and its metrics; also used by [`crate::grpc`]),
//! `predict` (BentoML's prediction routes), `v2` (the Open Inference Protocol's REST routes) and
//! `pages` (every other route); each imports only `state`, `media_type`, `middleware`, `body` and
//! `job` of its siblings, and this file only assembles them (with the CORS layer of [`Security`]).

mod auth;
pub mod body;
pub mod job;
mod media_type;
mod middleware;
mod multipart;
mod pages;
mod predict;
mod state;
mod v2;

use std::sync::Arc;

use axum::Router;
use axum::routing::{MethodRouter, get, post};

pub use state::{AppState, Limits, Security};

use crate::routes;

/// The application router: every route, the routes of `--api-key-scope` behind the key check
/// (before their handler, so before the body is read), CORS around them (a preflight is answered
/// before any key check), and the middleware around everything.
pub fn router(state: Arc<AppState>) -> Router {
    let guard = |route: &str, handler: MethodRouter<Arc<AppState>>| match &state.security {
        Security {
            api_keys: Some(_),
            protected,
            ..
        } if protected.contains(&route) => handler.route_layer(
            axum::middleware::from_fn_with_state(Arc::clone(&state), auth::require_key),
        ),
        _ => handler,
    };
    let mut app = Router::new()
        .route(
            routes::PREDICT,
            guard(routes::PREDICT, post(predict::predict)),
        )
        .route(
            routes::PREDICT_BATCH,
            guard(routes::PREDICT_BATCH, post(predict::predict_batch)),
        )
        .route(routes::ROOT, get(pages::swagger_index))
        .route(routes::DOCS, get(pages::swagger_index))
        .route(
            routes::DOCS_SLASH,
            get(|| async { axum::response::Redirect::permanent(routes::DOCS) }),
        )
        .route(
            routes::DOCS_JSON,
            guard(routes::DOCS_JSON, get(pages::openapi_json)),
        )
        .route(
            routes::SCHEMA_JSON,
            guard(routes::SCHEMA_JSON, get(pages::schema_json)),
        )
        .route(routes::LIVEZ, get(pages::livez))
        .route(routes::READYZ, get(pages::readyz))
        .route(routes::HEALTHZ, get(pages::readyz))
        .route(routes::METRICS, guard(routes::METRICS, get(pages::metrics)))
        .route(routes::MODEL, guard(routes::MODEL, get(pages::model_info)))
        .route(
            routes::MODEL_DRIFT,
            guard(routes::MODEL_DRIFT, get(pages::model_drift)),
        )
        .route(routes::V2_LIVE, get(v2::live))
        .route(routes::V2_READY, get(v2::ready))
        .route(
            routes::V2_SERVER,
            guard(routes::V2_SERVER, get(v2::server_metadata)),
        )
        .route(
            routes::V2_MODEL,
            guard(routes::V2_MODEL, get(v2::model_metadata)),
        )
        .route(
            routes::V2_MODEL_VERSION,
            guard(routes::V2_MODEL_VERSION, get(v2::model_metadata)),
        )
        .route(routes::V2_MODEL_READY, get(v2::model_ready))
        .route(routes::V2_MODEL_VERSION_READY, get(v2::model_ready))
        .route(routes::V2_INFER, guard(routes::V2_INFER, post(v2::infer)))
        .route(
            routes::V2_INFER_VERSION,
            guard(routes::V2_INFER_VERSION, post(v2::infer)),
        )
        .fallback(pages::fallback)
        .method_not_allowed_fallback(pages::method_not_allowed);
    if let Some(cors) = state.security.cors.clone() {
        app = app.layer(cors);
    }
    // No `DefaultBodyLimit` layer: every body is read by `body::upload` under the server's own
    // limits, never by an axum extractor, and the layer would cost each request an allocation.
    app.layer(axum::middleware::from_fn_with_state(
        Arc::clone(&state),
        middleware::observe,
    ))
    .with_state(state)
}

/// Only the probe routes (`--plain-http probes`): /livez, /readyz, /healthz; anything else 404.
pub fn probes_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(routes::LIVEZ, get(pages::livez))
        .route(routes::READYZ, get(pages::readyz))
        .route(routes::HEALTHZ, get(pages::readyz))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            middleware::observe,
        ))
        .with_state(state)
}
