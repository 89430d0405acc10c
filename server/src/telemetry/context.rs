//! W3C Trace Context: the `traceparent` (and `tracestate`) a request may carry, the ids of a new
//! trace, and the ids of this server's spans. A leaf.

use std::cell::Cell;
use std::fmt;

/// The request header that carries the caller's trace (W3C Trace Context).
pub const TRACEPARENT: &str = "traceparent";
/// The vendor data that travels with it, passed on unread.
pub const TRACESTATE: &str = "tracestate";
/// Longest `tracestate` kept (the recommendation's limit); a longer one is dropped, not cut.
const MAX_TRACESTATE: usize = 512;

/// A trace's id: 16 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub [u8; 16]);

/// A span's id: 8 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A new random trace id.
    pub fn random() -> TraceId {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&nonzero_random().to_be_bytes());
        id[8..].copy_from_slice(&nonzero_random().to_be_bytes());
        TraceId(id)
    }

    /// The id's last 8 bytes as a number: what a ratio sampler compares (random for the ids
    /// this server makes, and for the callers' ids the W3C recommendation asks to be random).
    pub fn sampling_value(&self) -> u64 {
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&self.0[8..]);
        u64::from_be_bytes(tail)
    }
}

impl SpanId {
    /// A new random span id.
    pub fn random() -> SpanId {
        SpanId(nonzero_random().to_be_bytes())
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// The caller's place in a trace, from a valid `traceparent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's `sampled` flag.
    pub sampled: bool,
    /// The caller's `tracestate`, when it came with one of acceptable length.
    pub state: Option<String>,
}

impl Parent {
    /// The parent `traceparent` names, or `None` when it is malformed (the W3C rule: a request
    /// with an invalid header starts a new trace, as if it had none).
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Parent> {
        let mut fields = traceparent.trim().splitn(5, '-');
        let version = hex_field::<1>(fields.next()?)?;
        let trace_id = TraceId(hex_field::<16>(fields.next()?)?);
        let span_id = SpanId(hex_field::<8>(fields.next()?)?);
        let flags = hex_field::<1>(fields.next()?)?[0];
        // Version ff is forbidden; version 00 has exactly four fields, a later version may append.
        let rest = fields.next();
        if version[0] == 0xff || (version[0] == 0 && rest.is_some()) {
            return None;
        }
        if rest.is_some_and(|r| r.is_empty()) {
            return None;
        }
        if trace_id.0 == [0; 16] || span_id.0 == [0; 8] {
            return None;
        }
        let state = tracestate
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE && s.is_ascii())
            .map(str::to_string);
        Some(Parent {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
            state,
        })
    }
}

/// Exactly `N` bytes as `2N` lowercase hex digits (the W3C format allows no uppercase).
fn hex_field<const N: usize>(s: &str) -> Option<[u8; N]> {
    let digits = s.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (hex_digit(pair[0])? << 4) | hex_digit(pair[1])?;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// A random non-zero number from a per-thread SplitMix64 generator, seeded from the standard
/// library's randomly keyed hasher: ids must not collide across servers, and asking the OS for
/// every id would cost a system call per request.
pub fn nonzero_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    loop {
        let z = STATE.with(|s| {
            let next = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
            s.set(next);
            next
        });
        let mut z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        if z != 0 {
            return z;
        }
    }
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued() {
        let p = Parent::parse(VALID, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id.to_string(), "00f067aa0ba902b7");
        assert!(p.sampled);
        assert_eq!(p.state.as_deref(), Some("congo=t61rcWkgMzE"));
        let unsampled = VALID.replace("-01", "-00");
        assert!(!Parent::parse(&unsampled, None).unwrap().sampled);
        // A later version may carry more fields; its first four are read as version 00's.
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes";
        assert!(Parent::parse(later, None).unwrap().sampled);
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        ] {
            assert_eq!(Parent::parse(bad, None), None, "{bad:?}");
        }
    }

    #[test]
    fn an_oversized_tracestate_is_dropped_not_cut() {
        let long = "k=".to_string() + &"v".repeat(MAX_TRACESTATE);
        assert_eq!(Parent::parse(VALID, Some(&long)).unwrap().state, None);
    }

    #[test]
    fn new_ids_are_random_and_never_zero() {
        let a = TraceId::random();
        let b = TraceId::random();
        assert_ne!(a, b);
        assert_ne!(a.0, [0; 16]);
        assert_ne!(SpanId::random(), SpanId::random());
        assert_eq!(a.to_string().len(), 32);
    }
}
