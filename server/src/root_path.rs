//! Serving under a path prefix: behind a reverse proxy or ingress that mounts the app at e.g.
//! `/celestial/` and strips the prefix before forwarding (nginx `location /celestial/ {
//! proxy_pass http://app:3000/; }`).
//!
//! The routes never change. What changes is what the server says about where it lives, for the
//! request at hand: the prefix is the request's `X-Forwarded-Prefix` header when a proxy sends a
//! valid one, else `--root-path`. With a prefix, `GET /docs.json` carries the OpenAPI `servers`
//! entry `[{"url": "<prefix>"}]` (so Swagger UI's "Try it out" posts to `<prefix>/predict`), and a
//! redirect to an absolute path gets the prefix in front. The Swagger UI page loads `./docs.json`
//! and its assets relative to itself, so it needs nothing more. `/docs.json` answers with
//! `Vary: X-Forwarded-Prefix`, so caches keep the variants apart.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

/// The header a reverse proxy uses to tell the app the prefix it is served under.
pub const FORWARDED_PREFIX: &str = "x-forwarded-prefix";

/// Longest accepted prefix, in bytes.
pub const MAX_LEN: usize = 256;

/// Largest `/docs.json` body the middleware rewrites (the document is a few tens of KiB).
const MAX_DOC_BYTES: usize = 4 * 1024 * 1024;

/// Why a `--root-path` (or an `X-Forwarded-Prefix` header, which is then ignored) is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RootPathError {
    #[error("the root path `{0}` must start with `/` (e.g. /celestial)")]
    NotAbsolute(String),
    #[error("the root path `{0}` may only contain letters, digits, `/` and `-._~%`")]
    InvalidCharacter(String),
    #[error("the root path `{0}` must not contain empty, `.` or `..` segments")]
    InvalidSegment(String),
    #[error("the root path is {0} bytes long; at most {MAX_LEN} are allowed")]
    TooLong(usize),
}

/// Check and normalise a prefix: `""` and `"/"` mean none (`""`); otherwise `/a/b` without a
/// trailing slash. Used as the clap parser of `--root-path` and for `X-Forwarded-Prefix`.
pub fn parse(s: &str) -> Result<String, RootPathError> {
    let s = s.trim();
    if s.len() > MAX_LEN {
        return Err(RootPathError::TooLong(s.len()));
    }
    if s.is_empty() || s == "/" {
        return Ok(String::new());
    }
    if !s.starts_with('/') {
        return Err(RootPathError::NotAbsolute(s.to_string()));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~%".contains(&b))
    {
        return Err(RootPathError::InvalidCharacter(s.to_string()));
    }
    let trimmed = s.strip_suffix('/').unwrap_or(s);
    if trimmed[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(RootPathError::InvalidSegment(s.to_string()));
    }
    Ok(trimmed.to_string())
}

/// The prefix for one request: a valid `X-Forwarded-Prefix`, else the configured one.
pub fn effective(headers: &HeaderMap, configured: &str) -> String {
    match headers.get(FORWARDED_PREFIX).map(|v| v.to_str().map(parse)) {
        Some(Ok(Ok(prefix))) => prefix,
        Some(_) => {
            tracing::debug!("ignoring an invalid X-Forwarded-Prefix header");
            configured.to_string()
        }
        None => configured.to_string(),
    }
}

/// `doc` with `servers` set to the prefix (unchanged when it is not a JSON object).
pub fn with_servers(doc: &[u8], prefix: &str) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(doc).ok()?;
    let obj = v.as_object_mut()?;
    obj.insert(
        "servers".into(),
        serde_json::json!([{"url": prefix, "description": "This service, under the path prefix it is served at."}]),
    );
    serde_json::to_vec(&v).ok()
}

