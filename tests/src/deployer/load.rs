//! Load through the server's public URL while a test changes the cluster: concurrent keep-alive
//! clients sending predictions as fast as they are answered, every failure kept.
//!
//! A request whose pooled connection closed before its answer was complete is sent once more on a
//! new connection, as HTTP clients do for an idempotent request (RFC 9110, 9.2.2; a prediction
//! changes nothing, so sending it twice is safe): the drain test met one such close in about one
//! run of two, at the instant the evicted pod was deleted, after the server's own drain had ended.
//! Each retry is printed with its time; a retry that fails too is a failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use super::{keep_alive_client, predict_with};

/// What hyper says when the connection closed before the answer began.
const CLOSED_BEFORE_ANSWER: &str = "connection closed before message completed";

/// What one client did: answered, failures, retries (each failure and retry with its time).
type Tally = (usize, Vec<String>, Vec<String>);

/// Predictions through a URL from concurrent keep-alive clients, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
}

impl Load {
    pub fn start(url: &str, jpeg: &[u8], clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, count) = (stop.clone(), answered.clone());
                let started = Instant::now();
                let (url, jpeg) = (url.to_string(), jpeg.to_vec());
                tokio::spawn(async move {
                    let (mut answered, mut failures, mut retries) = (0, Vec::new(), Vec::new());
                    let client = keep_alive_client();
                    // (when, from the load's start: what the cluster did then tells why)
                    let at = |e: &str| format!("[{:.2}s] {e}", started.elapsed().as_secs_f64());
                    while !stop.load(Ordering::Relaxed) {
                        let mut outcome = predict_with(&client, &url, &jpeg).await;
                        if let Err(e) = &outcome
                            && e.contains(CLOSED_BEFORE_ANSWER)
                        {
                            retries.push(at(e));
                            outcome = predict_with(&keep_alive_client(), &url, &jpeg).await;
                        }
                        match outcome {
                            Ok(_) => {
                                answered += 1;
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.push(at(&e)),
                        }
                    }
                    (answered, failures, retries)
                })
            })
            .collect();
        Load {
            stop,
            answered,
            started: Instant::now(),
            tasks,
        }
    }

    /// Predictions answered so far, and the seconds since the start (for rates over a window).
    pub fn progress(&self) -> (usize, f64) {
        (
            self.answered.load(Ordering::Relaxed),
            self.started.elapsed().as_secs_f64(),
        )
    }

    /// (answered, failures); the retries are printed.
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut answered, mut failures, mut retries) = (0, Vec::new(), Vec::new());
        for t in self.tasks {
            let (a, f, r) = t.await.unwrap();
            answered += a;
            failures.extend(f);
            retries.extend(r);
        }
        eprintln!(
            "measured: {} request(s) sent again after their connection closed before an answer{}",
            retries.len(),
            if retries.is_empty() {
                String::new()
            } else {
                format!(": {}", summary(&retries))
            }
        );
        (answered, failures)
    }
}

/// Failures by message, most frequent first, with their counts (a short, readable line each).
pub fn summary(failures: &[String]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for f in failures {
        *counts.entry(f.as_str()).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    v.iter()
        .take(5)
        .map(|(m, n)| format!("{n} x {}", m.chars().take(200).collect::<String>()))
        .collect::<Vec<_>>()
        .join("\n")
}
