//! [`ServerError`]: why the server could not start or stopped abnormally (the binary prints it as
//! one line and exits with [`ServerError::exit_code`], the one place errors become exit statuses).

use celestial_common::server_exit::MODEL_CHECK_FAILED;

use crate::auth::KeysError;
use crate::engine::InferenceError;
use crate::model::ModelError;
use crate::selfcheck::SelfCheckFailure;

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("server I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("API keys: {0}")]
    Keys(#[from] KeysError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    SelfCheck(#[from] SelfCheckFailure),
}

/// The exit status of a server that could not start or stopped abnormally, unless its error has
/// one of its own (a command line that does not parse is 2, clap's).
pub const EXIT_FAILURE: u8 = 1;

impl ServerError {
    /// The exit status of a server that stops on this error: `MODEL_CHECK_FAILED` (3, shared with
    /// `deployer`, which reads it from the pod) when the model failed its start-up self-check, so
    /// that a rollout can tell a model that must not be served from a server that could not
    /// start; [`EXIT_FAILURE`] otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServerError::SelfCheck(_) => u8::try_from(MODEL_CHECK_FAILED).unwrap_or(EXIT_FAILURE),
            _ => EXIT_FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_self_check_has_its_own_exit_status() {
        let failed = ServerError::SelfCheck(SelfCheckFailure {
            images: 1,
            disagreements: Vec::new(),
        });
        assert_eq!(failed.exit_code(), 3);
        assert_eq!(ServerError::Config("x".into()).exit_code(), 1);
        assert_eq!(ServerError::Model(ModelError::NoLabels).exit_code(), 1);
    }
}
