//! Per-key overrides: a limit for one identifier that replaces its policy's numbers, shared by
//! every instance through the store and obeyed from the next decision on.
//!
//! An override is a [`Policy`] of the named policy's algorithm, resolved when it is set (an
//! omitted period or burst is taken from the named policy then), with an optional expiry. The
//! store applies it at decision time: the memory store finds it beside the key's state; the
//! Redis store reads it in the same script that decides, so no instance ever decides with a
//! limit the store does not hold.
//!
//! **A key with state changes limit.** The state is kept and read under the new numbers:
//!
//! | algorithm | state kept | a raised limit | a lowered limit |
//! |---|---|---|---|
//! | `fixed-window` | the window's count | the difference passes at once | nothing passes until the count is below the new limit (at worst, the next window) |
//! | `sliding-window` | both counters | the difference passes at once | nothing passes until the weighted count is below the new limit |
//! | `sliding-log` | the log | the difference passes at once | nothing passes until the sum in `(now − P, now]` is below the new limit |
//! | `token-bucket` | missing tokens | a larger burst adds its difference at once; refill at the new rate | the bucket holds at most the new burst; refill at the new rate |
//! | `gcra` | the theoretical arrival time | the new interval and burst decide at once; time already owed stays owed | likewise: never more than the new burst |
//!
//! A period changed by an override starts fixed and sliding windows afresh where the window
//! index no longer matches (as a policy reload does). A cost above the override's capacity
//! can never pass while the override stands: it is rejected, with a `retry_after` of one
//! period (a hint to look again), and consumes nothing.

use std::time::Duration;

use crate::decision::Decision;
use crate::error::PolicyError;
use crate::policy::Policy;

/// Longest expiry of an override, in microseconds: the same bound as a period (below 2^51).
pub const MAX_EXPIRY_US: u64 = crate::policy::MAX_EXACT / 4 - 1;

/// Most overrides one page of a listing holds.
pub const MAX_PAGE: usize = 1000;

/// The period an override asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverridePeriod {
    /// A fixed length.
    Every(Duration),
    /// UTC calendar months (`fixed-window` only, as [`Policy::monthly`]).
    CalendarMonths,
}

/// What an administrator asks for: the limit, and optionally period, burst and expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverrideSpec {
    /// Requests (cost units) per period.
    pub limit: u64,
    /// The period; the named policy's when omitted.
    pub period: Option<OverridePeriod>,
    /// Token bucket / GCRA capacity; the override's limit when omitted.
    pub burst: Option<u64>,
    /// How long the override stands; until deleted when omitted.
    pub expires_in: Option<Duration>,
}

impl OverrideSpec {
    /// An override of `limit` per the named policy's period, until deleted.
    pub fn limit(limit: u64) -> OverrideSpec {
        OverrideSpec {
            limit,
            period: None,
            burst: None,
            expires_in: None,
        }
    }

    /// The same in UTC calendar months (a `fixed-window` policy's only).
    pub fn monthly(mut self) -> OverrideSpec {
        self.period = Some(OverridePeriod::CalendarMonths);
        self
    }

    /// The same with a period of its own.
    pub fn period(mut self, period: Duration) -> OverrideSpec {
        self.period = Some(OverridePeriod::Every(period));
        self
    }

    /// The same with a burst (token bucket and GCRA only).
    pub fn burst(mut self, burst: u64) -> OverrideSpec {
        self.burst = Some(burst);
        self
    }

    /// The same, standing for `expires_in` only.
    pub fn expires_in(mut self, expires_in: Duration) -> OverrideSpec {
        self.expires_in = Some(expires_in);
        self
    }

