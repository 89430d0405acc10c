//! The connection layer: the accept loop, HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one
//! port (hyper's automatic protocol detection), and the hygiene a public server needs before any
//! handler runs:
//!
//! - a header-read timeout (a new connection's first request head, and every head once its first
//!   byte arrived) and an idle timeout between requests (`progress.rs`), both ending the
//!   connection gracefully (HTTP/2: GOAWAY);
//! - at most `max_connections` open connections; above it a small reserve of connections
//!   ([`OVERFLOW_RESERVE`]) is answered with a tiny 503 `too_many_connections` and closed, except
//!   `GET /livez`, which the router still answers (a liveness probe never fails because of a
//!   flood); beyond the reserve, connections are closed at once;
//! - JSON answers instead of hyper's empty 400/414/431 for requests that do not parse (`io.rs`);
//! - early answers that keep the connection alive, and `Connection: close` while draining
//!   (`service.rs`);
//! - TLS on a listener that has a [`tls`] configuration: the handshake counts in the header-read
//!   timeout (a client that stalls it is cut like a silent one), certificates are chosen per
//!   handshake, so a rotation only affects new connections;
//! - the drain ([`Phase`]): while `Draining`, HTTP/1 answers close their connection and HTTP/2
//!   connections get GOAWAY after their first request (clients reconnect, through the load
//!   balancer, elsewhere); at `Closing` the listener closes and every connection ends after its
//!   requests in flight.
//!
//! Imports [`crate::errors`] (the JSON answers) and [`crate::routes`] (`/livez`); the router it
//! serves comes from [`crate::server`].

pub mod fd_limit;
mod io;
mod progress;
mod service;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, Request};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::errors::ApiError;
use crate::metrics::{Handshake, TlsMetrics};
use crate::routes;
pub use io::{DISCARD_BYTES, DISCARD_TIME};
use io::{ProtocolErrors, Watched};
use progress::Progress;
pub use progress::Timeouts;
use service::{ConnService, ServerView};

/// Connections above `max_connections` that still get an answer (a 503, or `/livez`).
pub const OVERFLOW_RESERVE: usize = 64;
/// File descriptors kept for everything but connections (model, libraries, logs, the listener,
/// lingering closes) when the connection limit is checked against the open-file limit.
pub const FD_BASELINE: u64 = 64;
/// hyper's own HTTP/1 header count limit (headers are parsed on the stack up to this number).
pub const HYPER_MAX_HEADERS: usize = 100;
/// hyper's smallest HTTP/1 read buffer, so the smallest request-head limit.
pub const MIN_HEADER_BYTES: usize = 8192;
/// How long an over-limit connection may take to send its request.
const OVERFLOW_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection ended by a timeout or the drain may take to close once no request is in
/// flight (an HTTP/2 client that does not acknowledge GOAWAY is cut then).
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// The shortest interval between two warnings about refused connections or accept errors.
const WARN_INTERVAL_MS: u64 = 5_000;

/// The connection layer's limits (from the configuration).
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    pub timeouts: Timeouts,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// An unread request body is read away up to this size (`--max-body-bytes`) ...
    pub max_body_bytes: usize,
    pub retry_after_seconds: u64,
}

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// Shutdown requested: answers close their connections; the listener still accepts.
    Draining,
    /// The listener is closed; connections end after their requests in flight.
    Closing,
}

/// A listening socket and what its connections are served: a router, over TLS or not.
pub struct Listener {
    pub tcp: TcpListener,
    pub router: Router,
    /// `Some`: HTTPS (the handshake first, then HTTP/2 or HTTP/1.1 by ALPN or preface).
    pub tls: Option<Tls>,
}

/// The TLS side of an HTTPS listener: its acceptor and where its handshakes are counted.
#[derive(Clone)]
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub metrics: Arc<TlsMetrics>,
}

/// What a listener's connections are served.
struct Endpoint {
    router: Router,
    tls: Option<Tls>,
}

/// The open connections and what they share.
pub struct Connections {
    limits: ConnectionLimits,
    builder: auto::Builder<TokioExecutor>,
    overflow_builder: hyper::server::conn::http1::Builder,
    errors: Arc<ProtocolErrors>,
    draining: AtomicBool,
    /// Connections open, regular and over the limit.
    open: AtomicUsize,
    overflow: AtomicUsize,
    closed_all: Notify,
    /// Time of the last rate-limited warning, in ms since `started`.
    last_warning_ms: AtomicU64,
    started: Instant,
}

