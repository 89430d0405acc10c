//! `POST /predict` and `POST /predict/batch`: admission, body extraction (multipart or raw), the
//! classifier call and the answer.

use std::sync::Arc;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde::Serialize;
use serde::ser::SerializeMap;

use super::state::{AppState, Shared};
use crate::classifier::{ClassifyError, Prediction};
use crate::errors::{ApiError, ErrorBody, image_code};
use crate::preprocess::PreprocessError;
use crate::routes;

// Prediction routes.

/// A prediction serialized with the probabilities in label order.
struct PredictionBody<'a> {
    labels: &'a [String],
    prediction: &'a Prediction,
}

impl Serialize for PredictionBody<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Probs<'a>(&'a [String], &'a [f32]);
        impl Serialize for Probs<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(self.0.len()))?;
                for (l, p) in self.0.iter().zip(self.1) {
                    m.serialize_entry(l, p)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("prediction", &self.labels[self.prediction.best])?;
        m.serialize_entry(
            "probabilities",
            &Probs(self.labels, &self.prediction.probabilities),
        )?;
        m.end()
    }
}

/// Admission: a slot under the concurrency limit, waited for at most `max_queue_wait` (waiting
/// costs no CPU; a refusal that a client retries at once does). While draining, predictions are
/// still served; the connection layer closes each connection after its answer.
async fn admit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    let overloaded = || ApiError::Overloaded {
        retry_after: state.limits.retry_after_seconds,
    };
    if let Ok(permit) = Arc::clone(&state.limiter).try_acquire_owned() {
        return Ok(permit);
    }
    let wait = Arc::clone(&state.limiter).acquire_owned();
    match tokio::time::timeout(state.limits.max_queue_wait, wait).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(overloaded()),
    }
}

enum BodyKind {
    Multipart(String),
    Raw,
}

fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Raw);
    };
    let ct = ct
        .to_str()
        .map_err(|_| ApiError::UnsupportedMediaType("(not ASCII)".into()))?;
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "multipart/form-data" => multer::parse_boundary(ct)
            .map(BodyKind::Multipart)
            .map_err(|_| ApiError::MissingBoundary),
        raw if routes::is_raw_image_type(raw) => Ok(BodyKind::Raw),
        _ => Err(ApiError::UnsupportedMediaType(essence)),
    }
}

async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(ApiError::BodyTooLarge { limit });
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::BodyTooLarge { limit })
        }
        Err(e) => Err(ApiError::InvalidMultipart(format!(
            "the request body could not be read ({e})"
        ))),
    }
}

/// The `image` part(s) of a multipart body (at most `max` of them).
async fn image_parts(body: Bytes, boundary: String, max: usize) -> Result<Vec<Bytes>, ApiError> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut images = Vec::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(ApiError::InvalidMultipart(multipart_reason(&e))),
        };
        if field.name() != Some("image") {
            // Drain and ignore other parts.
            if let Err(e) = field.bytes().await {
                return Err(ApiError::InvalidMultipart(multipart_reason(&e)));
            }
            continue;
        }
        if images.len() == max {
            return Err(ApiError::TooManyImages { limit: max });
        }
        images.push(
            field
                .bytes()
                .await
                .map_err(|e| ApiError::InvalidMultipart(multipart_reason(&e)))?,
        );
    }
    if images.is_empty() {
        return Err(ApiError::MissingImagePart);
    }
    Ok(images)
}

fn multipart_reason(e: &multer::Error) -> String {
    let s = e.to_string();
    let s = s.trim_end_matches('.');
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => "unknown error".into(),
    }
}

async fn extract_images(
    state: &AppState,
    req: Request,
    max: usize,
) -> Result<Vec<Bytes>, ApiError> {
    let (parts, body) = req.into_parts();
    let kind = body_kind(&parts.headers)?;
    let bytes = read_body(body, &parts.headers, state.limits.max_body_bytes).await?;
    match kind {
        BodyKind::Multipart(boundary) => {
            if bytes.is_empty() {
                return Err(ApiError::EmptyBody);
            }
            image_parts(bytes, boundary, max).await
        }
        BodyKind::Raw if bytes.is_empty() => Err(ApiError::EmptyBody),
        BodyKind::Raw => Ok(vec![bytes]),
    }
}

async fn run_job(
    state: &AppState,
    images: Vec<Bytes>,
) -> Result<Vec<Result<Prediction, PreprocessError>>, ApiError> {
    let out = state
        .classifier
        .classify(images)
        .await
        .map_err(|e| match e {
            ClassifyError::Closed => ApiError::Draining,
            ClassifyError::Failed(reason) => ApiError::Internal(reason),
        })?;
    state.metrics.queue_wait.observe(out.queue_wait);
    state.metrics.preprocess.observe(out.preprocess);
    state.metrics.inference.observe(out.inference);
    for p in out.results.iter().flatten() {
        state.metrics.predicted(p.best);
    }
    Ok(out.results)
}

pub async fn predict(State(state): Shared, req: Request) -> Result<Response, ApiError> {
    let _permit = admit(&state).await?;
    let images = extract_images(&state, req, 1).await?;
    let mut results = run_job(&state, images).await?;
    let prediction = results
        .pop()
        .ok_or_else(|| ApiError::Internal("no result".into()))?
        .map_err(ApiError::Image)?;
    let labels = &state.classifier.spec().labels;
    Ok(Json(PredictionBody {
        labels,
        prediction: &prediction,
    })
    .into_response())
}

pub async fn predict_batch(State(state): Shared, req: Request) -> Result<Response, ApiError> {
    let _permit = admit(&state).await?;
    let images = extract_images(&state, req, state.limits.max_batch_images).await?;
    let results = run_job(&state, images).await?;
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        // Per-image errors inside a 200 batch answer (a refused request is counted by the middleware).
        state.metrics.rejected(image_code(e).as_str());
    }
    let labels = &state.classifier.spec().labels;
    let items: Vec<serde_json::Value> = results
        .iter()
        .map(|r| match r {
            Ok(p) => serde_json::to_value(PredictionBody {
                labels,
                prediction: p,
            })
            .unwrap_or(serde_json::Value::Null),
            Err(e) => serde_json::to_value(ErrorBody::from(&ApiError::Image(e.clone())))
                .unwrap_or(serde_json::Value::Null),
        })
        .collect();
    Ok(Json(serde_json::json!({ "results": items })).into_response())
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn content_types_are_classified() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(
            matches!(body_kind(&h("multipart/form-data; boundary=abc")), Ok(BodyKind::Multipart(b)) if b == "abc")
        );
        assert!(matches!(
            body_kind(&h("multipart/form-data")),
            Err(ApiError::MissingBoundary)
        ));
        for t in routes::RAW_IMAGE_TYPES {
            assert!(matches!(body_kind(&h(t)), Ok(BodyKind::Raw)), "{t}");
        }
        assert!(matches!(
            body_kind(&h("Application/Octet-Stream")),
            Ok(BodyKind::Raw)
        ));
        assert!(
            matches!(body_kind(&h("text/plain")), Err(ApiError::UnsupportedMediaType(t)) if t == "text/plain")
        );
        assert!(matches!(body_kind(&HeaderMap::new()), Ok(BodyKind::Raw)));
    }
}
