//! Sliding window counter: `prev · (1 − e/P) + curr + cost <= L`, where `e` is the time elapsed
//! in the current window. Evaluated as `prev·(P − e) + (curr + cost)·P <= L·P` in integers, so
//! there is no rounding anywhere (the policy keeps `L·P` below 2^53).

use crate::algorithm::Mode;
use crate::algorithm::fixed_window::current_window;
use crate::decision::Decision;
use crate::policy::Policy;

/// The current window index with its count, and the previous window's count.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingWindow {
    /// `floor(t / P)` of the window `curr` belongs to.
    pub window: u64,
    /// Cost admitted in `window`.
    pub curr: u64,
    /// Cost admitted in `window − 1`.
    pub prev: u64,
}

impl SlidingWindow {
    /// Charge the current window's count (up to twice the limit, [`super::adjust_count`]), or
    /// refund from it and then from the previous window's (never below zero).
    pub fn adjust(&mut self, now: u64, policy: &Policy, delta: i64) {
        let (window, mut prev, mut curr) = self.counts_at(now, policy);
        let limit = policy.limit();
        if delta >= 0 {
            curr = super::adjust_count(curr, delta, 1, super::charge_ceiling(limit, limit));
        } else {
            let refund = delta.unsigned_abs();
            let from_curr = refund.min(curr);
            curr -= from_curr;
            prev = prev.saturating_sub(refund - from_curr);
        }
        *self = SlidingWindow { window, curr, prev };
    }

    /// The window `now` is in, with the previous and current counts as of then.
    #[inline]
    fn counts_at(&self, now: u64, policy: &Policy) -> (u64, u64, u64) {
        let window = current_window(now / policy.period_us(), self.window);
        let (prev, curr) = if window == self.window {
            (self.prev, self.curr)
        } else if window == self.window + 1 {
            (self.curr, 0)
        } else {
            (0, 0)
        };
        (window, prev, curr)
    }

    /// Allow if the weighted count plus `cost` stays within the limit.
    #[inline]
    pub fn decide(&mut self, now: u64, policy: &Policy, cost: u64, mode: Mode) -> Decision {
        let (limit, period) = (policy.limit(), policy.period_us());
        let (window, prev, curr) = self.counts_at(now, policy);
        let elapsed = now.saturating_sub(window * period);
        let weighted_prev = prev * (period - elapsed);
        let allowed = weighted_prev + (curr + cost) * period <= limit * period;

        let mut retry_after_us = 0;
        let curr_after = if allowed && mode == Mode::Consume {
            *self = SlidingWindow {
                window,
                curr: curr + cost,
                prev,
            };
            curr + cost
        } else {
            if !allowed {
                retry_after_us = retry_after(prev, curr, elapsed, policy, cost);
            }
            curr
        };
        let remaining = limit
            .saturating_sub(curr_after)
            .saturating_sub(weighted_prev.div_ceil(period));
        let reset_after_us = if curr_after > 0 {
            2 * period - elapsed
        } else if prev > 0 {
            period - elapsed
        } else {
            0
        };
        Decision {
            allowed,
            limit,
            period_us: policy.period_us(),
            remaining,
            reset_after_us,
            retry_after_us,
        }
    }
}

/// The earliest wait after which `cost` passes, for a request rejected at `elapsed`.
fn retry_after(prev: u64, curr: u64, elapsed: u64, policy: &Policy, cost: u64) -> u64 {
    let (limit, period) = (policy.limit(), policy.period_us());
    if curr + cost <= limit {
        // Within this window, once prev·(P − e') <= (L − curr − cost)·P. Rejected means prev > 0.
        let room = (limit - curr - cost) * period;
        let earliest = period - room / prev;
        earliest - elapsed
    } else {
        // In the next window, where curr becomes prev: curr·(P − e') <= (L − cost)·P.
        let room = (limit - cost) * period;
        let earliest = period.saturating_sub(room / curr);
        (period - elapsed) + earliest
    }
}
