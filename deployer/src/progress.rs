//! The one progress abstraction: long steps report what they are doing through [`Progress`]; the
//! command decides where it goes ([`Terminal`]: a spinner on a terminal, plain lines otherwise, so
//! CI logs stay readable; [`Quiet`]: nowhere). Results go to stdout, progress to stderr.
//! A leaf module.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Where a long step reports what it is doing.
pub trait Progress {
    /// The current state; shown until the next one (on a terminal) or printed as a line when it
    /// differs from the previous one.
    fn set(&mut self, msg: &str);
    /// A finished step: a line that stays.
    fn line(&mut self, msg: &str);
}

/// Progress on stderr for one command.
pub struct Terminal {
    bar: Option<ProgressBar>,
    last: String,
    start: Instant,
}

impl Terminal {
    /// A spinner when stderr is a terminal, plain lines otherwise.
    pub fn new() -> Terminal {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed:>3}] {msg}")
                    .expect("the template is valid"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Terminal {
            bar,
            last: String::new(),
            start: Instant::now(),
        }
    }

    fn print(&self, msg: &str) {
        match &self.bar {
            Some(bar) => bar.println(msg),
            None => eprintln!("[{:>5.1}s] {msg}", self.start.elapsed().as_secs_f64()),
        }
    }
}

impl Progress for Terminal {
    fn set(&mut self, msg: &str) {
        if msg == self.last {
            return;
        }
        self.last = msg.to_string();
        match &self.bar {
            Some(bar) => bar.set_message(msg.to_string()),
            None => self.print(msg),
        }
    }

    fn line(&mut self, msg: &str) {
        self.print(msg);
        self.last.clear();
    }
}

impl Default for Terminal {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Progress that goes nowhere (a dry run shows its result only).
pub struct Quiet;

impl Progress for Quiet {
    fn set(&mut self, _msg: &str) {}
    fn line(&mut self, _msg: &str) {}
}

/// Progress kept in memory (tests check what a step reported).
#[derive(Debug, Default)]
pub struct Recorded {
    pub lines: Vec<String>,
}

impl Progress for Recorded {
    fn set(&mut self, msg: &str) {
        self.lines.push(msg.to_string());
    }
    fn line(&mut self, msg: &str) {
        self.lines.push(msg.to_string());
    }
}