    /// The override this spec makes of `base`: validated as any policy of `base`'s algorithm.
    /// A `concurrency` policy takes none.
    pub fn resolve(&self, base: &Policy) -> Result<Override, PolicyError> {
        if base.algorithm().is_concurrency() {
            return Err(PolicyError::OverrideOfConcurrency);
        }
        let expires_in = match self.expires_in {
            None => None,
            Some(d) if d.is_zero() => return Err(PolicyError::ZeroExpiry),
            Some(d) if d.as_micros() > u128::from(MAX_EXPIRY_US) => {
                return Err(PolicyError::ExpiryTooLong);
            }
            Some(d) => Some(d),
        };
        // A fixed period, or `None` for calendar months: asked for, or kept from a monthly
        // policy when the override names no period.
        let period = match self.period {
            Some(OverridePeriod::Every(period)) => Some(period),
            Some(OverridePeriod::CalendarMonths) => None,
            None if base.is_monthly() => None,
            None => Some(base.period()),
        };
        let policy = match period {
            Some(period) => Policy::new(base.algorithm(), self.limit, period, self.burst)?,
            None if self.burst.is_some() => {
                return Err(PolicyError::BurstNotApplicable(base.algorithm()));
            }
            None => Policy::monthly(base.algorithm(), self.limit)?,
        };
        Ok(Override { policy, expires_in })
    }
}

/// An override as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The policy the key is held to while the override stands (the named policy's algorithm).
    pub policy: Policy,
    /// Time left until it disappears by itself; `None`: until deleted.
    pub expires_in: Option<Duration>,
}

/// One page of a policy's overrides, ordered by key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OverridePage {
    /// `(key, override)`, keys ascending (bytewise).
    pub overrides: Vec<(String, Override)>,
    /// Where the next page starts, `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The decision for a cost that the override's capacity can never admit (see the module
/// docs): rejected, nothing consumed, look again after one period.
pub fn unpassable(policy: &Policy) -> Decision {
    Decision {
        allowed: false,
        limit: policy.capacity(),
        period_us: policy.period_us(),
        remaining: 0,
        reset_after_us: policy.period_us(),
        retry_after_us: policy.period_us(),
    }
}

/// Decide `cost` under `policy` with `decide`, unless the cost exceeds its capacity.
#[inline]
pub fn decide_within(policy: &Policy, cost: u64, decide: impl FnOnce() -> Decision) -> Decision {
    if cost <= policy.capacity() {
        decide()
    } else {
        unpassable(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Algorithm;

    #[test]
    fn a_spec_resolves_against_its_policy() {
        let base = Policy::builder(Algorithm::TokenBucket)
            .rate("100/min")
            .burst(150)
            .build()
            .unwrap();
        let o = OverrideSpec::limit(5000).resolve(&base).unwrap();
        assert_eq!(o.policy.algorithm(), Algorithm::TokenBucket);
        assert_eq!(
            (o.policy.limit(), o.policy.period(), o.policy.burst()),
            (5000, Duration::from_secs(60), 5000)
        );
        assert_eq!(o.expires_in, None);
        let o = OverrideSpec::limit(10)
            .period(Duration::from_secs(1))
            .burst(20)
            .expires_in(Duration::from_secs(5))
            .resolve(&base)
            .unwrap();
        assert_eq!((o.policy.limit(), o.policy.burst()), (10, 20));
        assert_eq!(o.expires_in, Some(Duration::from_secs(5)));
        for (spec, error) in [
            (OverrideSpec::limit(0), PolicyError::ZeroLimit),
            (
                OverrideSpec::limit(1).expires_in(Duration::ZERO),
                PolicyError::ZeroExpiry,
            ),
            (
                OverrideSpec::limit(1).expires_in(Duration::from_secs(u64::MAX / 2)),
                PolicyError::ExpiryTooLong,
            ),
            (
                OverrideSpec::limit(1).period(Duration::ZERO),
                PolicyError::ZeroPeriod,
            ),
        ] {
            assert_eq!(spec.resolve(&base), Err(error));
        }
        let window = Policy::builder(Algorithm::FixedWindow)
            .rate("1/s")
            .build()
            .unwrap();
        assert_eq!(
            OverrideSpec::limit(2).burst(3).resolve(&window),
            Err(PolicyError::BurstNotApplicable(Algorithm::FixedWindow))
        );
    }
}
