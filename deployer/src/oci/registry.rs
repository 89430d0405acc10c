//! Registry access the Docker way: credentials from `--registry-username` + `--registry-password-stdin`,
//! or the Docker config (`credHelpers`, `credsStore`, `auths`), and the transport (plain HTTP only
//! for loopback registries or an explicit `--insecure-registry`). Secrets are never printed or logged.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use tracing::warn;

use crate::options::RegistryOptions;
use crate::support::{Backoff, error_chain, install_crypto_provider, retry};

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

/// Parses an image reference (`REGISTRY/REPO[:TAG][@DIGEST]`).
pub fn parse_reference(s: &str) -> Result<Reference, RegistryError> {
    s.parse::<Reference>()
        .map_err(|e| RegistryError::Reference {
            reference: s.into(),
            message: e.to_string(),
        })
}

/// True for a registry host on loopback (`localhost`, 127.0.0.0/8, ::1), with or without a port.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else if registry.matches(':').count() > 1 {
        registry
    } else {
        registry.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The oci-client configuration: HTTPS except loopback registries and the `--insecure-registry` ones.
pub fn client_for(registries: &[&str], insecure: &[String]) -> Client {
    install_crypto_provider();
    let mut plain: Vec<String> = registries
        .iter()
        .filter(|r| is_loopback(r))
        .map(|r| r.to_string())
        .collect();
    plain.extend(insecure.iter().cloned());
    plain.sort();
    plain.dedup();
    Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(plain),
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(120)),
        ..ClientConfig::default()
    })
}

/// Whether the client talks plain HTTP to `registry`.
pub fn scheme_for(registry: &str, insecure: &[String]) -> &'static str {
    if is_loopback(registry) || insecure.iter().any(|i| i == registry) {
        "http"
    } else {
        "https"
    }
}

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

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-HELPER get`; Ok(None) when the helper has no credentials for the registry.
fn run_helper(helper: &str, registry: &str) -> Result<Option<Credentials>, RegistryError> {
    let program = format!("docker-credential-{helper}");
    let fail = |message: String| RegistryError::Helper {
        helper: helper.into(),
        registry: registry.into(),
        message,
    };
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            fail(format!(
                "cannot run {program}: {e} (is it installed and on PATH?)"
            ))
        })?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(registry.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let msg = format!(
            "{}{}",
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if msg.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        // The helper's message never contains the secret (it failed to produce one).
        return Err(fail(format!(
            "exit {}: {}",
            out.status.code().unwrap_or(-1),
            msg.chars().take(300).collect::<String>()
        )));
    }
    let answer: HelperAnswer = serde_json::from_str(&stdout)
        .map_err(|_| fail("its answer is not the expected JSON {Username, Secret}".into()))?;
    let source = format!("credential helper {program}");
    if answer.username == "<token>" {
        return Ok(Some(Credentials {
            auth: RegistryAuth::Basic(answer.username, answer.secret),
            source,
        }));
    }
    Ok(Some(Credentials {
        auth: RegistryAuth::Basic(answer.username, answer.secret),
        source,
    }))
}

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
    /// From the command line; reads stdin now if --registry-password-stdin is set.
    pub fn from_options(args: &RegistryOptions) -> Result<Self, RegistryError> {
        let explicit = match (&args.username, args.password_stdin) {
            (Some(u), true) => Some((u.clone(), read_password_stdin()?)),
            _ => None,
        };
        let docker_config =
            docker_config_dir(args.docker_config.as_deref()).map(|d| d.join("config.json"));
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

    #[test]
    fn loopback_detection() {
        for r in [
            "127.0.0.1:5000",
            "localhost:5000",
            "localhost",
            "127.1.2.3",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "10.0.0.1:5000",
            "gcr.io",
            "registry.example.invalid:5000",
            "[fd00::1]:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
        assert_eq!(scheme_for("127.0.0.1:5001", &[]), "http");
        assert_eq!(
            scheme_for("reg.internal:5000", &["reg.internal:5000".into()]),
            "http"
        );
        assert_eq!(scheme_for("reg.internal:5000", &[]), "https");
    }

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
