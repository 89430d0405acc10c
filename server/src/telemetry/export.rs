//! The export side: a bounded queue of finished spans ([`Queue`]) and the one task that posts
//! them to the collector in batches ([`Exporter`]), with its HTTP client (http, or https with the
//! system's or a given set of certificate authorities). A request only ever pushes to the queue
//! (a short lock, no I/O); the exporter's waits never reach it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{Request, header};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::config::{Protocol, TraceSettings};
use super::otlp::{self, Origin};
use super::span::SpanRecord;
use crate::metrics::Metrics;

/// The most of a collector's answer read (it is a status; the body only explains a refusal).
const MAX_ANSWER: usize = 64 * 1024;
/// A failing collector is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Why the exporter cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    #[error("cannot read the OTLP certificate authorities {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("cannot set up TLS for the OTLP exporter: {0}")]
    Tls(String),
}

/// Finished spans waiting for export, at most `capacity` of them.
pub struct Queue {
    spans: Mutex<VecDeque<SpanRecord>>,
    capacity: usize,
    batch: usize,
    /// Wakes the exporter when a full batch is waiting.
    ready: Notify,
    dropped: Counter,
}

impl Queue {
    pub fn new(settings: &TraceSettings, metrics: &Metrics) -> Queue {
        Queue {
            spans: Mutex::new(VecDeque::with_capacity(settings.queue_size.min(4096))),
            capacity: settings.queue_size,
            batch: settings.batch_size,
            ready: Notify::new(),
            dropped: metrics.trace_spans("dropped_queue_full"),
        }
    }

    #[cfg(test)]
    pub fn for_tests(capacity: usize) -> Queue {
        Queue {
            spans: Mutex::default(),
            capacity,
            batch: capacity,
            ready: Notify::new(),
            dropped: Counter::default(),
        }
    }

    /// Queue a request's spans, or drop them all (counted) when they do not fit: a trace is kept
    /// whole or not at all.
    pub fn push(&self, spans: Vec<SpanRecord>) {
        let mut queue = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.len() + spans.len() > self.capacity {
            drop(queue);
            self.dropped.inc_by(spans.len() as u64);
            return;
        }
        queue.extend(spans);
        let full = queue.len() >= self.batch;
        drop(queue);
        if full {
            self.ready.notify_one();
        }
    }

    /// Up to `batch` spans, oldest first.
    fn take(&self) -> Vec<SpanRecord> {
        let mut queue = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        let n = queue.len().min(self.batch);
        queue.drain(..n).collect()
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The task that exports the queue's spans; [`Exporter::spawn`] runs it.
pub struct Exporter {
    queue: Arc<Queue>,
    client: HttpClient,
    settings: TraceSettings,
    origin: Origin,
    exported: Counter,
    failed: Counter,
    /// When a failure was last logged (failures in between are only counted).
    warned: Option<Instant>,
}

/// A running exporter: [`ExporterHandle::shutdown`] exports what is queued and stops it.
pub struct ExporterHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Exporter {
    pub(super) fn new(
        settings: &TraceSettings,
        (model_name, model_version): (&str, &str),
        queue: Arc<Queue>,
        metrics: &Metrics,
    ) -> Result<Exporter, ExporterError> {
        let mut resource = settings.resource.clone();
        for (key, value) in [
            ("service.version", env!("CARGO_PKG_VERSION")),
            ("celestial.model.name", model_name),
            ("celestial.model.version", model_version),
        ] {
            if !resource.iter().any(|(k, _)| k == key) {
                resource.push((key.to_string(), value.to_string()));
            }
        }
        Ok(Exporter {
            queue,
            client: client(settings)?,
            settings: settings.clone(),
            origin: Origin {
                resource,
                scope: env!("CARGO_PKG_NAME"),
                version: env!("CARGO_PKG_VERSION"),
            },
            exported: metrics.trace_spans("exported"),
            failed: metrics.trace_spans("dropped_export_failed"),
            warned: None,
        })
    }

    /// Run the exporter on the current runtime.
    pub fn spawn(self) -> ExporterHandle {
        let (stop, stopped) = watch::channel(false);
        ExporterHandle {
            stop,
            task: tokio::spawn(self.run(stopped)),
        }
    }

    /// Export whenever a batch is full or the oldest span has waited the schedule delay; at the
    /// stop signal, export what is left and return.
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        loop {
            let stop = tokio::select! {
                _ = self.queue.ready.notified() => false,
                _ = tokio::time::sleep(self.settings.delay) => false,
                _ = stopped.changed() => true,
            };
            loop {
                let batch = self.queue.take();
                if batch.is_empty() {
                    break;
                }
                self.send(batch).await;
            }
            if stop {
                return;
            }
        }
    }

    /// Post one batch; on any failure the batch is dropped and counted (no retry: the queue
    /// behind it keeps filling, and a collector that is down would only be asked more).
    async fn send(&mut self, spans: Vec<SpanRecord>) {
        let n = spans.len() as u64;
        let body = match self.settings.protocol {
            Protocol::Protobuf => otlp::protobuf(&self.origin, &spans),
            Protocol::Json => otlp::json(&self.origin, &spans),
        };
        drop(spans);
        match tokio::time::timeout(self.settings.timeout, self.post(body)).await {
            Ok(Ok(())) => {
                self.exported.inc_by(n);
                if self.warned.take().is_some() {
                    info!(url = %self.settings.url, "OTLP collector reachable again: exporting spans");
                }
            }
            Ok(Err(reason)) => self.failed(n, &reason),
            Err(_) => self.failed(n, &format!("no answer within {:?}", self.settings.timeout)),
        }
    }

    fn failed(&mut self, n: u64, reason: &str) {
        self.failed.inc_by(n);
        if self.warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            self.warned = Some(Instant::now());
            warn!(url = %self.settings.url, spans = n, reason, "OTLP export failed: spans dropped (later failures within a minute are only counted)");
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let mut request = Request::post(self.settings.url.clone())
            .header(header::CONTENT_TYPE, self.settings.protocol.content_type());
        for (name, value) in &self.settings.headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let answer = self.client.request(request).await.map_err(|e| {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason = format!("{reason}: {s}");
                source = s.source();
            }
            reason
        })?;
        let status = answer.status();
        let text = Limited::new(answer.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the collector answered {status}: {}", text.trim()))
        }
    }
}

impl ExporterHandle {
    /// Export what is queued (for at most `within`) and stop.
    pub async fn shutdown(self, within: Duration) {
        self.stop.send_replace(true);
        if tokio::time::timeout(within, self.task).await.is_err() {
            warn!("OTLP exporter still busy at shutdown: its last spans are lost");
        }
    }
}

/// The exporter's HTTP client: plain http, or https trusting `--otlp-certificate`'s authorities
/// (the system's without it).
fn client(settings: &TraceSettings) -> Result<HttpClient, ExporterError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ExporterError::Tls(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    match &settings.certificate {
        Some(path) => {
            use rustls_pki_types::CertificateDer;
            use rustls_pki_types::pem::PemObject;
            let bad = |reason: String| ExporterError::Certificate {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(bad("it holds no certificate".into()));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
    }
    let tls = builder.with_root_certificates(roots).with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}
