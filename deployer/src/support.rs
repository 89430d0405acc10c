//! Small helpers both sides (Kubernetes and OCI) share. A leaf: imports nothing from the crate.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// Installs rustls' ring crypto provider as the process default (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all this needs.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An error and its sources on one line (`a: b: c`), without repeating identical messages.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// How a transient failure is retried: the first pause, the longest pause, and the whole budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
    /// No new attempt starts once this much time has passed since the first (zero: one attempt).
    pub budget: Duration,
}

impl Backoff {
    /// 0.5 s, 1 s, 2 s, 4 s, then every 5 s, within `budget`.
    pub fn within(budget: Duration) -> Backoff {
        Backoff {
            first: Duration::from_millis(500),
            max: Duration::from_secs(5),
            budget,
        }
    }
}

/// The result of [`retry`]: the last error, and how many attempts were made over how long.
#[derive(Debug)]
pub struct GaveUp<E> {
    pub error: E,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// Runs `op` until it succeeds, fails with an error `transient` says is not worth retrying, or the
/// backoff's budget is spent; `retrying(error, attempt, pause)` is told before each pause.
pub async fn retry<T, E, Fut>(
    backoff: Backoff,
    mut op: impl FnMut() -> Fut,
    transient: impl Fn(&E) -> bool,
    mut retrying: impl FnMut(&E, u32, Duration),
) -> Result<T, GaveUp<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    let start = Instant::now();
    let mut pause = backoff.first;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = match op().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let elapsed = start.elapsed();
        if !transient(&error) || elapsed + pause > backoff.budget {
            return Err(GaveUp {
                error,
                attempts,
                elapsed,
            });
        }
        retrying(&error, attempts, pause);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(backoff.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Duration;

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_with_growing_pauses_within_the_budget() {
        let mut pauses = Vec::new();
        let mut calls = 0;
        let r: Result<u8, GaveUp<&str>> = retry(
            Backoff::within(Duration::from_secs(10)),
            || {
                calls += 1;
                async { Err("refused") }
            },
            |_| true,
            |_, _, p| pauses.push(p),
        )
        .await;
        let gave_up = r.unwrap_err();
        let ms: Vec<u128> = pauses.iter().map(Duration::as_millis).collect();
        // 0.5 + 1 + 2 + 4 = 7.5 s; another 5 s pause would pass the 10 s budget
        assert_eq!(ms, vec![500, 1000, 2000, 4000]);
        assert_eq!((gave_up.attempts, calls), (5, 5));
        assert_eq!(gave_up.error, "refused");
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_a_retry_and_permanent_errors_at_once() {
        let mut calls = 0;
        let r: Result<u8, GaveUp<&str>> = retry(
            Backoff::within(Duration::from_secs(10)),
            || {
                calls += 1;
                let n = calls;
                async move { if n < 3 { Err("refused") } else { Ok(7) } }
            },
            |_| true,
            |_, _, _| {},
        )
        .await;
        assert_eq!(r.unwrap(), 7);
        let r: Result<u8, GaveUp<&str>> = retry(
            Backoff::within(Duration::from_secs(10)),
            || async { Err("denied") },
            |e| *e != "denied",
            |_, _, _| panic!("a permanent error is not retried"),
        )
        .await;
        assert_eq!(r.unwrap_err().attempts, 1);
        let r: Result<u8, GaveUp<&str>> = retry(
            Backoff::within(Duration::ZERO),
            || async { Err("refused") },
            |_| true,
            |_, _, _| panic!("no budget, no retry"),
        )
        .await;
        assert_eq!(r.unwrap_err().attempts, 1);
    }
}
