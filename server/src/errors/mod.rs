//! Everything a request can fail with ([`ApiError`]), its stable code ([`ErrorCode`]), the one
//! mapping from code to HTTP status ([`ErrorCode::status`]) and the JSON error body.
//!
//! Imports only [`crate::preprocess::PreprocessError`] (an image's own failure), the paths of
//! [`crate::routes`] (messages that point to another route) and the key headers and refusal
//! reasons of [`crate::auth`].

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::{API_KEY_HEADER, AuthFailure, BEARER};

mod grpc;

use crate::preprocess::PreprocessError;
use crate::routes;
pub use grpc::status_of_grpc;

/// Stable error codes (the `code` field of every error body).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    EmptyBody,
    InvalidImage,
    TruncatedImage,
    MissingImagePart,
    MissingBoundary,
    InvalidMultipart,
    NotFound,
    MethodNotAllowed,
    BodyTooLarge,
    TooManyImages,
    UnsupportedMediaType,
    UnsupportedImageFormat,
    ImageTooLarge,
    DecodeBudgetExceeded,
    Overloaded,
    Draining,
    Timeout,
    MalformedRequest,
    UriTooLong,
    HeadersTooLarge,
    TooManyConnections,
    Internal,
    // Request handling: a body that stopped arriving, several images on `/predict`.
    BodyTimeout,
    MultipleImages,
    IncompleteBody,
    // API keys.
    ApiKeyMissing,
    ApiKeyInvalid,
    ApiKeyMalformed,
    // The Open Inference Protocol: a model or version not served, a request that does not fit.
    ModelNotFound,
    InvalidInferenceRequest,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 30] = [
        ErrorCode::EmptyBody,
        ErrorCode::InvalidImage,
        ErrorCode::TruncatedImage,
        ErrorCode::MissingImagePart,
        ErrorCode::MissingBoundary,
        ErrorCode::InvalidMultipart,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::BodyTooLarge,
        ErrorCode::TooManyImages,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::UnsupportedImageFormat,
        ErrorCode::ImageTooLarge,
        ErrorCode::DecodeBudgetExceeded,
        ErrorCode::Overloaded,
        ErrorCode::Draining,
        ErrorCode::Timeout,
        ErrorCode::MalformedRequest,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
        ErrorCode::TooManyConnections,
        ErrorCode::Internal,
        ErrorCode::BodyTimeout,
        ErrorCode::MultipleImages,
        ErrorCode::IncompleteBody,
        ErrorCode::ApiKeyMissing,
        ErrorCode::ApiKeyInvalid,
        ErrorCode::ApiKeyMalformed,
        ErrorCode::ModelNotFound,
        ErrorCode::InvalidInferenceRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::EmptyBody => "empty_body",
            ErrorCode::InvalidImage => "invalid_image",
            ErrorCode::TruncatedImage => "truncated_image",
            ErrorCode::MissingImagePart => "missing_image_part",
            ErrorCode::MissingBoundary => "missing_boundary",
            ErrorCode::InvalidMultipart => "invalid_multipart",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::TooManyImages => "too_many_images",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::UnsupportedImageFormat => "unsupported_image_format",
            ErrorCode::ImageTooLarge => "image_too_large",
            ErrorCode::DecodeBudgetExceeded => "decode_budget_exceeded",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Draining => "draining",
            ErrorCode::Timeout => "timeout",
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::TooManyConnections => "too_many_connections",
            ErrorCode::Internal => "internal_error",
            ErrorCode::BodyTimeout => "body_timeout",
            ErrorCode::MultipleImages => "multiple_images",
            ErrorCode::IncompleteBody => "incomplete_body",
            ErrorCode::ApiKeyMissing => "api_key_missing",
            ErrorCode::ApiKeyInvalid => "api_key_invalid",
            ErrorCode::ApiKeyMalformed => "api_key_malformed",
            ErrorCode::ModelNotFound => "model_not_found",
            ErrorCode::InvalidInferenceRequest => "invalid_inference_request",
        }
    }

    /// The HTTP status of each code: the single mapping used by every response.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::EmptyBody
            | ErrorCode::InvalidImage
            | ErrorCode::TruncatedImage
            | ErrorCode::MissingImagePart
            | ErrorCode::MissingBoundary
            | ErrorCode::InvalidMultipart
            | ErrorCode::MultipleImages
            | ErrorCode::IncompleteBody
            | ErrorCode::MalformedRequest
            | ErrorCode::InvalidInferenceRequest => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound | ErrorCode::ModelNotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::BodyTooLarge | ErrorCode::TooManyImages => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType | ErrorCode::UnsupportedImageFormat => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ErrorCode::ImageTooLarge | ErrorCode::DecodeBudgetExceeded => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ErrorCode::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Draining | ErrorCode::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::ApiKeyMissing | ErrorCode::ApiKeyInvalid | ErrorCode::ApiKeyMalformed => {
                StatusCode::UNAUTHORIZED
            }
        }
    }

    /// A representative message, for the documentation.
    pub fn example_message(self) -> String {
        let message = match self {
            ErrorCode::EmptyBody => "The request body is empty; send an image.",
            ErrorCode::InvalidImage => "The JPEG image cannot be decoded: invalid marker.",
            ErrorCode::TruncatedImage => "The JPEG image is truncated.",
            ErrorCode::MissingImagePart => "The multipart body has no part named `image`.",
            ErrorCode::MissingBoundary => "The multipart/form-data content type has no boundary.",
            ErrorCode::InvalidMultipart => {
                "The multipart body is malformed: the body ends in a part's content, without a closing boundary."
            }
            ErrorCode::NotFound => "No route GET /nope; see /docs.",
            ErrorCode::MethodNotAllowed => "Method GET is not allowed on /predict.",
            ErrorCode::BodyTooLarge => "The request body is over the limit of 16777216 bytes.",
            ErrorCode::TooManyImages => "The batch has more than 64 images.",
            ErrorCode::UnsupportedMediaType => {
                "Content type text/plain is not supported; send multipart/form-data with an `image` part or a raw image."
            }
            ErrorCode::UnsupportedImageFormat => {
                "Unsupported image format; send JPEG, PNG, WebP, GIF or BMP."
            }
            ErrorCode::ImageTooLarge => {
                "The image is 10000x10000 = 100000000 pixels, more than the limit of 40000000 pixels."
            }
            ErrorCode::DecodeBudgetExceeded => {
                "Decoding this 6000x6000 progressive JPEG needs 105 MiB of memory, more than the 64 MiB allowed per image; send a smaller image (a baseline JPEG of the same size needs far less)."
            }
            ErrorCode::Overloaded => "Too many requests in progress; retry later.",
            ErrorCode::Draining => "The server is shutting down.",
            ErrorCode::Timeout => "The request took longer than 30s.",
            ErrorCode::MalformedRequest => MALFORMED_REQUEST,
            ErrorCode::UriTooLong => "The request URI is too long.",
            ErrorCode::HeadersTooLarge => {
                "The request head is over the limit of 32768 bytes or 100 header fields."
            }
            ErrorCode::TooManyConnections => "Too many open connections; retry later.",
            ErrorCode::Internal => "Internal error.",
            ErrorCode::BodyTimeout => {
                return ApiError::BodyTimeout {
                    received: 1024,
                    waited: Duration::from_secs(10),
                    timeout: Duration::from_secs(10),
                    min_rate: 16384,
                }
                .to_string();
            }
            ErrorCode::MultipleImages => return ApiError::MultipleImages.to_string(),
            ErrorCode::IncompleteBody => return ApiError::IncompleteBody.to_string(),
            ErrorCode::ApiKeyMissing => {
                return ApiError::Unauthorized(AuthFailure::Missing).to_string();
            }
            ErrorCode::ApiKeyInvalid => {
                return ApiError::Unauthorized(AuthFailure::Invalid).to_string();
            }
            ErrorCode::ApiKeyMalformed => {
                return ApiError::Unauthorized(AuthFailure::Malformed).to_string();
            }
            ErrorCode::ModelNotFound => {
                "Model `resnet` is not served here; this server serves `celestial-bodies`."
            }
            ErrorCode::InvalidInferenceRequest => {
                "Element 2 of input `image` cannot be classified: unsupported image format; send JPEG, PNG, WebP, GIF or BMP."
            }
        };
        message.to_string()
    }
}

