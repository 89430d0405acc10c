//! Files the server re-reads while it runs (the API keys file, the TLS certificate and key): every
//! `--reload-interval` the files are read whole and compared with what was read last; a change is
//! handed to the owner's `apply`, which validates and swaps it in, or refuses it (the last good
//! content stays in force). Reading the content, not watching events or modification times, is
//! what sees a Kubernetes Secret volume's update: the kubelet swaps a `..data` symlink, so the
//! file's own inode and time may not change, and a copy over the file in place is seen too.
//!
//! A leaf module: it imports nothing from the crate.

use std::path::PathBuf;
use std::time::Duration;

use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The contents of `paths`, in order, or a sentence saying which could not be read.
pub fn read_all(paths: &[PathBuf]) -> Result<Vec<Vec<u8>>, String> {
    paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display())))
        .collect()
}

/// Poll `paths` every `interval` from now on, starting from `initial` (their content at start);
/// call `apply` with a new content when it differs from the last one seen. `apply` returns a
/// description for the log (`Ok`) or why the content was refused (`Err`, logged as a warning with
/// "keeping the previous ..."). A file that cannot be read is warned about once, until it
/// changes. `outcome(ok)` counts each change (for the metrics).
pub fn spawn(
    what: &'static str,
    paths: Vec<PathBuf>,
    interval: Duration,
    initial: Vec<Vec<u8>>,
    mut apply: impl FnMut(&[Vec<u8>]) -> Result<String, String> + Send + 'static,
    outcome: impl Fn(bool) + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Result<Vec<Vec<u8>>, String> = Ok(initial);
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let ps = paths.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || read_all(&ps)).await else {
                continue;
            };
            if now == last {
                continue;
            }
            match &now {
                Err(e) => {
                    warn!(what, "{e}; keeping the previous {what}");
                    outcome(false);
                }
                Ok(contents) => match apply(contents) {
                    Ok(done) => {
                        info!(what, "reloaded: {done}");
                        outcome(true);
                    }
                    Err(e) => {
                        warn!(
                            what,
                            "cannot use the new {what}: {e}; keeping the previous {what}"
                        );
                        outcome(false);
                    }
                },
            }
            last = now;
        }
    })
}
