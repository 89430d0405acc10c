//! ONNX Runtime: library lookup, model loading, and a pool of worker threads that each own a
//! [`Session`] (whose `run` needs `&mut self`), so requests never serialize on one lock. Workers also
//! decode and preprocess, keeping all CPU-heavy work off the async runtime.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorElementType, TensorRef, ValueType};
use tokio::sync::oneshot;

use crate::classifier::{Classification, Classifier, ClassifyError, JobOutput, Prediction};
use crate::model::{
    ColourFeatures, ModelError, ModelOverrides, ModelSpec, OutputKind, TensorInfo, argmax,
};
use crate::preprocess::{self, DecodeLimits, PreprocessError};

/// ONNX Runtime version this build pins (scripts/onnxruntime.sh installs it).
pub const ORT_PINNED_VERSION: &str = "1.31.1";

/// Failures of the inference layer.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error(
        "ONNX Runtime library not found (looked for {looked}); run scripts/onnxruntime.sh to install it, or set ORT_DYLIB_PATH / --ort-dylib-path"
    )]
    LibraryMissing { looked: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    LibraryLoad { path: String, reason: String },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("inference failed: {0}")]
    Run(String),
    #[error("the inference workers are gone")]
    WorkersGone,
}

/// Find the ONNX Runtime shared library: explicit path (flag / ORT_DYLIB_PATH), then
/// `libonnxruntime.so*` next to the executable, then the scripts/onnxruntime.sh cache.
pub fn locate_library(explicit: Option<&Path>) -> Result<PathBuf, InferenceError> {
    if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(InferenceError::LibraryMissing {
                looked: format!("{} (from ORT_DYLIB_PATH/--ort-dylib-path)", p.display()),
            })
        };
    }
    let mut looked = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
                    && p.is_file()
            })
            .collect();
        found.sort();
        if let Some(p) = found.pop() {
            return Ok(p);
        }
        looked.push(format!("{}/libonnxruntime.so*", dir.display()));
    }
    let default = default_library_path();
    if default.is_file() {
        return Ok(default);
    }
    looked.push(default.display().to_string());
    Err(InferenceError::LibraryMissing {
        looked: looked.join(", "),
    })
}

/// `${CELESTIAL_CACHE:-~/.cache/celestial}/onnxruntime/<pinned>/libonnxruntime.so.<pinned>`.
pub fn default_library_path() -> PathBuf {
    let cache = match std::env::var_os("CELESTIAL_CACHE").filter(|v| !v.is_empty()) {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/celestial"),
    };
    cache
        .join("onnxruntime")
        .join(ORT_PINNED_VERSION)
        .join(format!("libonnxruntime.so.{ORT_PINNED_VERSION}"))
}

struct Runtime {
    env: Environment,
    version: String,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// Load ONNX Runtime once per process (a second server in the same process reuses it).
fn runtime(explicit: Option<&Path>) -> Result<&'static Runtime, InferenceError> {
    if let Some(r) = RUNTIME.get() {
        return r.as_ref().map_err(|e| InferenceError::LibraryLoad {
            path: "(earlier attempt)".into(),
            reason: e.clone(),
        });
    }
    let path = locate_library(explicit)?;
    let r = RUNTIME.get_or_init(|| {
        let builder = ort::init_from(&path).map_err(|e| e.to_string())?;
        let env = builder
            .with_name("celestial-server")
            .with_telemetry(false)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Runtime {
            env,
            version: detect_version(&path),
        })
    });
    r.as_ref().map_err(|e| InferenceError::LibraryLoad {
        path: path.display().to_string(),
        reason: e.clone(),
    })
}

fn detect_version(path: &Path) -> String {
    // The build info string reads like "ORT Build Info: git-branch=rel-1.31.1, ...".
    let info = ort::info();
    if let Some(v) = info
        .split("rel-")
        .nth(1)
        .map(|s| s.split([',', ' ']).next().unwrap_or("").to_string())
        .filter(|v| !v.is_empty())
    {
        return v;
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.strip_prefix("libonnxruntime.so.")
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| "unknown".into())
}

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

/// Adaptive batching (`--max-batch-size`, `--max-batch-delay`): how many queued images one ONNX
/// Runtime call may take, and how long a worker waits for more before running a partial batch.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    pub max_images: usize,
    pub max_delay: Duration,
}

impl Batching {
    /// Every job alone: one ONNX Runtime call per request.
    pub const OFF: Batching = Batching {
        max_images: 1,
        max_delay: Duration::ZERO,
    };
}

