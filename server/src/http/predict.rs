//! `POST /predict` and `POST /predict/batch`: the body is received first (`body`: under an upload
//! slot, bounded by size and by time/rate), then a prediction slot is taken (`job`: admission),
//! then the image(s) are extracted (multipart or raw), classified, and answered.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::ser::SerializeMap;
use tokio::sync::OwnedSemaphorePermit;

use super::job::{Traffic, admit, run_job, within_timeout};
use super::state::{AppState, Shared};
use super::{body, media_type, multipart};
use crate::classifier::{Input, Prediction};
use crate::errors::{ApiError, ErrorBody, image_code};
use crate::routes;
use crate::telemetry::RequestTrace;

// Prediction routes.

/// A prediction serialized with the probabilities in label order, then `confidence` and `known`
/// when the model defines them.
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
        let p = self.prediction;
        let fields = 2 + usize::from(p.confidence.is_some()) + usize::from(p.known.is_some());
        let mut m = s.serialize_map(Some(fields))?;
        m.serialize_entry("prediction", &self.labels[p.best])?;
        m.serialize_entry("probabilities", &Probs(self.labels, &p.probabilities))?;
        // Only for a model whose metadata defines them (BentoML clients read the two above).
        if let Some(confidence) = p.confidence {
            m.serialize_entry("confidence", &confidence)?;
        }
        if let Some(known) = p.known {
            m.serialize_entry("known", &known)?;
        }
        m.end()
    }
}

enum BodyKind {
    Multipart(String),
    Raw,
}

/// What the `Content-Type` says the body is, parsed strictly (a malformed value is 415).
fn body_kind(headers: &HeaderMap) -> Result<BodyKind, ApiError> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(BodyKind::Raw);
    };
    let ct = ct.to_str().map_err(|_| ApiError::InvalidMediaType {
        value: String::from_utf8_lossy(ct.as_bytes()).into_owned(),
        reason: "it is not ASCII",
    })?;
    if ct.trim().is_empty() {
        return Ok(BodyKind::Raw);
    }
    let media = media_type::parse(ct).map_err(|reason| ApiError::InvalidMediaType {
        value: ct.to_string(),
        reason,
    })?;
    match media.essence.as_ref() {
        "multipart/form-data" => match media.param("boundary") {
            Some(b) if !b.is_empty() => Ok(BodyKind::Multipart(b.to_string())),
            _ => Err(ApiError::MissingBoundary),
        },
        raw if routes::is_raw_image_type(raw) => Ok(BodyKind::Raw),
        _ => Err(ApiError::UnsupportedMediaType(media.essence.into_owned())),
    }
}

/// How many `image` parts a route takes.
#[derive(Clone, Copy)]
enum Expect {
    /// `/predict`: exactly one.
    One,
    /// `/predict/batch`: one up to this many.
    AtMost(usize),
}

/// The `image` part(s) of a multipart body (views of it; other parts are ignored).
fn image_parts(body: &Bytes, boundary: &str, expect: Expect) -> Result<Vec<Bytes>, ApiError> {
    let mut images = Vec::new();
    for part in multipart::Parts::new(body, boundary) {
        let part = part.map_err(|reason| ApiError::InvalidMultipart(reason.to_string()))?;
        if part.name.as_deref() != Some(b"image") {
            continue;
        }
        match expect {
            Expect::One if images.len() == 1 => return Err(ApiError::MultipleImages),
            Expect::AtMost(max) if images.len() == max => {
                return Err(ApiError::TooManyImages { limit: max });
            }
            _ => {}
        }
        images.push(part.content);
    }
    if images.is_empty() {
        return Err(ApiError::MissingImagePart);
    }
    Ok(images)
}

/// A request body that has arrived, and what its `Content-Type` says it is.
struct Received {
    kind: BodyKind,
    bytes: Bytes,
}

/// Receive the body ([`body::upload`]) and what its `Content-Type` says it is.
async fn receive(
    state: &AppState,
    req: Request,
    trace: Option<&RequestTrace>,
) -> Result<(Received, OwnedSemaphorePermit), ApiError> {
    let (parts, body) = req.into_parts();
    let kind = body_kind(&parts.headers)?;
    let (bytes, memory) = body::upload(state, &parts.headers, body, trace).await?;
    Ok((Received { kind, bytes }, memory))
}

impl Received {
    /// The image(s) of the body.
    fn images(self, expect: Expect) -> Result<Vec<Bytes>, ApiError> {
        match self.kind {
            _ if self.bytes.is_empty() => Err(ApiError::EmptyBody),
            BodyKind::Multipart(boundary) => image_parts(&self.bytes, &boundary, expect),
            BodyKind::Raw => Ok(vec![self.bytes]),
        }
    }
}

pub async fn predict(State(state): Shared, req: Request) -> Result<Response, ApiError> {
    let traffic = Traffic::of(req.headers());
    let trace = req.extensions().get::<RequestTrace>().cloned();
    let trace = trace.as_ref();
    let (body, _memory) = receive(&state, req, trace).await?;
    within_timeout(&state, async {
        let images = body.images(Expect::One)?;
        let _permit = admit(&state, trace).await?;
        let images = images.into_iter().map(Input::Encoded).collect();
        let mut results = run_job(&state, images, traffic, trace).await?;
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
    })
    .await
}

pub async fn predict_batch(State(state): Shared, req: Request) -> Result<Response, ApiError> {
    let traffic = Traffic::of(req.headers());
    let trace = req.extensions().get::<RequestTrace>().cloned();
    let trace = trace.as_ref();
    let (body, _memory) = receive(&state, req, trace).await?;
    let results = within_timeout(&state, async {
        let images = body.images(Expect::AtMost(state.limits.max_batch_images))?;
        let _permit = admit(&state, trace).await?;
        run_job(
            &state,
            images.into_iter().map(Input::Encoded).collect(),
            traffic,
            trace,
        )
        .await
    })
    .await?;
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
        assert!(
            matches!(body_kind(&h("multipart/form-data; boundary=\"a b\"")), Ok(BodyKind::Multipart(b)) if b == "a b")
        );
        for bad in [
            ";;;=;",
            "image/png;;;=;",
            "image/png x",
            "multipart/form-data; boundary",
        ] {
            assert!(
                matches!(body_kind(&h(bad)), Err(ApiError::InvalidMediaType { ref value, .. }) if value == bad),
                "{bad}"
            );
        }
    }
}
