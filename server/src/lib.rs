//! celestial-server: a BentoML-compatible HTTP prediction server for the celestial-bodies
//! classifier, on axum + tokio with ONNX Runtime (via `ort`).
//!
//! The binary is a thin wrapper around [`run`]: parse a [`Config`], bind a listener, and call
//! `run(config, listener, shutdown_signal)`.

pub mod config;
pub mod docs;
pub mod http;
pub mod inference;
mod jpeg;
pub mod metrics;
pub mod model;
pub mod preprocess;
pub mod root_path;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tracing::{info, warn};

pub use config::{Cli, Command, Config};
pub use inference::{Engine, EngineOptions, InferenceError};
pub use model::{ModelError, ModelSpec};

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
pub fn model_bytes(config: &Config) -> Result<std::borrow::Cow<'static, [u8]>, ModelError> {
    match &config.model {
        Some(path) => std::fs::read(path)
            .map(std::borrow::Cow::Owned)
            .map_err(|source| ModelError::Read {
                path: path.display().to_string(),
                source,
            }),
        None => Ok(std::borrow::Cow::Borrowed(model::EMBEDDED_MODEL)),
    }
}

/// Load the model and start the inference workers (blocking; call from a blocking context).
pub fn load_engine(config: &Config) -> Result<Engine, ServerError> {
    if config.max_concurrency == 0 {
        return Err(ServerError::Config(
            "--max-concurrency must be at least 1".into(),
        ));
    }
    if config.max_batch_images == 0 {
        return Err(ServerError::Config(
            "--max-batch-images must be at least 1".into(),
        ));
    }
    let bytes = model_bytes(config)?;
    let opts = EngineOptions {
        workers: config.effective_workers(),
        intra_op_threads: config.intra_op_threads,
        max_image_pixels: config.max_image_pixels,
        ort_dylib_path: config.ort_dylib_path.clone(),
    };
    Ok(Engine::start(&bytes, &config.model_overrides, &opts)?)
}

/// Serve on `listener` until `shutdown` resolves, then drain: `/readyz` answers 503 at once, the
/// listener closes (after `--drain-delay`), in-flight requests get up to `--shutdown-timeout` to
/// finish, and `run` returns `Ok(())`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let started = std::time::Instant::now();
    let cfg = config.clone();
    let engine = tokio::task::spawn_blocking(move || load_engine(&cfg))
        .await
        .map_err(|e| ServerError::Config(format!("model loading panicked: {e}")))??;
    let spec = Arc::clone(engine.spec());
    let (openapi_json, schema_json, model_json) = http::documents(
        &engine,
        &config.service_name,
        config.max_body_bytes,
        config.max_image_pixels,
        config.max_batch_images,
    );
    let metrics = metrics::Metrics::new(
        &spec.labels,
        &spec.name,
        &spec.version,
        engine.ort_version(),
    );
    let swagger = Arc::new(
        utoipa_swagger_ui::Config::new(["./docs.json"])
            .try_it_out_enabled(true)
            .display_request_duration(true)
            .default_models_expand_depth(1),
    );
    info!(
        model = %spec.name,
        version = %spec.version,
        labels = spec.labels.len(),
        input = format!("{}x{} {:?} {:?}", spec.height, spec.width, spec.color_mode, spec.layout),
        workers = engine.workers(),
        onnxruntime = engine.ort_version(),
        load_ms = started.elapsed().as_millis() as u64,
        "model loaded"
    );
    let state = Arc::new(http::AppState {
        engine,
        metrics,
        draining: AtomicBool::new(false),
        ready: AtomicBool::new(true),
        limiter: Arc::new(Semaphore::new(config.max_concurrency)),
        limits: http::Limits {
            max_body_bytes: config.max_body_bytes,
            max_batch_images: config.max_batch_images,
            request_timeout: config.request_timeout,
            retry_after_seconds: config.retry_after_seconds,
            test_delay: config.test_delay,
        },
        openapi_json,
        schema_json,
        model_json,
        swagger,
    });
    let app = http::router(Arc::clone(&state)).layer(axum::middleware::from_fn_with_state(
        Arc::<str>::from(config.root_path.as_str()),
        root_path::middleware,
    ));
    let addr = listener.local_addr()?;
    info!(%addr, "listening");

    let signalled = Arc::new(Notify::new());
    let drain_state = Arc::clone(&state);
    let drain_signalled = Arc::clone(&signalled);
    let drain_delay = config.drain_delay;
    let graceful = async move {
        shutdown.await;
        drain_state.draining.store(true, Ordering::SeqCst);
        drain_signalled.notify_one();
        info!(
            drain_delay_ms = drain_delay.as_millis() as u64,
            "shutdown requested: draining"
        );
        if !drain_delay.is_zero() {
            tokio::time::sleep(drain_delay).await;
        }
        info!("listener closed; waiting for in-flight requests");
    };
    // TCP_NODELAY: an answer goes out as soon as it is written, never held back by Nagle's algorithm
    // waiting for the client's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            warn!("cannot set TCP_NODELAY: {e}");
        }
    });
    let serve = axum::serve(listener, app)
        .with_graceful_shutdown(graceful)
        .into_future();
    let shutdown_timeout = config.shutdown_timeout;
    let deadline = async move {
        signalled.notified().await;
        tokio::time::sleep(drain_delay + shutdown_timeout).await;
    };
    let deadline = Box::pin(deadline);
    let mut deadline = deadline;
    tokio::select! {
        r = serve => {
            r?;
            // Connections are closed; let the workers finish what is queued (clients that went away
            // are skipped) so no inference runs while the process exits.
            let closing = Arc::clone(&state);
            let join = tokio::task::spawn_blocking(move || closing.engine.close());
            tokio::select! {
                _ = join => info!("drained; bye"),
                _ = &mut deadline => warn!(timeout_ms = shutdown_timeout.as_millis() as u64, "shutdown timeout reached with inference still running; exiting"),
            }
        }
        _ = &mut deadline => {
            warn!(timeout_ms = shutdown_timeout.as_millis() as u64, "shutdown timeout reached with requests still in flight; exiting");
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
pub fn healthcheck(address: &str, timeout: std::time::Duration) -> Result<bool, String> {
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
