//! Token bucket: capacity `burst`, refilled continuously at `limit / period`.

use crate::algorithm::{Mode, bucket};
use crate::decision::Decision;
use crate::policy::Policy;

/// The bucket's deficit at `last`: `used` units (one token = P units) below full.
/// A fresh (or expired) key is a full bucket: `used = 0`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Units missing from a full bucket at `last` (tokens = burst − used / P).
    pub used: u64,
    /// When `used` was measured, µs.
    pub last: u64,
}

impl TokenBucket {
    /// Refill since `last`, then charge or refund `delta` tokens ([`bucket::adjust`]).
    pub fn adjust(&mut self, now: u64, policy: &Policy, delta: i64) {
        let used = bucket::drain(self.used, now.saturating_sub(self.last), policy);
        self.used = bucket::adjust(used, policy, delta);
        self.last = now.max(self.last);
    }

    /// Refill since `last`, then take `cost` tokens if they are there.
    #[inline]
    pub fn decide(&mut self, now: u64, policy: &Policy, cost: u64, mode: Mode) -> Decision {
        let used = bucket::drain(self.used, now.saturating_sub(self.last), policy);
        match mode {
            Mode::Peek => bucket::peek(used, policy, cost),
            Mode::Consume => {
                let (taken, decision) = bucket::decide(used, policy, cost);
                if let Some(taken) = taken {
                    self.used = taken;
                    self.last = now.max(self.last);
                }
                decision
            }
        }
    }
}
