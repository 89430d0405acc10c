//! Registry access the Docker way: credentials from `--registry-username` + `--registry-password-stdin`,
//! or the Docker config (`credHelpers`, `credsStore`, `auths`), and the transport (plain HTTP only
//! for loopback registries or an explicit `--insecure-registry`). Secrets are never printed or logged.
//!
//! - `transport.rs`: references, the client, plain HTTP or HTTPS, how long to retry
//! - `credentials.rs`: which credentials for which registry: the flags or the Docker config
//! - `docker_config.rs`: reading the Docker config's `auths`, `credsStore` and `credHelpers`
//! - `helper.rs`: running a `docker-credential-*` helper
//! - `classify.rs`: what an oci-client error means for the user
//!
//! This module holds the registry error, the retrying every pull and push goes through, and the
//! credentials for one registry (never printed: only where they came from).

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use tracing::warn;

use crate::support::{Backoff, retry};

mod classify;
mod credentials;
mod docker_config;
mod helper;
mod transport;

pub use classify::classify;
pub use credentials::{CredentialSource, read_password_stdin};
pub use docker_config::{credentials_from_docker_config, docker_config_dir};
pub use transport::{Transport, client_for, is_loopback, parse_reference, scheme_for};

/// A registry problem.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid image reference {reference:?}: {message}")]
    Reference { reference: String, message: String },
    #[error("Docker config {path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("credential helper docker-credential-{helper} failed for {registry}: {message}")]
    Helper {
        helper: String,
        registry: String,
        message: String,
    },
    #[error("cannot read the registry password from stdin: {0}")]
    Stdin(String),
    #[error(
        "the registry {registry} refused the credentials ({source_desc}) for {operation} {reference}: HTTP 401/403. Check the user name and password, or `docker login {registry}`"
    )]
    Unauthorized {
        registry: String,
        reference: String,
        operation: &'static str,
        source_desc: String,
    },
    #[error("cannot reach the registry {registry} ({url_scheme}): {message}")]
    Unreachable {
        registry: String,
        url_scheme: &'static str,
        message: String,
    },
    #[error("{reference} not found in the registry: {message}")]
    NotFound { reference: String, message: String },
    #[error("the registry {registry} is unavailable (HTTP {status}): {message}")]
    Unavailable {
        registry: String,
        status: u16,
        message: String,
    },
    #[error("registry {registry}: {message}")]
    Protocol { registry: String, message: String },
    #[error(
        "{last} (gave up after {attempts} attempts over {seconds:.1}s; --registry-retry-timeout sets how long to retry)"
    )]
    GaveUp {
        last: Box<RegistryError>,
        attempts: u32,
        seconds: f64,
    },
}

impl RegistryError {
    /// Worth retrying: the registry could not be reached, or said it is busy or failing (429, 5xx).
    /// A host name that does not resolve is not: it is almost always a typo, said at once.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { message, .. } => !message.contains("dns error"),
            RegistryError::Unavailable { .. } => true,
            _ => false,
        }
    }
}

/// An error a registry operation can end with, seen by [`retried`].
pub trait Retryable: Sized + fmt::Display {
    /// Whether another attempt may succeed.
    fn is_transient(&self) -> bool;
    /// The error after `attempts` attempts over `elapsed` (the last one's, saying so).
    fn gave_up(self, attempts: u32, elapsed: Duration) -> Self;
}

impl Retryable for RegistryError {
    fn is_transient(&self) -> bool {
        RegistryError::is_transient(self)
    }
    fn gave_up(self, attempts: u32, elapsed: Duration) -> Self {
        if attempts < 2 {
            return self;
        }
        RegistryError::GaveUp {
            last: Box::new(self),
            attempts,
            seconds: elapsed.as_secs_f64(),
        }
    }
}

/// Runs the registry operation `what` (a pull or a push, each attempt from its start: what is
/// already in the registry is not sent again), retrying transient failures within `backoff`.
pub async fn retried<T, E: Retryable, Fut>(
    backoff: Backoff,
    what: &str,
    op: impl FnMut() -> Fut,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    retry(backoff, op, E::is_transient, |e, attempt, pause| {
        warn!(
            "{what}: attempt {attempt} failed: {e}; retrying in {:.1}s",
            pause.as_secs_f64()
        )
    })
    .await
    .map_err(|g| g.error.gave_up(g.attempts, g.elapsed))
}

/// Credentials for one registry, with where they came from (for messages; never the secret).
#[derive(Clone)]
pub struct Credentials {
    pub auth: RegistryAuth,
    pub source: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.auth {
            RegistryAuth::Anonymous => "anonymous",
            RegistryAuth::Basic(..) => "basic",
            RegistryAuth::Bearer(_) => "bearer",
        };
        write!(f, "Credentials({kind} from {})", self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_and_unavailable_are_retried_an_unknown_host_is_not() {
        let unreachable = |message: &str| RegistryError::Unreachable {
            registry: "r".into(),
            url_scheme: "https",
            message: message.into(),
        };
        assert!(unreachable("tcp connect error: Connection refused (os error 111)").is_transient());
        assert!(
            !unreachable("client error (Connect): dns error: failed to lookup address information")
                .is_transient()
        );
        let busy = RegistryError::Unavailable {
            registry: "r".into(),
            status: 503,
            message: "m".into(),
        };
        assert!(busy.is_transient());
        let denied = RegistryError::Protocol {
            registry: "r".into(),
            message: "m".into(),
        };
        assert!(!denied.is_transient());
    }
}