/// The message of [`ErrorCode::MalformedRequest`]: HTTP/1 parsing cannot say more than that.
const MALFORMED_REQUEST: &str = "The request line or a header is malformed (for example an invalid Content-Length, a control character in a header, or a path that is not ASCII).";

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("The request body is empty; send an image.")]
    EmptyBody,
    #[error("{0}.")]
    Image(PreprocessError),
    #[error("The multipart body has no part named `image`.")]
    MissingImagePart,
    #[error("The multipart/form-data content type has no boundary.")]
    MissingBoundary,
    #[error("The multipart body is malformed: {0}.")]
    InvalidMultipart(String),
    #[error("No route {method} {path}; see /docs.")]
    NotFound { method: String, path: String },
    #[error("Method {method} is not allowed on {path}.")]
    MethodNotAllowed { method: String, path: String },
    #[error("The request body is over the limit of {limit} bytes.")]
    BodyTooLarge { limit: usize },
    #[error("The batch has more than {limit} images.")]
    TooManyImages { limit: usize },
    #[error(
        "Content type {0} is not supported; send multipart/form-data with an `image` part or a raw image."
    )]
    UnsupportedMediaType(String),
    #[error("Too many requests in progress; retry later.")]
    Overloaded { retry_after: u64 },
    #[error("The server is shutting down.")]
    Draining,
    #[error("The request took longer than {0:?}.")]
    Timeout(Duration),
    /// The HTTP/1 request line or a header does not parse (answered by the connection layer).
    #[error("{MALFORMED_REQUEST}")]
    MalformedRequest,
    #[error("The request URI is too long.")]
    UriTooLong,
    #[error(
        "The request head is over the limit of {max_bytes} bytes or {max_headers} header fields."
    )]
    HeadersTooLarge {
        max_bytes: usize,
        max_headers: usize,
    },
    /// Over `--max-connections` (answered by the connection layer, which then closes).
    #[error("Too many open connections; retry later.")]
    TooManyConnections { retry_after: u64 },
    #[error("Internal error: {0}.")]
    Internal(String),
    #[error(
        "The request body arrived too slowly: {received} bytes in {:.1} s; {}.",
        .waited.as_secs_f64(),
        body_rule(*.timeout, *.min_rate)
    )]
    BodyTimeout {
        received: u64,
        waited: Duration,
        timeout: Duration,
        min_rate: u64,
    },
    #[error(
        "POST {} classifies one image, and this body has more than one `image` part; send several images to POST {}.",
        routes::PREDICT,
        routes::PREDICT_BATCH
    )]
    MultipleImages,
    #[error(
        "Content type {value:?} is not a valid media type: {reason}; send multipart/form-data with an `image` part or a raw image."
    )]
    InvalidMediaType { value: String, reason: &'static str },
    #[error("The request body ended before it was complete: the client closed the connection.")]
    IncompleteBody,
    /// A route that needs an API key, without a valid one.
    #[error("{}", unauthorized_message(*.0))]
    Unauthorized(AuthFailure),
    #[error("Model `{name}` is not served here; this server serves `{served}`.")]
    ModelNotFound { name: String, served: String },
    #[error("Model `{name}` has no version `{version}` here; the served version is `{served}`.")]
    VersionNotFound {
        name: String,
        version: String,
        served: String,
    },
    /// An inference request of the Open Inference Protocol that does not fit the model.
    #[error("{0}.")]
    InvalidInference(String),
    /// One element of an inference request's input that cannot be classified: the whole request
    /// fails.
    #[error("Element {index} of input `{input}` cannot be classified: {reason}.")]
    InvalidElement {
        input: String,
        index: usize,
        reason: String,
    },
}

