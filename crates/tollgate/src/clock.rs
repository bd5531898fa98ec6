//! Where "now" comes from: the system clock, or a manual clock for tests and simulations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in microseconds since the Unix epoch.
///
/// Fixed windows align to the epoch, so the system clock is wall time, not a monotonic clock.
/// Stores that keep state elsewhere (Redis) read time there instead; see the store's docs.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// `SystemTime::now()`.
    #[default]
    System,
    /// A clock that moves only when told to.
    Manual(ManualClock),
}

impl Clock {
    /// Microseconds since the Unix epoch.
    #[inline]
    pub fn now_us(&self) -> u64 {
        match self {
            Clock::System => system_now_us(),
            Clock::Manual(m) => m.now_us(),
        }
    }
}

/// Wall-clock microseconds since the Unix epoch, read cheaply.
///
/// The wall clock is read once; from then on time advances by a monotonic TSC-based clock
/// (`quanta`, a few nanoseconds a read instead of ~35 for `SystemTime::now`). So it never steps
/// backwards when NTP adjusts the wall clock, and it is the same for every thread.
#[inline]
pub fn system_now_us() -> u64 {
    static ANCHOR: OnceLock<(quanta::Instant, u64)> = OnceLock::new();
    let (start, start_us) = ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        (quanta::Instant::now(), wall)
    });
    start_us + quanta::Instant::now().duration_since(*start).as_micros() as u64
}

/// A shared, manually advanced clock.
///
/// ```
/// use tollgate::ManualClock;
/// let clock = ManualClock::new(1_000);
/// clock.advance_us(500);
/// assert_eq!(clock.now_us(), 1_500);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `now_us`.
    pub fn new(now_us: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(now_us)))
    }

    /// The current reading.
    pub fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// Set the reading (it may go backwards, to test clock steps).
    pub fn set_us(&self, now_us: u64) {
        self.0.store(now_us, Ordering::SeqCst);
    }

    /// Move the reading forward.
    pub fn advance_us(&self, by_us: u64) {
        self.0.fetch_add(by_us, Ordering::SeqCst);
    }
}
