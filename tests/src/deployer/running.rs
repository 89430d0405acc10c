//! A `deployer` run in the background, signalled while it runs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Run, deployer};
use crate::repo_root;

/// A `deployer` run in the background: its output collected as it comes (so a test can act at a
/// given step), its process signalled like a user or a CI runner would.
pub struct Running {
    child: std::process::Child,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    stderr_reader: std::thread::JoinHandle<()>,
    start: Instant,
}

/// Starts deployer (from the repository root) with `args` and no stdin.
pub fn spawn(args: &[String]) -> Running {
    use std::io::{BufRead, Read};
    let mut child = Command::new(deployer())
        .current_dir(repo_root())
        .args(args)
        .env_remove("DOCKER_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running deployer");
    let mut out = child.stdout.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (sink, err) = (stderr.clone(), child.stderr.take().unwrap());
    let stderr_reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    Running {
        child,
        stdout,
        stderr,
        stderr_reader,
        start: Instant::now(),
    }
}

impl Running {
    /// Waits until deployer's stderr has a line containing `needle`; panics (with the whole run,
    /// deployer stopped) when it does not come in time.
    pub async fn expect_stderr(self, needle: &str, timeout: Duration) -> Running {
        match self.wait_stderr(needle, timeout).await {
            Ok(()) => self,
            Err(e) => {
                let r = self.finish(Duration::from_secs(1)).await;
                panic!("{e}\n{}", r.describe())
            }
        }
    }

    /// Waits until deployer's stderr has a line containing `needle`.
    pub async fn wait_stderr(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self.stderr.lock().unwrap().clone();
            if seen.contains(needle) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no `{needle}` on deployer's stderr within {timeout:?}:\n{seen}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends `signal` (e.g. `libc::SIGINT`) to deployer.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        assert_eq!(
            unsafe { libc::kill(pid, signal) },
            0,
            "kill({pid}, {signal})"
        );
    }

    /// Waits for deployer to exit (killing it after `timeout`) and returns the whole run.
    pub async fn finish(mut self, timeout: Duration) -> Run {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let seconds = self.start.elapsed().as_secs_f64();
        let stdout = self.stdout.join().unwrap();
        self.stderr_reader.join().unwrap();
        let stderr = self.stderr.lock().unwrap().clone();
        Run {
            code: status.and_then(|s| s.code()).unwrap_or(-1),
            stdout,
            stderr,
            seconds,
        }
    }
}
