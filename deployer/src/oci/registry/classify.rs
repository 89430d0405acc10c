//! What an oci-client error means for the user: refused credentials, not found, unreachable,
//! busy or failing, or something else the registry said.

use oci_client::Reference;
use oci_client::errors::OciDistributionError;

use super::transport::scheme_for;
use super::{Credentials, RegistryError};
use crate::support::error_chain;

/// What an oci-client error means for the user.
enum Failure {
    Unauthorized,
    NotFound,
    Unreachable,
    /// 429 or 5xx: busy or failing, maybe not for long.
    Unavailable(u16),
    Other,
}

/// Sorts an oci-client error by what the user can do about it.
fn failure(e: &OciDistributionError) -> Failure {
    use oci_client::errors::OciErrorCode as Code;
    let registry_says = |codes: &[Code]| match e {
        OciDistributionError::RegistryError { envelope, .. } => {
            envelope.errors.iter().any(|x| codes.contains(&x.code))
        }
        _ => false,
    };
    let status = match e {
        OciDistributionError::ServerError { code, .. } => Some(*code),
        OciDistributionError::RequestError(re) => re.status().map(|s| s.as_u16()),
        _ => None,
    };
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => Failure::Unauthorized,
        _ if matches!(status, Some(401 | 403)) => Failure::Unauthorized,
        _ if registry_says(&[Code::Unauthorized, Code::Denied]) => Failure::Unauthorized,
        OciDistributionError::ImageManifestNotFoundError(_) => Failure::NotFound,
        _ if status == Some(404) => Failure::NotFound,
        _ if registry_says(&[Code::ManifestUnknown, Code::NameUnknown]) => Failure::NotFound,
        _ if matches!(status, Some(429 | 500..=599)) => Failure::Unavailable(status.unwrap_or(0)),
        OciDistributionError::RequestError(re)
            if re.is_connect() || re.is_timeout() || re.is_request() =>
        {
            Failure::Unreachable
        }
        _ => Failure::Other,
    }
}

/// Turns an oci-client error into a clear RegistryError.
pub fn classify(
    e: OciDistributionError,
    reference: &Reference,
    operation: &'static str,
    creds: &Credentials,
    insecure: &[String],
) -> RegistryError {
    let registry = reference.resolve_registry().to_string();
    let message = error_chain(&e);
    match failure(&e) {
        Failure::Unauthorized => RegistryError::Unauthorized {
            registry,
            reference: reference.whole(),
            operation,
            source_desc: creds.source.clone(),
        },
        Failure::NotFound => RegistryError::NotFound {
            reference: reference.whole(),
            message,
        },
        Failure::Unreachable => RegistryError::Unreachable {
            url_scheme: scheme_for(&registry, insecure),
            registry,
            message,
        },
        Failure::Unavailable(status) => RegistryError::Unavailable {
            registry,
            status,
            message,
        },
        Failure::Other => RegistryError::Protocol { registry, message },
    }
}
