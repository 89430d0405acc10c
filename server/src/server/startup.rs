//! Start-up: load the model ([`load_engine`]), check what can stop the start before it loads,
//! check the model against its golden set (`crate::selfcheck`), then [`serve`] a classifier on the
//! bound listeners until the shutdown signal ([`run`]).

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::error::ServerError;
use super::limits::CheckedConfig;
use super::listeners::{Bound, listeners_of};
use super::shutdown::serve_until;
use super::state::{secured_state, security};
use crate::classifier::{Classifier, SelfCheck};
use crate::config::Config;
use crate::connection::tls;
use crate::connection::{self, ConnectionLimits, Connections, Timeouts, fd_limit};
use crate::engine::{Batching, Engine, EngineOptions};
use crate::http::AppState;
use crate::model::{self, ModelError};
use crate::reload;
use crate::selfcheck::{self, SelfChecked};
use crate::telemetry::{ExporterHandle, Tracer};

/// The model bytes the configuration asks for: `--model` or the embedded model.
pub fn model_bytes(config: &Config) -> Result<Cow<'static, [u8]>, ModelError> {
    match &config.model {
        Some(path) => std::fs::read(path)
            .map(Cow::Owned)
            .map_err(|source| ModelError::Read {
                path: path.display().to_string(),
                source,
            }),
        None => Ok(Cow::Borrowed(model::EMBEDDED_MODEL)),
    }
}

/// Load the model and start the inference workers (blocking; call from a blocking context).
pub fn load_engine(config: &Config) -> Result<Engine, ServerError> {
    let bytes = model_bytes(config)?;
    let opts = EngineOptions {
        workers: config.effective_workers(),
        intra_op_threads: config.intra_op_threads,
        max_image_pixels: config.max_image_pixels,
        max_decode_bytes: config.max_decode_bytes,
        ort_dylib_path: config.ort_dylib_path.clone(),
        batching: Batching {
            max_images: config.max_batch_size as usize,
            max_delay: config.max_batch_delay,
        },
    };
    Ok(Engine::start(&bytes, &config.model_overrides, &opts)?)
}

/// Load the model with ONNX Runtime, check it against its golden set (a disagreement is
/// [`ServerError::SelfCheck`]: the server never answers `/readyz` 200), then [`serve`] it on
/// `listener` until `shutdown` resolves.
pub async fn run(
    config: CheckedConfig,
    listener: impl Into<Bound>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let started = Instant::now();
    preflight(&config)?;
    let cfg = config.clone();
    let engine = tokio::task::spawn_blocking(move || load_engine(&cfg))
        .await
        .map_err(|e| ServerError::Config(format!("model loading panicked: {e}")))??;
    let spec = engine.spec();
    info!(
        model = %spec.name,
        version = %spec.version,
        labels = spec.labels.len(),
        input = format!("{}x{} {:?} {:?}", spec.height, spec.width, spec.color_mode, spec.layout),
        workers = engine.workers(),
        onnxruntime = engine.runtime_version(),
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    let golden = spec.golden.clone();
    let engine: Arc<dyn Classifier> = Arc::new(engine);
    let outcome = selfcheck::check(engine.as_ref(), golden.as_deref()).await?;
    match &outcome {
        SelfCheck::Passed {
            images,
            skipped,
            max_logit_diff,
            seconds,
        } => info!(
            images,
            skipped,
            max_logit_diff,
            ms = seconds * 1000.0,
            "model self-check passed (celestial.golden)"
        ),
        SelfCheck::Absent => warn!(
            "the model has no golden set (celestial.golden): served without a start-up self-check"
        ),
    }
    serve(
        config,
        Arc::new(SelfChecked::new(engine, outcome)),
        listener,
        shutdown,
    )
    .await
}

/// Check the files that can stop the start before the model is loaded (seconds on a small
/// machine): the keys file, the CORS values and the TLS pair. [`serve`] reads them again for use.
fn preflight(config: &Config) -> Result<(), ServerError> {
    security(config)?;
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let files = reload::read_all(&[cert.clone(), key.clone()]).map_err(ServerError::Tls)?;
        tls::load_pair(&files[0], &files[1]).map_err(|e| ServerError::Tls(e.to_string()))?;
    }
    Ok(())
}

/// Serve `classifier` on `listeners` until `shutdown` resolves, then drain: `/readyz` answers 503
/// at once while predictions are still served with `Connection: close`, the listener closes after
/// `--drain-delay`, in-flight requests get up to `--shutdown-timeout` to finish, the classifier is
/// closed, and `serve` returns `Ok(())`.
pub async fn serve(
    config: CheckedConfig,
    classifier: Arc<dyn Classifier>,
    listeners: impl Into<Bound>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let state = secured_state(&config, classifier, security(&config)?);
    let (state, exporter) = traced(&config, state)?;
    let state = Arc::new(state);
    let (listeners, reloads) = listeners_of(&config, &state, listeners.into())?;
    let limits = connection_limits(&config, raise_fd_limit());
    info!(
        max_connections = limits.max_connections,
        "serving (HTTP/1.1 and HTTP/2)"
    );
    let connections = Connections::new(limits);
    let result = serve_until(
        shutdown,
        state,
        connections,
        listeners,
        config.drain_delay,
        config.shutdown_timeout,
    )
    .await;
    reloads.iter().for_each(JoinHandle::abort);
    if let Some(exporter) = exporter {
        // The last requests' spans, within the export timeout.
        exporter.shutdown(config.traces.otlp_timeout).await;
    }
    result
}

/// `state` with its tracer and the tracer's running exporter, when an OTLP endpoint is set.
fn traced(
    config: &Config,
    state: AppState,
) -> Result<(AppState, Option<ExporterHandle>), ServerError> {
    let Some(settings) = config
        .traces
        .settings()
        .map_err(|e| ServerError::Config(e.to_string()))?
    else {
        return Ok((state, None));
    };
    let spec = Arc::clone(state.classifier.spec());
    let (tracer, exporter) = Tracer::start(&settings, (&spec.name, &spec.version), &state.metrics)
        .map_err(|e| ServerError::Config(e.to_string()))?;
    info!(
        url = %settings.url,
        sampler = ?settings.sampler,
        ratio = settings.ratio,
        "tracing: spans of sampled requests go to the OTLP collector"
    );
    Ok((state.with_tracer(tracer), Some(exporter.spawn())))
}

/// The connection layer's limits from `config`, the connection limit fitted to `fd_soft_limit`.
fn connection_limits(config: &Config, fd_soft_limit: u64) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: connection::fitting_max_connections(config.max_connections, fd_soft_limit),
        timeouts: Timeouts {
            header_read: config.header_read_timeout,
            idle: config.idle_timeout,
        },
        max_header_bytes: config.max_header_bytes,
        max_headers: config.max_headers,
        max_body_bytes: config.max_body_bytes,
        retry_after_seconds: config.retry_after_seconds,
    }
}

/// Raise the open-file limit to its hard limit (logged); the soft limit in force.
fn raise_fd_limit() -> u64 {
    match fd_limit::raise() {
        Ok(l) => {
            info!(
                soft_before = l.soft_before,
                soft = l.soft,
                hard = l.hard,
                "open-file limit"
            );
            l.soft
        }
        Err(e) => {
            warn!("cannot read the open-file limit: {e}");
            u64::MAX
        }
    }
}
