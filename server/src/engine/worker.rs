//! A worker thread: takes batches from the queue, decodes and preprocesses their images, runs them
//! in one ONNX Runtime call on its own session, and answers each job. Everything CPU-heavy happens
//! here, off the async runtime.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ort::session::Session;

use super::error::InferenceError;
use super::output::to_prediction;
use super::queue::{Batching, Job, next_batch};
use super::session::run_all;
use crate::classifier::{Input, JobOutput, Prediction};
use crate::model::ModelSpec;
use crate::preprocess::{self, DecodeLimits, PreprocessError};

/// What one worker owns: its ONNX Runtime session, its preprocessing state and its input buffer,
/// all reused from one job to the next.
pub struct WorkerState {
    session: Session,
    prep: preprocess::Preprocessor,
    input: Vec<f32>,
}

/// The worker loop: batches from `rx` until the engine is gone; a panic fails its batch, not the
/// worker.
pub(super) fn worker(
    mut state: WorkerState,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    limits: DecodeLimits,
    batching: Batching,
) {
    // A job taken from the queue that did not fit the last batch: it leads the next one.
    let mut carried: Option<Job> = None;
    loop {
        let Some(jobs) = next_batch(&rx, &mut carried, batching) else {
            return; // engine dropped
        };
        let inputs: Vec<(&[Input], Instant)> = jobs
            .iter()
            .map(|j| (j.images.as_slice(), j.enqueued))
            .collect();
        let outputs = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            state.process_jobs(&inputs, limits)
        }));
        match outputs {
            Ok(outputs) => {
                for (job, out) in jobs.into_iter().zip(outputs) {
                    let _ = job.reply.send(out);
                }
            }
            Err(_) => {
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(InferenceError::Run("inference panicked".into())));
                }
            }
        }
        // Between jobs, let the threads this answer just woke (the HTTP runtime; a co-located client)
        // run now rather than when the scheduler next preempts this CPU-bound thread: with as many
        // workers as cores they would otherwise wait, and the answer with them. On 2 cores at c=32
        // this cut p99 from 10.0-11.3 ms to 7.2-8.9 ms at the same throughput (bench/README.md).
        std::thread::yield_now();
    }
}

/// One picture into its row of the input: decoded and preprocessed, or a caller's tensor copied.
fn fill_row(
    prep: &mut preprocess::Preprocessor,
    spec: &Arc<ModelSpec>,
    picture: &Input,
    limits: DecodeLimits,
    row: &mut [f32],
) -> Result<(), PreprocessError> {
    match picture {
        Input::Encoded(bytes) => {
            // A decoder bug must not take the worker (and its session) down: treat a panic as an
            // undecodable image (and start the next image with fresh preprocessing state).
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                prep.run(bytes, limits, row)
            }))
            .unwrap_or_else(|_| {
                *prep = preprocess::Preprocessor::new(Arc::clone(spec));
                Err(PreprocessError::Undecodable {
                    format: "uploaded",
                    reason: "the decoder failed on this input".into(),
                })
            })
        }
        Input::Tensor(values) => copy_tensor(values, row),
    }
}

/// A caller's tensor into its slot of the input (the protocol layer checked its length; a wrong
/// one fails this picture alone rather than shifting the others).
fn copy_tensor(values: &[f32], row: &mut [f32]) -> Result<(), PreprocessError> {
    if values.len() != row.len() {
        return Err(PreprocessError::Undecodable {
            format: "tensor",
            reason: format!(
                "it has {} values, the model takes {}",
                values.len(),
                row.len()
            ),
        });
    }
    row.copy_from_slice(values);
    Ok(())
}

impl WorkerState {
    /// A worker around `session`, preprocessing for `spec`.
    pub(super) fn new(session: Session, spec: Arc<ModelSpec>) -> WorkerState {
        WorkerState {
            session,
            prep: preprocess::Preprocessor::new(spec),
            input: Vec::new(),
        }
    }

    /// One job's images, as [`WorkerState::process_jobs`] runs them.
    pub(super) fn process(
        &mut self,
        images: &[Input],
        limits: DecodeLimits,
        enqueued: Instant,
    ) -> Result<JobOutput, InferenceError> {
        self.process_jobs(&[(images, enqueued)], limits)
            .pop()
            .expect("one output per job")
    }

    /// Decode and preprocess the images of every job (each `(images, enqueued)`) into one input,
    /// classify them in one ONNX Runtime call (one per image for a model without a batch
    /// dimension), and split the answers per job. An image that cannot be decoded fails alone; an
    /// ONNX Runtime failure fails every job of the call.
    fn process_jobs(
        &mut self,
        jobs: &[(&[Input], Instant)],
        limits: DecodeLimits,
    ) -> Vec<Result<JobOutput, InferenceError>> {
        let started = Instant::now();
        let WorkerState {
            session,
            prep,
            input,
        } = self;
        let spec = Arc::clone(prep.spec());
        let len = spec.tensor_len();
        let total: usize = jobs.iter().map(|(images, _)| images.len()).sum();
        input.resize(len * total, 0.0);
        let mut ok_slots = Vec::with_capacity(total);
        // The colour statistics of each slot's picture: from its 8-bit pixels while the
        // preprocessor still holds them, from the tensor for a caller's tensor.
        let mut colours = Vec::with_capacity(total);
        let mut results: Vec<Result<Prediction, PreprocessError>> = Vec::with_capacity(total);
        for picture in jobs.iter().flat_map(|(images, _)| images.iter()) {
            let slot = ok_slots.len();
            let row = &mut input[slot * len..(slot + 1) * len];
            let outcome = fill_row(prep, &spec, picture, limits, row);
            match outcome {
                Ok(()) => {
                    colours.push(match picture {
                        Input::Encoded(_) => spec.colours_rgb8(prep.model_pixels()),
                        Input::Tensor(_) => spec.colours(row),
                    });
                    ok_slots.push(results.len());
                    results.push(Ok(Prediction::default())); // filled in after the run
                }
                Err(e) => results.push(Err(e)),
            }
        }
        let preprocessed = Instant::now();
        let n = ok_slots.len();
        if n > 0 {
            let flat = match run_all(session, &spec, n, input) {
                Ok(flat) => flat,
                Err(e) => {
                    return jobs
                        .iter()
                        .map(|_| Err(InferenceError::Run(e.clone())))
                        .collect();
                }
            };
            for ((row, &idx), colours) in flat
                .chunks_exact(spec.labels.len())
                .zip(&ok_slots)
                .zip(&colours)
            {
                results[idx] = Ok(to_prediction(row, &spec, colours.as_ref()));
            }
        }
        let done = Instant::now();
        let mut results = results.into_iter();
        jobs.iter()
            .map(|(images, enqueued)| {
                let results: Vec<_> = results.by_ref().take(images.len()).collect();
                let ran = results.iter().any(Result::is_ok);
                Ok(JobOutput {
                    results,
                    queue_wait: started.saturating_duration_since(*enqueued),
                    preprocess: preprocessed - started,
                    inference: done - preprocessed,
                    batch_images: if ran { n } else { 0 },
                })
            })
            .collect()
    }
}
