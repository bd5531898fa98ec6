//! Properties of the pure transitions, over arbitrary traces.

use std::time::Duration;

use proptest::prelude::*;
use tollgate::{Algorithm, Mode, Policy, State};

/// A trace: (time step µs, cost, peek?) triples.
fn trace() -> impl Strategy<Value = Vec<(u64, u64, bool)>> {
    prop::collection::vec((0u64..700_000, 1u64..4, prop::bool::weighted(0.15)), 1..300)
}

fn policy(algorithm: Algorithm, limit: u64, period_us: u64) -> Policy {
    Policy::new(algorithm, limit, Duration::from_micros(period_us), None).unwrap()
}

/// Replay a trace; returns (time, cost) of every admitted consume.
fn admitted(p: &Policy, trace: &[(u64, u64, bool)]) -> Vec<(u64, u64)> {
    let mut state = State::fresh(p.algorithm());
    let mut now = 1_700_000_000_000_000;
    let mut out = Vec::new();
    for &(step, cost, peek) in trace {
        now += step;
        let cost = cost.min(p.capacity());
        let mode = if peek { Mode::Peek } else { Mode::Consume };
        if state.decide(now, p, cost, mode).allowed && !peek {
            out.push((now, cost));
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Sliding log: no window (t − P, t] ever holds more than L.
    #[test]
    fn sliding_log_never_exceeds_any_window(limit in 1u64..12, period in 1u64..3_000_000, t in trace()) {
        let p = policy(Algorithm::SlidingLog, limit, period);
        let a = admitted(&p, &t);
        for &(end, _) in &a {
            let in_window: u64 = a.iter().filter(|&&(at, _)| at + period > end && at <= end).map(|&(_, c)| c).sum();
            prop_assert!(in_window <= limit, "window ending {end} holds {in_window} > {limit}");
        }
    }

    /// Fixed and sliding window: no aligned window [kP, (k+1)P) ever holds more than L.
    #[test]
    fn window_counters_never_exceed_an_aligned_window(limit in 1u64..12, period in 1u64..3_000_000, t in trace()) {
        for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
            let p = policy(algorithm, limit, period);
            let a = admitted(&p, &t);
            let mut per_window = std::collections::HashMap::<u64, u64>::new();
            for &(at, c) in &a {
                *per_window.entry(at / period).or_default() += c;
            }
            prop_assert!(per_window.values().all(|&n| n <= limit), "{algorithm}: {per_window:?}");
        }
    }

    /// Sliding window counter: over any two adjacent aligned windows the weighted count holds.
    /// In any span of length P it admits at most 2L (the approximation's known bound).
    #[test]
    fn sliding_window_bounded_by_two_limits(limit in 1u64..12, period in 1u64..3_000_000, t in trace()) {
        let p = policy(Algorithm::SlidingWindow, limit, period);
        let a = admitted(&p, &t);
        for &(end, _) in &a {
            let n: u64 = a.iter().filter(|&&(at, _)| at + period > end && at <= end).map(|&(_, c)| c).sum();
            prop_assert!(n <= 2 * limit);
        }
    }

    /// Token bucket and GCRA: in any span [s, e] at most B + (e − s)·L/P is admitted.
    #[test]
    fn buckets_respect_the_rate(limit in 1u64..12, period in 1u64..3_000_000, t in trace()) {
        for algorithm in [Algorithm::TokenBucket, Algorithm::Gcra] {
            let p = policy(algorithm, limit, period);
            let a = admitted(&p, &t);
            for (i, &(start, _)) in a.iter().enumerate() {
                let mut sum = 0u128;
                for &(at, c) in &a[i..] {
                    sum += u128::from(c);
                    let allowance = u128::from(p.capacity()) * u128::from(period)
                        + u128::from(at - start) * u128::from(limit);
                    prop_assert!(sum * u128::from(period) <= allowance, "{algorithm}: {sum} in {}µs", at - start);
                }
            }
        }
    }

    /// Token bucket and GCRA decide identically on every trace, with any burst.
    #[test]
    fn token_bucket_and_gcra_agree(limit in 1u64..50, burst in 1u64..50, period in 1u64..10_000_000, t in trace()) {
        let tb = Policy::new(Algorithm::TokenBucket, limit, Duration::from_micros(period), Some(burst)).unwrap();
        let gc = Policy::new(Algorithm::Gcra, limit, Duration::from_micros(period), Some(burst)).unwrap();
        let (mut s1, mut s2) = (State::fresh(Algorithm::TokenBucket), State::fresh(Algorithm::Gcra));
        let mut now = 1_700_000_000_000_000u64;
        for &(step, cost, peek) in &t {
            now += step;
            let cost = cost.min(burst);
            let mode = if peek { Mode::Peek } else { Mode::Consume };
            prop_assert_eq!(s1.decide(now, &tb, cost, mode), s2.decide(now, &gc, cost, mode));
        }
    }

    /// A rejected request and a peek never change the state; a rejection's retry_after is the
    /// earliest instant it passes (it passes then, and not one microsecond before).
    #[test]
    fn rejections_and_peeks_change_nothing(limit in 1u64..12, period in 1u64..3_000_000, t in trace()) {
        for algorithm in Algorithm::ALL {
            let p = policy(algorithm, limit, period);
            let mut state = State::fresh(algorithm);
            let mut now = 1_700_000_000_000_000u64;
            for &(step, cost, peek) in &t {
                now += step;
                let cost = cost.min(p.capacity());
                let before = state.clone();
                let mode = if peek { Mode::Peek } else { Mode::Consume };
                let d = state.decide(now, &p, cost, mode);
                if peek || !d.allowed {
                    prop_assert_eq!(&state, &before, "{} changed state", algorithm);
                }
                if !d.allowed {
                    prop_assert!(d.retry_after_us > 0);
                    let mut probe = state.clone();
                    prop_assert!(probe.decide(now + d.retry_after_us, &p, cost, Mode::Peek).allowed,
                        "{algorithm}: not allowed after retry_after {}", d.retry_after_us);
                    prop_assert!(!probe.decide(now + d.retry_after_us - 1, &p, cost, Mode::Peek).allowed,
                        "{algorithm}: allowed before retry_after {}", d.retry_after_us);
                }
                prop_assert!(d.remaining <= d.limit);
                // After reset_after the key is back to a full quota.
                let mut probe = state.clone();
                let full = probe.decide(now + d.reset_after_us.max(if d.allowed && !peek {1} else {0}), &p, 1, Mode::Peek);
                if d.reset_after_us > 0 {
                    prop_assert_eq!(full.remaining, p.capacity(), "{} not full after reset_after", algorithm);
                }
            }
        }
    }
}

/// A policy whose period grows (a config change on a shared store) finds state stored under the
/// old period: it must decide as a fresh window, not lock the key for centuries or overflow.
#[test]
fn a_longer_period_does_not_lock_window_keys() {
    for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
        let short = policy(algorithm, 10, 1_000_000);
        let long = policy(algorithm, 10, 86_400_000_000);
        let now = 1_700_000_000_123_456u64;
        let mut state = State::fresh(algorithm);
        for _ in 0..10 {
            assert!(state.decide(now, &short, 1, Mode::Consume).allowed);
        }
        let d = state.decide(now + 1, &long, 1, Mode::Consume);
        assert!(d.allowed, "{algorithm}: {d:?}");
        assert!(d.reset_after_us <= 2 * 86_400_000_000, "{algorithm}: {d:?}");
        // And back to the short period: the long window's state is in the past, also fresh.
        let d = state.decide(now + 2, &short, 10, Mode::Consume);
        assert!(d.allowed, "{algorithm}: {d:?}");
    }
}
