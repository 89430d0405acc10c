//! SIGINT (Ctrl-C) and SIGTERM (a cancelled CI job) as values: [`Interrupt::install`] takes over
//! both signals, a command races its steps against [`Interrupt::run`] and, when a signal came,
//! says what state it left and how to resume instead of dying mid-sentence. A second signal ends
//! the process at once (the user insists). A leaf module.

use std::future::Future;

use tokio::sync::watch;

/// Which signal stopped the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Signal {
    #[serde(rename = "SIGINT")]
    Int,
    #[serde(rename = "SIGTERM")]
    Term,
}

impl Signal {
    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            Signal::Int => "SIGINT",
            Signal::Term => "SIGTERM",
        }
    }

    /// The signal's number (the process exit status is 128 + this, as shells report it).
    pub fn number(self) -> u8 {
        match self {
            Signal::Int => 2,
            Signal::Term => 15,
        }
    }
}

/// The first SIGINT or SIGTERM the process received, if any (cheap to clone).
#[derive(Clone)]
pub struct Interrupt {
    rx: watch::Receiver<Option<Signal>>,
}

impl Interrupt {
    /// Takes over SIGINT and SIGTERM (inside a Tokio runtime). The first one is reported to
    /// [`Interrupt::run`]; the next one exits the process with its code right away.
    pub fn install() -> std::io::Result<Interrupt> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            let first = tokio::select! {
                _ = int.recv() => Signal::Int,
                _ = term.recv() => Signal::Term,
            };
            let _ = tx.send(Some(first));
            let second = tokio::select! {
                _ = int.recv() => Signal::Int,
                _ = term.recv() => Signal::Term,
            };
            eprintln!("{}: exiting at once", second.name());
            std::process::exit(128 + i32::from(second.number()));
        });
        Ok(Interrupt { rx })
    }

    /// An interrupt that never comes (library callers and tests that do not handle signals).
    pub fn never() -> Interrupt {
        let (tx, rx) = watch::channel(None);
        // The sender lives as long as the process: `wait` never sees a closed channel.
        std::mem::forget(tx);
        Interrupt { rx }
    }

    /// The signal received so far, if any.
    pub fn received(&self) -> Option<Signal> {
        *self.rx.borrow()
    }

    /// Resolves when a signal arrives.
    pub async fn wait(&self) -> Signal {
        let mut rx = self.rx.clone();
        loop {
            if let Some(s) = *rx.borrow_and_update() {
                return s;
            }
            if rx.changed().await.is_err() {
                // the listener is gone: no signal will ever be reported
                std::future::pending::<()>().await;
            }
        }
    }

    /// Runs `step` unless a signal arrives first (then `step` is dropped where it stood).
    pub async fn run<T>(&self, step: impl Future<Output = T>) -> Result<T, Signal> {
        if let Some(s) = self.received() {
            return Err(s);
        }
        tokio::select! {
            biased;
            s = self.wait() => Err(s),
            r = step => Ok(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_runs_to_its_end_without_a_signal() {
        let i = Interrupt::never();
        assert_eq!(i.run(async { 7 }).await, Ok(7));
        assert_eq!(i.received(), None);
    }

    #[tokio::test]
    async fn a_signal_stops_the_step_where_it_stands() {
        let (tx, rx) = watch::channel(None);
        let i = Interrupt { rx };
        let step = i.run(std::future::pending::<()>());
        let send = async {
            tokio::task::yield_now().await;
            tx.send(Some(Signal::Int)).unwrap();
        };
        let (r, ()) = tokio::join!(step, send);
        assert_eq!(r, Err(Signal::Int));
        // later steps do not even start
        assert_eq!(i.run(async { 1 }).await, Err(Signal::Int));
    }
}
