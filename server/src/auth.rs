//! API keys: the keys a server accepts, kept only as SHA-256 hashes ([`ApiKeys`]),
//! how a request presents one ([`check`]: `Authorization: Bearer <key>` or `X-API-Key: <key>`),
//! why a request is refused ([`AuthFailure`]), and which routes need a key ([`KeyScope`]).
//!
//! Keys come from `--api-keys` (fixed for the process) and `--api-keys-file` (re-read when its
//! content changes, see [`crate::reload`]). A presented key is hashed and compared with every
//! stored hash in constant time, so neither the keys nor how much of one a guess got right leak
//! through timing; the keys themselves are never stored, logged or counted.
//!
//! Imports only [`crate::routes`] (the routes of each scope).

use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::routes;

/// The header that carries a key besides `Authorization: Bearer` (as clients spell it).
pub const API_KEY_HEADER: &str = "X-API-Key";
/// The authentication scheme of the `Authorization` header (and of `WWW-Authenticate`).
pub const BEARER: &str = "Bearer";
/// The request headers a browser page on another origin needs to call the prediction routes: the
/// default of `--cors-allow-headers` (the unit tests check it names both key headers).
pub const CORS_DEFAULT_HEADERS: &str = "authorization,content-type,x-api-key";

/// An API key as given on the command line or in the environment; its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl std::str::FromStr for ApiKey {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<ApiKey, Self::Err> {
        Ok(ApiKey(s.to_string()))
    }
}

/// A key's SHA-256 hash.
type Hash = [u8; 32];

fn hash(key: &[u8]) -> Hash {
    Sha256::digest(key).into()
}

/// Why a request that needs a key is refused (the `reason` of its rejection metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` and no `X-API-Key` header.
    Missing,
    /// A key was presented but is not one of the server's.
    Invalid,
    /// An `Authorization` header that is not `Bearer <key>`, or a key that is not visible ASCII.
    Malformed,
}

/// Which routes need a key when keys are on (`--api-key-scope`); the prediction routes always do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum KeyScope {
    /// `POST /predict`, `POST /predict/batch` and the Open Inference Protocol's inference (REST
    /// and gRPC `ModelInfer`; always included).
    Predict,
    /// `GET /metrics`.
    Metrics,
    /// `GET /model` and the Open Inference Protocol's metadata (`GET /v2`, `GET
    /// /v2/models/{name}[/versions/{version}]`, gRPC `ServerMetadata` and `ModelMetadata`).
    Model,
    /// `GET /docs.json` and `GET /schema.json` (the Swagger page itself and its assets stay open:
    /// a browser cannot send a key to load a page).
    Docs,
    /// Every scope above.
    All,
}

impl KeyScope {
    /// The routes of this scope.
    pub fn routes(self) -> &'static [&'static str] {
        match self {
            KeyScope::Predict => &routes::UPLOADS,
            KeyScope::Metrics => &[routes::METRICS],
            KeyScope::Model => &[
                routes::MODEL,
                routes::MODEL_DRIFT,
                routes::V2_SERVER,
                routes::V2_MODEL,
                routes::V2_MODEL_VERSION,
            ],
            KeyScope::Docs => &[routes::DOCS_JSON, routes::SCHEMA_JSON],
            KeyScope::All => &[
                routes::PREDICT,
                routes::PREDICT_BATCH,
                routes::V2_INFER,
                routes::V2_INFER_VERSION,
                routes::METRICS,
                routes::MODEL,
                routes::MODEL_DRIFT,
                routes::V2_SERVER,
                routes::V2_MODEL,
                routes::V2_MODEL_VERSION,
                routes::DOCS_JSON,
                routes::SCHEMA_JSON,
            ],
        }
    }
}

/// The routes that need a key under `scopes` (the prediction routes always).
pub fn protected_routes(scopes: &[KeyScope]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = KeyScope::Predict.routes().to_vec();
    for s in scopes {
        for r in s.routes() {
            if !out.contains(r) {
                out.push(r);
            }
        }
    }
    out
}

/// Why a keys file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(
        "the API keys file has no key (one key per line; blank lines and # comments are ignored)"
    )]
    Empty,
    #[error("line {line} of the API keys file is not a usable key: {reason}")]
    BadKey { line: usize, reason: &'static str },
    #[error("--api-keys has an empty or invalid key: {0}")]
    BadListedKey(&'static str),
}

/// Why `key` cannot be a key: it must be 1..=4096 visible ASCII characters (what fits a header).
fn unusable(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("it is empty")
    } else if key.len() > 4096 {
        Some("it is longer than 4096 characters")
    } else if !key.bytes().all(|b| b.is_ascii_graphic()) {
        Some("it has a space or a character that is not visible ASCII")
    } else {
        None
    }
}

