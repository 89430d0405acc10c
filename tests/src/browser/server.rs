//! The real celestial-server, started in-process on a free loopback port (as `main` does:
//! `Config` from flags, then `celestial_server::run(config, listener, shutdown)`).

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// The real server, in-process on a free loopback port.
pub struct Server {
    pub port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), celestial_server::ServerError>>,
}

impl Server {
    pub async fn start(extra_args: &[&str]) -> anyhow::Result<Self> {
        let mut args = vec!["--host", "127.0.0.1", "--port", "0"];
        args.extend_from_slice(extra_args);
        let config = celestial_server::Config::from_args(args).context("server flags")?;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(celestial_server::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let url = format!("http://127.0.0.1:{port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if task.is_finished() {
                let why = match task.await {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(())) => "run() returned".to_string(),
                    Err(e) => e.to_string(),
                };
                bail!("the server stopped during start-up: {why}");
            }
            if let Ok(r) = reqwest::get(&url).await
                && r.status() == 200
            {
                return Ok(Self {
                    port,
                    stop: Some(stop),
                    task,
                });
            }
            ensure!(
                Instant::now() < deadline,
                "the server was not ready within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?.context("server exited with an error")?;
        Ok(())
    }
}
