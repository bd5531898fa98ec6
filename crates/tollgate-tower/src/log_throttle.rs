//! At most one store-failure log line per second, so an outage does not flood the logs with one
//! line per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tollgate::{OnError, StoreError};

/// Lets one caller through per second and counts the rest.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    start: Instant,
    /// The second (since `start`) of the last line, plus one; 0 before the first.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new() -> LogThrottle {
        LogThrottle {
            start: Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one)` if this caller should log now.
    pub(crate) fn admit(&self) -> Option<u64> {
        let now = self.start.elapsed().as_secs() + 1;
        let last = self.last.load(Ordering::Relaxed);
        if now > last
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Log a store failure decided by `on_error`, throttled.
    pub(crate) fn store_failed(&self, error: &StoreError, on_error: OnError) {
        let Some(suppressed) = self.admit() else {
            return;
        };
        let outcome = match on_error {
            OnError::Allow => "requests let through (fail open)",
            OnError::Deny => "requests refused with 503 (fail closed)",
            OnError::Local => "requests decided on this instance alone (local fallback)",
        };
        tracing::warn!(%error, suppressed, "rate limiter store failed; {outcome}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_second() {
        let throttle = LogThrottle::new();
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.admit(), None);
        }
        // Pretend a second passed.
        throttle.last.fetch_sub(1, Ordering::Relaxed);
        assert_eq!(throttle.admit(), Some(5));
    }
}