/// The message of a refused key, naming the two ways to send one.
fn unauthorized_message(failure: AuthFailure) -> String {
    let how = format!("`Authorization: {BEARER} <key>` or `{API_KEY_HEADER}: <key>`");
    match failure {
        AuthFailure::Missing => format!("This route needs an API key; send it as {how}."),
        AuthFailure::Invalid => "The API key is not valid.".to_string(),
        AuthFailure::Malformed => format!(
            "The API key header is malformed; send the key as {how} (visible ASCII, no spaces)."
        ),
    }
}

/// The `WWW-Authenticate` challenge of a refused key (RFC 6750 section 3).
fn challenge(failure: AuthFailure) -> &'static str {
    match failure {
        AuthFailure::Missing => "Bearer realm=\"celestial\"",
        AuthFailure::Invalid => "Bearer realm=\"celestial\", error=\"invalid_token\"",
        AuthFailure::Malformed => "Bearer realm=\"celestial\", error=\"invalid_request\"",
    }
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::EmptyBody => ErrorCode::EmptyBody,
            ApiError::Image(e) => image_code(e),
            ApiError::MissingImagePart => ErrorCode::MissingImagePart,
            ApiError::MissingBoundary => ErrorCode::MissingBoundary,
            ApiError::InvalidMultipart(_) => ErrorCode::InvalidMultipart,
            ApiError::NotFound { .. } => ErrorCode::NotFound,
            ApiError::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            ApiError::BodyTooLarge { .. } => ErrorCode::BodyTooLarge,
            ApiError::TooManyImages { .. } => ErrorCode::TooManyImages,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::Overloaded { .. } => ErrorCode::Overloaded,
            ApiError::Draining => ErrorCode::Draining,
            ApiError::Timeout(_) => ErrorCode::Timeout,
            ApiError::MalformedRequest => ErrorCode::MalformedRequest,
            ApiError::UriTooLong => ErrorCode::UriTooLong,
            ApiError::HeadersTooLarge { .. } => ErrorCode::HeadersTooLarge,
            ApiError::TooManyConnections { .. } => ErrorCode::TooManyConnections,
            ApiError::Internal(_) => ErrorCode::Internal,
            ApiError::BodyTimeout { .. } => ErrorCode::BodyTimeout,
            ApiError::MultipleImages => ErrorCode::MultipleImages,
            ApiError::InvalidMediaType { .. } => ErrorCode::UnsupportedMediaType,
            ApiError::IncompleteBody => ErrorCode::IncompleteBody,
            ApiError::Unauthorized(AuthFailure::Missing) => ErrorCode::ApiKeyMissing,
            ApiError::Unauthorized(AuthFailure::Invalid) => ErrorCode::ApiKeyInvalid,
            ApiError::Unauthorized(AuthFailure::Malformed) => ErrorCode::ApiKeyMalformed,
            ApiError::ModelNotFound { .. } | ApiError::VersionNotFound { .. } => {
                ErrorCode::ModelNotFound
            }
            ApiError::InvalidInference(_) | ApiError::InvalidElement { .. } => {
                ErrorCode::InvalidInferenceRequest
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        self.code().status()
    }
}

