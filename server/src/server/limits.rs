//! The settings no server could serve with, refused once before anything is bound or loaded:
//! [`CheckedConfig::new`] is the only check, and [`bind`](super::bind), [`run`](super::run) and
//! [`serve`](super::serve) take its result, so none of them checks again.

use std::ops::Deref;

use super::error::ServerError;
use crate::config::{Config, PlainHttp};
use crate::connection;

/// A configuration whose listener settings and limits can serve.
#[derive(Debug, Clone)]
pub struct CheckedConfig(Config);

impl CheckedConfig {
    /// `config` when it can serve; else the first setting that cannot, listeners before limits
    /// (each refusal is one line naming its flags).
    pub fn new(config: Config) -> Result<CheckedConfig, ServerError> {
        listeners(&config)
            .and_then(|()| limits(&config))
            .and_then(|()| {
                config
                    .traces
                    .settings()
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .map_err(ServerError::Config)?;
        Ok(CheckedConfig(config))
    }

    /// The configuration itself.
    pub fn into_inner(self) -> Config {
        self.0
    }
}

impl Deref for CheckedConfig {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0
    }
}

/// Listener settings that cannot serve: no listener at all, or HTTP and HTTPS on one port.
fn listeners(config: &Config) -> Result<(), String> {
    if config.effective_plain_http() == PlainHttp::Off && !config.tls_enabled() {
        return Err(
            "--plain-http off needs --tls-cert and --tls-key: the server would not listen at all"
                .into(),
        );
    }
    if config.tls_enabled()
        && config.plain_http != Some(PlainHttp::Off)
        && config.port == config.tls_port
        && config.port != 0
    {
        return Err(format!(
            "--port and --tls-port are both {}: HTTP and HTTPS need separate ports",
            config.port
        ));
    }
    Ok(())
}

/// Limits no request could pass.
fn limits(config: &Config) -> Result<(), String> {
    let at_least_one = |flag: &str, value: usize| match value {
        0 => Err(format!("{flag} must be at least 1")),
        _ => Ok(()),
    };
    at_least_one("--max-concurrency", config.max_concurrency)?;
    at_least_one("--max-uploads", config.max_uploads)?;
    if config.max_body_memory < 2 * config.max_body_bytes {
        return Err(format!(
            "--max-body-memory ({}) must be at least 2 x --max-body-bytes ({}): each body counts twice its size",
            config.max_body_memory, config.max_body_bytes
        ));
    }
    at_least_one("--max-connections", config.max_connections)?;
    if config.max_header_bytes < connection::MIN_HEADER_BYTES {
        return Err(format!(
            "--max-header-bytes must be at least {}",
            connection::MIN_HEADER_BYTES
        ));
    }
    at_least_one("--max-headers", config.max_headers)?;
    at_least_one("--max-batch-images", config.max_batch_images)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one line the binary prints after `celestial-server: error: ` for `args`, or `None` when
    /// they can serve.
    fn refusal(args: &[&str]) -> Option<String> {
        let config = Config::from_args(args.iter().copied()).expect("the flags parse");
        CheckedConfig::new(config).err().map(|e| e.to_string())
    }

    const TLS: [&str; 4] = ["--tls-cert", "c.pem", "--tls-key", "k.pem"];

    #[test]
    fn the_defaults_and_the_smallest_limits_serve() {
        assert_eq!(refusal(&[]), None);
        let smallest = [
            "--max-concurrency=1",
            "--max-uploads=1",
            "--max-body-bytes=10",
            "--max-body-memory=20",
            "--max-connections=1",
            "--max-header-bytes=8192",
            "--max-headers=1",
            "--max-batch-images=1",
        ];
        assert_eq!(refusal(&smallest), None);
        let config = Config::from_args(smallest).unwrap();
        assert_eq!(CheckedConfig::new(config).unwrap().max_headers, 1);
    }

    #[test]
    fn each_limit_no_request_could_pass_is_refused_with_its_flag() {
        for (args, message) in [
            (
                &["--max-concurrency", "0"][..],
                "--max-concurrency must be at least 1",
            ),
            (&["--max-uploads", "0"], "--max-uploads must be at least 1"),
            (
                &["--max-body-bytes", "100", "--max-body-memory", "199"],
                "--max-body-memory (199) must be at least 2 x --max-body-bytes (100): each body counts twice its size",
            ),
            (
                &["--max-connections", "0"],
                "--max-connections must be at least 1",
            ),
            (
                &["--max-header-bytes", "8191"],
                "--max-header-bytes must be at least 8192",
            ),
            (&["--max-headers", "0"], "--max-headers must be at least 1"),
            (
                &["--max-batch-images", "0"],
                "--max-batch-images must be at least 1",
            ),
        ] {
            assert_eq!(
                refusal(args).as_deref(),
                Some(format!("invalid configuration: {message}").as_str()),
                "{args:?}"
            );
        }
    }

    #[test]
    fn listener_settings_that_cannot_serve_are_refused() {
        let none = refusal(&["--plain-http", "off"]).unwrap();
        assert_eq!(
            none,
            "invalid configuration: --plain-http off needs --tls-cert and --tls-key: the server would not listen at all"
        );
        let same = [&TLS[..], &["--port", "8443", "--tls-port", "8443"]].concat();
        assert_eq!(
            refusal(&same).unwrap(),
            "invalid configuration: --port and --tls-port are both 8443: HTTP and HTTPS need separate ports"
        );
        // One port is fine when only one listener uses it, or when both pick a free port.
        let off = [&same[..], &["--plain-http", "off"]].concat();
        assert_eq!(refusal(&off), None);
        let free = [&TLS[..], &["--port", "0", "--tls-port", "0"]].concat();
        assert_eq!(refusal(&free), None);
        assert_eq!(refusal(&["--port", "3443", "--tls-port", "3443"]), None);
    }

    #[test]
    fn listeners_are_checked_before_limits_and_limits_in_flag_order() {
        let both = refusal(&["--plain-http", "off", "--max-concurrency", "0"]).unwrap();
        assert!(both.contains("--plain-http off"), "{both}");
        let two = refusal(&["--max-batch-images", "0", "--max-uploads", "0"]).unwrap();
        assert!(two.contains("--max-uploads"), "{two}");
    }
}
