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
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::auth::{self, ApiKeys, KeysError};
use crate::classifier::Classifier;
use crate::config::{Config, PlainHttp};
use crate::connection::tls::{self, CertResolver};
use crate::connection::{
    self, ConnectionLimits, Connections, Listener, Phase, Timeouts, Tls, fd_limit,
};
use crate::docs::{DocLimits, documents_secured};
use crate::http::{self, AppState, Limits, Security};
use crate::inference::{Batching, Engine, EngineOptions, InferenceError};
use crate::metrics::TlsMetrics;
use crate::model::{self, ModelError};
use crate::{reload, root_path};

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
    #[error("API keys: {0}")]
    Keys(#[from] KeysError),
    #[error("TLS: {0}")]
    Tls(String),
}

/// The bound listening sockets: plain HTTP on `--port`, HTTPS on `--tls-port` (a bare
/// `TcpListener` is plain HTTP only, what tests and embedders pass).
#[derive(Debug, Default)]
pub struct Bound {
    pub plain: Option<TcpListener>,
    pub tls: Option<TcpListener>,
}

impl From<TcpListener> for Bound {
    fn from(plain: TcpListener) -> Bound {
        Bound {
            plain: Some(plain),
            tls: None,
        }
    }
}

/// Bind the listeners `config` asks for: `--host`:`--port` unless `--plain-http off`, and
/// `--host`:`--tls-port` with TLS.
pub async fn bind(config: &Config) -> Result<Bound, ServerError> {
    check_listeners(config)?;
    let listen = |port: u16| async move {
        let addr = std::net::SocketAddr::new(config.host, port);
        TcpListener::bind(addr)
            .await
            .map_err(|e| ServerError::Config(format!("cannot listen on {addr}: {e}")))
    };
    let plain = match config.effective_plain_http() {
        PlainHttp::Off => None,
        _ => Some(listen(config.port).await?),
    };
    let tls = match config.tls_enabled() {
        true => Some(listen(config.tls_port).await?),
        false => None,
    };
    Ok(Bound { plain, tls })
}

/// Refuse listener settings that cannot serve.
fn check_listeners(config: &Config) -> Result<(), ServerError> {
    if config.effective_plain_http() == PlainHttp::Off && !config.tls_enabled() {
        return Err(ServerError::Config(
            "--plain-http off needs --tls-cert and --tls-key: the server would not listen at all"
                .into(),
        ));
    }
    if config.tls_enabled()
        && config.plain_http != Some(PlainHttp::Off)
        && config.port == config.tls_port
        && config.port != 0
    {
        return Err(ServerError::Config(format!(
            "--port and --tls-port are both {}: HTTP and HTTPS need separate ports",
            config.port
        )));
    }
    Ok(())
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
        batching: Batching {
            max_images: config.max_batch_size as usize,
            max_delay: config.max_batch_delay,
        },
    };
    Ok(Engine::start(&bytes, &config.model_overrides, &opts)?)
}

/// Load the model with ONNX Runtime, then [`serve`] it on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
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
    serve(config, Arc::new(engine), listener, shutdown).await
}

/// Check what can stop the start before the model is loaded (seconds on a small machine): the
/// limits, the listeners, the keys file, the CORS values and the TLS pair. [`serve`] reads them
/// again for use.
fn preflight(config: &Config) -> Result<(), ServerError> {
    check_limits(config)?;
    check_listeners(config)?;
    security(config)?;
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let files = reload::read_all(&[cert.clone(), key.clone()]).map_err(ServerError::Tls)?;
        tls::load_pair(&files[0], &files[1]).map_err(|e| ServerError::Tls(e.to_string()))?;
    }
    Ok(())
}

/// The shared state of a server with `config`'s limits, without API keys or CORS (what the fuzz
/// targets serve).
pub fn app_state(config: &Config, classifier: Arc<dyn Classifier>) -> AppState {
    secured_state(config, classifier, Security::default())
}

