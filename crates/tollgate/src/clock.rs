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
/// backwards when NTP adjusts the wall clock, and it is the same for every thread. The raw
/// counter is read from one shared `quanta::Clock` and scaled once (not through
/// `quanta::Instant`, whose per-read lookup of a thread-local mock clock and `Duration`
/// arithmetic cost about a tenth of a memory-store decision).
#[inline]
pub fn system_now_us() -> u64 {
    struct Anchor {
        clock: quanta::Clock,
        raw: u64,
        wall_us: u64,
    }
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    let anchor = ANCHOR.get_or_init(|| {
        let clock = quanta::Clock::new();
        let raw = clock.raw();
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        Anchor {
            clock,
            raw,
            wall_us,
        }
    });
    anchor.wall_us + anchor.clock.delta_as_nanos(anchor.raw, anchor.clock.raw()) / 1000
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_is_wall_time_and_never_steps_back() {
        let wall = |now: SystemTime| now.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64;
        let before = wall(SystemTime::now());
        let mut last = system_now_us();
        for _ in 0..10_000 {
            let now = system_now_us();
            assert!(now >= last, "{now} < {last}");
            last = now;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = system_now_us();
        let after = wall(SystemTime::now());
        assert!(
            now >= last + 15_000,
            "20 ms of sleep advanced it by {} µs",
            now - last
        );
        // Anchored on the wall clock: within 100 ms of it (the anchor may predate `before`).
        assert!(
            now + 100_000 >= before && now <= after + 100_000,
            "{before} {now} {after}"
        );
    }
}
