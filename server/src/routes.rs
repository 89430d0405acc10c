//! The one list of the server's routes and of the media types `POST /predict` takes as a raw body.
//! The router ([`crate::http::router`]), the metrics route label ([`label`]), the OpenAPI document
//! ([`crate::docs`]) and the tests all read these constants; nothing else spells a path.
//!
//! A leaf module: it imports nothing from the crate.

/// `POST`: classify one image.
pub const PREDICT: &str = "/predict";
/// `POST`: classify several `image` parts.
pub const PREDICT_BATCH: &str = "/predict/batch";
/// `GET`: the Swagger UI, as BentoML serves it at the root.
pub const ROOT: &str = "/";
/// `GET`: the Swagger UI.
pub const DOCS: &str = "/docs";
/// `GET`: redirects to [`DOCS`] (counted under the [`DOCS`] label).
pub const DOCS_SLASH: &str = "/docs/";
/// `GET`: the OpenAPI document.
pub const DOCS_JSON: &str = "/docs.json";
/// `GET`: the service description `bentoml.SyncHTTPClient` reads.
pub const SCHEMA_JSON: &str = "/schema.json";
/// `GET`: liveness.
pub const LIVEZ: &str = "/livez";
/// `GET`: readiness.
pub const READYZ: &str = "/readyz";
/// `GET`: readiness, under the name some platforms probe.
pub const HEALTHZ: &str = "/healthz";
/// `GET`: Prometheus metrics.
pub const METRICS: &str = "/metrics";
/// `GET`: the served model's description.
pub const MODEL: &str = "/model";

/// Every route the router serves, each once.
pub const ALL: [&str; 12] = [
    PREDICT,
    PREDICT_BATCH,
    ROOT,
    DOCS,
    DOCS_SLASH,
    DOCS_JSON,
    SCHEMA_JSON,
    LIVEZ,
    READYZ,
    HEALTHZ,
    METRICS,
    MODEL,
];

/// The routes whose request body is an upload (an image): read under the body limits
/// (`--body-timeout`, `--body-min-rate`, `--max-uploads`) before a prediction slot is taken, and
/// `--request-timeout` counts from the end of the body, so a slow client is never a server timeout.
pub const UPLOADS: [&str; 2] = [PREDICT, PREDICT_BATCH];

/// The metrics label of a request path: its route, or `unmatched` (so a scan of random paths does
/// not create one time series per path).
pub fn label(path: &str) -> &'static str {
    match ALL.iter().find(|r| **r == path) {
        Some(&DOCS_SLASH) => DOCS,
        Some(route) => route,
        None => "unmatched",
    }
}

/// Media types `POST /predict` and `POST /predict/batch` take as a raw image body (besides
/// `multipart/form-data`; a missing or empty type is also a raw body). The decoder sniffs the format
/// from the bytes, so the type only has to name one of the formats it decodes (JPEG, PNG, WebP, GIF,
/// BMP) or say "bytes": the registered names and the aliases clients really send (`image/jpg`,
/// `image/pjpeg` from old browsers, `image/x-ms-bmp` from older Python `mimetypes`).
pub const RAW_IMAGE_TYPES: [&str; 10] = [
    "image/jpeg",
    "image/jpg",
    "image/pjpeg",
    "image/png",
    "image/webp",
    "image/gif",
    "image/bmp",
    "image/x-bmp",
    "image/x-ms-bmp",
    "application/octet-stream",
];

/// Whether `essence` (a lower-case media type without parameters) is a raw image body.
pub fn is_raw_image_type(essence: &str) -> bool {
    essence.is_empty() || RAW_IMAGE_TYPES.contains(&essence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_distinct_and_labels_are_routes() {
        let mut all = ALL.to_vec();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), ALL.len());
        for r in ALL {
            assert!(r.starts_with('/'), "{r}");
            assert!(ALL.contains(&label(r)), "{r}");
        }
        assert_eq!(label(DOCS_SLASH), DOCS);
        for r in UPLOADS {
            assert!(ALL.contains(&r), "{r}");
        }
        assert_eq!(label("/predict/"), "unmatched");
        assert_eq!(label("/nope"), "unmatched");
    }

    #[test]
    fn raw_types_are_lower_case_images_or_bytes() {
        for t in RAW_IMAGE_TYPES {
            assert_eq!(t, t.to_ascii_lowercase());
            assert!(t.starts_with("image/") || t == "application/octet-stream");
            assert!(is_raw_image_type(t));
        }
        assert!(is_raw_image_type(""));
        assert!(!is_raw_image_type("image/tiff"));
        assert!(!is_raw_image_type("text/plain"));
    }
}
