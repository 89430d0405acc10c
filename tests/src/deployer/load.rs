//! Load through the server's public URL while a test changes the cluster: concurrent keep-alive
//! clients sending predictions as fast as they are answered, every failure kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use super::{keep_alive_client, predict_with};

/// Predictions through a URL from concurrent keep-alive clients, until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicUsize>,
    started: Instant,
    tasks: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>,
}

impl Load {
    pub fn start(url: &str, jpeg: &[u8], clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, count) = (stop.clone(), answered.clone());
                let (url, jpeg) = (url.to_string(), jpeg.to_vec());
                tokio::spawn(async move {
                    let (mut answered, mut failures) = (0, Vec::new());
                    let client = keep_alive_client();
                    while !stop.load(Ordering::Relaxed) {
                        match predict_with(&client, &url, &jpeg).await {
                            Ok(_) => {
                                answered += 1;
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.push(e),
                        }
                    }
                    (answered, failures)
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

    /// (answered, failures).
    pub async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut answered, mut failures) = (0, Vec::new());
        for t in self.tasks {
            let (a, f) = t.await.unwrap();
            answered += a;
            failures.extend(f);
        }
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
