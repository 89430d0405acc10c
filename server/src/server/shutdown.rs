//! Shutdown: the signal that starts it, the drain (`/readyz` 503, answers close their connections,
//! the listeners close after `--drain-delay`) and the wait for in-flight work under
//! `--shutdown-timeout`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use super::error::ServerError;
use crate::connection::{Connections, Listener, Phase};
use crate::http::AppState;

/// Serve `listeners` until `shutdown` resolves, then drain: `/readyz` answers 503 at once while
/// predictions are still served with `Connection: close`, the listeners close after `drain_delay`,
/// in-flight requests get up to `timeout` to finish, and the classifier is closed.
pub(super) async fn serve_until(
    shutdown: impl Future<Output = ()> + Send + 'static,
    state: Arc<AppState>,
    connections: Arc<Connections>,
    listeners: Vec<Listener>,
    drain_delay: Duration,
    timeout: Duration,
) -> Result<(), ServerError> {
    let (phase, phase_rx) = watch::channel(Phase::Serving);
    let signalled = Arc::new(Notify::new());
    let graceful = drain(
        shutdown,
        Arc::clone(&state),
        Arc::clone(&connections),
        phase,
        Arc::clone(&signalled),
        drain_delay,
    );
    let serving = async move {
        tokio::join!(graceful, connections.serve(listeners, phase_rx));
        Ok::<(), std::io::Error>(())
    };
    let deadline = Box::pin(async move {
        signalled.notified().await;
        tokio::time::sleep(drain_delay + timeout).await;
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