impl ServerView for Connections {
    fn closing_connections(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    fn unread_budget(&self) -> (u64, Duration) {
        (
            self.limits.max_body_bytes as u64,
            self.limits.timeouts.header_read,
        )
    }
}

impl Connections {
    /// Connections under `limits` (counted together over every listener).
    pub fn new(limits: ConnectionLimits) -> Arc<Connections> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        let header_bytes = limits.max_header_bytes.max(MIN_HEADER_BYTES);
        {
            let mut h1 = builder.http1();
            // Our own header-read timeout (progress.rs) replaces hyper's, which would also cut
            // idle keep-alive connections.
            h1.header_read_timeout(None::<Duration>)
                .keep_alive(true)
                .writev(false)
                .max_buf_size(header_bytes);
            if limits.max_headers != HYPER_MAX_HEADERS {
                h1.max_headers(limits.max_headers);
            }
        }
        builder
            .http2()
            .max_header_list_size(u32::try_from(header_bytes).unwrap_or(u32::MAX));
        let mut overflow_builder = hyper::server::conn::http1::Builder::new();
        overflow_builder
            .keep_alive(false)
            .header_read_timeout(None::<Duration>)
            .max_buf_size(MIN_HEADER_BYTES);
        Arc::new(Connections {
            errors: Arc::new(ProtocolErrors::new(header_bytes, limits.max_headers)),
            limits,
            builder,
            overflow_builder,
            draining: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            overflow: AtomicUsize::new(0),
            closed_all: Notify::new(),
            last_warning_ms: AtomicU64::new(0),
            started: Instant::now(),
        })
    }

    /// Accept on every listener until `phase` is [`Phase::Closing`] (or its sender is gone),
    /// close the listeners, then wait for every connection to end.
    pub async fn serve(self: Arc<Self>, listeners: Vec<Listener>, phase: watch::Receiver<Phase>) {
        let loops = listeners
            .into_iter()
            .map(|l| Arc::clone(&self).accept_loop(l, phase.clone()));
        futures_util::future::join_all(loops).await;
        info!(
            open_connections = self.open.load(Ordering::SeqCst),
            "listener closed; waiting for in-flight requests"
        );
        loop {
            let closed = self.closed_all.notified();
            if self.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            closed.await;
        }
    }

    /// Accept on one listener until `phase` is [`Phase::Closing`]; then drop (close) it.
    async fn accept_loop(self: Arc<Self>, listener: Listener, phase: watch::Receiver<Phase>) {
        let endpoint = Arc::new(Endpoint {
            router: listener.router,
            tls: listener.tls,
        });
        let closing = closing(phase.clone());
        tokio::pin!(closing);
        loop {
            tokio::select! {
                biased;
                _ = &mut closing => break,
                accepted = listener.tcp.accept() => match accepted {
                    Ok((stream, _)) => self.admit(stream, &endpoint, phase.clone()),
                    Err(e) => self.accept_failed(e).await,
                },
            }
        }
    }

