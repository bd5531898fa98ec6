//! The arithmetic token bucket and GCRA share: one token is `P` units and one microsecond
//! refills `L` units, so the capacity is `B·P` units and refill never loses a fraction.

use crate::decision::Decision;
use crate::policy::Policy;

/// Decide a request of `cost` against `used` units already taken at this instant.
/// Returns the units taken after the request when it is allowed (`None` when rejected).
#[inline]
pub fn decide(used: u64, policy: &Policy, cost: u64) -> (Option<u64>, Decision) {
    let (limit, period) = (policy.limit(), policy.period_us());
    let capacity = policy.capacity();
    let full = capacity * period;
    let wanted = used + cost * period;
    if wanted <= full {
        let decision = Decision {
            allowed: true,
            limit: capacity,
            period_us: period,
            remaining: (full - wanted) / period,
            reset_after_us: wanted.div_ceil(limit),
            retry_after_us: 0,
        };
        (Some(wanted), decision)
    } else {
        let decision = Decision {
            allowed: false,
            limit: capacity,
            period_us: period,
            remaining: full.saturating_sub(used) / period,
            reset_after_us: used.div_ceil(limit),
            retry_after_us: (wanted - full).div_ceil(limit),
        };
        (None, decision)
    }
}

/// Like [`decide`] for a peek: `allowed` and `retry_after` as for `cost`, `remaining` and
/// `reset_after` as they are now.
pub fn peek(used: u64, policy: &Policy, cost: u64) -> Decision {
    let mut decision = decide(used, policy, cost).1;
    if decision.allowed {
        let period = policy.period_us();
        decision.remaining = (policy.capacity() * period).saturating_sub(used) / period;
        decision.reset_after_us = used.div_ceil(policy.limit());
    }
    decision
}

/// Units still taken `elapsed` µs after `used` were taken (refill `L` units per µs, floor 0).
#[inline]
pub fn drain(used: u64, elapsed: u64, policy: &Policy) -> u64 {
    let limit = policy.limit();
    if elapsed >= used.div_ceil(limit) {
        0
    } else {
        used - elapsed * limit
    }
}

/// `used` after a charge or refund of `delta` tokens: a charge may take the bucket one
/// period's refill (`L` tokens) below empty, so the next requests wait for it; a refund never
/// fills it past its capacity.
#[inline]
pub fn adjust(used: u64, policy: &Policy, delta: i64) -> u64 {
    let period = policy.period_us();
    // (capacity + limit)·P stays below 2^53: policy validation bounds exactly this sum.
    let ceiling = (policy.capacity() + policy.limit()) * period;
    super::adjust_count(used, delta, period, ceiling)
}