/// The rule a request body must follow, in words (`min_rate` 0: no rate, only the time limit).
fn body_rule(timeout: Duration, min_rate: u64) -> String {
    if min_rate == 0 {
        format!("the whole body must arrive within {timeout:?}")
    } else {
        format!(
            "after {timeout:?} a body must have arrived at {min_rate} bytes/s or more on average"
        )
    }
}

/// The code of an image that cannot be used.
pub fn image_code(e: &PreprocessError) -> ErrorCode {
    match e {
        PreprocessError::Empty => ErrorCode::EmptyBody,
        PreprocessError::UnsupportedFormat(_) => ErrorCode::UnsupportedImageFormat,
        PreprocessError::TooLarge { .. } => ErrorCode::ImageTooLarge,
        PreprocessError::Truncated { .. } | PreprocessError::ShortData { .. } => {
            ErrorCode::TruncatedImage
        }
        PreprocessError::OverBudget { .. } => ErrorCode::DecodeBudgetExceeded,
        PreprocessError::ZeroSized { .. } | PreprocessError::Undecodable { .. } => {
            ErrorCode::InvalidImage
        }
    }
}

/// The JSON error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: &'static str,
}

impl From<&ApiError> for ErrorBody {
    fn from(e: &ApiError) -> Self {
        let error = match e {
            ApiError::Image(PreprocessError::Empty) => ApiError::EmptyBody.to_string(),
            other => {
                let s = other.to_string();
                // Messages from lower layers start lower-case; make every message a sentence.
                let mut c = s.chars();
                match c.next() {
                    Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                    None => s,
                }
            }
        };
        ErrorBody {
            error,
            code: e.code().as_str(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status(), Json(ErrorBody::from(&self))).into_response();
        resp.extensions_mut()
            .insert(Rejection(self.code().as_str()));
        if let ApiError::Overloaded { retry_after } | ApiError::TooManyConnections { retry_after } =
            self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        if let ApiError::Unauthorized(failure) = self {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge(failure)),
            );
        }
        if let ApiError::IncompleteBody = self {
            resp.extensions_mut().insert(ClientGone);
        }
        if let ApiError::BodyTimeout { .. } = self {
            // The rest of the body is never read: the connection cannot carry another request.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// Marks the answer to a request whose client went away before it was complete (the answer most
/// likely reaches no one): the metrics middleware counts it as cancelled, not by status.
#[derive(Clone, Copy)]
pub struct ClientGone;

/// Marks a response as a rejection, for the metrics middleware (`reason` is the error code).
#[derive(Clone, Copy)]
pub struct Rejection(pub &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_name_and_client_codes_are_not_500() {
        let mut names: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for c in ErrorCode::ALL {
            if c != ErrorCode::Internal {
                assert_ne!(c.status(), StatusCode::INTERNAL_SERVER_ERROR, "{c:?}");
            }
        }
    }

    #[test]
    fn over_the_decode_budget_is_422_with_the_memory_needed() {
        let e = ApiError::Image(PreprocessError::OverBudget {
            width: 6000,
            height: 6000,
            kind: "GIF",
            needed: 546 << 20,
            budget: 64 << 20,
            hint: "",
        });
        let b = ErrorBody::from(&e);
        assert_eq!(
            (b.error.as_str(), b.code, e.status()),
            (
                "Decoding this 6000x6000 GIF needs 546 MiB of memory, more than the 64 MiB allowed per image; send a smaller image.",
                "decode_budget_exceeded",
                StatusCode::UNPROCESSABLE_ENTITY
            )
        );
        let short = ApiError::Image(PreprocessError::ShortData {
            format: "JPEG",
            width: 6000,
            height: 6000,
            data_bytes: 5,
            min_bytes: 421_875,
        });
        assert_eq!(short.code(), ErrorCode::TruncatedImage);
    }

    #[test]
    fn error_messages_are_sentences() {
        let e = ApiError::Image(PreprocessError::Truncated { format: "JPEG" });
        let b = ErrorBody::from(&e);
        assert_eq!(
            (b.error.as_str(), b.code),
            ("The JPEG image is truncated.", "truncated_image")
        );
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let b = ErrorBody::from(&ApiError::Image(PreprocessError::Empty));
        assert_eq!(b.code, "empty_body");
    }

    #[test]
    fn request_handling_errors_are_client_errors_with_their_statuses() {
        let slow = ApiError::BodyTimeout {
            received: 1024,
            waited: Duration::from_millis(2500),
            timeout: Duration::from_secs(2),
            min_rate: 16384,
        };
        assert_eq!(slow.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(
            slow.to_string(),
            "The request body arrived too slowly: 1024 bytes in 2.5 s; after 2s a body must have \
             arrived at 16384 bytes/s or more on average."
        );
        let resp = slow.into_response();
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        assert_eq!(ApiError::MultipleImages.status(), StatusCode::BAD_REQUEST);
        assert!(
            ApiError::MultipleImages
                .to_string()
                .contains(routes::PREDICT_BATCH)
        );
        let malformed = ApiError::InvalidMediaType {
            value: ";;;=;".into(),
            reason: "it does not start with a type",
        };
        assert_eq!(malformed.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        for (failure, code, challenge) in [
            (
                AuthFailure::Missing,
                "api_key_missing",
                "Bearer realm=\"celestial\"",
            ),
            (
                AuthFailure::Invalid,
                "api_key_invalid",
                "Bearer realm=\"celestial\", error=\"invalid_token\"",
            ),
            (
                AuthFailure::Malformed,
                "api_key_malformed",
                "Bearer realm=\"celestial\", error=\"invalid_request\"",
            ),
        ] {
            let e = ApiError::Unauthorized(failure);
            assert_eq!(
                (e.status(), e.code().as_str()),
                (StatusCode::UNAUTHORIZED, code)
            );
            let resp = e.into_response();
            assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], challenge);
        }
        let gone = ApiError::IncompleteBody.into_response();
        assert_eq!(gone.status(), StatusCode::BAD_REQUEST);
        assert!(gone.extensions().get::<ClientGone>().is_some());
    }
}
