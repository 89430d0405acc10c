//! The body extraction of `POST /predict` and `POST /predict/batch` through the real router (the
//! fake classifier decodes with the server's real decoder): arbitrary `Content-Type` and body
//! bytes, the body in one piece or in chunks, with or without `Content-Length`.
//!
//! Input: one flags byte, then the `Content-Type` value up to the first `\n`, then the body.
//! Flags: bit 0 `/predict/batch` (else `/predict`); bits 1-3 the chunk size (0 = one piece, else
//! `2^(n-1)` bytes, up to 64); bit 4 a `Content-Length` header; bit 5 no `Content-Type` at all.
//!
//! Asserts: no panic, never a 5xx, a JSON error body (a sentence and a known code that maps to the
//! status) for every 4xx, and a JSON body for a 200.

#![no_main]

mod common;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;

use celestial_server::routes;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (content_type, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let path = if flags & 1 == 1 {
        routes::PREDICT_BATCH
    } else {
        routes::PREDICT
    };
    let mut req = Request::builder().method(Method::POST).uri(path);
    // A value no HTTP/1.1 or HTTP/2 parser lets through (CR, LF, NUL, other controls) cannot
    // reach the router: such inputs go without the header.
    if flags & 0x20 == 0
        && let Ok(ct) = HeaderValue::from_bytes(content_type)
    {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    if flags & 0x10 != 0 {
        req = req.header(header::CONTENT_LENGTH, body.len());
    }
    let chunk = match (flags >> 1) & 7 {
        0 => usize::MAX,
        n => 1usize << (n - 1),
    };
    let body = if chunk >= body.len() {
        Body::from(body.to_vec())
    } else {
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Body::from_stream(futures_util::stream::iter(chunks))
    };
    let req = req.body(body).expect("a valid request");
    let (resp, bytes) = common::call(common::app(""), req);
    common::check_answer(&resp, &bytes);
    if resp.status() == StatusCode::OK {
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("a JSON 200 body");
        assert!(v.is_object(), "a 200 body that is not an object: {v}");
    }
});
