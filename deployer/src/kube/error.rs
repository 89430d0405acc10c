//! The Kubernetes side's error: the API server refused or failed a request about an object.

use crate::support::error_chain;

/// The API server refused or failed an apply, diff, get or delete.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{object}: the cluster does not serve {api_version} {kind}: {message}")]
    UnknownKind {
        object: String,
        api_version: String,
        kind: String,
        message: String,
    },
    #[error(
        "{object}: {message}\n  Another field manager owns these fields (a person with kubectl edit/scale, another tool, a controller). \
Remove them from the manifest, or re-run with --force-conflicts to take them over (the other manager's values are overwritten)."
    )]
    Conflict { object: String, message: String },
    #[error("{object} ({origin}): the API server rejected it: {message}")]
    Invalid {
        object: String,
        origin: String,
        message: String,
    },
    #[error("{object}: {action} forbidden: {message}")]
    Forbidden {
        object: String,
        action: &'static str,
        message: String,
    },
    #[error("{object}: {action} failed: {message}")]
    Api {
        object: String,
        action: &'static str,
        message: String,
    },
    #[error("timed out after {seconds}s waiting for {what} to be deleted")]
    DeleteTimeout { what: String, seconds: u64 },
    /// The release history's ConfigMap holds something that is not a history.
    #[error("{object}: {message}")]
    Record { object: String, message: String },
    /// The Secret named by `--api-key-secret` or `--tls-secret` is missing or unusable.
    #[error("Secret/{name} {message}")]
    Secret { name: String, message: String },
    #[error("{object}: {action} failed: {message}")]
    Credentials {
        object: String,
        action: &'static str,
        message: String,
    },
}

/// When `e` is (or wraps) a failure of the kubeconfig's credentials themselves (an `exec` plugin
/// such as gke-gcloud-auth-plugin that is missing, fails, or answers nonsense, also when it runs
/// again to refresh an expiring token in the middle of a command), what went wrong, said plainly.
pub fn credential_problem(e: &kube::Error, plugin: Option<&str>) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(a) = err.downcast_ref::<kube::client::AuthError>() {
            return Some(describe_auth(a, plugin.unwrap_or("the exec plugin")));
        }
        cur = err.source();
    }
    None
}

fn describe_auth(e: &kube::client::AuthError, plugin: &str) -> String {
    use kube::client::AuthError as A;
    match e {
        A::AuthExecStart(io) => format!(
            "the kubeconfig's exec credential plugin `{plugin}` could not be started: {io}. Is it installed and on PATH? \
(GKE: `gcloud components install gke-gcloud-auth-plugin`, then `gcloud container clusters get-credentials`)"
        ),
        A::AuthExecRun { out, .. } => {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said.trim();
            let said = if said.is_empty() {
                "(nothing on stderr)"
            } else {
                said
            };
            format!(
                "the kubeconfig's exec credential plugin `{plugin}` failed ({}): {}. Renew the login it uses \
(GKE: `gcloud auth login`, in CI the Workload Identity Federation step)",
                out.status,
                said.chars().take(400).collect::<String>()
            )
        }
        A::AuthExecParse(_) | A::ExecPluginFailed | A::MalformedTokenExpirationDate(_) => format!(
            "the kubeconfig's exec credential plugin `{plugin}` did not answer a valid ExecCredential \
(client.authentication.k8s.io/v1): {}",
            error_chain(e)
        ),
        other => format!("the kubeconfig's credentials: {}", error_chain(other)),
    }
}

/// Maps a kube error for one object to the right ApplyError.
pub fn api_error(object: &str, action: &'static str, e: kube::Error, origin: &str) -> ApplyError {
    match e {
        kube::Error::Api(s) => match s.code {
            409 if s.reason == "Conflict" && action == "apply" => ApplyError::Conflict {
                object: object.into(),
                message: s.message.clone(),
            },
            400 | 422 => ApplyError::Invalid {
                object: object.into(),
                origin: origin.into(),
                message: s.message.clone(),
            },
            401 | 403 => ApplyError::Forbidden {
                object: object.into(),
                action,
                message: s.message.clone(),
            },
            _ => ApplyError::Api {
                object: object.into(),
                action,
                message: format!("{} (HTTP {})", s.message, s.code),
            },
        },
        other => match credential_problem(&other, None) {
            Some(message) => ApplyError::Credentials {
                object: object.into(),
                action,
                message,
            },
            None => ApplyError::Api {
                object: object.into(),
                action,
                message: error_chain(&other),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_are_explained() {
        let s = kube::core::Status {
            code: 409,
            reason: "Conflict".into(),
            message: "Apply failed with 1 conflict: conflict with \"kubectl\": .spec.replicas"
                .into(),
            ..Default::default()
        };
        let e = api_error(
            "Deployment/x",
            "apply",
            kube::Error::Api(Box::new(s)),
            "f (document 1)",
        );
        let text = e.to_string();
        assert!(
            text.contains(".spec.replicas") && text.contains("--force-conflicts"),
            "{text}"
        );
        assert!(matches!(e, ApplyError::Conflict { .. }));
    }
}