/// The API keys and CORS rules of `config`: the keys file read now (an unreadable or empty file
/// is an error), the CORS values checked.
pub fn security(config: &Config) -> Result<Security, ServerError> {
    let file_text = match &config.api_keys_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            ServerError::Config(format!(
                "cannot read the API keys file {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let api_keys = ApiKeys::new(&config.api_keys, file_text.as_deref())?.map(Arc::new);
    Ok(Security {
        api_keys,
        protected: auth::protected_routes(&config.api_key_scope),
        cors: cors_layer(config)?,
    })
}

/// The CORS rules of `--cors-allow-*`; `None` when no origin is allowed.
fn cors_layer(config: &Config) -> Result<Option<tower_http::cors::CorsLayer>, ServerError> {
    use axum::http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<&str> = config
        .cors_allow_origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let bad = |what: &str, v: &str| {
        ServerError::Config(format!("--cors-allow-{what}: {v:?} is not valid"))
    };
    let allow_origin = if origins == ["*"] {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| match *o {
                "*" => Err(ServerError::Config(
                    "--cors-allow-origins: `*` must be alone (any origin), not in a list".into(),
                )),
                o => HeaderValue::from_str(o.trim_end_matches('/')).map_err(|_| bad("origins", o)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    let methods = config
        .cors_allow_methods
        .iter()
        .map(|m| {
            Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                .map_err(|_| bad("methods", m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let headers = config
        .cors_allow_headers
        .iter()
        .map(|h| HeaderName::from_bytes(h.trim().as_bytes()).map_err(|_| bad("headers", h)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(methods)
            .allow_headers(headers)
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                axum::http::header::RETRY_AFTER,
                axum::http::header::WWW_AUTHENTICATE,
            ])
            .max_age(config.cors_max_age),
    ))
}

/// The shared state of a server with `config`'s limits and `security`.
pub fn secured_state(
    config: &Config,
    classifier: Arc<dyn Classifier>,
    security: Security,
) -> AppState {
    let doc_limits = DocLimits {
        max_body_bytes: config.max_body_bytes,
        max_image_pixels: config.max_image_pixels,
        max_batch: config.max_batch_images,
        body_timeout: config.body_timeout,
        body_min_rate: config.body_min_rate,
    };
    let protected: &[&str] = match security.api_keys {
        Some(_) => &security.protected,
        None => &[],
    };
    let documents = documents_secured(
        classifier.as_ref(),
        &config.service_name,
        &doc_limits,
        protected,
    );
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
    AppState::new(classifier, limits, documents).with_security(security)
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
    listeners: impl Into<Bound>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    check_limits(&config)?;
    check_listeners(&config)?;
    let state = Arc::new(secured_state(&config, classifier, security(&config)?));
    let (listeners, reloads) = listeners_of(&config, &state, listeners.into())?;
    let limits = connection_limits(&config, raise_fd_limit());
    info!(
        max_connections = limits.max_connections,
        "serving (HTTP/1.1 and HTTP/2)"
    );
    let connections = Connections::new(limits);
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
        tokio::join!(graceful, connections.serve(listeners, phase_rx));
        Ok::<(), std::io::Error>(())
    };
    let timeout = config.shutdown_timeout;
    let deadline = Box::pin(async move {
        signalled.notified().await;
        tokio::time::sleep(config.drain_delay + timeout).await;
    });
    let result = finish(serving, state, deadline, timeout).await;
    reloads.iter().for_each(JoinHandle::abort);
    result
}

/// The listeners to serve from the bound sockets, with their routers (the plain one per
/// `--plain-http`) and TLS, and the tasks that reload the keys file and the TLS pair.
fn listeners_of(
    config: &Config,
    state: &Arc<AppState>,
    bound: Bound,
) -> Result<(Vec<Listener>, Vec<JoinHandle<()>>), ServerError> {
    let app = http::router(Arc::clone(state)).layer(axum::middleware::from_fn_with_state(
        Arc::<str>::from(config.root_path.as_str()),
        root_path::middleware,
    ));
    let mut listeners = Vec::new();
    let mut reloads: Vec<JoinHandle<()>> = keys_reload(config, state).into_iter().collect();
    if let Some(tcp) = bound.plain {
        let plain = config.effective_plain_http();
        let router = match plain {
            PlainHttp::Probes => http::probes_router(Arc::clone(state)),
            _ => app.clone(),
        };
        info!(addr = %tcp.local_addr()?, serves = ?plain, "listening: plain HTTP (HTTP/1.1 and h2c)");
        listeners.push(Listener {
            tcp,
            router,
            tls: None,
        });
    }
    match (
        bound.tls,
        config.tls_cert.as_ref().zip(config.tls_key.as_ref()),
    ) {
        (Some(tcp), Some((cert, key))) => {
            let (tls, task) = tls_listener(config, cert, key, state)?;
            reloads.push(task);
            info!(addr = %tcp.local_addr()?, "listening: HTTPS (TLS 1.2/1.3, HTTP/2 and HTTP/1.1)");
            listeners.push(Listener {
                tcp,
                router: app,
                tls: Some(tls),
            });
        }
        (Some(_), None) => {
            return Err(ServerError::Config(
                "a TLS listener without --tls-cert and --tls-key".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ServerError::Config(
                "--tls-cert without a TLS listener".into(),
            ));
        }
        (None, None) => {}
    }
    Ok((listeners, reloads))
}

/// The task that re-reads `--api-keys-file` (keys on and a file given).
fn keys_reload(config: &Config, state: &Arc<AppState>) -> Option<JoinHandle<()>> {
    let keys = Arc::clone(state.security.api_keys.as_ref()?);
    let path = config.api_keys_file.clone()?;
    let initial = reload::read_all(std::slice::from_ref(&path)).ok()?;
    let metrics_state = Arc::clone(state);
    let counted = Arc::clone(state);
    Some(reload::spawn(
        "API keys",
        vec![path],
        config.reload_interval,
        initial,
        move |contents| {
            let text = std::str::from_utf8(&contents[0])
                .map_err(|_| "the file is not UTF-8".to_string())?;
            let n = keys.reload(text).map_err(|e| e.to_string())?;
            metrics_state.metrics.set_api_keys(keys.len());
            Ok(format!("{n} key(s) from the file"))
        },
        move |ok| counted.metrics.reloaded("api_keys", ok),
    ))
}

/// The TLS side of the HTTPS listener for `cert` and `key` (read now: a pair that does not load
/// is a start-up error) and the task that reloads them. Logs a warning when the certificate expires
/// within [`tls::EXPIRY_WARNING_DAYS`] (or has), at start and at every reload.
fn tls_listener(
    config: &Config,
    cert: &std::path::Path,
    key: &std::path::Path,
    state: &Arc<AppState>,
) -> Result<(Tls, JoinHandle<()>), ServerError> {
    let paths = vec![cert.to_path_buf(), key.to_path_buf()];
    let initial = reload::read_all(&paths).map_err(ServerError::Tls)?;
    let pair =
        tls::load_pair(&initial[0], &initial[1]).map_err(|e| ServerError::Tls(e.to_string()))?;
    let counts = Arc::new(TlsMetrics::default());
    let valid_until = note_expiry(&pair, &counts);
    info!(certificate = %cert.display(), "{valid_until}");
    state.metrics.set_tls(Arc::clone(&counts));
    let resolver = CertResolver::new(pair);
    let server_config =
        tls::server_config(Arc::clone(&resolver)).map_err(|e| ServerError::Tls(e.to_string()))?;
    let counted = Arc::clone(state);
    let reloaded = Arc::clone(&counts);
    let task = reload::spawn(
        "TLS certificate and key",
        paths,
        config.reload_interval,
        initial,
        move |contents| {
            let pair = tls::load_pair(&contents[0], &contents[1]).map_err(|e| e.to_string())?;
            let valid_until = note_expiry(&pair, &reloaded);
            resolver.replace(pair);
            Ok(format!(
                "new connections get the new certificate ({valid_until})"
            ))
        },
        move |ok| counted.metrics.reloaded("tls", ok),
    );
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    Ok((
        Tls {
            acceptor,
            metrics: counts,
        },
        task,
    ))
}

/// Records when `pair`'s certificate expires in `metrics` and warns when that is soon or past; says
/// until when it is valid.
fn note_expiry(pair: &rustls::sign::CertifiedKey, metrics: &TlsMetrics) -> String {
    match tls::not_after(pair) {
        Ok(t) => {
            metrics.set_not_after(t);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            if let Some(w) = tls::expiry_warning(t, now) {
                warn!("{w}");
            }
            format!("the certificate is valid until {}", tls::utc(t))
        }
        Err(e) => {
            warn!("cannot read the TLS certificate's expiry: {e}");
            "its expiry cannot be read".to_string()
        }
    }
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
    probe(address, timeout, false)
}

/// `celestial-server healthcheck [--tls]`: GET /readyz over HTTP/1.1, over TLS with `tls` (any
/// certificate accepted); true when it answers 200.
pub fn probe(address: &str, timeout: Duration, tls: bool) -> Result<bool, String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let addr = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("cannot resolve {address}"))?;
    let stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut stream: Box<dyn ReadWrite> = if tls {
        let config = tls::probe_client_config().map_err(|e| e.to_string())?;
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        Box::new(rustls::StreamOwned::new(conn, stream))
    } else {
        Box::new(stream)
    };
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

/// A blocking stream, plain or TLS.
trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}
