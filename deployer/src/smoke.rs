//! The smoke test through the public URL: `/readyz`, then one real prediction (`POST /predict`,
//! multipart part `image`), checking the answer's shape.

use std::path::Path;
use std::time::Duration;

use celestial_common::probe;
use serde_json::Value;
use tokio::time::Instant;

use crate::support::{error_chain, install_crypto_provider};

/// The deployment answers, but not correctly (or not at all).
#[derive(Debug, thiserror::Error)]
pub enum SmokeError {
    #[error("cannot read the smoke-test image {path}: {source}")]
    Image {
        path: String,
        source: std::io::Error,
    },
    #[error("{url}readyz did not answer 200 within {seconds}s: {last}")]
    NotReady {
        url: String,
        seconds: u64,
        last: String,
    },
    #[error("POST {url}predict failed: {message}")]
    Predict { url: String, message: String },
}

/// A successful smoke test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SmokeReport {
    pub prediction: String,
    pub probability: f64,
    pub labels: usize,
    pub latency_ms: f64,
}

/// A small generated test picture (BMP, 64x64: a shaded disc on black), so the smoke test needs no file.
pub fn generated_image() -> Vec<u8> {
    let (w, h) = (64u32, 64u32);
    let mut rgb = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let (dx, dy) = (x as f64 - 31.5, y as f64 - 31.5);
            let r = (dx * dx + dy * dy).sqrt() / 26.0;
            let shade = if r < 1.0 { 1.0 - 0.6 * r } else { 0.0 };
            rgb.extend_from_slice(&[
                (200.0 * shade) as u8,
                (120.0 * shade) as u8,
                (60.0 * shade) as u8,
            ]);
        }
    }
    bmp(w, h, &rgb)
}

/// A 24-bit BMP of `width` x `height` RGB8 pixels, rows top to bottom (what a server decodes
/// without loss: pixels made elsewhere reach the model as they are).
pub fn bmp(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let row = (width * 3).div_ceil(4) * 4;
    let size = 54 + row * height;
    let mut b = Vec::with_capacity(size as usize);
    b.extend_from_slice(b"BM");
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&54u32.to_le_bytes());
    b.extend_from_slice(&40u32.to_le_bytes());
    b.extend_from_slice(&(width as i32).to_le_bytes());
    b.extend_from_slice(&(height as i32).to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&24u16.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&(row * height).to_le_bytes());
    b.extend_from_slice(&2835u32.to_le_bytes());
    b.extend_from_slice(&2835u32.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    // A positive height: the bottom row first; each pixel blue, green, red.
    let stride = (width * 3) as usize;
    for y in (0..height as usize).rev() {
        let line = &rgb[y * stride..(y + 1) * stride];
        for px in line.chunks_exact(3) {
            b.extend_from_slice(&[px[2], px[1], px[0]]);
        }
        b.resize(b.len() + row as usize - stride, 0);
    }
    b
}

/// The media type of an image file, by its extension.
pub fn mime_for(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        Some("bmp") => "image/bmp",
        _ => "application/octet-stream",
    }
}

/// What the smoke test needs to get in when the server is locked: the API key to send, and for
/// HTTPS the certificates to trust and the host name to check the certificate against.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub api_key: Option<String>,
    /// PEM certificates trusted as roots (the TLS Secret's ca.crt or tls.crt).
    pub trust_pem: Option<Vec<u8>>,
    /// Connect to the URL's address but check the certificate for this name.
    pub server_name: Option<String>,
}

