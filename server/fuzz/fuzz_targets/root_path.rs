//! The root path: `root_path::parse` (the `--root-path` parser, also applied to
//! `X-Forwarded-Prefix`) on arbitrary strings, and the app under the root-path middleware with an
//! arbitrary configured prefix, `X-Forwarded-Prefix` header(s), method, path and extra headers.
//!
//! Input, in lines (`\n`): the configured root path; the `X-Forwarded-Prefix` value (the line
//! `-` for none); a method selector byte followed by the request target; then extra headers as
//! `name:value` lines.
//!
//! Asserts: no panic; a prefix `parse` accepts is `""` or `/seg(/seg)*` (no empty, `.` or `..`
//! segment, no trailing slash, allowed bytes only, at most `MAX_LEN` bytes) and parses to itself;
//! never a 5xx; a JSON error body for every 4xx (no body at all for HEAD); a redirect's
//! `Location` carries the request's effective prefix and never starts with `//` (no open
//! redirect); `GET /docs.json` answers `Vary: X-Forwarded-Prefix` and, with a prefix,
//! `servers[0].url` equal to it.

#![no_main]

mod common;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use libfuzzer_sys::fuzz_target;

use celestial_server::root_path::{self, FORWARDED_PREFIX, MAX_LEN};
use celestial_server::routes;

const METHODS: [Method; 6] = [
    Method::GET,
    Method::POST,
    Method::HEAD,
    Method::PUT,
    Method::OPTIONS,
    Method::DELETE,
];

/// `parse`'s contract on any string.
fn check_parse(s: &str) -> Option<String> {
    let p = root_path::parse(s).ok()?;
    if !p.is_empty() {
        assert!(p.len() <= MAX_LEN, "{p:?} is too long");
        assert!(p.starts_with('/') && !p.ends_with('/'), "{s:?} -> {p:?}");
        assert!(
            p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~%".contains(&b)),
            "{s:?} -> {p:?}"
        );
        assert!(
            p[1..]
                .split('/')
                .all(|g| !g.is_empty() && g != "." && g != ".."),
            "{s:?} -> {p:?}"
        );
    }
    assert_eq!(
        root_path::parse(&p).as_deref(),
        Ok(p.as_str()),
        "not idempotent"
    );
    Some(p)
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let configured = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let configured = check_parse(&configured).unwrap_or_default();
    let forwarded = lines.next().unwrap_or_default();
    if let Ok(s) = std::str::from_utf8(forwarded) {
        check_parse(s);
    }
    let Some((&m, target)) = lines.next().unwrap_or_default().split_first() else {
        return;
    };
    let method = METHODS[m as usize % METHODS.len()].clone();
    let Ok(uri) = Uri::try_from(target) else {
        return;
    };
    let mut req = Request::builder().method(method.clone()).uri(uri);
    if forwarded != b"-"
        && let Ok(v) = HeaderValue::from_bytes(forwarded)
    {
        req = req.header(FORWARDED_PREFIX, v);
    }
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) {
            req = req.header(name, value);
        }
    }
    let Ok(req) = req.body(Body::empty()) else {
        return;
    };
    let prefix = root_path::effective(req.headers(), &configured);
    let path = req.uri().path().to_string();
    let (resp, body) = common::call(common::app(&configured), req);
    if method == Method::HEAD {
        // The answer to HEAD has no body, errors included.
        assert!(
            !resp.status().is_server_error(),
            "a {} answer",
            resp.status()
        );
        assert!(body.is_empty(), "a body in the answer to HEAD");
    } else {
        common::check_answer(&resp, &body);
    }
    if resp.status().is_redirection()
        && let Some(location) = resp.headers().get(header::LOCATION)
    {
        let location = location.to_str().expect("an ASCII Location");
        assert!(!location.starts_with("//"), "open redirect to {location:?}");
        if location.starts_with('/') {
            assert!(
                location.starts_with(&format!("{prefix}/")),
                "{location:?} without the prefix {prefix:?}"
            );
        }
    }
    if method == Method::GET && path == routes::DOCS_JSON {
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()
                .get_all(header::VARY)
                .iter()
                .any(|v| v == "X-Forwarded-Prefix"),
            "no Vary: X-Forwarded-Prefix"
        );
        let doc: serde_json::Value = serde_json::from_slice(&body).expect("a JSON document");
        if !prefix.is_empty() {
            assert_eq!(doc["servers"][0]["url"], prefix.as_str(), "servers entry");
        }
    }
});
