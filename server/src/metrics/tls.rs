//! The HTTPS listener's metrics: handshakes by outcome and when the certificate in force expires.
//! They exist only when TLS is on, so they join the registry late ([`super::Metrics::set_tls`]).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a TLS handshake ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    Ok,
    /// Not TLS, no common protocol version or cipher, the client refused the certificate, ...
    Failed,
    /// Not done within the header-read timeout.
    TimedOut,
}

impl Handshake {
    pub const ALL: [Handshake; 3] = [Handshake::Ok, Handshake::Failed, Handshake::TimedOut];

    /// The `result` label of `celestial_tls_handshakes_total`.
    pub fn label(self) -> &'static str {
        match self {
            Handshake::Ok => "ok",
            Handshake::Failed => "failed",
            Handshake::TimedOut => "timeout",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    result: &'static str,
}

/// A series without labels, in a family so that it is left out of the exposition until it is
/// first set (the registry skips families without series).
type NoLabels = [(&'static str, &'static str); 0];

/// The HTTPS listener's handshakes by outcome, and when the certificate in force expires.
#[derive(Debug, Default)]
pub struct TlsMetrics {
    handshakes: Family<Outcome, Counter>,
    /// Unix seconds; no series while unknown.
    not_after: Family<NoLabels, Gauge>,
}

impl TlsMetrics {
    pub fn count(&self, h: Handshake) {
        self.handshakes
            .get_or_create(&Outcome { result: h.label() })
            .inc();
    }

    pub fn set_not_after(&self, unix_seconds: i64) {
        self.not_after.get_or_create(&[]).set(unix_seconds);
    }

    /// Adds these metrics to `registry`, every handshake result shown from the start (at 0).
    pub(super) fn register(&self, registry: &mut Registry) {
        for h in Handshake::ALL {
            self.handshakes
                .get_or_create_owned(&Outcome { result: h.label() });
        }
        registry.register(
            "celestial_tls_handshakes",
            "TLS handshakes on the HTTPS listener by result (failed: not TLS, no common version or \
             cipher, certificate refused by the client; timeout: not done within the header-read \
             timeout)",
            self.handshakes.clone(),
        );
        registry.register(
            "celestial_tls_certificate_expiry_timestamp_seconds",
            "When the served TLS certificate expires (Unix time; alert on it minus time())",
            self.not_after.clone(),
        );
    }
}
