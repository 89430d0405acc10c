//! `POST /predict` and `POST /predict/batch`: the body is received first (under an upload slot,
//! bounded by size and by time/rate), then a prediction slot is taken (admission), then the
//! image(s) are extracted (multipart or raw), classified, and answered.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt;
use serde::Serialize;
use serde::ser::SerializeMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::media_type;
use super::state::{AppState, Limits, Shared};
use crate::classifier::{ClassifyError, Prediction};
use crate::errors::{ApiError, ErrorBody, image_code};
use crate::preprocess::PreprocessError;
use crate::routes;

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

/// Admission to a prediction slot, once the body has arrived: a slot under `--max-concurrency`,
/// waited for at most `--max-queue-wait` (waiting costs no CPU; a refusal that a client retries at
/// once does). While draining, predictions are still served; the connection layer closes each
/// connection after its answer.
async fn admit(state: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
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
    match media.essence.as_str() {
        "multipart/form-data" => match media.param("boundary") {
            Some(b) if !b.is_empty() => Ok(BodyKind::Multipart(b.to_string())),
            _ => Err(ApiError::MissingBoundary),
        },
        raw if routes::is_raw_image_type(raw) => Ok(BodyKind::Raw),
        _ => Err(ApiError::UnsupportedMediaType(media.essence)),
    }
}

/// How long after the start a body that has `received` bytes so far may still wait for more:
/// `--body-timeout`, or longer as long as the average rate stays at `--body-min-rate` or above.
fn body_deadline(limits: &Limits, received: u64) -> Duration {
    if limits.body_min_rate == 0 {
        return limits.body_timeout;
    }
    let at_rate = Duration::from_secs_f64(received as f64 / limits.body_min_rate as f64);
    limits.body_timeout.max(at_rate)
}

/// Whether a body error says the client went away (the connection ended in the middle of the body).
fn client_gone(e: &axum::Error) -> bool {
    use std::io::ErrorKind;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::BrokenPipe
            )
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// A body as it arrives: the first chunk kept as is (most bodies come in one), later ones copied
/// into one growing buffer (a body sent in many tiny chunks costs its bytes, not a record each).
#[derive(Default)]
struct BodyBuffer {
    first: Option<Bytes>,
    rest: BytesMut,
}

impl BodyBuffer {
    fn push(&mut self, data: Bytes) {
        match self.first.take() {
            None if self.rest.is_empty() => self.first = Some(data),
            None => self.rest.extend_from_slice(&data),
            Some(first) => {
                self.rest.reserve(first.len() + data.len());
                self.rest.extend_from_slice(&first);
                self.rest.extend_from_slice(&data);
            }
        }
    }

    fn finish(self) -> Bytes {
        self.first.unwrap_or_else(|| self.rest.freeze())
    }
}

