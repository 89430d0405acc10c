//! The one list of the server's routes (BentoML's, and the Open Inference Protocol's REST routes
//! and gRPC methods) and of the media types `POST /predict` takes as a raw body.
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
/// `GET`: the drift monitor's last scores (same access rule as [`MODEL`]).
pub const MODEL_DRIFT: &str = "/model/drift";

// The Open Inference Protocol (v2), REST; `{name}` and `{version}` are the served model's.
/// `GET`: server liveness.
pub const V2_LIVE: &str = "/v2/health/live";
/// `GET`: server readiness.
pub const V2_READY: &str = "/v2/health/ready";
/// `GET`: the server's metadata.
pub const V2_SERVER: &str = "/v2";
/// `GET`: the model's metadata.
pub const V2_MODEL: &str = "/v2/models/{name}";
/// `GET`: the model's metadata, for one version.
pub const V2_MODEL_VERSION: &str = "/v2/models/{name}/versions/{version}";
/// `GET`: the model's readiness.
pub const V2_MODEL_READY: &str = "/v2/models/{name}/ready";
/// `GET`: the model's readiness, for one version.
pub const V2_MODEL_VERSION_READY: &str = "/v2/models/{name}/versions/{version}/ready";
/// `POST`: an inference.
pub const V2_INFER: &str = "/v2/models/{name}/infer";
/// `POST`: an inference, on one version.
pub const V2_INFER_VERSION: &str = "/v2/models/{name}/versions/{version}/infer";

/// Every route the router serves, each once (a `{...}` segment matches any one segment).
pub const ALL: [&str; 22] = [
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
    MODEL_DRIFT,
    V2_LIVE,
    V2_READY,
    V2_SERVER,
    V2_MODEL,
    V2_MODEL_VERSION,
    V2_MODEL_READY,
    V2_MODEL_VERSION_READY,
    V2_INFER,
    V2_INFER_VERSION,
];

/// The gRPC service of the Open Inference Protocol, served on the same port over HTTP/2.
pub const GRPC_SERVICE: &str = "inference.GRPCInferenceService";

/// Each gRPC method's path (its metrics route label) and the REST route whose rules it follows
/// (API key scope).
pub const GRPC_METHODS: [(&str, &str); 6] = [
    ("/inference.GRPCInferenceService/ServerLive", V2_LIVE),
    ("/inference.GRPCInferenceService/ServerReady", V2_READY),
    ("/inference.GRPCInferenceService/ModelReady", V2_MODEL_READY),
    ("/inference.GRPCInferenceService/ServerMetadata", V2_SERVER),
    ("/inference.GRPCInferenceService/ModelMetadata", V2_MODEL),
    ("/inference.GRPCInferenceService/ModelInfer", V2_INFER),
];

/// The routes whose request body is an upload (an image): read under the body limits
/// (`--body-timeout`, `--body-min-rate`, `--max-uploads`) before a prediction slot is taken, and
/// `--request-timeout` counts from the end of the body, so a slow client is never a server timeout.
pub const UPLOADS: [&str; 4] = [PREDICT, PREDICT_BATCH, V2_INFER, V2_INFER_VERSION];

/// The metrics label of a request path: its route (a template for a route with `{...}`
/// segments), or `unmatched` (so a scan of random paths does not create one time series per path).
pub fn label(path: &str) -> &'static str {
    match ALL.iter().find(|r| matches(r, path)) {
        Some(&DOCS_SLASH) => DOCS,
        Some(route) => route,
        None => "unmatched",
    }
}

/// Whether `path` is an instance of `route` (each `{...}` segment of it stands for one non-empty
/// segment).
fn matches(route: &str, path: &str) -> bool {
    if !route.contains('{') {
        return route == path;
    }
    let (mut r, mut p) = (route.split('/'), path.split('/'));
    loop {
        match (r.next(), p.next()) {
            (None, None) => return true,
            (Some(t), Some(s)) if t.starts_with('{') && !s.is_empty() => {}
            (Some(t), Some(s)) if t == s => {}
            _ => return false,
        }
    }
}

/// `route` with its `{name}` and `{version}` segments filled in.
pub fn fill(route: &str, name: &str, version: &str) -> String {
    route.replace("{name}", name).replace("{version}", version)
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
        assert_eq!(label("/v2/models/m/infer"), V2_INFER);
        assert_eq!(label("/v2/models/m/versions/1/infer"), V2_INFER_VERSION);
        assert_eq!(label("/v2/models/m"), V2_MODEL);
        assert_eq!(label("/v2/models/m/ready"), V2_MODEL_READY);
        assert_eq!(label("/v2/models//infer"), "unmatched");
        assert_eq!(label("/v2/models/m/infer/x"), "unmatched");
        assert_eq!(
            fill(V2_INFER_VERSION, "m", "1"),
            "/v2/models/m/versions/1/infer"
        );
        for (method, route) in GRPC_METHODS {
            assert!(method.starts_with(&format!("/{GRPC_SERVICE}/")), "{method}");
            assert!(ALL.contains(&route), "{route}");
        }
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
