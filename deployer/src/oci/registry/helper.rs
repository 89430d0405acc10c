//! A Docker credential helper (`docker-credential-NAME get`, the registry on stdin, JSON with
//! `Username` and `Secret` on stdout).

use std::io::Write;
use std::process::{Command, Stdio};

use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::{Credentials, RegistryError};

/// A helper's answer (an identity token comes as the user name `<token>` and its secret).
#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// Runs `docker-credential-HELPER get`; Ok(None) when the helper has no credentials for the registry.
pub(super) fn run_helper(
    helper: &str,
    registry: &str,
) -> Result<Option<Credentials>, RegistryError> {
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
    Ok(Some(Credentials {
        auth: RegistryAuth::Basic(answer.username, answer.secret),
        source: format!("credential helper {program}"),
    }))
}
