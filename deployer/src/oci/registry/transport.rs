//! The transport: image references, the oci-client client (HTTPS except loopback and
//! `--insecure-registry` registries), and how long a pull or push retries.

use std::net::IpAddr;
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};

use super::RegistryError;
use crate::support::install_crypto_provider;

/// How registries are reached: which may be reached over plain HTTP (besides loopback ones), and
/// how long a pull or push keeps retrying an unreachable or failing (429, 5xx) registry.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// Registries (`host[:port]`) that may be reached over plain HTTP (loopback always may).
    pub insecure: Vec<String>,
    pub retry_timeout: Duration,
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
#[cfg(test)]
mod tests {
    use super::*;

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
}
