//! One connection's progress, shared by its IO wrapper (bytes read), its service (requests started
//! and finished) and its task, which turns it into the next deadline: the header-read timeout
//! while a request head is awaited, the idle timeout between requests, none while a request runs.
//!
//! A leaf of the connection layer: it imports nothing from the crate.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The two connection timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A new connection's first request head, and a request head once its first byte arrived.
    pub header_read: Duration,
    /// Between requests on a keep-alive connection.
    pub idle: Duration,
}

/// Why a connection's deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// The request head did not arrive in time (a silent or slowloris connection).
    HeaderRead,
    /// No new request in time after the last answer.
    Idle,
}

impl Expiry {
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::HeaderRead => "header_read_timeout",
            Expiry::Idle => "idle_timeout",
        }
    }
}

/// A connection's progress (all fields are updated lock-free from the IO and service paths).
pub struct Progress {
    opened: Instant,
    /// Requests whose answer is not complete yet.
    in_flight: AtomicU32,
    /// Requests started on this connection.
    started: AtomicU64,
    /// When the connection last became idle, in ms since `opened`.
    idle_since_ms: AtomicU64,
    /// When the first byte after becoming idle arrived, in ms since `opened`, plus 1 (0 = none).
    first_byte_ms: AtomicU64,
    /// An HTTP/2 connection (frames such as PING or WINDOW_UPDATE are not a request head).
    h2: AtomicBool,
    /// Wakes the connection's task when its deadline may have changed.
    pub changed: Notify,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            opened: Instant::now(),
            in_flight: AtomicU32::new(0),
            started: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            first_byte_ms: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// Bytes arrived (called by the IO wrapper on every successful read).
    pub fn bytes_read(&self) {
        // Only the first byte of a head on a connection that has served a request matters: a new
        // connection's deadline counts from its opening whatever it sends.
        if self.first_byte_ms.load(Ordering::Relaxed) == 0
            && self.in_flight.load(Ordering::Relaxed) == 0
            && self.started.load(Ordering::Relaxed) > 0
            && !self.h2.load(Ordering::Relaxed)
        {
            self.first_byte_ms
                .store(self.now_ms() + 1, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    /// A request head was parsed and handed to the service; `h2` tells its protocol.
    pub fn request_started(&self, h2: bool) {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.first_byte_ms.store(0, Ordering::Relaxed);
    }

    /// A request's answer is complete (or the request was dropped).
    pub fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since_ms.store(self.now_ms(), Ordering::Relaxed);
            self.first_byte_ms.store(0, Ordering::Relaxed);
            self.changed.notify_one();
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// The next deadline and what it enforces; `None` while a request is in flight (its own
    /// timeouts apply).
    pub fn deadline(&self, t: &Timeouts) -> Option<(Instant, Expiry)> {
        if self.in_flight() > 0 {
            return None;
        }
        if self.started() == 0 {
            return Some((self.opened + t.header_read, Expiry::HeaderRead));
        }
        match self.first_byte_ms.load(Ordering::Relaxed) {
            0 => Some((
                self.at(self.idle_since_ms.load(Ordering::Relaxed)) + t.idle,
                Expiry::Idle,
            )),
            first => Some((self.at(first - 1) + t.header_read, Expiry::HeaderRead)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header_read: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[test]
    fn a_new_connection_gets_the_header_timeout_from_its_opening() {
        let p = Progress::new();
        p.bytes_read();
        let (at, why) = p.deadline(&T).unwrap();
        assert_eq!(why, Expiry::HeaderRead);
        assert!(at <= Instant::now() + T.header_read);
    }

    #[test]
    fn requests_in_flight_have_no_deadline_then_the_idle_one_then_the_header_one() {
        let p = Progress::new();
        p.request_started(false);
        p.request_started(false);
        assert!(p.deadline(&T).is_none());
        p.request_finished();
        assert!(p.deadline(&T).is_none(), "one request still runs");
        p.request_finished();
        let (idle_at, why) = p.deadline(&T).unwrap();
        assert_eq!(why, Expiry::Idle);
        assert!(idle_at > Instant::now() + T.header_read);
        p.bytes_read();
        let (head_at, why) = p.deadline(&T).unwrap();
        assert_eq!(why, Expiry::HeaderRead);
        assert!(head_at < idle_at);
        p.request_started(false);
        assert!(p.deadline(&T).is_none());
        assert_eq!(p.started(), 3);
    }

    #[test]
    fn http2_frames_between_requests_do_not_start_a_head() {
        let p = Progress::new();
        p.request_started(true);
        p.request_finished();
        p.bytes_read();
        assert_eq!(p.deadline(&T).unwrap().1, Expiry::Idle);
        assert!(p.is_h2());
    }
}
