//! The gRPC side of the one mapping: each error code's gRPC status code (the Open Inference
//! Protocol's gRPC service answers with it), and the HTTP status a gRPC code stands for in the
//! request metrics.

use axum::http::StatusCode;

use super::ErrorCode;

impl ErrorCode {
    /// The gRPC status code of each code (the Open Inference Protocol's gRPC service), from its
    /// HTTP status, so the two never disagree.
    pub fn grpc_code(self) -> tonic::Code {
        match self.status() {
            StatusCode::NOT_FOUND => tonic::Code::NotFound,
            StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
            StatusCode::METHOD_NOT_ALLOWED => tonic::Code::Unimplemented,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {
                tonic::Code::ResourceExhausted
            }
            StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
                tonic::Code::DeadlineExceeded
            }
            s if s.is_client_error() => tonic::Code::InvalidArgument,
            _ => tonic::Code::Internal,
        }
    }
}

/// The HTTP status a gRPC code stands for in the request metrics (the inverse of
/// [`ErrorCode::grpc_code`] for the codes it gives).
pub fn status_of_grpc(code: tonic::Code) -> StatusCode {
    match code {
        tonic::Code::Ok => StatusCode::OK,
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        tonic::Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        tonic::Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        tonic::Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        tonic::Code::InvalidArgument
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange
        | tonic::Code::AlreadyExists => StatusCode::BAD_REQUEST,
        tonic::Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_an_error_in_grpc_and_the_common_ones_map_back() {
        for c in ErrorCode::ALL {
            assert_ne!(c.grpc_code(), tonic::Code::Ok, "{c:?}");
            assert_ne!(status_of_grpc(c.grpc_code()), StatusCode::OK, "{c:?}");
        }
        for c in [
            ErrorCode::InvalidInferenceRequest,
            ErrorCode::ApiKeyMissing,
            ErrorCode::ModelNotFound,
            ErrorCode::Overloaded,
            ErrorCode::Draining,
            ErrorCode::Timeout,
            ErrorCode::Internal,
        ] {
            assert_eq!(status_of_grpc(c.grpc_code()), c.status(), "{c:?}");
        }
        assert_eq!(ErrorCode::ModelNotFound.grpc_code(), tonic::Code::NotFound);
        assert_eq!(
            ErrorCode::ApiKeyInvalid.grpc_code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(status_of_grpc(tonic::Code::Ok), StatusCode::OK);
    }
}
