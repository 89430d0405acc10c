//! The listening sockets: [`bind`] them from the configuration, then give each its router (the
//! plain one per `--plain-http`) and, for HTTPS, its TLS acceptor whose certificate is reloaded
//! from its files while the server runs.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::error::ServerError;
use super::limits::CheckedConfig;
use super::state::keys_reload;
use crate::config::{Config, PlainHttp};
use crate::connection::tls::{self, CertResolver};
use crate::connection::{Listener, Tls};
use crate::http::{self, AppState};
use crate::metrics::TlsMetrics;
use crate::{grpc, reload, root_path};

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
pub async fn bind(config: &CheckedConfig) -> Result<Bound, ServerError> {
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

/// The listeners to serve from the bound sockets, with their routers (the plain one per
/// `--plain-http`) and TLS, and the tasks that reload the keys file and the TLS pair.
pub(super) fn listeners_of(
    config: &Config,
    state: &Arc<AppState>,
    bound: Bound,
) -> Result<(Vec<Listener>, Vec<JoinHandle<()>>), ServerError> {
    let app = http::router(Arc::clone(state)).layer(axum::middleware::from_fn_with_state(
        Arc::<str>::from(config.root_path.as_str()),
        root_path::middleware,
    ));
    // The Open Inference Protocol's gRPC calls on the same listeners (never under --root-path:
    // a gRPC method's path is fixed).
    let app = grpc::with_grpc(app, Arc::clone(state));
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
