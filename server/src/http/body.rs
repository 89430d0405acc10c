//! Receiving a prediction body: under an upload slot (`--max-uploads`), bounded by
//! `--max-body-bytes` (413), by time and rate (`--body-timeout`, `--body-min-rate`: 408) and by the
//! memory all bodies in flight may hold (`--max-body-memory`: 429). Every upload route reads its
//! body here (`/predict`, `/predict/batch`, the Open Inference Protocol's infer routes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::state::{AppState, Limits};
use crate::errors::ApiError;
use crate::telemetry::RequestTrace;

/// Receive `body` under an upload slot (released when the body is in), before any prediction slot
/// is taken: a client that sends slowly or stalls holds no prediction slot. The permit returned
/// holds the body's memory until the answer. Requests are served while the server drains (only
/// the readiness routes turn 503 then; the connection layer closes each connection after its
/// answer).
///
/// A traced request gets a `read body` span (its size as an attribute).
pub async fn upload(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    trace: Option<&RequestTrace>,
) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
    let _upload = Arc::clone(&state.uploads)
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded {
            retry_after: state.limits.retry_after_seconds,
        })?;
    let started = Instant::now();
    let received = read_body(body, headers, &state.limits, &state.body_memory).await;
    if let Some(trace) = trace {
        let size = received.as_ref().map_or(0, |(bytes, _)| bytes.len());
        trace.child(
            "read body",
            started,
            Instant::now(),
            vec![("http.request.body.size", size.into())],
        );
    }
    received
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

#[cfg(test)]
mod tests {
    use super::*;

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
            max_queue: 0,
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