    /// Start draining: answers close their connections from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Serve a new connection, or refuse it when over the limit.
    fn admit(
        self: &Arc<Self>,
        stream: TcpStream,
        endpoint: &Arc<Endpoint>,
        phase: watch::Receiver<Phase>,
    ) {
        // TCP_NODELAY: an answer goes out as soon as it is written, never held back by Nagle's
        // algorithm waiting for the client's delayed ACK.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("cannot set TCP_NODELAY: {e}");
        }
        let slot = Slot::take(Arc::clone(self));
        if slot.regular {
            tokio::spawn(Arc::clone(self).regular(stream, Arc::clone(endpoint), phase, slot));
        } else if self.overflow.fetch_add(1, Ordering::SeqCst) < OVERFLOW_RESERVE {
            self.warn_rarely(
                "over --max-connections: new connections get 503 too_many_connections",
            );
            tokio::spawn(Arc::clone(self).over_limit(stream, Arc::clone(endpoint), slot));
        } else {
            self.overflow.fetch_sub(1, Ordering::SeqCst);
            self.warn_rarely("connection refused: over --max-connections and its reserve");
            drop((stream, slot));
        }
    }

    /// An accept error: out of file descriptors or memory (wait a little, the condition may pass),
    /// or a connection that failed before it was accepted (go on).
    async fn accept_failed(&self, e: std::io::Error) {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                self.warn_rarely(&format!("cannot accept connections: {e}"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            _ => debug!("accept failed: {e}"),
        }
    }

    fn warn_rarely(&self, message: &str) {
        let now = self.started.elapsed().as_millis() as u64 + WARN_INTERVAL_MS;
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        if now >= last + WARN_INTERVAL_MS
            && self
                .last_warning_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(
                open_connections = self.open.load(Ordering::Relaxed),
                max_connections = self.limits.max_connections,
                "{message}"
            );
        }
    }

    /// A connection under the limit: its TLS handshake first on an HTTPS listener (within the
    /// header-read timeout, which counts from the connection's opening, and given up when the
    /// server closes), then served.
    async fn regular(
        self: Arc<Self>,
        stream: TcpStream,
        endpoint: Arc<Endpoint>,
        phase: watch::Receiver<Phase>,
        _slot: Slot,
    ) {
        let progress = Arc::new(Progress::new());
        let router = endpoint.router.clone();
        let Some(tls) = &endpoint.tls else {
            return self.serve_io(stream, router, progress, phase).await;
        };
        let handshake = tokio::time::timeout(
            self.limits.timeouts.header_read,
            tls.acceptor.accept(stream),
        );
        tokio::select! {
            done = handshake => match done {
                Ok(Ok(stream)) => {
                    tls.metrics.count(Handshake::Ok);
                    self.serve_io(stream, router, progress, phase).await;
                }
                Ok(Err(e)) => {
                    tls.metrics.count(Handshake::Failed);
                    debug!("TLS handshake failed: {e}");
                }
                Err(_) => {
                    tls.metrics.count(Handshake::TimedOut);
                    debug!(reason = "header_read_timeout", "TLS handshake timed out");
                }
            },
            _ = closing(phase.clone()) => debug!(reason = "closing", "TLS handshake abandoned"),
        }
    }

    /// Serve a connection's (plain or decrypted) stream until it ends, times out or the server
    /// closes it.
    async fn serve_io<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        self: Arc<Self>,
        stream: S,
        router: Router,
        progress: Arc<Progress>,
        mut phase: watch::Receiver<Phase>,
    ) {
        let io = Watched::new(stream, Arc::clone(&progress), Arc::clone(&self.errors));
        let service = ConnService::new(router, Arc::clone(&progress), Arc::clone(&self));
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut ending: Option<&'static str> = None;
        let mut cut_at: Option<Instant> = None;
        let mut phase_open = true;
        loop {
            if ending.is_none()
                && let Some(why) = end_for_phase(*phase.borrow_and_update(), &progress)
            {
                conn.as_mut().graceful_shutdown();
                ending = Some(why);
            }
            let deadline = match ending {
                // Ending: wait for the requests in flight, then give the close a moment.
                Some(_) if progress.in_flight() == 0 => {
                    Some(*cut_at.get_or_insert_with(|| Instant::now() + CLOSE_GRACE))
                }
                Some(_) => None,
                None => progress.deadline(&self.limits.timeouts).map(|(at, _)| at),
            };
            let sleep_until =
                deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        debug!("connection ended: {e}");
                    }
                    return;
                }
                _ = progress.changed.notified() => {}
                changed = phase.changed(), if phase_open => phase_open = changed.is_ok(),
                _ = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                    if let Some(why) = ending {
                        debug!(reason = why, "connection cut after its grace period");
                        return;
                    }
                    if let Some((at, expiry)) = progress.deadline(&self.limits.timeouts)
                        && at <= Instant::now()
                    {
                        debug!(reason = expiry.as_str(), "connection closed");
                        conn.as_mut().graceful_shutdown();
                        ending = Some(expiry.as_str());
                    }
                }
            }
        }
    }

    /// A connection over the limit: (its TLS handshake, then) one HTTP/1 request within
    /// [`OVERFLOW_TIMEOUT`], answered by the router when it is `GET /livez`, else with 503
    /// `too_many_connections`; then closed.
    async fn over_limit(self: Arc<Self>, stream: TcpStream, endpoint: Arc<Endpoint>, _slot: Slot) {
        let router = endpoint.router.clone();
        let answer = async {
            match &endpoint.tls {
                None => self.answer_over_limit(stream, router).await,
                Some(tls) => match tls.acceptor.accept(stream).await {
                    Ok(stream) => {
                        tls.metrics.count(Handshake::Ok);
                        self.answer_over_limit(stream, router).await;
                    }
                    Err(_) => tls.metrics.count(Handshake::Failed),
                },
            }
        };
        let _ = tokio::time::timeout(OVERFLOW_TIMEOUT, answer).await;
        self.overflow.fetch_sub(1, Ordering::SeqCst);
    }

    async fn answer_over_limit<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        &self,
        stream: S,
        router: Router,
    ) {
        let io = Watched::lingering(stream, Arc::new(Progress::new()));
        let retry_after = self.limits.retry_after_seconds;
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let router = router.clone();
            async move {
                if req.method() == Method::GET && req.uri().path() == routes::LIVEZ {
                    router.oneshot(req.map(axum::body::Body::new)).await
                } else {
                    Ok(ApiError::TooManyConnections { retry_after }.into_response())
                }
            }
        });
        let _ = self
            .overflow_builder
            .serve_connection(TokioIo::new(io), service)
            .await;
    }
}

