//! Sliding log: the exact sum of costs admitted in `(now − P, now]`.

use std::collections::VecDeque;

use crate::algorithm::Mode;
use crate::decision::Decision;
use crate::policy::Policy;

/// Admitted requests as `(timestamp µs, cost)`, oldest first; equal timestamps are merged, so
/// the log holds at most `limit` entries (twice that after charges, [`SlidingLog::charge`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingLog {
    /// `(timestamp, cost)` of each admitted request still in the window.
    pub entries: VecDeque<(u64, u64)>,
    /// Sum of the costs in `entries`.
    pub total: u64,
}

impl SlidingLog {
    /// Charge `delta` after the fact: admitted as a request of that cost would be, whatever
    /// the limit, up to twice the limit in the window ([`super::adjust_count`]). A log records
    /// when each unit was admitted, so a refund could only be guessed: it takes charges only
    /// (callers refuse `delta < 0`; here it changes nothing).
    pub fn charge(&mut self, now: u64, policy: &Policy, delta: i64) {
        let limit = policy.limit();
        let (expired, in_window) = self.in_window(now, policy);
        let charged = super::adjust_count(in_window, delta, 1, super::charge_ceiling(limit, limit));
        if charged > in_window {
            self.admit(now, expired, in_window, charged - in_window);
        }
    }

    /// How many of the oldest entries have left the window at `now` (at or before now − P),
    /// and the cost of those still in it. Skipped without writing, so a rejection or a peek
    /// leaves the state exactly as it was.
    #[inline]
    fn in_window(&self, now: u64, policy: &Policy) -> (usize, u64) {
        let period = policy.period_us();
        let expired = self
            .entries
            .iter()
            .take_while(|&&(at, _)| at + period <= now)
            .count();
        let expired_cost: u64 = self.entries.iter().take(expired).map(|&(_, c)| c).sum();
        (expired, self.total - expired_cost)
    }

    /// Record `cost` admitted at `now`, dropping the `expired` oldest entries.
    #[inline]
    fn admit(&mut self, now: u64, expired: usize, in_window: u64, cost: u64) {
        self.entries.drain(..expired);
        self.total = in_window + cost;
        match self.entries.back_mut() {
            Some((at, c)) if *at >= now => *c += cost,
            _ => self.entries.push_back((now, cost)),
        }
    }

    /// Allow if the costs in `(now − P, now]` plus `cost` stay within the limit.
    pub fn decide(&mut self, now: u64, policy: &Policy, cost: u64, mode: Mode) -> Decision {
        let (limit, period) = (policy.limit(), policy.period_us());
        let (expired, in_window) = self.in_window(now, policy);
        let allowed = in_window + cost <= limit;
        let mut retry_after_us = 0;
        let mut remaining = limit.saturating_sub(in_window);
        if allowed && mode == Mode::Consume {
            self.admit(now, expired, in_window, cost);
            remaining = limit - self.total;
        } else if !allowed {
            // Wait until enough of the oldest entries leave the window.
            let mut to_free = in_window + cost - limit;
            for &(at, c) in self.entries.iter().skip(expired) {
                if c >= to_free {
                    retry_after_us = (at + period).saturating_sub(now);
                    break;
                }
                to_free -= c;
            }
        }
        let reset_after_us = self
            .entries
            .back()
            .filter(|&&(at, _)| at + period > now)
            .map_or(0, |&(at, _)| at + period - now);
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
