//! Live progress on stderr: a spinner on a terminal, plain lines (only when something changes)
//! otherwise, so CI logs stay readable. Results go to stdout.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Progress reporter for one command.
pub struct Progress {
    bar: Option<ProgressBar>,
    last: String,
    start: Instant,
}

impl Progress {
    /// A spinner when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed:>3}] {msg}")
                    .expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            last: String::new(),
            start: Instant::now(),
        }
    }

    /// The current state; printed as a line only when it differs from the previous one.
    pub fn set(&mut self, msg: &str) {
        if msg == self.last {
            return;
        }
        self.last = msg.to_string();
        match &self.bar {
            Some(bar) => bar.set_message(msg.to_string()),
            None => eprintln!("[{:>5.1}s] {msg}", self.start.elapsed().as_secs_f64()),
        }
    }

    /// A line that stays (a finished step).
    pub fn line(&mut self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("[{:>5.1}s] {msg}", self.start.elapsed().as_secs_f64()),
        }
        self.last.clear();
    }

    /// Time since the command started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