/// Resolves at [`Phase::Closing`] (or when the phase's sender is gone).
async fn closing(mut phase: watch::Receiver<Phase>) {
    loop {
        let now = *phase.borrow_and_update();
        if now == Phase::Closing || phase.changed().await.is_err() {
            return;
        }
    }
}

/// Whether the phase ends this connection now: at `Closing` every connection; while `Draining`
/// an HTTP/2 connection that has served a request (GOAWAY is HTTP/2's `Connection: close`).
fn end_for_phase(phase: Phase, progress: &Progress) -> Option<&'static str> {
    match phase {
        Phase::Closing => Some("closing"),
        Phase::Draining if progress.is_h2() && progress.started() > 0 => Some("draining"),
        _ => None,
    }
}

/// One open connection, counted until dropped.
struct Slot {
    connections: Arc<Connections>,
    regular: bool,
}

impl Slot {
    fn take(connections: Arc<Connections>) -> Slot {
        let open = connections.open.fetch_add(1, Ordering::SeqCst);
        let regular = open.saturating_sub(connections.overflow.load(Ordering::SeqCst))
            < connections.limits.max_connections;
        Slot {
            connections,
            regular,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.connections.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.connections.closed_all.notify_waiters();
        }
    }
}

/// The connection limit that fits `fd_soft_limit` open files, with a warning when
/// `max_connections` does not.
pub fn fitting_max_connections(max_connections: usize, fd_soft_limit: u64) -> usize {
    let needed = max_connections as u64 + OVERFLOW_RESERVE as u64 + FD_BASELINE;
    if needed <= fd_soft_limit {
        return max_connections;
    }
    let fitting = fd_soft_limit
        .saturating_sub(OVERFLOW_RESERVE as u64 + FD_BASELINE)
        .max(1) as usize;
    warn!(
        max_connections,
        fd_soft_limit,
        lowered_to = fitting,
        "--max-connections does not fit the open-file limit (it also needs {} for the over-limit reserve and {} for the rest); lowered",
        OVERFLOW_RESERVE,
        FD_BASELINE
    );
    fitting
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_fits_the_open_file_limit() {
        assert_eq!(fitting_max_connections(1000, 1_048_576), 1000);
        let reserved = OVERFLOW_RESERVE as u64 + FD_BASELINE;
        assert_eq!(fitting_max_connections(1000, 1000 + reserved), 1000);
        assert_eq!(
            fitting_max_connections(1000, 1024),
            1024 - reserved as usize
        );
        assert_eq!(fitting_max_connections(1000, 10), 1);
    }

    #[test]
    fn only_closing_ends_http1_connections() {
        let p = Progress::new();
        assert_eq!(end_for_phase(Phase::Serving, &p), None);
        assert_eq!(end_for_phase(Phase::Draining, &p), None);
        assert_eq!(end_for_phase(Phase::Closing, &p), Some("closing"));
        p.request_started(true);
        assert_eq!(end_for_phase(Phase::Draining, &p), Some("draining"));
        assert_eq!(end_for_phase(Phase::Serving, &p), None);
    }
}
