//! What the two bounded, sharded maps (the memory store and the over-limit cache) share: how
//! many shards they take, and how often a full map may sweep itself.

use std::sync::atomic::{AtomicU64, Ordering};

/// Shards of a map: 32 per CPU (DashMap's default is 4), at least 64. A decision holds its
/// shard's lock for a few dozen nanoseconds; with many shards two threads rarely want the same
/// one, and a thread descheduled while holding one (a busy machine) stalls few others.
pub(crate) fn shard_amount() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    (cpus * 32).next_power_of_two().clamp(64, 1024)
}

/// Minimum time between two sweeps forced by a full map, µs.
const FORCED_SWEEP_INTERVAL_US: u64 = 100_000;

/// Lets a full map sweep itself at most once per [`FORCED_SWEEP_INTERVAL_US`]: a map full of
/// live entries would otherwise rescan itself on every insertion a flood of new keys attempts.
#[derive(Debug, Default)]
pub(crate) struct SweepGate {
    /// When the last forced sweep was claimed (µs).
    last: AtomicU64,
}

impl SweepGate {
    /// Whether the caller may sweep now (at most one caller per interval gets `true`).
    pub(crate) fn claim(&self, now: u64) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        now.saturating_sub(last) >= FORCED_SWEEP_INTERVAL_US
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_sweep_per_interval() {
        let gate = SweepGate::default();
        assert!(gate.claim(FORCED_SWEEP_INTERVAL_US));
        assert!(!gate.claim(FORCED_SWEEP_INTERVAL_US + 1));
        assert!(!gate.claim(2 * FORCED_SWEEP_INTERVAL_US - 1));
        assert!(gate.claim(2 * FORCED_SWEEP_INTERVAL_US));
    }
}
