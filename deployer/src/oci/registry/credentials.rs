//! Which credentials for which registry: `--registry-username` with the password from stdin for
//! the registry pushed to, else the Docker config.

use std::io::Read;
use std::path::{Path, PathBuf};

use oci_client::secrets::RegistryAuth;

use super::docker_config::{credentials_from_docker_config, docker_config_dir};
use super::{Credentials, RegistryError};

/// Reads the password from stdin once (trailing newline removed).
pub fn read_password_stdin() -> Result<String, RegistryError> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| RegistryError::Stdin(e.to_string()))?;
    let s = s.trim_end_matches(['\n', '\r']).to_string();
    if s.is_empty() {
        return Err(RegistryError::Stdin("stdin was empty".into()));
    }
    Ok(s)
}

/// Resolves credentials for registries: the flags (for the target registry) or the Docker config.
pub struct CredentialSource {
    explicit: Option<(String, String)>,
    docker_config: Option<PathBuf>,
}

impl CredentialSource {
    /// From the command line: `username` with the password read from stdin now when
    /// `password_stdin` (the registry pushed to), and the Docker config in `docker_config` (the
    /// directory; default $DOCKER_CONFIG, then ~/.docker).
    pub fn new(
        username: Option<&str>,
        password_stdin: bool,
        docker_config: Option<&Path>,
    ) -> Result<Self, RegistryError> {
        let explicit = match (username, password_stdin) {
            (Some(u), true) => Some((u.to_string(), read_password_stdin()?)),
            _ => None,
        };
        let docker_config = docker_config_dir(docker_config).map(|d| d.join("config.json"));
        Ok(CredentialSource {
            explicit,
            docker_config,
        })
    }

    /// Credentials for `registry`; explicit ones apply when `target` (the registry pushed to).
    pub fn for_registry(&self, registry: &str, target: bool) -> Result<Credentials, RegistryError> {
        if target && let Some((u, p)) = &self.explicit {
            return Ok(Credentials {
                auth: RegistryAuth::Basic(u.clone(), p.clone()),
                source: format!("--registry-username {u}"),
            });
        }
        match &self.docker_config {
            Some(p) => credentials_from_docker_config(p, registry),
            None => Ok(Credentials {
                auth: RegistryAuth::Anonymous,
                source: "anonymous".into(),
            }),
        }
    }
}
