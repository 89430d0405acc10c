//! The key check in front of the routes of `--api-key-scope`: a request without a valid key is
//! answered 401 at once, before its handler runs, so before a byte of its body is read or any
//! upload or prediction slot is taken (the connection layer reads an unread body away, or closes).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::state::AppState;
use crate::auth;
use crate::errors::ApiError;

/// Let the request through with a valid key; else 401 (the reason is counted by the metrics
/// middleware as the rejection `api_key_missing`, `api_key_invalid` or `api_key_malformed`).
pub async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(keys) = &state.security.api_keys else {
        return next.run(req).await;
    };
    match auth::check(keys, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(failure) => ApiError::Unauthorized(failure).into_response(),
    }
}
