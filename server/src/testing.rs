//! Test support (used by this crate's tests, `server/tests/`, the fuzz targets and the end-to-end
//! tests; not by the server itself, so built only for tests and with the `test-util` feature): a
//! [`FakeClassifier`] that needs no ONNX Runtime, and [`TestServer`], the real server in-process
//! on a free loopback port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::GenericImageView;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::classifier::{Classification, Classifier, Input, JobOutput, Prediction};
use crate::config::Config;
use crate::model::{
    Calibration, ColorMode, JpegDctScaling, Layout, ModelSpec, OutputKind, ResizeFilter, ResizeMode,
};
use crate::preprocess;
use crate::server::{self, Bound, CheckedConfig, ServerError};

/// The labels of the embedded model, in its output order.
pub const LABELS: [&str; 10] = [
    "Earth", "Jupiter", "Mars", "Mercury", "Moon", "Neptune", "Pluto", "Saturn", "Uranus", "Venus",
];

/// A model description like the embedded model's (RGB 64x64, NCHW, logits, [`LABELS`]).
pub fn spec() -> ModelSpec {
    ModelSpec {
        name: "fake".into(),
        version: "0.0.0".into(),
        labels: LABELS.iter().map(|l| l.to_string()).collect(),
        input_name: "input".into(),
        output_name: "logits".into(),
        layout: Layout::Nchw,
        height: 64,
        width: 64,
        color_mode: ColorMode::Rgb,
        grayscale_coefficients: [0.299, 0.587, 0.114],
        alpha: "composite_black".into(),
        resize_filter: ResizeFilter::Triangle,
        resize_mode: ResizeMode::Stretch,
        jpeg_dct_scaling: JpegDctScaling::Full,
        scale: 1.0 / 255.0,
        mean: vec![0.0; 3],
        std: vec![1.0; 3],
        output_kind: OutputKind::Logits,
        calibration: Calibration::default(),
        dynamic_batch: true,
        trained_at: None,
        validation_accuracy: None,
        description: None,
        golden: None,
        drift: None,
    }
}

/// A classifier without ONNX Runtime: it decodes every image with the server's real decoder (so
/// an image's errors are the real ones) and predicts label `width % labels` with probability 1.
/// [`FakeClassifier::slow`] makes every job take a while (for 429, 504 and drain tests).
pub struct FakeClassifier {
    spec: Arc<ModelSpec>,
    delay: Duration,
    max_image_pixels: u64,
}

impl Default for FakeClassifier {
    fn default() -> Self {
        FakeClassifier {
            spec: Arc::new(spec()),
            delay: Duration::ZERO,
            max_image_pixels: Config::with_defaults().max_image_pixels,
        }
    }
}

impl FakeClassifier {
    /// A fake whose every job takes `delay` (after it is admitted).
    pub fn slow(delay: Duration) -> FakeClassifier {
        FakeClassifier {
            delay,
            ..FakeClassifier::default()
        }
    }

    /// The same fake with another `--max-image-pixels`.
    pub fn with_max_image_pixels(self, max_image_pixels: u64) -> FakeClassifier {
        FakeClassifier {
            max_image_pixels,
            ..self
        }
    }

    /// An image's label is its width modulo the labels; a tensor's is its first value's.
    fn predict(&self, input: &Input) -> Result<Prediction, preprocess::PreprocessError> {
        let n = self.spec.labels.len();
        let best = match input {
            Input::Encoded(bytes) => {
                preprocess::decode(bytes, self.max_image_pixels)?
                    .dimensions()
                    .0 as usize
                    % n
            }
            Input::Tensor(values) => values.first().map_or(0, |v| v.abs() as usize % n),
        };
        let mut probabilities = vec![0.0; n];
        probabilities[best] = 1.0;
        Ok(Prediction {
            best,
            output: probabilities.clone(),
            probabilities,
            confidence: None,
            known: None,
            colours: None,
        })
    }
}

impl Classifier for FakeClassifier {
    fn spec(&self) -> &Arc<ModelSpec> {
        &self.spec
    }

    fn runtime_version(&self) -> &str {
        "none"
    }

    fn workers(&self) -> usize {
        1
    }

    fn classify(&self, images: Vec<Input>) -> Classification<'_> {
        Box::pin(async move {
            let started = Instant::now();
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let results = images.iter().map(|b| self.predict(b)).collect();
            Ok(JobOutput {
                results,
                queue_wait: Duration::ZERO,
                preprocess: started.elapsed(),
                inference: Duration::ZERO,
                batch_images: images.len(),
            })
        })
    }

    fn close(&self) {}
}

/// The real server in-process on `127.0.0.1:0`, ready (its `/readyz` answered 200) when
/// [`TestServer::start`] returns.
pub struct TestServer {
    /// The plain-HTTP listener (what `--plain-http` says it serves).
    pub addr: SocketAddr,
    /// The HTTPS listener, when the configuration has `--tls-cert` and `--tls-key`.
    pub tls_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl TestServer {
    /// Serve `classifier`, or the model `config` names with ONNX Runtime when `None` (like the
    /// binary). `config`'s host and ports are ignored: both listeners (plain HTTP always, for the
    /// readiness probe; HTTPS with TLS) are on free loopback ports.
    pub async fn start(
        config: Config,
        classifier: Option<Arc<dyn Classifier>>,
    ) -> Result<TestServer, ServerError> {
        let config = CheckedConfig::new(config)?;
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let tls = match config.tls_enabled() {
            true => Some(TcpListener::bind(("127.0.0.1", 0)).await?),
            false => None,
        };
        let tls_addr = tls.as_ref().map(|l| l.local_addr()).transpose()?;
        let listener = Bound {
            plain: Some(listener),
            tls,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task = match classifier {
            Some(c) => tokio::spawn(server::serve(config, c, listener, shutdown)),
            None => tokio::spawn(server::run(config, listener, shutdown)),
        };
        let mut server = TestServer {
            addr,
            tls_addr,
            stop: Some(stop),
            task,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    /// Poll `/readyz` until it answers 200; the server's own error if it stops first.
    async fn wait_ready(&mut self) -> Result<(), ServerError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = self.addr.to_string();
        loop {
            if self.task.is_finished() {
                return match (&mut self.task).await {
                    Ok(Err(e)) => Err(e),
                    Ok(Ok(())) => Err(ServerError::Config("the server stopped at start-up".into())),
                    Err(e) => Err(ServerError::Config(format!("the server task failed: {e}"))),
                };
            }
            let probe = address.clone();
            let ready = tokio::task::spawn_blocking(move || {
                server::healthcheck(&probe, Duration::from_secs(2))
            })
            .await;
            if let Ok(Ok(true)) = ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ServerError::Config("not ready within 60 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `https://localhost:PORT{path}` on the HTTPS listener (`None` without TLS).
    pub fn tls_url(&self, path: &str) -> Option<String> {
        self.tls_addr
            .map(|a| format!("https://localhost:{}{path}", a.port()))
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Send the shutdown signal (like SIGTERM) without waiting.
    pub fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Wait for the server to return (after [`TestServer::signal`]).
    pub async fn finished(self) -> Result<(), ServerError> {
        self.task
            .await
            .map_err(|e| ServerError::Config(format!("the server task failed: {e}")))?
    }

    /// Signal, then wait for the server to return.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        self.signal();
        self.finished().await
    }
}
