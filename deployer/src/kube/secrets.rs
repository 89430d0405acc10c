//! The Secrets behind `--api-key-secret` and `--tls-secret`, in the cluster: the API-key Secret is
//! created with a generated key when it does not exist (never overwritten: rotating means editing
//! it), the TLS Secret must exist (from `kubectl create secret tls` or cert-manager). Both are read
//! for the smoke test: the first key, and the certificates to trust.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use ring::rand::{SecureRandom, SystemRandom};

use super::apply::FIELD_MANAGER;
use super::cluster::Cluster;
use super::error::{ApplyError, api_error};
use super::secure::API_KEYS_DATA_KEY;

/// The API-key Secret and the key the smoke test sends (never printed unless asked).
#[derive(Debug, Clone)]
pub struct ApiKeySecret {
    pub name: String,
    /// Created by this run (with a generated key), or there already.
    pub created: bool,
    /// The first key of the keys file.
    pub key: String,
}

/// The TLS Secret's certificates the smoke test trusts: `ca.crt` when the Secret has one
/// (cert-manager's), else the chain in `tls.crt`.
#[derive(Debug, Clone)]
pub struct TlsSecret {
    pub name: String,
    pub trust_pem: Vec<u8>,
    /// The data key `trust_pem` comes from (`ca.crt` or `tls.crt`).
    pub trust_key: &'static str,
}

/// The Secret `name` with its first API key; created with a new random key when absent. With
/// `dry_run`, nothing is created (`None` when it does not exist).
pub async fn api_key(
    cluster: &Cluster,
    ns: &str,
    name: &str,
    dry_run: bool,
) -> Result<Option<ApiKeySecret>, ApplyError> {
    let api: Api<Secret> = Api::namespaced(cluster.client.clone(), ns);
    let object = format!("Secret/{name}");
    if let Some(s) = api
        .get_opt(name)
        .await
        .map_err(|e| api_error(&object, "get", e, ""))?
    {
        return first_key(&s, name).map(|key| {
            Some(ApiKeySecret {
                name: name.into(),
                created: false,
                key,
            })
        });
    }
    if dry_run {
        return Ok(None);
    }
    let key = generate_key()?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                FIELD_MANAGER.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            API_KEYS_DATA_KEY.to_string(),
            ByteString(format!("{key}\n").into_bytes()),
        )])),
        ..Secret::default()
    };
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PostParams::default()
    };
    match api.create(&pp, &secret).await {
        Ok(_) => Ok(Some(ApiKeySecret {
            name: name.into(),
            created: true,
            key,
        })),
        // created by someone else meanwhile: use theirs
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let s = api
                .get(name)
                .await
                .map_err(|e| api_error(&object, "get", e, ""))?;
            first_key(&s, name).map(|key| {
                Some(ApiKeySecret {
                    name: name.into(),
                    created: false,
                    key,
                })
            })
        }
        Err(e) => Err(api_error(&object, "create", e, "")),
    }
}

/// The TLS Secret `name`, which must exist and hold `tls.crt` and `tls.key`.
pub async fn tls(cluster: &Cluster, ns: &str, name: &str) -> Result<TlsSecret, ApplyError> {
    let api: Api<Secret> = Api::namespaced(cluster.client.clone(), ns);
    let object = format!("Secret/{name}");
    let s = api
        .get_opt(name)
        .await
        .map_err(|e| api_error(&object, "get", e, ""))?
        .ok_or_else(|| ApplyError::Secret {
            name: name.into(),
            message: format!(
                "not found in namespace {ns}. Create it first: `kubectl create secret tls {name} --cert=CERT.pem --key=KEY.pem -n {ns}`, or a cert-manager Certificate with secretName {name}"
            ),
        })?;
    let data = s.data.unwrap_or_default();
    for key in ["tls.crt", "tls.key"] {
        if data.get(key).is_none_or(|v| v.0.is_empty()) {
            return Err(ApplyError::Secret {
                name: name.into(),
                message: format!(
                    "has no {key}: a kubernetes.io/tls Secret holds tls.crt and tls.key"
                ),
            });
        }
    }
    let trust_key = match data.get("ca.crt") {
        Some(ca) if !ca.0.is_empty() => "ca.crt",
        _ => "tls.crt",
    };
    let trust = data.get(trust_key).map(|v| v.0.clone()).unwrap_or_default();
    Ok(TlsSecret {
        name: name.into(),
        trust_pem: trust,
        trust_key,
    })
}

/// The first key of the Secret's keys file (blank lines and `#` comments skipped, as the server does).
fn first_key(s: &Secret, name: &str) -> Result<String, ApplyError> {
    let missing = |what: &str| ApplyError::Secret {
        name: name.into(),
        message: format!(
            "{what}: the server reads its API keys from the data key `{API_KEYS_DATA_KEY}` (one key per line)"
        ),
    };
    let data = s
        .data
        .as_ref()
        .and_then(|d| d.get(API_KEYS_DATA_KEY))
        .ok_or_else(|| missing(&format!("has no `{API_KEYS_DATA_KEY}`")))?;
    let text = std::str::from_utf8(&data.0).map_err(|_| missing("its keys are not UTF-8"))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .ok_or_else(|| missing("holds no key"))
}

/// A new API key: 32 random bytes, URL-safe base64 (43 characters).
fn generate_key() -> Result<String, ApplyError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ApplyError::Secret {
            name: String::new(),
            message: "the system's random number generator failed".into(),
        })?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(keys: &str) -> Secret {
        Secret {
            data: Some(BTreeMap::from([(
                API_KEYS_DATA_KEY.to_string(),
                ByteString(keys.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn the_first_key_skips_comments_and_blank_lines() {
        let s = secret("# rotated 2026-12-01\n\n  new-key \nold-key\n");
        assert_eq!(first_key(&s, "k").unwrap(), "new-key");
        let e = first_key(&secret("# nothing\n"), "k")
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no key") && e.contains("api-keys"), "{e}");
        let e = first_key(&Secret::default(), "k").unwrap_err().to_string();
        assert!(e.contains("has no `api-keys`"), "{e}");
    }

    #[test]
    fn generated_keys_are_long_random_and_url_safe() {
        let (a, b) = (generate_key().unwrap(), generate_key().unwrap());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }
}
