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
/// waited for at most `--max-queue-wait` in a queue of at most `--max-queue` (waiting costs no
/// CPU; a refusal that a client retries at once does). A prediction that finds the queue full is
/// refused at once: under sustained overload the queue stays full, and the served predictions
/// wait only as long as the queue takes to go through, not `--max-queue-wait`. While draining,
/// predictions are still served; the connection layer closes each connection after its answer.
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
    // Held while waiting; given back with the slot or the refusal.
    let Ok(_place) = state.queue.try_acquire() else {
        return Err(overloaded());
    };
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::classifier::Classifier;
    use crate::docs::{DocLimits, documents};
    use crate::http::state::Limits;
    use crate::testing::FakeClassifier;

    /// A state with `max_concurrency` slots, a queue of `max_queue` and a queue wait of `wait`.
    fn state_waiting(max_concurrency: usize, max_queue: usize, wait: Duration) -> Arc<AppState> {
        let limits = Limits {
            max_body_bytes: 1 << 20,
            max_batch_images: 1,
            max_concurrency,
            max_queue,
            max_queue_wait: wait,
            request_timeout: Duration::from_secs(30),
            retry_after_seconds: 3,
            body_timeout: Duration::from_secs(10),
            body_min_rate: 0,
            max_uploads: 1,
            max_body_memory: 1 << 24,
        };
        let classifier: Arc<dyn Classifier> = Arc::new(FakeClassifier::default());
        let doc_limits = DocLimits {
            max_body_bytes: limits.max_body_bytes,
            max_image_pixels: 1000,
            max_batch: 1,
            body_timeout: limits.body_timeout,
            body_min_rate: 0,
        };
        let docs = documents(classifier.as_ref(), "svc", &doc_limits);
        Arc::new(AppState::new(classifier, limits, docs, &Default::default()))
    }

    /// [`state_waiting`] with a long wait: a refusal is then the queue's, never the wait's.
    fn state(max_concurrency: usize, max_queue: usize) -> Arc<AppState> {
        state_waiting(max_concurrency, max_queue, Duration::from_secs(30))
    }

    fn is_refusal(r: &Result<OwnedSemaphorePermit, ApiError>) -> bool {
        matches!(r, Err(ApiError::Overloaded { retry_after: 3 }))
    }

    /// `admit` for `state` on its own task.
    fn waiting(state: &Arc<AppState>) -> tokio::task::JoinHandle<bool> {
        let state = Arc::clone(state);
        tokio::spawn(async move { admit(&state, None).await.is_ok() })
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_the_queued_get_the_freed_slots() {
        let s = state(1, 2);
        let slot = admit(&s, None).await.expect("a free slot");
        let queued = [waiting(&s), waiting(&s)];
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(queued.iter().all(|q| !q.is_finished()), "both wait");
        let started = Instant::now();
        assert!(is_refusal(&admit(&s, None).await), "the queue is full");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "refused at once"
        );
        drop(slot);
        let [first, second] = queued;
        assert!(first.await.unwrap(), "the first in the queue gets the slot");
        assert!(second.await.unwrap(), "then the second");
        assert_eq!(s.queue.available_permits(), 2, "the places are given back");
    }

    #[tokio::test]
    async fn no_queue_refuses_at_once_when_every_slot_is_taken() {
        let s = state(2, 0);
        let slots = [
            admit(&s, None).await.unwrap(),
            admit(&s, None).await.unwrap(),
        ];
        assert!(is_refusal(&admit(&s, None).await));
        drop(slots);
        assert!(admit(&s, None).await.is_ok(), "a freed slot admits again");
    }

    #[tokio::test]
    async fn a_queued_prediction_is_refused_after_the_queue_wait_and_gives_its_place_back() {
        let s = state_waiting(1, 1, Duration::from_millis(50));
        let _slot = admit(&s, None).await.unwrap();
        let queued = waiting(&s);
        assert!(!queued.await.unwrap(), "refused after --max-queue-wait");
        assert_eq!(s.queue.available_permits(), 1);
    }
}
