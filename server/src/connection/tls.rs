//! TLS for the HTTPS listener (issue 16): rustls with the ring provider, TLS 1.2 and 1.3, ALPN
//! `h2` and `http/1.1`. The certificate is chosen per handshake by [`CertResolver`], whose pair
//! [`CertResolver::replace`] swaps while connections are open: a new handshake gets the new pair,
//! an open connection keeps the one it was made with, so a rotation drops nothing.
//!
//! A leaf of the connection layer: it imports nothing from the crate.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// ALPN protocols offered, in order of preference.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the certificate file has no PEM certificate")]
    NoCertificate,
    #[error("the certificate file is not valid PEM: {0}")]
    Certificate(rustls_pki_types::pem::Error),
    #[error("the key file has no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC): {0}")]
    Key(rustls_pki_types::pem::Error),
    #[error("the certificate and key cannot be used together: {0}")]
    Pair(rustls::Error),
}

/// The crypto provider of every TLS config of the server (ring, set explicitly: the process
/// default is never relied upon).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and key from their PEM files' contents, checked to belong together.
pub fn load_pair(cert_pem: &[u8], key_pem: &[u8]) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Certificate)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::Key)?;
    let pair = CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Pair)?;
    // `from_der` lets a key whose public half it cannot compute pass; insist on a match.
    pair.keys_match().map_err(TlsError::Pair)?;
    Ok(Arc::new(pair))
}

/// The certificate in force, swapped by a reload.
pub struct CertResolver {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertResolver")
    }
}

impl CertResolver {
    pub fn new(pair: Arc<CertifiedKey>) -> Arc<CertResolver> {
        Arc::new(CertResolver {
            current: RwLock::new(pair),
        })
    }

    /// Serve `pair` to new connections from now on.
    pub fn replace(&self, pair: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut c) => *c = pair,
            Err(poisoned) => *poisoned.into_inner() = pair,
        }
    }

    /// The pair in force.
    pub fn current(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server's TLS configuration: TLS 1.2 and 1.3, no client certificates, ALPN h2 and
/// http/1.1, the certificate from `resolver`.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client config for the `healthcheck --tls` probe: any certificate is accepted (the probe
/// checks that the server answers over TLS, not whose it is, like the kubelet's HTTPS probes),
/// while the handshake's signatures are still verified.
pub fn probe_client_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(AnyCertificate(Arc::clone(&provider)));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate; verifies handshake signatures with the provider.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_errors_not_panics() {
        assert!(matches!(load_pair(b"", b""), Err(TlsError::NoCertificate)));
        assert!(matches!(
            load_pair(b"not pem at all", b""),
            Err(TlsError::NoCertificate)
        ));
        let broken = b"-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n";
        assert!(load_pair(broken, b"").is_err());
    }
}
