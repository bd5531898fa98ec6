//! Sliding log: the exact sum of costs admitted in `(now − P, now]`.

use std::collections::VecDeque;

use crate::algorithm::Mode;
use crate::decision::Decision;
use crate::policy::Policy;

/// Admitted requests as `(timestamp µs, cost)`, oldest first; equal timestamps are merged, so
/// the log holds at most `limit` entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlidingLog {
    /// `(timestamp, cost)` of each admitted request still in the window.
    pub entries: VecDeque<(u64, u64)>,
    /// Sum of the costs in `entries`.
    pub total: u64,
}

impl SlidingLog {
    /// Allow if the costs in `(now − P, now]` plus `cost` stay within the limit.
    pub fn decide(&mut self, now: u64, policy: &Policy, cost: u64, mode: Mode) -> Decision {
        let (limit, period) = (policy.limit(), policy.period_us());
        // Entries at or before now − P have left the window. Dropping them changes no decision,
        // so it is done even for a peek or a rejection.
        while let Some(&(at, c)) = self.entries.front() {
            if at + period > now {
                break;
            }
            self.entries.pop_front();
            self.total -= c;
        }
        let allowed = self.total + cost <= limit;
        let mut retry_after_us = 0;
        if allowed && mode == Mode::Consume {
            match self.entries.back_mut() {
                Some((at, c)) if *at >= now => *c += cost,
                _ => self.entries.push_back((now, cost)),
            }
            self.total += cost;
        } else if !allowed {
            // Wait until enough of the oldest entries leave the window.
            let mut to_free = self.total + cost - limit;
            for &(at, c) in &self.entries {
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
            .map_or(0, |&(at, _)| (at + period).saturating_sub(now));
        Decision {
            allowed,
            limit,
            remaining: limit - self.total,
            reset_after_us,
            retry_after_us,
        }
    }
}
