//! Command line / environment configuration.
//!
//! Every flag has an environment variable; the `///` comments are the `--help` text.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::{self, ApiKey, KeyScope};
use crate::drift::DriftConfig;
use crate::model::ModelOverrides;
use crate::telemetry::TraceConfig;
use celestial_common::{parse_duration, server_env};

/// BentoML-compatible prediction server for the celestial-bodies classifier (axum + ONNX Runtime).
#[derive(Debug, Clone, Parser)]
#[command(name = "celestial-server", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub config: Config,
}

/// Subcommands; without one, the server runs.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Probe `/readyz` of a running server and exit 0 when it answers 200, 1 otherwise
    /// (for container HEALTHCHECKs without curl).
    Healthcheck(HealthcheckArgs),
}

/// Arguments of `celestial-server healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Address of the server to probe (host:port).
    #[arg(
        long = "address",
        env = "CELESTIAL_HEALTHCHECK_ADDRESS",
        default_value = "127.0.0.1:3000"
    )]
    pub address: String,
    /// Give up after this long (e.g. `2s`, `500ms`).
    #[arg(long = "timeout", env = "CELESTIAL_HEALTHCHECK_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Probe over HTTPS (the `--tls-port` listener) instead of plain HTTP. The certificate is not
    /// verified (like the kubelet's HTTPS probes): the probe checks the server, not its name.
    #[arg(long = "tls", env = "CELESTIAL_HEALTHCHECK_TLS")]
    pub tls: bool,
}