struct Job {
    images: Vec<Bytes>,
    reply: oneshot::Sender<Result<JobOutput, InferenceError>>,
    enqueued: Instant,
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
    async fn predict(&self, images: Vec<Bytes>) -> Result<JobOutput, InferenceError> {
        let (reply, rx) = oneshot::channel();
        {
            let jobs = self.jobs.lock().map_err(|_| InferenceError::WorkersGone)?;
            let tx = jobs.as_ref().ok_or(InferenceError::WorkersGone)?;
            tx.send(Job {
                images,
                reply,
                enqueued: Instant::now(),
            })
            .map_err(|_| InferenceError::WorkersGone)?;
        }
        rx.await.map_err(|_| InferenceError::WorkersGone)?
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
        worker.process(images, DecodeLimits::UNLIMITED, Instant::now())
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

    fn classify(&self, images: Vec<Bytes>) -> Classification<'_> {
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

/// What one worker owns: its ONNX Runtime session, its preprocessing state and its input buffer,
/// all reused from one job to the next.
pub struct WorkerState {
    session: Session,
    prep: preprocess::Preprocessor,
    input: Vec<f32>,
}

fn new_session(
    env: &Environment,
    model_bytes: &[u8],
    intra: usize,
) -> Result<Session, InferenceError> {
    let load = |e: String| InferenceError::Model(ModelError::Load(e));
    Session::builder(env)
        .map_err(|e| load(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| load(e.to_string()))?
        .with_intra_threads(intra)
        .map_err(|e| load(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| load(e.to_string()))?
        .commit_from_memory(model_bytes)
        .map_err(|e| load(first_line(&e.to_string())))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").trim().to_string()
}

fn tensor_info(name: &str, dtype: &ValueType) -> TensorInfo {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => TensorInfo {
            name: name.to_string(),
            shape: Some(shape.iter().copied().collect()),
            is_f32: *ty == TensorElementType::Float32,
        },
        _ => TensorInfo {
            name: name.to_string(),
            shape: None,
            is_f32: false,
        },
    }
}

fn read_spec(session: &Session, overrides: &ModelOverrides) -> Result<ModelSpec, InferenceError> {
    let meta = session
        .metadata()
        .map_err(|e| ModelError::Load(e.to_string()))?;
    let mut map = HashMap::new();
    for key in meta
        .custom_keys()
        .map_err(|e| ModelError::Load(e.to_string()))?
    {
        if let Some(v) = meta.custom(&key) {
            map.insert(key, v);
        }
    }
    if let Some(d) = meta.description().filter(|d| !d.trim().is_empty()) {
        map.entry("celestial.description".to_string()).or_insert(d);
    }
    let inputs: Vec<TensorInfo> = session
        .inputs()
        .iter()
        .map(|o| tensor_info(o.name(), o.dtype()))
        .collect();
    let outputs: Vec<TensorInfo> = session
        .outputs()
        .iter()
        .map(|o| tensor_info(o.name(), o.dtype()))
        .collect();
    Ok(ModelSpec::resolve(&map, overrides, &inputs, &outputs)?)
}

fn warm_up(session: &mut Session, spec: &ModelSpec) -> Result<(), InferenceError> {
    let input = vec![0f32; spec.tensor_len()];
    let rows = run(session, spec, 1, &input).map_err(|e| {
        ModelError::Invalid(format!("the model does not run on a blank input: {e}"))
    })?;
    if rows.len() != spec.labels.len() {
        return Err(ModelError::LabelCount {
            outputs: rows.len(),
            labels: spec.labels.len(),
        }
        .into());
    }
    Ok(())
}

/// Run `n` images (contiguous in `input`) and return the flat output (n x labels).
fn run(
    session: &mut Session,
    spec: &ModelSpec,
    n: usize,
    input: &[f32],
) -> Result<Vec<f32>, String> {
    let tensor =
        TensorRef::from_array_view((spec.input_shape(n), input)).map_err(|e| e.to_string())?;
    let outputs = session
        .run(ort::inputs![spec.input_name.as_str() => tensor])
        .map_err(|e| e.to_string())?;
    let value = outputs
        .get(&spec.output_name)
        .ok_or_else(|| format!("no output `{}`", spec.output_name))?;
    let (shape, data) = value
        .try_extract_tensor::<f32>()
        .map_err(|e| e.to_string())?;
    let expected = n * spec.labels.len();
    if data.len() != expected || shape.first().copied() != Some(n as i64) {
        return Err(format!(
            "output shape {shape} does not fit {n} images x {} labels",
            spec.labels.len()
        ));
    }
    Ok(data.to_vec())
}

/// The first `n` images of `input` in one call, or one call per image for a model without a
/// batch dimension.
fn run_all(
    session: &mut Session,
    spec: &ModelSpec,
    n: usize,
    input: &[f32],
) -> Result<Vec<f32>, String> {
    let len = spec.tensor_len();
    if spec.dynamic_batch || n == 1 {
        return run(session, spec, n, &input[..n * len]);
    }
    (0..n).try_fold(Vec::with_capacity(n * spec.labels.len()), |mut all, i| {
        all.extend(run(session, spec, 1, &input[i * len..(i + 1) * len])?);
        Ok(all)
    })
}

fn worker(
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
        let inputs: Vec<(&[Bytes], Instant)> = jobs
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

/// The next jobs to run in one ONNX Runtime call: the carried job or the first one queued (waiting
/// for it), then those queued behind it while their images fit `batching.max_images` (waiting up to
/// `batching.max_delay` for more). Jobs whose client is gone are dropped unrun. `None` once the
/// engine is gone and nothing is left.
fn next_batch(
    rx: &Mutex<mpsc::Receiver<Job>>,
    carried: &mut Option<Job>,
    batching: Batching,
) -> Option<Vec<Job>> {
    let Ok(queue) = rx.lock() else {
        return carried.take().map(|j| vec![j]);
    };
    let first = match carried.take() {
        Some(job) => job,
        None => loop {
            match queue.recv() {
                Ok(job) if job.reply.is_closed() => continue, // the client gave up: skip the work
                Ok(job) => break job,
                Err(_) => return None,
            }
        },
    };
    let mut images = first.images.len();
    let mut jobs = vec![first];
    let deadline = Instant::now() + batching.max_delay;
    while images < batching.max_images {
        let next = match queue.try_recv() {
            Ok(job) => job,
            Err(mpsc::TryRecvError::Disconnected) => break,
            Err(mpsc::TryRecvError::Empty) => {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match queue.recv_timeout(deadline - now) {
                    Ok(job) => job,
                    Err(_) => break,
                }
            }
        };
        if next.reply.is_closed() {
            continue;
        }
        if images + next.images.len() > batching.max_images {
            *carried = Some(next);
            break;
        }
        images += next.images.len();
        jobs.push(next);
    }
    Some(jobs)
}

impl WorkerState {
    fn new(session: Session, spec: Arc<ModelSpec>) -> WorkerState {
        WorkerState {
            session,
            prep: preprocess::Preprocessor::new(spec),
            input: Vec::new(),
        }
    }

    /// One job's images, as [`WorkerState::process_jobs`] runs them.
    fn process(
        &mut self,
        images: &[Bytes],
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
        jobs: &[(&[Bytes], Instant)],
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
        let mut results: Vec<Result<Prediction, PreprocessError>> = Vec::with_capacity(total);
        for bytes in jobs.iter().flat_map(|(images, _)| images.iter()) {
            let slot = ok_slots.len();
            // A decoder bug must not take the worker (and its session) down: treat a panic as an
            // undecodable image (and start the next image with fresh preprocessing state).
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                prep.run(bytes, limits, &mut input[slot * len..(slot + 1) * len])
            }))
            .unwrap_or_else(|_| {
                *prep = preprocess::Preprocessor::new(Arc::clone(&spec));
                Err(PreprocessError::Undecodable {
                    format: "uploaded",
                    reason: "the decoder failed on this input".into(),
                })
            });
            match outcome {
                Ok(()) => {
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
            for (slot, (row, &idx)) in flat
                .chunks_exact(spec.labels.len())
                .zip(&ok_slots)
                .enumerate()
            {
                let colours = spec.colours(&input[slot * len..(slot + 1) * len]);
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

/// Probabilities from one output row (softmax for logits) and the arg-max; the calibrated
/// confidence and `known` when the model's metadata defines them (`colours`: the picture's colour
/// statistics, [`ModelSpec::colours`], for a model with a colour check).
pub fn to_prediction(
    row: &[f32],
    spec: &ModelSpec,
    colours: Option<&ColourFeatures>,
) -> Prediction {
    let probabilities = match spec.output_kind {
        OutputKind::Probabilities => row.to_vec(),
        OutputKind::Logits => softmax(row),
    };
    Prediction {
        best: argmax(&probabilities),
        probabilities,
        confidence: spec.calibration.confidence(row),
        known: spec.calibration.known(row, colours),
    }
}

/// Numerically stable softmax.
pub fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let p = softmax(&[1.0, 3.0, 2.0, 1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let spec = |output_kind| ModelSpec {
            output_kind,
            labels: vec!["a".into(), "b".into(), "c".into()],
            ..crate::testing::spec()
        };
        let pred = to_prediction(&[1.0, 3.0, 2.0], &spec(OutputKind::Logits), None);
        assert_eq!((pred.best, pred.confidence, pred.known), (1, None, None));
        assert!(p[3] > 0.99 && p.iter().all(|v| v.is_finite()));
        let pred = to_prediction(&[0.2, 0.5, 0.3], &spec(OutputKind::Probabilities), None);
        assert_eq!((pred.best, pred.probabilities), (1, vec![0.2, 0.5, 0.3]));
    }

    /// A job of `n` images; the receiver keeps its reply open (drop it to close it).
    fn job(n: usize) -> (Job, oneshot::Receiver<Result<JobOutput, InferenceError>>) {
        let (reply, rx) = oneshot::channel();
        let images = vec![Bytes::from_static(b"x"); n];
        let job = Job {
            images,
            reply,
            enqueued: Instant::now(),
        };
        (job, rx)
    }

    fn sizes(jobs: &[Job]) -> Vec<usize> {
        jobs.iter().map(|j| j.images.len()).collect()
    }

    #[test]
    fn a_batch_takes_the_queued_jobs_that_fit_and_carries_the_next() {
        let (tx, rx) = mpsc::channel();
        let rx = Mutex::new(rx);
        let mut open = Vec::new();
        for n in [3, 4, 2, 5] {
            let (j, r) = job(n);
            tx.send(j).unwrap();
            open.push(r);
        }
        let (gone, r) = job(1);
        drop(r); // its client gave up: never run
        tx.send(gone).unwrap();
        let eight = Batching {
            max_images: 8,
            max_delay: Duration::ZERO,
        };
        let mut carried = None;
        let batch = next_batch(&rx, &mut carried, eight).unwrap();
        // 3 + 4 + 2 would be 9 > 8: the 2 waits for the next batch, it is not split
        assert_eq!(sizes(&batch), [3, 4]);
        let batch = next_batch(&rx, &mut carried, eight).unwrap();
        assert_eq!(sizes(&batch), [2, 5]);
        assert!(carried.is_none());
        // a job larger than the limit runs alone, whole
        let (big, _r) = job(20);
        tx.send(big).unwrap();
        assert_eq!(sizes(&next_batch(&rx, &mut carried, eight).unwrap()), [20]);
        // batching off: one job per call
        for n in [1, 1] {
            let (j, r) = job(n);
            tx.send(j).unwrap();
            open.push(r);
        }
        assert_eq!(
            sizes(&next_batch(&rx, &mut carried, Batching::OFF).unwrap()),
            [1]
        );
        assert!(
            carried.is_none(),
            "the next job stays queued for any worker"
        );
        assert_eq!(
            sizes(&next_batch(&rx, &mut carried, Batching::OFF).unwrap()),
            [1]
        );
    }

    #[test]
    fn a_batch_waits_for_more_only_up_to_its_delay() {
        let (tx, rx) = mpsc::channel();
        let rx = Mutex::new(rx);
        let (first, _r1) = job(1);
        tx.send(first).unwrap();
        let late = std::thread::spawn({
            let tx = tx.clone();
            move || {
                std::thread::sleep(Duration::from_millis(30));
                let (j, r) = job(1);
                tx.send(j).unwrap();
                r
            }
        });
        let wait = Batching {
            max_images: 2,
            max_delay: Duration::from_secs(5),
        };
        let started = Instant::now();
        let batch = next_batch(&rx, &mut None, wait).unwrap();
        assert_eq!(sizes(&batch), [1, 1], "the late job joined the batch");
        // full at 2 images: it did not wait out the 5 s
        assert!(started.elapsed() < Duration::from_secs(4));
        let _r2 = late.join().unwrap();
        // without a delay, only what is already queued
        let (j, _r3) = job(1);
        tx.send(j).unwrap();
        let no_wait = Batching {
            max_images: 8,
            max_delay: Duration::ZERO,
        };
        assert_eq!(sizes(&next_batch(&rx, &mut None, no_wait).unwrap()), [1]);
        drop(tx);
        assert!(next_batch(&rx, &mut None, no_wait).is_none(), "engine gone");
    }

    #[test]
    fn missing_explicit_library_says_what_to_run() {
        let e = locate_library(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("scripts/onnxruntime.sh")
                && msg.contains("/nonexistent/libonnxruntime.so"),
            "{msg}"
        );
    }

    #[test]
    fn default_library_path_follows_celestial_cache() {
        let p = default_library_path();
        assert!(
            p.ends_with("onnxruntime/1.31.1/libonnxruntime.so.1.31.1"),
            "{}",
            p.display()
        );
    }
}