/// The hashes of the keys in a keys file's `text`: one key per line, surrounding white space
/// trimmed, blank lines and lines starting with `#` ignored; at least one key.
pub fn parse_keys_file(text: &str) -> Result<Vec<Hash>, KeysError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let key = line.trim();
        if key.is_empty() || key.starts_with('#') {
            continue;
        }
        if let Some(reason) = unusable(key) {
            return Err(KeysError::BadKey {
                line: i + 1,
                reason,
            });
        }
        out.push(hash(key.as_bytes()));
    }
    if out.is_empty() {
        return Err(KeysError::Empty);
    }
    Ok(out)
}

/// The keys a server accepts: those of `--api-keys` (fixed) and those of the keys file (replaced
/// as a whole when it changes).
pub struct ApiKeys {
    listed: Vec<Hash>,
    from_file: RwLock<Arc<Vec<Hash>>>,
}

impl ApiKeys {
    /// The keys of `listed` (`--api-keys`) and of the file's `file_text`, if any; `None` when there
    /// is neither (keys are off).
    pub fn new(listed: &[ApiKey], file_text: Option<&str>) -> Result<Option<ApiKeys>, KeysError> {
        let listed = listed
            .iter()
            .map(|ApiKey(k)| match unusable(k.trim()) {
                Some(reason) => Err(KeysError::BadListedKey(reason)),
                None => Ok(hash(k.trim().as_bytes())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let from_file = file_text.map(parse_keys_file).transpose()?;
        if listed.is_empty() && from_file.is_none() {
            return Ok(None);
        }
        Ok(Some(ApiKeys {
            listed,
            from_file: RwLock::new(Arc::new(from_file.unwrap_or_default())),
        }))
    }

    /// Replace the keys of the file by those of its new `text`; on an error the old keys stay.
    pub fn reload(&self, text: &str) -> Result<usize, KeysError> {
        let keys = Arc::new(parse_keys_file(text)?);
        let n = keys.len();
        if let Ok(mut current) = self.from_file.write() {
            *current = keys;
        }
        Ok(n)
    }

    /// How many keys are accepted now.
    pub fn len(&self) -> usize {
        self.listed.len() + self.file_keys().len()
    }

    /// Whether no key is accepted (never, once constructed; for clippy's `len_without_is_empty`).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn file_keys(&self) -> Arc<Vec<Hash>> {
        match self.from_file.read() {
            Ok(k) => Arc::clone(&k),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Whether `key` is one of the keys: its hash compared with every stored hash, in constant
    /// time and without stopping at a match.
    pub fn accepts(&self, key: &[u8]) -> bool {
        let presented = hash(key);
        let file = self.file_keys();
        let mut found = subtle::Choice::from(0);
        for stored in self.listed.iter().chain(file.iter()) {
            found |= stored.ct_eq(&presented);
        }
        found.into()
    }
}

/// The key a request presents, if any: the token of `Authorization: Bearer <token>` (the scheme
/// in any case), else the `X-API-Key` header. `Err` for a malformed `Authorization` header when
/// no `X-API-Key` header is there instead.
fn presented(headers: &HeaderMap) -> Result<Option<&[u8]>, AuthFailure> {
    let mut malformed = false;
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        match bytes.split_at_checked(BEARER.len()) {
            Some((scheme, rest))
                if scheme.eq_ignore_ascii_case(BEARER.as_bytes())
                    && rest.first() == Some(&b' ') =>
            {
                let token = rest.trim_ascii();
                if !token.is_empty() && token.iter().all(u8::is_ascii_graphic) {
                    return Ok(Some(token));
                }
                malformed = true;
            }
            _ => malformed = true,
        }
    }
    if let Some(value) = headers.get(API_KEY_HEADER) {
        let token = value.as_bytes().trim_ascii();
        return if !token.is_empty() && token.iter().all(u8::is_ascii_graphic) {
            Ok(Some(token))
        } else {
            Err(AuthFailure::Malformed)
        };
    }
    if malformed {
        Err(AuthFailure::Malformed)
    } else {
        Ok(None)
    }
}

/// Whether a request with `headers` may use a protected route.
pub fn check(keys: &ApiKeys, headers: &HeaderMap) -> Result<(), AuthFailure> {
    match presented(headers)? {
        None => Err(AuthFailure::Missing),
        Some(key) if keys.accepts(key) => Ok(()),
        Some(_) => Err(AuthFailure::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn keys() -> ApiKeys {
        ApiKeys::new(
            &["listed-key".parse().unwrap()],
            Some("# comment\n\n  file-key-1  \nfile-key-2\n"),
        )
        .unwrap()
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn keys_file_lines_comments_and_errors() {
        assert_eq!(parse_keys_file("a\n# b\n\n c \r\n").unwrap().len(), 2);
        assert!(matches!(
            parse_keys_file("# only\n\n"),
            Err(KeysError::Empty)
        ));
        assert!(matches!(parse_keys_file(""), Err(KeysError::Empty)));
        assert!(matches!(
            parse_keys_file("ok\nhas space\n"),
            Err(KeysError::BadKey { line: 2, .. })
        ));
        assert!(ApiKeys::new(&[], None).unwrap().is_none(), "no keys: off");
        assert!(ApiKeys::new(&["".parse().unwrap()], None).is_err());
        let key: ApiKey = "secret".parse().unwrap();
        assert!(
            !format!("{key:?}").contains("secret"),
            "Debug never shows a key"
        );
    }

    #[test]
    fn only_the_keys_pass_and_reload_replaces_the_file_keys() {
        let k = keys();
        assert_eq!(k.len(), 3);
        for key in ["listed-key", "file-key-1", "file-key-2"] {
            assert!(k.accepts(key.as_bytes()), "{key}");
        }
        for key in ["", "file-key", "file-key-10", "LISTED-KEY", "# comment"] {
            assert!(!k.accepts(key.as_bytes()), "{key}");
        }
        assert_eq!(k.reload("new-key\n").unwrap(), 1);
        assert!(k.accepts(b"new-key") && k.accepts(b"listed-key"));
        assert!(!k.accepts(b"file-key-1"), "the old file keys are gone");
        assert!(k.reload("\n# nothing\n").is_err());
        assert!(k.accepts(b"new-key"), "a bad file keeps the last keys");
    }

    #[test]
    fn headers_bearer_x_api_key_and_failures() {
        let k = keys();
        let ok = |h: &[(&str, &str)]| check(&k, &headers(h));
        assert_eq!(ok(&[("authorization", "Bearer listed-key")]), Ok(()));
        assert_eq!(ok(&[("authorization", "bearer  file-key-1 ")]), Ok(()));
        assert_eq!(ok(&[(API_KEY_HEADER, "file-key-2")]), Ok(()));
        assert_eq!(ok(&[("x-api-key", "file-key-2")]), Ok(()));
        assert_eq!(ok(&[]), Err(AuthFailure::Missing));
        assert_eq!(
            ok(&[("authorization", "Bearer nope")]),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(ok(&[(API_KEY_HEADER, "nope")]), Err(AuthFailure::Invalid));
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Bearer",
            "Bearer ",
            "Bearerlisted-key",
            "listed-key",
        ] {
            assert_eq!(
                ok(&[("authorization", bad)]),
                Err(AuthFailure::Malformed),
                "{bad}"
            );
        }
        // A proxy's Basic credentials do not hide a valid X-API-Key.
        assert_eq!(
            ok(&[
                ("authorization", "Basic abc"),
                (API_KEY_HEADER, "listed-key")
            ]),
            Ok(())
        );
    }

    #[test]
    fn scopes_always_protect_the_prediction_routes() {
        assert_eq!(protected_routes(&[]), routes::UPLOADS.to_vec());
        let all = protected_routes(&[KeyScope::All]);
        for r in [
            routes::METRICS,
            routes::MODEL,
            routes::DOCS_JSON,
            routes::SCHEMA_JSON,
        ] {
            assert!(all.contains(&r), "{r}");
        }
        for open in [
            routes::LIVEZ,
            routes::READYZ,
            routes::HEALTHZ,
            routes::DOCS,
            routes::ROOT,
        ] {
            assert!(!all.contains(&open), "{open}");
        }
        let metrics = protected_routes(&[KeyScope::Metrics]);
        assert_eq!(metrics.len(), routes::UPLOADS.len() + 1);
        let model = protected_routes(&[KeyScope::Model]);
        for r in [
            routes::MODEL,
            routes::V2_SERVER,
            routes::V2_MODEL,
            routes::V2_INFER,
        ] {
            assert!(model.contains(&r), "{r}");
        }
        assert!(!model.contains(&routes::V2_MODEL_READY));
    }

    #[test]
    fn the_default_cors_headers_name_both_key_headers() {
        let list: Vec<String> = CORS_DEFAULT_HEADERS
            .split(',')
            .map(str::to_string)
            .collect();
        assert!(list.contains(&API_KEY_HEADER.to_ascii_lowercase()));
        assert!(list.contains(&header::AUTHORIZATION.as_str().to_string()));
        assert!(list.contains(&header::CONTENT_TYPE.as_str().to_string()));
    }
}
