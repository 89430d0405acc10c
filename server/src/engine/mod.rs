//! The engine: ONNX Runtime behind the [`Classifier`] seam. It loads the model, and a pool of
//! worker threads each own a [`Session`](ort::session::Session) (whose `run` needs `&mut self`),
//! so requests never serialize on one lock. Workers also decode and preprocess, keeping all
//! CPU-heavy work off the async runtime.
//!
//! Inside: `library` (finding and loading the ONNX Runtime library, once per process), `session`
//! (a session from the model bytes, the spec from its metadata, the warm-up, one run), `queue`
//! (the jobs waiting for a worker and which of them one call batches), `worker` (the worker loop
//! and its reused state), `output` (an output row -> [`Prediction`](crate::classifier::Prediction):
//! softmax, arg-max, calibration), `error` ([`InferenceError`]). This file holds [`Engine`], which
//! starts the workers and queues the jobs.

mod error;
mod library;
mod output;
mod queue;
mod session;
mod worker;

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;

use crate::classifier::{Classification, Classifier, ClassifyError, Input, JobOutput};
use crate::model::{ModelOverrides, ModelSpec};
use crate::preprocess::DecodeLimits;

pub use error::InferenceError;
pub use library::{ORT_PINNED_VERSION, default_library_path, locate_library};
pub use output::to_prediction;
pub use queue::Batching;
pub use worker::WorkerState;

use library::runtime;
use queue::Job;
use session::{new_session, read_spec, warm_up};
use worker::worker;

/// Options for [`Engine::start`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub workers: usize,
    pub intra_op_threads: usize,
    pub max_image_pixels: u64,
    /// Memory one image may take to decode and resize (`--max-decode-bytes`).
    pub max_decode_bytes: u64,
    pub ort_dylib_path: Option<PathBuf>,
    pub batching: Batching,
}

/// The loaded model and its workers.
pub struct Engine {
    spec: Arc<ModelSpec>,
    /// `None` once [`Classifier::close`] ran.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    ort_version: String,
    workers: usize,
}

impl Engine {
    /// Load the model, resolve its spec, check it with a warm-up run, and start the workers.
    pub fn start(
        model_bytes: &[u8],
        overrides: &ModelOverrides,
        opts: &EngineOptions,
    ) -> Result<Engine, InferenceError> {
        let rt = runtime(opts.ort_dylib_path.as_deref())?;
        let workers = opts.workers.max(1);
        let mut sessions = Vec::with_capacity(workers);
        for _ in 0..workers {
            sessions.push(new_session(
                &rt.env,
                model_bytes,
                opts.intra_op_threads.max(1),
            )?);
        }
        let spec = Arc::new(read_spec(&sessions[0], overrides)?);
        // Warm-up: proves the input is accepted and the output has one value per label.
        for s in &mut sessions {
            warm_up(s, &spec)?;
        }
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::with_capacity(workers);
        for (i, session) in sessions.into_iter().enumerate() {
            let rx = Arc::clone(&rx);
            let state = WorkerState::new(session, Arc::clone(&spec));
            let limits = DecodeLimits {
                max_pixels: opts.max_image_pixels,
                max_bytes: opts.max_decode_bytes,
            };
            let batching = opts.batching;
            let handle = std::thread::Builder::new()
                .name(format!("celestial-worker-{i}"))
                .spawn(move || worker(state, rx, limits, batching))
                .map_err(|e| InferenceError::Run(format!("cannot start worker thread: {e}")))?;
            threads.push(handle);
        }
        Ok(Engine {
            spec,
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            ort_version: rt.version.clone(),
            workers,
        })
    }

    /// Decode, preprocess and classify `images` on a worker thread.
    async fn predict(&self, images: Vec<Input>) -> Result<JobOutput, InferenceError> {
        let (job, answer) = Job::new(images);
        {
            let jobs = self.jobs.lock().map_err(|_| InferenceError::WorkersGone)?;
            let tx = jobs.as_ref().ok_or(InferenceError::WorkersGone)?;
            tx.send(job).map_err(|_| InferenceError::WorkersGone)?;
        }
        answer.await.map_err(|_| InferenceError::WorkersGone)?
    }

    /// Stop taking jobs and wait for the workers to finish the queued ones and exit (blocking), so
    /// no inference is running when the process exits. Jobs whose client is gone are skipped.
    fn shut_down(&self) {
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        let threads = match self.threads.lock() {
            Ok(mut t) => std::mem::take(&mut *t),
            Err(_) => return,
        };
        for t in threads {
            let _ = t.join();
        }
    }

    /// The same work on the calling thread with a caller-owned worker state (for benchmarks and tests).
    pub fn predict_blocking(
        &self,
        images: &[Bytes],
        worker: &mut WorkerState,
    ) -> Result<JobOutput, InferenceError> {
        let inputs: Vec<Input> = images.iter().cloned().map(Input::Encoded).collect();
        worker.process(&inputs, DecodeLimits::UNLIMITED, Instant::now())
    }

    /// A fresh session of `model_bytes` (which must be the served model) with its own
    /// preprocessing state, like one worker's (for benchmarks and tests).
    pub fn new_worker(
        &self,
        model_bytes: &[u8],
        intra_op_threads: usize,
    ) -> Result<WorkerState, InferenceError> {
        let rt = runtime(None)?;
        Ok(WorkerState::new(
            new_session(&rt.env, model_bytes, intra_op_threads)?,
            Arc::clone(&self.spec),
        ))
    }
}

impl Classifier for Engine {
    fn spec(&self) -> &Arc<ModelSpec> {
        &self.spec
    }

    fn runtime_version(&self) -> &str {
        &self.ort_version
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn classify(&self, images: Vec<Input>) -> Classification<'_> {
        Box::pin(async move {
            self.predict(images).await.map_err(|e| match e {
                InferenceError::WorkersGone => ClassifyError::Closed,
                other => ClassifyError::Failed(other.to_string()),
            })
        })
    }

    fn close(&self) {
        self.shut_down();
    }
}