/// What the plain-HTTP listener on `--port` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlainHttp {
    /// Every route.
    All,
    /// Only /livez, /readyz and /healthz (probes, `healthcheck`); everything else is 404.
    Probes,
    /// No plain-HTTP listener.
    Off,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Server configuration (flags and environment variables).
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "CELESTIAL_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free port).
    #[arg(long, env = "CELESTIAL_PORT", default_value_t = 3000)]
    pub port: u16,

    /// ONNX model to serve instead of the embedded celestial-bodies model.
    #[arg(long, env = "CELESTIAL_MODEL")]
    pub model: Option<PathBuf>,

    #[command(flatten)]
    pub model_overrides: ModelOverrides,

    #[command(flatten)]
    pub drift: DriftConfig,

    #[command(flatten)]
    pub traces: TraceConfig,

    /// ONNX Runtime shared library (libonnxruntime.so). When unset: next to the binary, then
    /// ${CELESTIAL_CACHE:-~/.cache/celestial}/onnxruntime/1.31.1/libonnxruntime.so.1.31.1 (installed by scripts/onnxruntime.sh).
    #[arg(long = "ort-dylib-path", env = "ORT_DYLIB_PATH")]
    pub ort_dylib_path: Option<PathBuf>,

    /// Number of inference workers, each with its own ONNX Runtime session (0 = one per CPU core).
    #[arg(long, env = "CELESTIAL_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Threads of the async HTTP runtime (0 = one per 4 CPU cores, at least one). Decoding and
    /// inference run on the `--workers` threads, not here; HTTP needs a small share of the CPU, and
    /// fewer runnable threads than cores leave the cores to the workers.
    #[arg(long, env = "CELESTIAL_HTTP_THREADS", default_value_t = 0)]
    pub http_threads: usize,

    /// Threads ONNX Runtime may use inside one inference (intra-op parallelism).
    #[arg(long, env = "CELESTIAL_INTRA_OP_THREADS", default_value_t = 1)]
    pub intra_op_threads: usize,

    /// Adaptive batching: a worker that takes a job also takes the jobs already queued behind it,
    /// up to this many images in one ONNX Runtime call (1 = every request alone). A request whose
    /// images are more than this runs alone, whole.
    #[arg(long, env = "CELESTIAL_MAX_BATCH_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_batch_size: u32,

    /// How long a worker holding a batch smaller than `--max-batch-size` waits for more jobs
    /// before running it (0 = only what is already queued; never wait).
    #[arg(long, env = "CELESTIAL_MAX_BATCH_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub max_batch_delay: Duration,

    /// Maximum number of prediction requests processed at once; up to `--max-queue` more wait up
    /// to `--max-queue-wait` for a slot, then are refused with 429.
    #[arg(long, env = "CELESTIAL_MAX_CONCURRENCY", default_value_t = 64)]
    pub max_concurrency: usize,

    /// Most predictions waiting for a slot at once (over `--max-concurrency`); a prediction that
    /// finds the queue full is refused with 429 at once (0: no queue). Unset: no bound. A bound
    /// keeps the wait of served predictions under sustained overload to about this many
    /// predictions' time instead of up to `--max-queue-wait`, but every refusal costs CPU on the
    /// cores the predictions need (see "Open-loop overload" in bench/README.md): off by default.
    #[arg(long, env = "CELESTIAL_MAX_QUEUE")]
    pub max_queue: Option<usize>,

    /// How long a prediction over `--max-concurrency` waits for a slot before it is refused with
    /// 429 (0 refuses at once). Waiting costs no CPU, while refusals that clients retry at once
    /// take it from the predictions: under 8x overload the wait keeps goodput near its peak.
    #[arg(long, env = "CELESTIAL_MAX_QUEUE_WAIT", default_value = "500ms", value_parser = parse_duration)]
    pub max_queue_wait: Duration,

    /// Seconds a client is told to wait (Retry-After) when refused with 429.
    #[arg(long, env = "CELESTIAL_RETRY_AFTER_SECONDS", default_value_t = 1)]
    pub retry_after_seconds: u64,

    /// Largest accepted request body in bytes; larger bodies get 413.
    #[arg(long, env = "CELESTIAL_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest accepted image in pixels (width x height, read from the header before decoding); larger get 422.
    #[arg(long, env = "CELESTIAL_MAX_IMAGE_PIXELS", default_value_t = 40_000_000)]
    pub max_image_pixels: u64,

    /// Memory in bytes one image may take to decode and resize, checked from its header before any
    /// pixel is decoded (each worker decodes one image at a time). A larger image is decoded row by
    /// row (JPEG scaled down while decoding) when its format allows, otherwise refused with 422.
    /// Worst case: RSS <= baseline + workers x (this + 17 MiB) + bodies in flight (docs/server.md, Memory).
    #[arg(long, env = "CELESTIAL_MAX_DECODE_BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(4 << 20..))]
    pub max_decode_bytes: u64,

    /// Most `image` parts accepted by POST /predict/batch.
    #[arg(long, env = "CELESTIAL_MAX_BATCH_IMAGES", default_value_t = 64)]
    pub max_batch_images: usize,

    /// Time limit for one request (e.g. `30s`, `1500ms`); slower requests get 504. On the prediction
    /// routes it counts from the end of the request body (receiving it is bounded by `--body-timeout`
    /// and `--body-min-rate`), so a slow client is never a server timeout.
    #[arg(long, env = "CELESTIAL_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    // Request bodies: read before a prediction slot is taken, under these bounds.
    /// How long any prediction body may take to arrive (e.g. `10s`); after that it must have arrived
    /// at `--body-min-rate` or more on average, or the request gets 408 `body_timeout`.
    #[arg(long, env = "CELESTIAL_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Minimum average rate, in bytes per second, of a prediction body that takes longer than
    /// `--body-timeout`; slower bodies get 408 `body_timeout`. 0: the whole body within `--body-timeout`.
    #[arg(long, env = "CELESTIAL_BODY_MIN_RATE", default_value_t = 16 * 1024)]
    pub body_min_rate: u64,

    /// Most prediction bodies being received at once; more get 429. Separate from (and larger than)
    /// `--max-concurrency`: a body that is still arriving holds no prediction slot.
    #[arg(long, env = "CELESTIAL_MAX_UPLOADS", default_value_t = 256)]
    pub max_uploads: usize,

    /// Memory all prediction bodies together may hold, in bytes, from their first byte to their
    /// answer (each body counts twice its size: a body that comes in many chunks grows its buffer by
    /// copying); a body that would go over gets 429. Bounds what bodies cost whatever the
    /// number of clients; at least 2 x `--max-body-bytes`.
    #[arg(long, env = "CELESTIAL_MAX_BODY_MEMORY", default_value_t = 256 * 1024 * 1024)]
    pub max_body_memory: usize,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish before the server exits anyway.
    #[arg(long, env = "CELESTIAL_SHUTDOWN_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// On SIGTERM/SIGINT, keep serving this long before closing the listener, so load balancers see
    /// the pod leave: /readyz answers 503, predictions are still served, and every HTTP/1 answer
    /// carries `Connection: close` (HTTP/2: GOAWAY) so clients reconnect elsewhere; 0 closes the
    /// listener at once.
    #[arg(long, env = "CELESTIAL_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub drain_delay: Duration,

    /// Most connections open at once. Above it, a reserve of 64 more connections is answered with
    /// a tiny 503 `too_many_connections` (but `GET /livez` with 200) and closed; beyond that,
    /// connections are closed at once. Lowered at start when the open-file limit (raised to its
    /// hard limit) cannot hold it.
    #[arg(long, env = "CELESTIAL_MAX_CONNECTIONS", default_value_t = 2048)]
    pub max_connections: usize,

    /// A connection must deliver a complete request head (request line and headers) this soon
    /// after it opens, and after the first byte of each later head; slower connections (silent or
    /// slowloris) are closed. An unread request body after an early answer is read away for at
    /// most this long too.
    #[arg(long, env = "CELESTIAL_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// A keep-alive connection with no request for this long is closed (HTTP/2: GOAWAY). Longer
    /// than the usual 60 s idle timeout of load balancers, so they close first.
    #[arg(long, env = "CELESTIAL_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Largest request head (request line and headers) in bytes, at least 8192; larger get 431.
    #[arg(long, env = "CELESTIAL_MAX_HEADER_BYTES", default_value_t = 32 * 1024)]
    pub max_header_bytes: usize,

    /// Most header fields in a request; more get 431.
    #[arg(long, env = "CELESTIAL_MAX_HEADERS", default_value_t = crate::connection::HYPER_MAX_HEADERS)]
    pub max_headers: usize,

    // Security: API keys, TLS, CORS. All off by default.
    /// File of API keys, one per line (blank lines and `#` comments ignored). With it (or
    /// `--api-keys`) the routes of `--api-key-scope` need `Authorization: Bearer <key>` or
    /// `X-API-Key: <key>`, else 401. Re-read every `--reload-interval` when its content changes
    /// (a Kubernetes Secret mounted as a volume rotates without a restart). At start an unreadable
    /// or empty file is an error; later, an unreadable, empty or invalid file keeps the last good
    /// keys in force (with a warning).
    #[arg(long, env = server_env::API_KEYS_FILE)]
    pub api_keys_file: Option<PathBuf>,

    /// API keys, comma-separated, accepted besides those of `--api-keys-file` (fixed for the
    /// process). Prefer the file or the environment variable: a command line is visible to
    /// every local user.
    #[arg(
        long,
        env = "CELESTIAL_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<ApiKey>,

    /// Routes that need a key when keys are on, comma-separated: `predict` (POST /predict and
    /// /predict/batch; always), `metrics`, `model`, `docs` (/docs.json and /schema.json), `all`.
    /// /livez, /readyz, /healthz and the Swagger page itself stay open (with `docs`, the page
    /// cannot load its document: a browser fetches it without a key).
    #[arg(
        long,
        env = "CELESTIAL_API_KEY_SCOPE",
        value_enum,
        value_delimiter = ',',
        default_value = "predict"
    )]
    pub api_key_scope: Vec<KeyScope>,

    /// How often the API keys file and the TLS certificate and key are read for new content.
    #[arg(long, env = "CELESTIAL_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub reload_interval: Duration,

    /// TLS certificate chain (PEM, leaf first). With `--tls-key` the server serves HTTPS (TLS 1.2
    /// and 1.3; HTTP/2 or HTTP/1.1 by ALPN) on `--tls-port`. Both files are re-read every
    /// `--reload-interval`: a new pair serves new connections (open ones keep theirs); a pair that
    /// does not load, or whose key does not match, keeps the previous one in force (with a warning).
    #[arg(long, env = server_env::TLS_CERT, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC) of `--tls-cert`.
    #[arg(long, env = server_env::TLS_KEY, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Port of the HTTPS listener, with `--tls-cert` (0 picks a free port).
    #[arg(long, env = server_env::TLS_PORT, default_value_t = server_env::DEFAULT_TLS_PORT)]
    pub tls_port: u16,

    /// What the plain-HTTP listener on `--port` serves: `all` (every route; the default without
    /// TLS), `probes` (only /livez, /readyz and /healthz, for the kubelet and `healthcheck`; the
    /// default with TLS) or `off` (no plain listener; needs TLS).
    #[arg(long, env = "CELESTIAL_PLAIN_HTTP", value_enum)]
    pub plain_http: Option<PlainHttp>,

    /// Origins whose browser pages may call this server (CORS), comma-separated (e.g.
    /// `https://app.example.com`), or `*` for any. Empty (the default): no CORS headers, so
    /// browsers keep other origins out. Preflight requests (OPTIONS) are answered without a key.
    #[arg(long, env = "CELESTIAL_CORS_ALLOW_ORIGINS", value_delimiter = ',')]
    pub cors_allow_origins: Vec<String>,

    /// Methods other origins may use (with `--cors-allow-origins`).
    #[arg(
        long,
        env = "CELESTIAL_CORS_ALLOW_METHODS",
        value_delimiter = ',',
        default_value = "GET,POST"
    )]
    pub cors_allow_methods: Vec<String>,

    /// Request headers other origins may send (with `--cors-allow-origins`).
    #[arg(
        long,
        env = "CELESTIAL_CORS_ALLOW_HEADERS",
        value_delimiter = ',',
        default_value = auth::CORS_DEFAULT_HEADERS
    )]
    pub cors_allow_headers: Vec<String>,

    /// How long browsers may cache a preflight answer (`Access-Control-Max-Age`).
    #[arg(long, env = "CELESTIAL_CORS_MAX_AGE", default_value = "10m", value_parser = parse_duration)]
    pub cors_max_age: Duration,

    /// Service name reported in /schema.json (what BentoML clients see).
    #[arg(
        long,
        env = "CELESTIAL_SERVICE_NAME",
        default_value = "celestial_bodies_classifier"
    )]
    pub service_name: String,

    /// Path prefix a reverse proxy or ingress serves this app under, stripping it before forwarding
    /// (e.g. `/celestial`): the OpenAPI `servers` entry and redirects carry it, so the Swagger UI's
    /// "Try it out" works behind the proxy. A request's valid `X-Forwarded-Prefix` header overrides it.
    #[arg(long, env = "CELESTIAL_ROOT_PATH", default_value = "", hide_default_value = true, value_parser = crate::root_path::parse)]
    pub root_path: String,

    /// Log format.
    #[arg(long, env = "CELESTIAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter (tracing EnvFilter syntax, e.g. `info` or `celestial_server=debug`).
    #[arg(long, env = "CELESTIAL_LOG", default_value = "info")]
    pub log_filter: String,

    /// File the one-line reason of a failed start (or an abnormal stop) is also written to, for
    /// Kubernetes' termination message (best effort; empty: none).
    #[arg(
        long,
        env = "CELESTIAL_TERMINATION_LOG",
        default_value = "/dev/termination-log",
        value_parser = clap::builder::ValueParser::os_string()
    )]
    pub termination_log: std::ffi::OsString,
}

