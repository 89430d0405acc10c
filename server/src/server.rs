//! Start-up and shutdown: load the model ([`load_engine`]), serve a classifier on a listener until
//! a shutdown signal ([`run`], [`serve`]), then drain. Also the `healthcheck` subcommand's probe.
//!
//! The top of the crate: imports the configuration, the HTTP layer, the documents and the engine.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::classifier::Classifier;
use crate::config::Config;
use crate::connection::{self, ConnectionLimits, Connections, Phase, Timeouts, fd_limit};
use crate::docs::{DocLimits, documents};
use crate::http::{self, AppState, Limits};
use crate::inference::{Engine, EngineOptions, InferenceError};
use crate::model::{self, ModelError};
use crate::root_path;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
}

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

/// Refuse limits no request could pass.
fn check_limits(config: &Config) -> Result<(), ServerError> {
    if config.max_concurrency == 0 {
        return Err(ServerError::Config(
            "--max-concurrency must be at least 1".into(),
        ));
    }
    if config.max_uploads == 0 {
        return Err(ServerError::Config(
            "--max-uploads must be at least 1".into(),
        ));
    }
    if config.max_body_memory < 2 * config.max_body_bytes {
        return Err(ServerError::Config(format!(
            "--max-body-memory ({}) must be at least 2 x --max-body-bytes ({}): each body counts twice its size",
            config.max_body_memory, config.max_body_bytes
        )));
    }
    if config.max_connections == 0 {
        return Err(ServerError::Config(
            "--max-connections must be at least 1".into(),
        ));
    }
    if config.max_header_bytes < connection::MIN_HEADER_BYTES {
        return Err(ServerError::Config(format!(
            "--max-header-bytes must be at least {}",
            connection::MIN_HEADER_BYTES
        )));
    }
    if config.max_headers == 0 {
        return Err(ServerError::Config(
            "--max-headers must be at least 1".into(),
        ));
    }
    if config.max_batch_images == 0 {
        return Err(ServerError::Config(
            "--max-batch-images must be at least 1".into(),
        ));
    }
    Ok(())
}

/// Load the model and start the inference workers (blocking; call from a blocking context).
pub fn load_engine(config: &Config) -> Result<Engine, ServerError> {
    check_limits(config)?;
    let bytes = model_bytes(config)?;
    let opts = EngineOptions {
        workers: config.effective_workers(),
        intra_op_threads: config.intra_op_threads,
        max_image_pixels: config.max_image_pixels,
        max_decode_bytes: config.max_decode_bytes,
        ort_dylib_path: config.ort_dylib_path.clone(),
    };
    Ok(Engine::start(&bytes, &config.model_overrides, &opts)?)
}

/// Load the model with ONNX Runtime, then [`serve`] it on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let started = Instant::now();
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
    serve(config, Arc::new(engine), listener, shutdown).await
}

/// The shared state of a server with `config`'s limits (also what the fuzz targets serve).
pub fn app_state(config: &Config, classifier: Arc<dyn Classifier>) -> AppState {
    let doc_limits = DocLimits {
        max_body_bytes: config.max_body_bytes,
        max_image_pixels: config.max_image_pixels,
        max_batch: config.max_batch_images,
        body_timeout: config.body_timeout,
        body_min_rate: config.body_min_rate,
    };
    let documents = documents(classifier.as_ref(), &config.service_name, &doc_limits);
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        max_batch_images: config.max_batch_images,
        max_concurrency: config.max_concurrency,
        max_queue_wait: config.max_queue_wait,
        request_timeout: config.request_timeout,
        retry_after_seconds: config.retry_after_seconds,
        body_timeout: config.body_timeout,
        body_min_rate: config.body_min_rate,
        max_uploads: config.max_uploads,
        max_body_memory: config.max_body_memory,
    };
    AppState::new(classifier, limits, documents)
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