/// The middleware (`axum::middleware::from_fn_with_state(configured_prefix, root_path::middleware)`).
pub async fn middleware(State(configured): State<Arc<str>>, req: Request, next: Next) -> Response {
    let prefix = effective(req.headers(), &configured);
    let is_doc = req.method() == Method::GET && req.uri().path() == crate::routes::DOCS_JSON;
    let mut resp = next.run(req).await;
    if is_doc {
        resp.headers_mut()
            .append(header::VARY, HeaderValue::from_static("X-Forwarded-Prefix"));
    }
    if prefix.is_empty() {
        return resp;
    }
    if resp.status().is_redirection()
        && let Some(location) = resp
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
        && location.starts_with('/')
        && !location.starts_with("//")
        && let Ok(prefixed) = HeaderValue::from_str(&format!("{prefix}{location}"))
    {
        resp.headers_mut().insert(header::LOCATION, prefixed);
    }
    if is_doc && resp.status() == StatusCode::OK {
        let (mut parts, body) = resp.into_parts();
        let bytes = match axum::body::to_bytes(body, MAX_DOC_BYTES).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read /docs.json to add the servers entry");
                return Response::from_parts(parts, Body::empty());
            }
        };
        let body = match with_servers(&bytes, &prefix) {
            Some(doc) => {
                parts.headers.remove(header::CONTENT_LENGTH);
                Body::from(doc)
            }
            None => Body::from(bytes),
        };
        return Response::from_parts(parts, body);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(parse("").unwrap(), "");
        assert_eq!(parse("/").unwrap(), "");
        assert_eq!(parse("/celestial").unwrap(), "/celestial");
        assert_eq!(parse("/celestial/").unwrap(), "/celestial");
        assert_eq!(parse(" /a/b-c_d.e~f%20 ").unwrap(), "/a/b-c_d.e~f%20");
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert_eq!(
            parse("celestial"),
            Err(RootPathError::NotAbsolute("celestial".into()))
        );
        assert!(matches!(
            parse("/a\"b"),
            Err(RootPathError::InvalidCharacter(_))
        ));
        assert!(matches!(
            parse("/a<script>"),
            Err(RootPathError::InvalidCharacter(_))
        ));
        assert!(matches!(
            parse("/a b"),
            Err(RootPathError::InvalidCharacter(_))
        ));
        assert!(matches!(
            parse("//evil.example"),
            Err(RootPathError::InvalidSegment(_))
        ));
        assert!(matches!(
            parse("/a/../b"),
            Err(RootPathError::InvalidSegment(_))
        ));
        assert!(matches!(
            parse("/a/./b"),
            Err(RootPathError::InvalidSegment(_))
        ));
        assert!(matches!(
            parse(&format!("/{}", "a".repeat(MAX_LEN))),
            Err(RootPathError::TooLong(_))
        ));
    }

    #[test]
    fn the_header_wins_when_valid() {
        let mut h = HeaderMap::new();
        assert_eq!(effective(&h, "/conf"), "/conf");
        h.insert(FORWARDED_PREFIX, HeaderValue::from_static("/proxy/"));
        assert_eq!(effective(&h, "/conf"), "/proxy");
        h.insert(FORWARDED_PREFIX, HeaderValue::from_static("no-slash"));
        assert_eq!(effective(&h, "/conf"), "/conf");
        h.insert(FORWARDED_PREFIX, HeaderValue::from_static("/"));
        assert_eq!(effective(&h, "/conf"), "");
    }

    fn app(configured: &str) -> Router {
        Router::new()
            .route(
                "/docs.json",
                get(|| async { axum::Json(serde_json::json!({"openapi": "3.1.0", "paths": {}})) }),
            )
            .route(
                "/docs/",
                get(|| async { axum::response::Redirect::permanent("/docs") }),
            )
            .route(
                "/away",
                get(|| async { axum::response::Redirect::temporary("https://example.invalid/x") }),
            )
            .layer(axum::middleware::from_fn_with_state(
                Arc::<str>::from(configured),
                middleware,
            ))
    }

    async fn call(app: Router, path: &str, prefix_header: Option<&'static str>) -> Response {
        let mut req = axum::http::Request::builder().uri(path);
        if let Some(p) = prefix_header {
            req = req.header(FORWARDED_PREFIX, p);
        }
        app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap()
    }

    async fn doc(resp: Response) -> serde_json::Value {
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::VARY], "X-Forwarded-Prefix");
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn without_a_prefix_the_document_is_unchanged() {
        let d = doc(call(app(""), "/docs.json", None).await).await;
        assert_eq!(d, serde_json::json!({"openapi": "3.1.0", "paths": {}}));
        let r = call(app(""), "/docs/", None).await;
        assert_eq!(r.headers()[header::LOCATION], "/docs");
    }

    #[tokio::test]
    async fn the_configured_root_path_goes_into_servers_and_redirects() {
        let d = doc(call(app("/celestial"), "/docs.json", None).await).await;
        assert_eq!(d["servers"][0]["url"], "/celestial");
        assert_eq!(d["openapi"], "3.1.0");
        let r = call(app("/celestial"), "/docs/", None).await;
        assert_eq!(r.headers()[header::LOCATION], "/celestial/docs");
        let r = call(app("/celestial"), "/away", None).await;
        assert_eq!(r.headers()[header::LOCATION], "https://example.invalid/x");
    }

    #[tokio::test]
    async fn x_forwarded_prefix_overrides_and_invalid_ones_are_ignored() {
        let d = doc(call(app(""), "/docs.json", Some("/from-proxy")).await).await;
        assert_eq!(d["servers"][0]["url"], "/from-proxy");
        let d = doc(call(app("/conf"), "/docs.json", Some("/a\"b")).await).await;
        assert_eq!(d["servers"][0]["url"], "/conf");
        let d = doc(call(app(""), "/docs.json", Some("//evil.example")).await).await;
        assert!(d.get("servers").is_none());
    }
}
