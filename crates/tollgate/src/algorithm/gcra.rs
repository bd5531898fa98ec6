//! GCRA (alias leaky bucket): the theoretical arrival time `TAT`, advanced by the emission
//! interval `T = P / L` per unit of cost, with burst tolerance `B·T`. It decides exactly as the
//! token bucket does; its state is one timestamp, kept with its sub-microsecond fraction.

use crate::algorithm::{Mode, bucket};
use crate::decision::Decision;
use crate::policy::Policy;

/// `TAT = tat_us + tat_rem / L` microseconds. A fresh key has `TAT = 0`, i.e. in the past.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gcra {
    /// Whole microseconds of the TAT.
    pub tat_us: u64,
    /// Fraction of a microsecond, in units of `1 / L` (`0 <= tat_rem < L`).
    pub tat_rem: u64,
}

impl Gcra {
    /// Move the TAT by `delta` emission intervals ([`bucket::adjust`] on the bucket it equals).
    pub fn adjust(&mut self, now: u64, policy: &Policy, delta: i64) {
        let used = bucket::adjust(self.used_at(now, policy), policy, delta);
        self.tat_us = now + used / policy.limit();
        self.tat_rem = used % policy.limit();
    }

    /// (TAT − now) in units of 1/L µs: exactly the token bucket's `used`.
    #[inline]
    fn used_at(&self, now: u64, policy: &Policy) -> u64 {
        if self.tat_us >= now {
            (self.tat_us - now) * policy.limit() + self.tat_rem
        } else {
            0
        }
    }

    /// Allow if `max(TAT, now) + cost·T − now <= B·T`.
    #[inline]
    pub fn decide(&mut self, now: u64, policy: &Policy, cost: u64, mode: Mode) -> Decision {
        let used = self.used_at(now, policy);
        match mode {
            Mode::Peek => bucket::peek(used, policy, cost),
            Mode::Consume => {
                let (taken, decision) = bucket::decide(used, policy, cost);
                if let Some(taken) = taken {
                    self.tat_us = now + taken / policy.limit();
                    self.tat_rem = taken % policy.limit();
                }
                decision
            }
        }
    }
}
