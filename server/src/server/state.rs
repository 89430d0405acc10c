//! The shared state a server runs with, from the configuration: the HTTP limits, the documents,
//! the API keys and the CORS rules, and the task that keeps the keys current while it runs.

use std::sync::Arc;

use tokio::task::JoinHandle;

use super::error::ServerError;
use crate::auth::{self, ApiKeys};
use crate::classifier::Classifier;
use crate::config::Config;
use crate::docs::{DocLimits, documents_secured};
use crate::http::{AppState, Limits, Security};
use crate::reload;

/// The shared state of a server with `config`'s limits, without API keys or CORS (what the fuzz
/// targets serve).
pub fn app_state(config: &Config, classifier: Arc<dyn Classifier>) -> AppState {
    secured_state(config, classifier, Security::default())
}

/// The API keys and CORS rules of `config`: the keys file read now (an unreadable or empty file
/// is an error), the CORS values checked.
pub fn security(config: &Config) -> Result<Security, ServerError> {
    let file_text = match &config.api_keys_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
            ServerError::Config(format!(
                "cannot read the API keys file {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    let api_keys = ApiKeys::new(&config.api_keys, file_text.as_deref())?.map(Arc::new);
    Ok(Security {
        api_keys,
        protected: auth::protected_routes(&config.api_key_scope),
        cors: cors_layer(config)?,
    })
}

/// The CORS rules of `--cors-allow-*`; `None` when no origin is allowed.
fn cors_layer(config: &Config) -> Result<Option<tower_http::cors::CorsLayer>, ServerError> {
    use axum::http::{HeaderName, HeaderValue, Method};
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<&str> = config
        .cors_allow_origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let bad = |what: &str, v: &str| {
        ServerError::Config(format!("--cors-allow-{what}: {v:?} is not valid"))
    };
    let allow_origin = if origins == ["*"] {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| match *o {
                "*" => Err(ServerError::Config(
                    "--cors-allow-origins: `*` must be alone (any origin), not in a list".into(),
                )),
                o => HeaderValue::from_str(o.trim_end_matches('/')).map_err(|_| bad("origins", o)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(list)
    };
    let methods = config
        .cors_allow_methods
        .iter()
        .map(|m| {
            Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
                .map_err(|_| bad("methods", m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let headers = config
        .cors_allow_headers
        .iter()
        .map(|h| HeaderName::from_bytes(h.trim().as_bytes()).map_err(|_| bad("headers", h)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(methods)
            .allow_headers(headers)
            .expose_headers([
                HeaderName::from_static("x-request-id"),
                axum::http::header::RETRY_AFTER,
                axum::http::header::WWW_AUTHENTICATE,
            ])
            .max_age(config.cors_max_age),
    ))
}

/// The shared state of a server with `config`'s limits and `security`.
pub fn secured_state(
    config: &Config,
    classifier: Arc<dyn Classifier>,
    security: Security,
) -> AppState {
    let doc_limits = DocLimits {
        max_body_bytes: config.max_body_bytes,
        max_image_pixels: config.max_image_pixels,
        max_batch: config.max_batch_images,
        body_timeout: config.body_timeout,
        body_min_rate: config.body_min_rate,
    };
    let protected: &[&str] = match security.api_keys {
        Some(_) => &security.protected,
        None => &[],
    };
    let documents = documents_secured(
        classifier.as_ref(),
        &config.service_name,
        &doc_limits,
        protected,
    );
    let limits = Limits {
        max_body_bytes: config.max_body_bytes,
        max_batch_images: config.max_batch_images,
        max_concurrency: config.max_concurrency,
        max_queue: config.max_queue.unwrap_or(usize::MAX),
        max_queue_wait: config.max_queue_wait,
        request_timeout: config.request_timeout,
        retry_after_seconds: config.retry_after_seconds,
        body_timeout: config.body_timeout,
        body_min_rate: config.body_min_rate,
        max_uploads: config.max_uploads,
        max_body_memory: config.max_body_memory,
    };
    AppState::new(classifier, limits, documents, &config.drift).with_security(security)
}

/// The task that re-reads `--api-keys-file` (keys on and a file given).
pub(super) fn keys_reload(config: &Config, state: &Arc<AppState>) -> Option<JoinHandle<()>> {
    let keys = Arc::clone(state.security.api_keys.as_ref()?);
    let path = config.api_keys_file.clone()?;
    let initial = reload::read_all(std::slice::from_ref(&path)).ok()?;
    let metrics_state = Arc::clone(state);
    let counted = Arc::clone(state);
    Some(reload::spawn(
        "API keys",
        vec![path],
        config.reload_interval,
        initial,
        move |contents| {
            let text = std::str::from_utf8(&contents[0])
                .map_err(|_| "the file is not UTF-8".to_string())?;
            let n = keys.reload(text).map_err(|e| e.to_string())?;
            metrics_state.metrics.set_api_keys(keys.len());
            Ok(format!("{n} key(s) from the file"))
        },
        move |ok| counted.metrics.reloaded("api_keys", ok),
    ))
}
