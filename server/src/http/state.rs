//! The state every handler shares: the classifier, metrics, admission control, limits and the
//! documents rendered once at start-up.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use tokio::sync::Semaphore;

use crate::auth::ApiKeys;
use crate::classifier::{Classifier, SelfCheck};
use crate::docs::Documents;
use crate::drift::{DriftConfig, Monitor};
use crate::metrics::Metrics;
use crate::telemetry::Tracer;

/// Shared state of a running server.
pub struct AppState {
    pub classifier: Arc<dyn Classifier>,
    pub metrics: Metrics,
    /// The drift monitor (off for a model without a reference).
    pub drift: Monitor,
    /// Set once shutdown starts: `/readyz` answers 503 `draining` (predictions are still served).
    pub draining: AtomicBool,
    /// Prediction slots (`--max-concurrency`), taken once the body has arrived.
    pub limiter: Arc<Semaphore>,
    /// Places in the queue for a prediction slot (`--max-queue`), held while waiting for one.
    pub queue: Semaphore,
    /// Upload slots (`--max-uploads`), held while a prediction body arrives.
    pub uploads: Arc<Semaphore>,
    /// Body memory (`--max-body-memory`) in KiB, held from a body's first byte to its answer.
    pub body_memory: Arc<Semaphore>,
    pub limits: Limits,
    pub openapi_json: Bytes,
    pub schema_json: Bytes,
    pub model_json: Bytes,
    pub swagger: Arc<utoipa_swagger_ui::Config<'static>>,
    pub security: Security,
    /// Which requests are traced, and where their spans go (off unless an OTLP endpoint is set).
    pub tracer: Tracer,
}

/// API keys and CORS; the default is both off.
#[derive(Default, Clone)]
pub struct Security {
    /// The keys, when keys are on.
    pub api_keys: Option<Arc<ApiKeys>>,
    /// The routes that need a key (when keys are on).
    pub protected: Vec<&'static str>,
    /// The CORS rules, when other origins are allowed.
    pub cors: Option<tower_http::cors::CorsLayer>,
}

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch_images: usize,
    /// Predictions in progress at once; up to `max_queue` more wait up to `max_queue_wait`, then
    /// get 429.
    pub max_concurrency: usize,
    /// Predictions waiting for a slot at once; more get 429 at once (`usize::MAX`: no bound).
    pub max_queue: usize,
    /// How long a prediction waits for a slot before its 429.
    pub max_queue_wait: Duration,
    /// For the prediction routes, counted from the end of the body.
    pub request_timeout: Duration,
    pub retry_after_seconds: u64,
    /// Any prediction body may take this long to arrive...
    pub body_timeout: Duration,
    /// ... and after that must have arrived at this many bytes/s on average (0: no rate, only
    /// `body_timeout`); else 408.
    pub body_min_rate: u64,
    /// Prediction bodies being received at once; more get 429.
    pub max_uploads: usize,
    /// Memory all prediction bodies together may hold (each counted twice its size).
    pub max_body_memory: usize,
}

impl AppState {
    /// The state for `classifier` under `limits`, with its documents, fresh metrics and the drift
    /// monitor under `drift`.
    pub fn new(
        classifier: Arc<dyn Classifier>,
        limits: Limits,
        documents: Documents,
        drift: &DriftConfig,
    ) -> AppState {
        let spec = classifier.spec();
        let metrics = Metrics::new(
            &spec.labels,
            &spec.name,
            &spec.version,
            classifier.runtime_version(),
            spec.calibration.ood.is_some(),
            spec.calibration.temperature.is_some(),
        );
        let drift = Monitor::new(spec, drift, &metrics);
        if let Some(SelfCheck::Passed {
            images,
            max_logit_diff,
            seconds,
            ..
        }) = classifier.self_check()
        {
            metrics.self_checked(*images, *max_logit_diff, *seconds);
        }
        let swagger = Arc::new(
            utoipa_swagger_ui::Config::new(["./docs.json"])
                .try_it_out_enabled(true)
                .display_request_duration(true)
                .default_models_expand_depth(1)
                .persist_authorization(false),
        );
        AppState {
            drift,
            metrics,
            draining: AtomicBool::new(false),
            limiter: Arc::new(Semaphore::new(limits.max_concurrency)),
            queue: Semaphore::new(limits.max_queue.min(Semaphore::MAX_PERMITS)),
            uploads: Arc::new(Semaphore::new(limits.max_uploads)),
            body_memory: Arc::new(Semaphore::new(
                (limits.max_body_memory / 1024).min(Semaphore::MAX_PERMITS),
            )),
            limits,
            openapi_json: documents.openapi,
            schema_json: documents.schema,
            model_json: documents.model,
            swagger,
            classifier,
            security: Security::default(),
            tracer: Tracer::off(),
        }
    }

    /// The same state with API keys and CORS rules.
    pub fn with_security(mut self, security: Security) -> AppState {
        if let Some(keys) = &security.api_keys {
            self.metrics.set_api_keys(keys.len());
        }
        self.security = security;
        self
    }

    /// The same state, tracing with `tracer`.
    pub fn with_tracer(mut self, tracer: Tracer) -> AppState {
        self.tracer = tracer;
        self
    }

    /// Whether shutdown has started.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Start draining: `/readyz` answers 503 from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }
}

/// The state as handlers extract it.
pub type Shared = State<Arc<AppState>>;
