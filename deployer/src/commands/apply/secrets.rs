//! The Secrets of `--api-key-secret` and `--tls-secret`: read (the API-key one created) before
//! anything is applied, then what the smoke test and the report need of them.

use super::report::ApiKeyReport;
use crate::cli::apply::SecurityArgs;
use crate::error::Error;
use crate::kube::cluster::Cluster;
use crate::kube::monitoring::TlsScrape;
use crate::kube::secrets::{self, ApiKeySecret, TlsSecret};
use crate::kube::secure;
use crate::smoke;

/// The Secrets `--api-key-secret` and `--tls-secret` name, read (the API-key one created when
/// absent) before anything is applied, so a missing TLS Secret leaves the cluster untouched.
#[derive(Debug, Default)]
pub struct Secrets {
    namespace: String,
    api_key: Option<ApiKeySecret>,
    tls: Option<TlsSecret>,
}

impl Secrets {
    pub(super) async fn prepare(
        cluster: &Cluster,
        ns: &str,
        s: &SecurityArgs,
    ) -> Result<Secrets, Error> {
        let tls = match &s.tls_secret {
            Some(name) => Some(secrets::tls(cluster, ns, name).await?),
            None => None,
        };
        let api_key = match &s.api_key_secret {
            Some(name) => secrets::api_key(cluster, ns, name, false).await?,
            None => None,
        };
        Ok(Secrets {
            namespace: ns.into(),
            api_key,
            tls,
        })
    }

    /// What the smoke test needs to get in.
    pub(super) fn access(&self, s: &SecurityArgs) -> smoke::Access {
        smoke::Access {
            api_key: self.api_key.as_ref().map(|k| k.key.clone()),
            trust_pem: self.tls.as_ref().map(|t| t.trust_pem.clone()),
            server_name: s.tls_server_name.clone(),
        }
    }

    /// With `--tls-secret`, how Prometheus scrapes the pods (`--monitoring`).
    pub(super) fn tls_scrape(&self, s: &SecurityArgs) -> Option<TlsScrape> {
        self.tls.as_ref().map(|t| scrape(t, s))
    }

    pub(super) fn api_key_report(&self, s: &SecurityArgs) -> Option<ApiKeyReport> {
        self.api_key.as_ref().map(|k| ApiKeyReport {
            secret: k.name.clone(),
            created: k.created,
            read_with: format!(
                "kubectl get secret {} -n {} -o jsonpath='{{.data.{}}}' | base64 -d",
                k.name,
                self.namespace,
                secure::API_KEYS_DATA_KEY
            ),
            key: s.show_api_key.then(|| k.key.clone()),
        })
    }
}

/// With `--tls-secret`, its Secret read (nothing created, as a dry run wants) for how Prometheus
/// scrapes the pods (`--monitoring`).
pub(super) async fn tls_scrape(
    cluster: &Cluster,
    ns: &str,
    s: &SecurityArgs,
) -> Result<Option<TlsScrape>, Error> {
    match &s.tls_secret {
        Some(name) => Ok(Some(scrape(&secrets::tls(cluster, ns, name).await?, s))),
        None => Ok(None),
    }
}

fn scrape(t: &TlsSecret, s: &SecurityArgs) -> TlsScrape {
    TlsScrape {
        secret: t.name.clone(),
        trust_key: t.trust_key.into(),
        server_name: s.tls_server_name.clone(),
    }
}