/// Serve `classifier` on `listener` until `shutdown` resolves, then drain: `/readyz` answers 503
/// at once while predictions are still served with `Connection: close`, the listener closes after
/// `--drain-delay`, in-flight requests get up to `--shutdown-timeout` to finish, the classifier is
/// closed, and `serve` returns `Ok(())`.
pub async fn serve(
    config: Config,
    classifier: Arc<dyn Classifier>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    check_limits(&config)?;
    let state = Arc::new(app_state(&config, classifier));
    let app = http::router(Arc::clone(&state)).layer(axum::middleware::from_fn_with_state(
        Arc::<str>::from(config.root_path.as_str()),
        root_path::middleware,
    ));
    let limits = connection_limits(&config, raise_fd_limit());
    info!(
        addr = %listener.local_addr()?,
        max_connections = limits.max_connections,
        "listening (HTTP/1.1 and h2c)"
    );
    let connections = Connections::new(app, limits);
    let (phase, phase_rx) = watch::channel(Phase::Serving);
    let signalled = Arc::new(Notify::new());
    let graceful = drain(
        shutdown,
        Arc::clone(&state),
        Arc::clone(&connections),
        phase,
        Arc::clone(&signalled),
        config.drain_delay,
    );
    let serving = async move {
        tokio::join!(graceful, connections.serve(listener, phase_rx));
        Ok::<(), std::io::Error>(())
    };
    let timeout = config.shutdown_timeout;
    let deadline = Box::pin(async move {
        signalled.notified().await;
        tokio::time::sleep(config.drain_delay + timeout).await;
    });
    finish(serving, state, deadline, timeout).await
}

/// On `shutdown`: start draining (`/readyz` 503, answers close their connections), wait
/// `drain_delay`, then close the listener.
async fn drain(
    shutdown: impl Future<Output = ()>,
    state: Arc<AppState>,
    connections: Arc<Connections>,
    phase: watch::Sender<Phase>,
    signalled: Arc<Notify>,
    drain_delay: Duration,
) {
    shutdown.await;
    state.start_draining();
    connections.start_draining();
    phase.send_replace(Phase::Draining);
    signalled.notify_one();
    info!(
        drain_delay_ms = drain_delay.as_millis() as u64,
        "shutdown requested: draining"
    );
    if !drain_delay.is_zero() {
        tokio::time::sleep(drain_delay).await;
    }
    phase.send_replace(Phase::Closing);
}

/// Wait for the server to stop (or the deadline), then for the classifier's queued work.
async fn finish(
    serving: impl Future<Output = std::io::Result<()>>,
    state: Arc<AppState>,
    mut deadline: std::pin::Pin<Box<impl Future<Output = ()>>>,
    timeout: Duration,
) -> Result<(), ServerError> {
    let timeout_ms = timeout.as_millis() as u64;
    tokio::select! {
        r = serving => {
            r?;
            // Connections are closed; let the workers finish what is queued (clients that went away
            // are skipped) so no inference runs while the process exits.
            let join = tokio::task::spawn_blocking(move || state.classifier.close());
            tokio::select! {
                _ = join => info!("drained; bye"),
                _ = &mut deadline => warn!(timeout_ms, "shutdown timeout reached with inference still running; exiting"),
            }
        }
        _ = &mut deadline => {
            warn!(timeout_ms, "shutdown timeout reached with requests still in flight; exiting");
        }
    }
    Ok(())
}

/// A future that resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this
/// function is called (not when the future is first polled), so a signal that arrives right after
/// start-up is never lost to the default action.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => info!("SIGTERM received"),
            _ = int.recv() => info!("SIGINT received"),
        }
    })
}

/// `celestial-server healthcheck`: GET /readyz over plain HTTP/1.1; true when it answers 200.
pub fn healthcheck(address: &str, timeout: Duration) -> Result<bool, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let addr = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {address}"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(stream, "GET /readyz HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nUser-Agent: celestial-healthcheck\r\n\r\n").map_err(|e| format!("cannot send request: {e}"))?;
    let mut buf = [0u8; 64];
    let mut got = Vec::new();
    while got.len() < 12 {
        let n = stream
            .read(&mut buf)
            .map_err(|e| format!("cannot read response: {e}"))?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let status_line = String::from_utf8_lossy(&got);
    Ok(status_line.starts_with("HTTP/1.1 200") || status_line.starts_with("HTTP/1.0 200"))
}