impl Config {
    /// Defaults with the given port, as if no flag or environment variable was set (handy for tests).
    pub fn with_defaults() -> Config {
        Cli::try_parse_from(["celestial-server"])
            .map(|cli| cli.config)
            .unwrap_or_else(|e| unreachable!("defaults must parse: {e}"))
    }

    /// Parse a config from explicit arguments (without the program name), ignoring nothing: environment
    /// variables still apply, like on the command line.
    pub fn from_args<I, S>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once(std::ffi::OsString::from("celestial-server"))
            .chain(args.into_iter().map(Into::into));
        Cli::try_parse_from(argv).map(|cli| cli.config)
    }

    /// Number of inference workers after resolving `0 = one per core`.
    pub fn effective_workers(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            cores()
        }
    }

    /// Whether the server serves HTTPS (`--tls-cert` and `--tls-key`).
    pub fn tls_enabled(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }

    /// What the plain-HTTP listener serves, after resolving the default (`all` without TLS,
    /// `probes` with it).
    pub fn effective_plain_http(&self) -> PlainHttp {
        match self.plain_http {
            Some(p) => p,
            None if self.tls_enabled() => PlainHttp::Probes,
            None => PlainHttp::All,
        }
    }

    /// Number of HTTP runtime threads after resolving `0 = one per 4 cores, at least one`.
    pub fn effective_http_threads(&self) -> usize {
        if self.http_threads > 0 {
            self.http_threads
        } else {
            cores().div_ceil(4)
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ColorMode, Layout};
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_env_var_and_help() {
        let cmd = Cli::command();
        for arg in cmd.get_arguments() {
            if arg.is_positional() || ["help", "version"].contains(&arg.get_id().as_str()) {
                continue;
            }
            assert!(
                arg.get_env().is_some(),
                "flag --{} has no env var",
                arg.get_id()
            );
            assert!(
                arg.get_help().is_some(),
                "flag --{} has no help",
                arg.get_id()
            );
        }
    }

    #[test]
    fn connection_help_states_the_layer_constants() {
        use crate::connection::{MIN_HEADER_BYTES, OVERFLOW_RESERVE};
        let cmd = Cli::command();
        let help = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default()
        };
        let reserve = format!("a reserve of {OVERFLOW_RESERVE} more");
        assert!(help("max_connections").contains(&reserve));
        let min = format!("at least {MIN_HEADER_BYTES}");
        assert!(help("max_header_bytes").contains(&min));
    }

    #[test]
    fn thread_counts_resolve() {
        let auto = Config::from_args(["--workers", "0", "--http-threads", "0"]).unwrap();
        assert_eq!(auto.effective_workers(), cores());
        assert_eq!(auto.effective_http_threads(), cores().div_ceil(4));
        assert!(auto.effective_http_threads() >= 1);
        let set = Config::from_args(["--workers", "3", "--http-threads", "2"]).unwrap();
        assert_eq!(
            (set.effective_workers(), set.effective_http_threads()),
            (3, 2)
        );
    }

    #[test]
    fn decode_budget_has_a_floor() {
        assert_eq!(Config::with_defaults().max_decode_bytes, 64 << 20);
        let set = Config::from_args(["--max-decode-bytes", "8388608"]).unwrap();
        assert_eq!(set.max_decode_bytes, 8 << 20);
        assert!(Config::from_args(["--max-decode-bytes", "1000"]).is_err());
    }

    #[test]
    fn overrides_parse() {
        let c = Config::from_args([
            "--labels",
            "a,b,c",
            "--input-layout",
            "NHWC",
            "--color-mode",
            "grayscale",
            "--port",
            "0",
        ])
        .unwrap();
        assert_eq!(
            c.model_overrides.labels.as_deref().unwrap(),
            ["a", "b", "c"]
        );
        assert_eq!(c.model_overrides.input_layout, Some(Layout::Nhwc));
        assert_eq!(c.model_overrides.color_mode, Some(ColorMode::Grayscale));
        assert!(c.effective_workers() >= 1);
    }
}
