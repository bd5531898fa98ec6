//! Fixed window: a counter per window `[k·P, (k+1)·P)` aligned to the Unix epoch, or per UTC
//! calendar month for a monthly policy.

use crate::algorithm::Mode;
use crate::calendar;
use crate::decision::Decision;
use crate::policy::Policy;

/// The window index and the cost counted in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixedWindow {
    /// `floor(t / P)` of the window the count belongs to.
    pub window: u64,
    /// Cost admitted in that window.
    pub count: u64,
}

impl FixedWindow {
    /// Charge or refund the current window's count ([`super::adjust_count`]): a charge may
    /// count up to twice the limit, so the window stays closed to its end; a debt is not
    /// carried into the next window.
    pub fn adjust(&mut self, now: u64, policy: &Policy, delta: i64) {
        let (window, _) = self.window_at(now, policy);
        let count = if window == self.window { self.count } else { 0 };
        let limit = policy.limit();
        self.window = window;
        self.count = super::adjust_count(count, delta, 1, super::charge_ceiling(limit, limit));
    }

    /// The window `now` is in, and the time until it ends.
    #[inline]
    fn window_at(&self, now: u64, policy: &Policy) -> (u64, u64) {
        if policy.is_monthly() {
            // Calendar months: window k is month k since January 1970 (calendar.rs).
            let window = current_window(calendar::month_of(now), self.window);
            (
                window,
                calendar::month_start_us(window + 1).saturating_sub(now),
            )
        } else {
            let period = policy.period_us();
            let window = current_window(now / period, self.window);
            (window, ((window + 1) * period).saturating_sub(now))
        }
    }

    /// Allow if `count + cost <= limit`; a rejected request waits for the next window.
    #[inline]
    pub fn decide(&mut self, now: u64, policy: &Policy, cost: u64, mode: Mode) -> Decision {
        let limit = policy.limit();
        let (window, until_end) = self.window_at(now, policy);
        let count = if window == self.window { self.count } else { 0 };
        let allowed = count + cost <= limit;
        let used = if allowed && mode == Mode::Consume {
            self.window = window;
            self.count = count + cost;
            self.count
        } else {
            count
        };
        Decision {
            allowed,
            limit,
            period_us: policy.period_us(),
            remaining: limit.saturating_sub(used),
            reset_after_us: if used > 0 { until_end } else { 0 },
            retry_after_us: if allowed { 0 } else { until_end },
        }
    }
}

/// The window a state stored for window `stored` is in at window `current`. A clock that steps
/// back never reopens a window already counted (the stored one, even one ahead, is kept); a
/// stored window more than one ahead was counted under a longer period (the policy changed), so
/// it is stale and `current` starts afresh. Shared with the sliding window.
#[inline]
pub fn current_window(current: u64, stored: u64) -> u64 {
    if stored <= current + 1 {
        current.max(stored)
    } else {
        current
    }
}
