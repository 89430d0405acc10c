//! The key check in front of the routes of `--api-key-scope`: a request without a valid key is
//! answered 401 at once, before its handler runs and before its body is read, so no upload or
//! prediction slot is taken; the body is then read away in the background (bounded, [`discard`])
//! so that a client still uploading reads the 401 instead of an error.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::Body as _;
use http_body_util::BodyExt;

use super::state::AppState;
use crate::auth;
use crate::connection::{DISCARD_BYTES, DISCARD_TIME};
use crate::errors::ApiError;

/// Let the request through with a valid key; else 401 (the reason is counted by the metrics
/// middleware as the rejection `api_key_missing`, `api_key_invalid` or `api_key_malformed`).
pub async fn require_key(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(keys) = &state.security.api_keys else {
        return next.run(req).await;
    };
    match auth::check(keys, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(failure) => {
            // A client that waits for "100 Continue" sends no body after a final answer.
            if req.headers().get(header::EXPECT).is_none() {
                tokio::spawn(discard(req.into_body()));
            }
            ApiError::Unauthorized(failure).into_response()
        }
    }
}

/// Read and drop a refused request's body, at most [`DISCARD_BYTES`] for at most
/// [`DISCARD_TIME`], while and after the answer is sent. Dropped unread, an HTTP/2 request body
/// resets its stream (`NO_ERROR`, as the protocol allows), and common clients still uploading
/// (curl 7.88) then report an error instead of the answer. A body declared larger than
/// [`DISCARD_BYTES`] is not read at all.
async fn discard(mut body: Body) {
    if body.size_hint().lower() > DISCARD_BYTES as u64 {
        return;
    }
    let _ = tokio::time::timeout(DISCARD_TIME, async {
        let mut read = 0;
        while read <= DISCARD_BYTES {
            match body.frame().await {
                Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
    })
    .await;
}