/// Checks `/readyz` (retrying until `timeout`) and one prediction through `url` (ending in `/`).
pub async fn smoke(
    url: &str,
    image: Option<&Path>,
    timeout: Duration,
    access: &Access,
) -> Result<SmokeReport, SmokeError> {
    install_crypto_provider();
    let (bytes, name, mime) = match image {
        Some(p) => (
            std::fs::read(p).map_err(|source| SmokeError::Image {
                path: p.display().to_string(),
                source,
            })?,
            p.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("image")
                .to_string(),
            mime_for(p),
        ),
        None => (generated_image(), "smoke.bmp".to_string(), "image/bmp"),
    };
    let fail = |message: String| SmokeError::Predict {
        url: url.into(),
        message,
    };
    let (client, url) = client(url, access).await.map_err(fail)?;
    let url = url.as_str();
    let deadline = Instant::now() + timeout;
    loop {
        let last = match client.get(format!("{url}readyz")).send().await {
            Ok(r) if r.status().is_success() => break,
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => error_chain(&e),
        };
        if Instant::now() >= deadline {
            return Err(SmokeError::NotReady {
                url: url.into(),
                seconds: timeout.as_secs(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(name)
        .mime_str(mime)
        .expect("a valid MIME type");
    let form = reqwest::multipart::Form::new().part("image", part);
    let start = Instant::now();
    let err = |message: String| SmokeError::Predict {
        url: url.into(),
        message,
    };
    // The probe header: the server keeps this prediction out of its live-traffic counters.
    let mut post = client
        .post(format!("{url}predict"))
        .header(probe::HEADER, probe::EVALUATION)
        .multipart(form);
    if let Some(key) = &access.api_key {
        post = post.bearer_auth(key);
    }
    let resp = post.send().await.map_err(|e| err(error_chain(&e)))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| err(e.to_string()))?;
    let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
    if !status.is_success() {
        return Err(err(format!(
            "HTTP {status}: {}",
            body.chars().take(300).collect::<String>()
        )));
    }
    check_prediction(&body)
        .map(|(prediction, probability, labels)| SmokeReport {
            prediction,
            probability,
            labels,
            latency_ms,
        })
        .map_err(err)
}

/// `GET {url}{path}` as JSON, with `access` (what the smoke test used) and `timeout`: what a
/// command reads through the public URL when it cannot ask a pod.
pub async fn get_json(
    url: &str,
    path: &str,
    timeout: Duration,
    access: &Access,
) -> Result<Value, String> {
    install_crypto_provider();
    let (client, url) = client(url, access).await?;
    let mut get = client.get(format!("{url}{path}")).timeout(timeout);
    if let Some(key) = &access.api_key {
        get = get.bearer_auth(key);
    }
    let resp = get.send().await.map_err(|e| error_chain(&e))?;
    let status = resp.status();
    let body = resp.text().await.map_err(|e| error_chain(&e))?;
    if !status.is_success() {
        let start: String = body.chars().take(200).collect();
        return Err(format!("GET {url}{path}: HTTP {status}: {start}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("GET {url}{path}: not JSON ({e})"))
}

/// The HTTP client for `url` with `access`, and the URL to use: for `server_name`, the URL's host
/// is replaced by it and the name resolved to the URL's address.
async fn client(url: &str, access: &Access) -> Result<(reqwest::Client, String), String> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(pem) = &access.trust_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| format!("the TLS Secret's certificates do not parse: {e}"))?;
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    let mut url = url.to_string();
    if let Some(name) = &access.server_name {
        let parsed = reqwest::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
        let host = parsed.host_str().ok_or_else(|| format!("{url}: no host"))?;
        let port = parsed.port_or_known_default().unwrap_or(443);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{host} resolves to no address"))?;
        builder = builder.resolve(name, addr);
        let mut named = parsed.clone();
        named
            .set_host(Some(name))
            .map_err(|e| format!("--tls-server-name {name}: {e}"))?;
        url = named.to_string();
    }
    let client = builder.build().map_err(|e| error_chain(&e))?;
    Ok((client, url))
}

/// Checks a /predict answer: `{"prediction": label, "probabilities": {label: p, ...}}` with the
/// prediction among the labels, probabilities in [0, 1] summing to about 1, and the prediction the most likely.
pub fn check_prediction(body: &str) -> Result<(String, f64, usize), String> {
    let v: Value = serde_json::from_str(body).map_err(|e| {
        format!(
            "the answer is not JSON ({e}): {}",
            body.chars().take(200).collect::<String>()
        )
    })?;
    let prediction = v["prediction"]
        .as_str()
        .ok_or("the answer has no string `prediction`")?
        .to_string();
    let probs = v["probabilities"]
        .as_object()
        .ok_or("the answer has no `probabilities` object")?;
    if probs.len() < 2 {
        return Err(format!(
            "expected probabilities for every label, got {}",
            probs.len()
        ));
    }
    let mut sum = 0.0;
    let mut best = (String::new(), -1.0);
    for (label, p) in probs {
        let p = p
            .as_f64()
            .ok_or_else(|| format!("probability of {label} is not a number"))?;
        if !(0.0..=1.0).contains(&p) {
            return Err(format!("probability of {label} is {p}, outside [0, 1]"));
        }
        sum += p;
        if p > best.1 {
            best = (label.clone(), p);
        }
    }
    if (sum - 1.0).abs() > 1e-3 {
        return Err(format!("probabilities sum to {sum}, not 1"));
    }
    let p = probs
        .get(&prediction)
        .and_then(Value::as_f64)
        .ok_or_else(|| format!("prediction {prediction:?} is not among the labels"))?;
    if p + 1e-9 < best.1 {
        return Err(format!(
            "prediction {prediction:?} ({p}) is not the most likely label ({} at {})",
            best.0, best.1
        ));
    }
    Ok((prediction, p, probs.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_image_is_a_valid_bmp() {
        let b = generated_image();
        assert_eq!(&b[..2], b"BM");
        assert_eq!(
            u32::from_le_bytes(b[2..6].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(b.len(), 54 + 64 * 64 * 3);
        // the centre pixel: the disc's colour, stored blue first
        let centre = 54 + 32 * 64 * 3 + 32 * 3;
        assert!(
            b[centre + 2] > 150 && b[centre] < 60,
            "{:?}",
            &b[centre..centre + 3]
        );
    }

    #[test]
    fn bmp_rows_go_bottom_up_in_bgr_padded_to_four_bytes() {
        // 1x2: a red pixel above a blue one
        let b = bmp(1, 2, &[255, 0, 0, 0, 0, 255]);
        assert_eq!(b.len(), 54 + 2 * 4);
        assert_eq!(&b[54..58], &[255, 0, 0, 0], "the bottom (blue) row first");
        assert_eq!(&b[58..62], &[0, 0, 255, 0]);
    }

    #[test]
    fn prediction_checks() {
        let good = r#"{"prediction":"Mars","probabilities":{"Mars":0.9,"Earth":0.1}}"#;
        assert_eq!(check_prediction(good).unwrap().0, "Mars");
        assert!(
            check_prediction(r#"{"prediction":"Moon","probabilities":{"Mars":0.9,"Earth":0.1}}"#)
                .is_err()
        );
        assert!(
            check_prediction(r#"{"prediction":"Earth","probabilities":{"Mars":0.9,"Earth":0.1}}"#)
                .is_err()
        );
        assert!(
            check_prediction(r#"{"prediction":"Mars","probabilities":{"Mars":0.9,"Earth":0.3}}"#)
                .is_err()
        );
        assert!(check_prediction("<html>").is_err());
    }
}
