//! TLS for the HTTPS listener: rustls with the ring provider, TLS 1.2 and 1.3, ALPN
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

/// How soon before its expiry a certificate is warned about (at start and at every reload).
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// When the leaf certificate of `pair` stops being valid (Unix seconds), or why it cannot be read
/// (rustls serves a chain without parsing it; clients will judge it).
pub fn not_after(pair: &CertifiedKey) -> Result<i64, String> {
    let leaf = pair.end_entity_cert().map_err(|e| e.to_string())?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// A warning when a certificate valid until `not_after` has expired, or expires within
/// [`EXPIRY_WARNING_DAYS`], at `now` (both Unix seconds).
pub fn expiry_warning(not_after: i64, now: i64) -> Option<String> {
    let left = not_after - now;
    if left <= 0 {
        Some(format!(
            "the TLS certificate expired {} ago: clients refuse it; replace the certificate file",
            human_duration(-left)
        ))
    } else if left < EXPIRY_WARNING_DAYS * 86_400 {
        Some(format!(
            "the TLS certificate expires in {}: replace the certificate file before then",
            human_duration(left)
        ))
    } else {
        None
    }
}

/// A Unix time as the certificate's own notation (e.g. `May 17 00:00:00 2031 +00:00`).
pub fn utc(unix_seconds: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(unix_seconds)
        .map_or_else(|_| format!("{unix_seconds} (Unix time)"), |t| t.to_string())
}

fn human_duration(seconds: i64) -> String {
    match seconds {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} hours", s / 3_600),
        s => format!("{} minutes", (s + 59) / 60),
    }
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

    #[test]
    fn expiry_is_warned_about_two_weeks_ahead_and_after() {
        let now = 1_800_000_000;
        assert_eq!(expiry_warning(now + 30 * 86_400, now), None);
        assert_eq!(
            expiry_warning(now + EXPIRY_WARNING_DAYS * 86_400, now),
            None
        );
        let soon = expiry_warning(now + 3 * 86_400 + 5, now).unwrap();
        assert!(soon.contains("expires in 3 days"), "{soon}");
        let hours = expiry_warning(now + 5 * 3_600, now).unwrap();
        assert!(hours.contains("expires in 5 hours"), "{hours}");
        let minutes = expiry_warning(now + 61, now).unwrap();
        assert!(minutes.contains("expires in 2 minutes"), "{minutes}");
        let gone = expiry_warning(now - 10 * 86_400, now).unwrap();
        assert!(gone.contains("expired 10 days ago"), "{gone}");
        assert!(expiry_warning(now, now).unwrap().contains("expired"));
    }

    #[test]
    fn the_leafs_expiry_is_read() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 5, 17);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pair = load_pair(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        // 2031-05-17T00:00:00Z
        assert_eq!(not_after(&pair), Ok(1_936_742_400));
        assert_eq!(utc(1_936_742_400), "May 17 00:00:00 2031 +00:00");
    }
}
