//! The Docker config (`config.json`): credential helpers per registry, the credential store, and
//! inline `auths` entries, looked up under every name a registry may be stored as.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::helper::run_helper;
use super::{Credentials, RegistryError};

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default, rename = "identitytoken")]
    identity_token: Option<String>,
    #[serde(default, rename = "registrytoken")]
    registry_token: Option<String>,
}

/// The host[:port] of a Docker config key (`https://index.docker.io/v1/` -> `index.docker.io`).
fn normalize_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k).to_ascii_lowercase()
}

/// The Docker config keys a registry may be stored under.
fn registry_aliases(registry: &str) -> Vec<String> {
    let r = registry.to_ascii_lowercase();
    if r == "docker.io" || r == "index.docker.io" || r == "registry-1.docker.io" {
        vec![
            "index.docker.io".into(),
            "docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![r]
    }
}

/// Where the Docker config lives: the flag, $DOCKER_CONFIG, then ~/.docker.
pub fn docker_config_dir(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker"))
}

/// Resolves credentials for `registry` from a Docker config file (helpers, store, inline auths).
pub fn credentials_from_docker_config(
    path: &Path,
    registry: &str,
) -> Result<Credentials, RegistryError> {
    let anonymous = Credentials {
        auth: RegistryAuth::Anonymous,
        source: "anonymous".into(),
    };
    let config_error = |message: String| RegistryError::Config {
        path: path.into(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(anonymous),
        Err(e) => return Err(config_error(e.to_string())),
    };
    let config: DockerConfig =
        serde_json::from_str(&text).map_err(|e| config_error(format!("invalid JSON: {e}")))?;
    let aliases = registry_aliases(registry);
    let helper = config
        .cred_helpers
        .iter()
        .find(|(k, _)| aliases.contains(&normalize_key(k)))
        .map(|(_, v)| v.clone())
        .or(config.creds_store.clone());
    if let Some(helper) = helper
        && let Some(c) = run_helper(&helper, registry)?
    {
        return Ok(c);
    }
    for (key, entry) in &config.auths {
        if !aliases.contains(&normalize_key(key)) {
            continue;
        }
        let source = format!("{} auths[{key}]", path.display());
        let auth = entry_auth(entry).map_err(|m| config_error(format!("auths[{key}].auth {m}")))?;
        if let Some(auth) = auth {
            return Ok(Credentials { auth, source });
        }
    }
    Ok(anonymous)
}

/// The credentials of one `auths` entry: a registry token, `auth` (base64 of USER:PASSWORD),
/// username and password, or an identity token. Err says what is wrong with `auth`.
fn entry_auth(entry: &AuthEntry) -> Result<Option<RegistryAuth>, &'static str> {
    if let Some(token) = &entry.registry_token {
        return Ok(Some(RegistryAuth::Bearer(token.clone())));
    }
    if let Some(b64) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| "is not valid base64")?;
        let decoded = String::from_utf8(decoded).map_err(|_| "is not UTF-8")?;
        let (user, pass) = decoded.split_once(':').ok_or("must encode USER:PASSWORD")?;
        return Ok(Some(RegistryAuth::Basic(user.into(), pass.into())));
    }
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Some(RegistryAuth::Basic(u.clone(), p.clone())));
    }
    Ok(entry
        .identity_token
        .as_ref()
        .map(|t| RegistryAuth::Basic("<token>".into(), t.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, json: &str) -> PathBuf {
        let p = dir.join("config.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    #[test]
    fn docker_config_auths() {
        let dir = tempfile::tempdir().unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let p = write(
            dir.path(),
            &format!(
                r#"{{"auths": {{"http://127.0.0.1:5001/v2/": {{"auth": "{b64}"}}, "https://index.docker.io/v1/": {{"username": "bob", "password": "pw"}}}}}}"#
            ),
        );
        let c = credentials_from_docker_config(&p, "127.0.0.1:5001").unwrap();
        assert!(matches!(&c.auth, RegistryAuth::Basic(u, pw) if u == "alice" && pw == "s3cret"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s3cret"), "{dbg}");
        let c = credentials_from_docker_config(&p, "index.docker.io").unwrap();
        assert!(matches!(&c.auth, RegistryAuth::Basic(u, _) if u == "bob"));
        let c = credentials_from_docker_config(&p, "127.0.0.1:5000").unwrap();
        assert!(matches!(c.auth, RegistryAuth::Anonymous));
        assert!(matches!(
            credentials_from_docker_config(&dir.path().join("missing.json"), "x")
                .unwrap()
                .auth,
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn docker_config_errors_name_the_file_not_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            r#"{"auths": {"r.io": {"auth": "!!notbase64"}}}"#,
        );
        let e = credentials_from_docker_config(&p, "r.io")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("config.json") && e.contains("not valid base64"),
            "{e}"
        );
        let b64 = base64::engine::general_purpose::STANDARD.encode("nocolon");
        let p = write(
            dir.path(),
            &format!(r#"{{"auths": {{"r.io": {{"auth": "{b64}"}}}}}}"#),
        );
        let e = credentials_from_docker_config(&p, "r.io")
            .unwrap_err()
            .to_string();
        assert!(e.contains("USER:PASSWORD"), "{e}");
        let p = write(dir.path(), "{not json");
        assert!(matches!(
            credentials_from_docker_config(&p, "r.io"),
            Err(RegistryError::Config { .. })
        ));
    }

    #[test]
    fn credential_helpers_are_run() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // A real helper executable speaking the docker-credential protocol.
        let helper = bin.join("docker-credential-celestialtest");
        std::fs::write(&helper, "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread host\nif [ \"$host\" = reg.example.invalid ]; then\n  printf '{\"ServerURL\":\"%s\",\"Username\":\"helper-user\",\"Secret\":\"helper-secret\"}' \"$host\"\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi\n").unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode("inline:pw");
        let p = write(
            dir.path(),
            &format!(
                r#"{{"credHelpers": {{"reg.example.invalid": "celestialtest"}}, "credsStore": "celestialtest", "auths": {{"other.invalid": {{"auth": "{b64}"}}}}}}"#
            ),
        );
        let path = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // SAFETY: tests in this module that touch PATH run only here.
        unsafe { std::env::set_var("PATH", path) };
        let c = credentials_from_docker_config(&p, "reg.example.invalid").unwrap();
        assert!(
            matches!(&c.auth, RegistryAuth::Basic(u, s) if u == "helper-user" && s == "helper-secret")
        );
        assert!(c.source.contains("docker-credential-celestialtest"));
        // The store has nothing for other.invalid: the inline auths entry is used.
        let c = credentials_from_docker_config(&p, "other.invalid").unwrap();
        assert!(matches!(&c.auth, RegistryAuth::Basic(u, _) if u == "inline"));
        let p = write(dir.path(), r#"{"credsStore": "doesnotexist"}"#);
        let e = credentials_from_docker_config(&p, "r.io")
            .unwrap_err()
            .to_string();
        assert!(e.contains("docker-credential-doesnotexist"), "{e}");
    }
}
