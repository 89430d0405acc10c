//! A prediction's path once its body is in, shared by every prediction route (`/predict`,
//! `/predict/batch`, the Open Inference Protocol's REST and gRPC inference): a prediction slot
//! ([`admit`]), the time limit ([`within_timeout`]) and the classifier's job with its metrics
//! ([`run_job`]).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;

use super::state::AppState;
use crate::classifier::{ClassifyError, Input, JobOutput, Prediction};
use crate::errors::ApiError;
use crate::preprocess::PreprocessError;
use crate::telemetry::RequestTrace;

/// Admission to a prediction slot, once the body has arrived: a slot under `--max-concurrency`,
/// waited for at most `--max-queue-wait` (waiting costs no CPU; a refusal that a client retries at
/// once does). While draining, predictions are still served; the connection layer closes each
/// connection after its answer.
///
/// A traced request gets an `admission` span when it had to wait.
pub async fn admit(
    state: &AppState,
    trace: Option<&RequestTrace>,
) -> Result<OwnedSemaphorePermit, ApiError> {
    let overloaded = || ApiError::Overloaded {
        retry_after: state.limits.retry_after_seconds,
    };
    if let Ok(permit) = Arc::clone(&state.limiter).try_acquire_owned() {
        return Ok(permit);
    }
    let started = Instant::now();
    let wait = Arc::clone(&state.limiter).acquire_owned();
    let admitted = match tokio::time::timeout(state.limits.max_queue_wait, wait).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(overloaded()),
    };
    if let Some(trace) = trace {
        let attributes = vec![("celestial.admitted", admitted.is_ok().into())];
        trace.child("admission", started, Instant::now(), attributes);
    }
    admitted
}

/// Run `work` within `--request-timeout` (counted from now: the end of the body); 504 after.
pub async fn within_timeout<T>(
    state: &AppState,
    work: impl Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    let timeout = state.limits.request_timeout;
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(ApiError::Timeout(timeout)))
}

/// The request header that marks a probe (the deployer sends `celestial-probe: evaluation` with its
/// evaluation requests): its answers stay out of the per-label, unknown and confidence metrics and
/// of the drift windows, which describe the live traffic; it is still counted as a request. One
/// name for both sides, in celestial-common.
pub const PROBE_HEADER: &str = celestial_common::probe::HEADER;

/// Whose request a job serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// A client's: counted in the answer metrics and the drift windows.
    Live,
    /// A probe's ([`PROBE_HEADER`], any value).
    Probe,
}

impl Traffic {
    /// [`Traffic::Probe`] when the HTTP `headers` carry [`PROBE_HEADER`].
    pub fn of(headers: &axum::http::HeaderMap) -> Traffic {
        Traffic::probe_if(headers.contains_key(PROBE_HEADER))
    }

    /// [`Traffic::Probe`] when `probe` (gRPC metadata carries the header as HTTP/2 does).
    pub fn probe_if(probe: bool) -> Traffic {
        if probe { Traffic::Probe } else { Traffic::Live }
    }
}

/// A traced request gets the job's steps as spans ([`job_spans`]).
pub async fn run_job(
    state: &AppState,
    images: Vec<Input>,
    traffic: Traffic,
    trace: Option<&RequestTrace>,
) -> Result<Vec<Result<Prediction, PreprocessError>>, ApiError> {
    let queued = Instant::now();
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
    if let Some(trace) = trace {
        job_spans(trace, queued, &out);
    }
    if traffic == Traffic::Live {
        for p in out.results.iter().flatten() {
            state.metrics.predicted(p.best, p.known, p.confidence);
            state.drift.observe(p);
        }
    }
    Ok(out.results)
}

/// A job's steps, one after the other from `queued`: waiting in the batch queue, decoding and
/// preprocessing (the whole batch's images, other requests' included, as the worker does them in
/// one go) and the ONNX Runtime call (its batch size as an attribute; no span when none of the
/// job's images could be decoded).
fn job_spans(trace: &RequestTrace, queued: Instant, out: &JobOutput) {
    let picked = queued + out.queue_wait;
    let preprocessed = picked + out.preprocess;
    let failed = out.results.iter().filter(|r| r.is_err()).count();
    trace.child("batch queue", queued, picked, Vec::new());
    trace.child(
        "decode and preprocess",
        picked,
        preprocessed,
        vec![
            ("celestial.images", out.results.len().into()),
            ("celestial.images.failed", failed.into()),
        ],
    );
    if out.batch_images > 0 {
        trace.child(
            "inference",
            preprocessed,
            preprocessed + out.inference,
            vec![("celestial.batch.images", out.batch_images.into())],
        );
    }
}