/// Read the whole body, bounded by `--max-body-bytes` (413) and by the body's deadline (408).
async fn read_body(
    mut body: Body,
    headers: &HeaderMap,
    limits: &Limits,
    memory: &Arc<Semaphore>,
) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
    let max = limits.max_body_bytes;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(ApiError::BodyTooLarge { limit: max });
    }
    let start = tokio::time::Instant::now();
    let mut buffer = BodyBuffer::default();
    let mut received: u64 = 0;
    let mut held = take_memory(memory, 0, limits)?;
    loop {
        let deadline = start + body_deadline(limits, received);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::BodyTimeout {
                    received,
                    waited: start.elapsed(),
                    timeout: limits.body_timeout,
                    min_rate: limits.body_min_rate,
                });
            }
            Ok(None) => break,
            Ok(Some(Err(e))) if client_gone(&e) => return Err(ApiError::IncompleteBody),
            Ok(Some(Err(e))) => {
                return Err(ApiError::InvalidMultipart(format!(
                    "the request body could not be read ({e})"
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            received += data.len() as u64;
            if received > max as u64 {
                return Err(ApiError::BodyTooLarge { limit: max });
            }
            held.merge(take_memory(memory, data.len(), limits)?);
            buffer.push(data);
        }
    }
    Ok((buffer.finish(), held))
}

/// `--max-body-memory` for `len` more body bytes (counted twice, in KiB); 429 when the bodies in
/// flight already hold it.
fn take_memory(
    memory: &Arc<Semaphore>,
    len: usize,
    limits: &Limits,
) -> Result<OwnedSemaphorePermit, ApiError> {
    let kib = u32::try_from((2 * len).div_ceil(1024)).unwrap_or(u32::MAX);
    Arc::clone(memory)
        .try_acquire_many_owned(kib)
        .map_err(|_| ApiError::Overloaded {
            retry_after: limits.retry_after_seconds,
        })
}

/// How many `image` parts a route takes.
#[derive(Clone, Copy)]
enum Expect {
    /// `/predict`: exactly one.
    One,
    /// `/predict/batch`: one up to this many.
    AtMost(usize),
}

/// The `image` part(s) of a multipart body.
async fn image_parts(
    body: Bytes,
    boundary: String,
    expect: Expect,
) -> Result<Vec<Bytes>, ApiError> {
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
        match expect {
            Expect::One if images.len() == 1 => return Err(ApiError::MultipleImages),
            Expect::AtMost(max) if images.len() == max => {
                return Err(ApiError::TooManyImages { limit: max });
            }
            _ => {}
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

/// A request body that has arrived, and what its `Content-Type` says it is.
struct Received {
    kind: BodyKind,
    bytes: Bytes,
}

/// Receive the body under an upload slot (`--max-uploads`; released when the body is in), before
/// any prediction slot is taken: a client that sends slowly or stalls holds no prediction slot.
/// Requests are served while the server drains (only `/readyz` turns 503 then; the connection
/// layer closes each connection after its answer).
async fn receive(
    state: &AppState,
    req: Request,
) -> Result<(Received, OwnedSemaphorePermit), ApiError> {
    let (parts, body) = req.into_parts();
    let kind = body_kind(&parts.headers)?;
    let _upload = Arc::clone(&state.uploads)
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded {
            retry_after: state.limits.retry_after_seconds,
        })?;
    let (bytes, memory) =
        read_body(body, &parts.headers, &state.limits, &state.body_memory).await?;
    Ok((Received { kind, bytes }, memory))
}

impl Received {
    /// The image(s) of the body.
    async fn images(self, expect: Expect) -> Result<Vec<Bytes>, ApiError> {
        match self.kind {
            _ if self.bytes.is_empty() => Err(ApiError::EmptyBody),
            BodyKind::Multipart(boundary) => image_parts(self.bytes, boundary, expect).await,
            BodyKind::Raw => Ok(vec![self.bytes]),
        }
    }
}

/// Run `work` within `--request-timeout` (counted from now: the end of the body); 504 after.
async fn within_timeout<T>(
    state: &AppState,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let timeout = state.limits.request_timeout;
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(ApiError::Timeout(timeout)))
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
    if out.batch_images > 0 {
        // (no ONNX Runtime call when none of the job's images could be decoded)
        state.metrics.batch_images.observe_count(out.batch_images);
    }
    for p in out.results.iter().flatten() {
        state.metrics.predicted(p.best, p.known);
    }
    Ok(out.results)
}

pub async fn predict(State(state): Shared, req: Request) -> Result<Response, ApiError> {
    let (body, _memory) = receive(&state, req).await?;
    within_timeout(&state, async {
        let images = body.images(Expect::One).await?;
        let _permit = admit(&state).await?;
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
    })
    .await
}

pub async fn predict_batch(State(state): Shared, req: Request) -> Result<Response, ApiError> {
    let (body, _memory) = receive(&state, req).await?;
    let results = within_timeout(&state, async {
        let images = body
            .images(Expect::AtMost(state.limits.max_batch_images))
            .await?;
        let _permit = admit(&state).await?;
        run_job(&state, images).await
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

    #[test]
    fn a_body_buffer_keeps_one_chunk_and_joins_many() {
        let one = Bytes::from_static(b"abc");
        let mut b = BodyBuffer::default();
        b.push(one.clone());
        let got = b.finish();
        assert_eq!(got.as_ptr(), one.as_ptr(), "one chunk is not copied");
        let mut b = BodyBuffer::default();
        for c in [&b"ab"[..], b"", b"c", b"de"] {
            b.push(Bytes::copy_from_slice(c));
        }
        assert_eq!(&b.finish()[..], b"abcde");
        assert!(BodyBuffer::default().finish().is_empty());
    }

    #[test]
    fn a_body_may_take_the_timeout_or_longer_at_the_minimum_rate() {
        let limits = |timeout_ms, body_min_rate| Limits {
            max_body_bytes: 1 << 20,
            max_batch_images: 1,
            max_concurrency: 1,
            max_queue_wait: Duration::ZERO,
            request_timeout: Duration::from_secs(30),
            retry_after_seconds: 1,
            body_timeout: Duration::from_millis(timeout_ms),
            body_min_rate,
            max_uploads: 1,
            max_body_memory: 1 << 24,
        };
        let l = limits(2000, 1000);
        assert_eq!(body_deadline(&l, 0), Duration::from_secs(2));
        assert_eq!(body_deadline(&l, 1500), Duration::from_secs(2));
        assert_eq!(body_deadline(&l, 5000), Duration::from_secs(5));
        let no_rate = limits(2000, 0);
        assert_eq!(body_deadline(&no_rate, 1 << 20), Duration::from_secs(2));
    }
}
