//! The real celestial-server, started in-process on a free loopback port with the server's own
//! test helper ([`celestial_server::testing::TestServer`]; ONNX Runtime and the embedded model).

use anyhow::Context;
use celestial_server::testing::TestServer;

/// The real server, in-process on a free loopback port.
pub struct Server {
    pub port: u16,
    inner: TestServer,
}

impl Server {
    /// Start with `extra_args` (server flags) and wait until `/readyz` answers 200.
    pub async fn start(extra_args: &[&str]) -> anyhow::Result<Self> {
        let config = celestial_server::Config::from_args(extra_args.iter().copied())
            .context("server flags")?;
        let inner = TestServer::start(config, None)
            .await
            .context("the server did not start")?;
        Ok(Self {
            port: inner.port(),
            inner,
        })
    }

    pub fn url(&self, path: &str) -> String {
        self.inner.url(path)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.inner
            .stop()
            .await
            .context("server exited with an error")
    }
}
