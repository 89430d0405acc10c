//! Registry access flags: credentials and transport.

use std::path::PathBuf;
use std::time::Duration;

use celestial_common::parse_duration;
use clap::Args;

use crate::oci::registry::{CredentialSource, RegistryError, Transport};

/// Registry access: credentials and transport.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Registry user name; the password is read from stdin with --registry-password-stdin.
    /// Without it, credentials come from the Docker config (auths, credsStore, credHelpers).
    #[arg(
        long,
        env = "DEPLOYER_REGISTRY_USERNAME",
        requires = "registry_password_stdin"
    )]
    pub registry_username: Option<String>,

    /// Read the registry password (or token) from standard input (never from a flag or the log).
    #[arg(
        long,
        env = "DEPLOYER_REGISTRY_PASSWORD_STDIN",
        requires = "registry_username"
    )]
    pub registry_password_stdin: bool,

    /// Registries (host[:port]) that may be reached over plain HTTP. Loopback registries
    /// (localhost, 127.0.0.0/8, [::1]) always may; anything else uses HTTPS unless listed here.
    #[arg(long, env = "DEPLOYER_INSECURE_REGISTRY", value_delimiter = ',')]
    pub insecure_registry: Vec<String>,

    /// Docker config directory (holding config.json); default $DOCKER_CONFIG, then ~/.docker.
    #[arg(long, env = "DEPLOYER_DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,

    /// How long pulls and pushes retry a registry that cannot be reached or answers 429/5xx
    /// (pauses 0.5 s, 1 s, 2 s, 4 s, then 5 s; blobs already pushed are not sent again); 0: no retry.
    #[arg(long, env = "DEPLOYER_REGISTRY_RETRY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub registry_retry_timeout: Duration,
}

impl RegistryArgs {
    /// How registries are reached.
    pub fn transport(&self) -> Transport {
        Transport {
            insecure: self.insecure_registry.clone(),
            retry_timeout: self.registry_retry_timeout,
        }
    }

    /// Where credentials come from; reads the password from stdin now with
    /// --registry-password-stdin.
    pub fn credentials(&self) -> Result<CredentialSource, RegistryError> {
        CredentialSource::new(
            self.registry_username.as_deref(),
            self.registry_password_stdin,
            self.docker_config.as_deref(),
        )
    }
}
