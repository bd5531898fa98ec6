//! The answer to a check.

use std::time::Duration;

use crate::policy::Policy;

/// What a policy decided for one key at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// Whether the request may pass (its cost was consumed) or, for a peek, would pass.
    pub allowed: bool,
    /// The policy's capacity: `limit`, or `burst` for token bucket and GCRA (an override's,
    /// where one stood).
    pub limit: u64,
    /// The policy's period in microseconds (the longest month for a monthly policy; an
    /// override's, where one stood): the `w` of `RateLimit-Policy`.
    pub period_us: u64,
    /// What is left after this request (for a peek or a rejection: what is left now).
    pub remaining: u64,
    /// Microseconds until the key is back to its full quota (0 when it already is).
    pub reset_after_us: u64,
    /// Microseconds until this cost could pass (0 when allowed).
    pub retry_after_us: u64,
}

impl Decision {
    /// Whether this was decided under `policy`'s own quota (its capacity and period), not an
    /// override's: then the `RateLimit-Policy` rendered from the policy describes it.
    pub fn decided_under(&self, policy: &Policy) -> bool {
        self.limit == policy.capacity() && self.period_us == policy.period_us()
    }

    /// [`Self::reset_after_us`] as a `Duration`.
    pub fn reset_after(&self) -> Duration {
        Duration::from_micros(self.reset_after_us)
    }

    /// [`Self::retry_after_us`] as a `Duration`.
    pub fn retry_after(&self) -> Duration {
        Duration::from_micros(self.retry_after_us)
    }

    /// Milliseconds until reset, rounded up (what the HTTP API reports).
    pub fn reset_after_ms(&self) -> u64 {
        self.reset_after_us.div_ceil(1000)
    }

    /// Milliseconds until retry, rounded up so a positive wait never reads as 0.
    pub fn retry_after_ms(&self) -> u64 {
        self.retry_after_us.div_ceil(1000)
    }

    /// Whether `self` is more restrictive than `other`: rejected beats allowed; among rejected the
    /// longer wait; among allowed the fewer remaining.
    pub fn is_stricter_than(&self, other: &Decision) -> bool {
        match (self.allowed, other.allowed) {
            (false, true) => true,
            (true, false) => false,
            (false, false) => self.retry_after_us > other.retry_after_us,
            (true, true) => {
                // Compare remaining as a fraction of the limit: 1 of 10 is stricter than 5 of 1000.
                u128::from(self.remaining) * u128::from(other.limit)
                    < u128::from(other.remaining) * u128::from(self.limit)
            }
        }
    }
}
