//! Concurrency: at most `limit` units leased at once; a lease expires `lease` after it was
//! granted or last renewed, so a holder that crashed cannot keep its units forever.

use crate::decision::Decision;
use crate::lease::{LeaseId, LeaseOp, LeaseOutcome};
use crate::policy::Policy;

/// The leases of one key. A lease whose expiry has passed is as if released; every operation
/// first drops those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases {
    /// Held leases, in the order granted.
    pub held: Vec<HeldLease>,
}

/// One lease held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    /// Its id.
    pub id: LeaseId,
    /// Until when it holds its units, µs (exclusive).
    pub expires_at: u64,
}

impl Leases {
    /// Apply `op` at `now`: drop expired leases, then acquire (if `cost <= limit − held`),
    /// release or renew. The decision's `remaining` is `limit − held` afterwards,
    /// `reset_after` the time until the last lease expires, and for a refused acquire
    /// `retry_after` the time until enough units expire for its cost.
    pub fn apply(&mut self, now: u64, policy: &Policy, op: LeaseOp) -> LeaseOutcome {
        let held = self.trim(now);
        let lease_us = policy.period_us();
        let (granted, lease_expires_in_us, retry_after_us) = match op {
            LeaseOp::Acquire(id) => {
                if id.cost() <= policy.limit().saturating_sub(held) {
                    self.renew_or_add(id, now + lease_us);
                    (true, lease_us, 0)
                } else {
                    (
                        false,
                        0,
                        self.time_until_free(now, held + id.cost() - policy.limit()),
                    )
                }
            }
            LeaseOp::Release(id) => match self.held.iter().position(|lease| lease.id == id) {
                Some(at) => {
                    self.held.remove(at);
                    (true, 0, 0)
                }
                None => (false, 0, 0),
            },
            LeaseOp::Renew(id) => match self.held.iter_mut().find(|lease| lease.id == id) {
                Some(lease) => {
                    lease.expires_at = now + lease_us;
                    (true, lease_us, 0)
                }
                None => (false, 0, 0),
            },
        };
        let (units, last_expiry) = self.totals();
        LeaseOutcome {
            decision: Decision {
                allowed: granted,
                limit: policy.limit(),
                remaining: policy.limit().saturating_sub(units),
                reset_after_us: last_expiry.map_or(0, |at| at - now),
                retry_after_us,
            },
            lease_expires_in_us,
            degraded: false,
        }
    }

    /// What an acquire of `cost` would answer at `now`, changing nothing.
    pub fn peek(&self, now: u64, policy: &Policy, cost: u64) -> Decision {
        let mut live = self.clone();
        let probe = LeaseId::from_parts(0, cost.max(1));
        let mut decision = live.apply(now, policy, LeaseOp::Acquire(probe)).decision;
        if decision.allowed {
            let held = self.live_units(now);
            decision.remaining = policy.limit().saturating_sub(held);
            decision.reset_after_us = self
                .held
                .iter()
                .filter(|l| l.expires_at > now)
                .map(|l| l.expires_at - now)
                .max()
                .unwrap_or(0);
        }
        decision
    }

    /// Drop the leases expired at `now`; answer the units still held.
    fn trim(&mut self, now: u64) -> u64 {
        let (mut units, mut expired) = (0, false);
        for lease in &self.held {
            if lease.expires_at > now {
                units += lease.id.cost();
            } else {
                expired = true;
            }
        }
        if expired {
            self.held.retain(|lease| lease.expires_at > now);
        }
        units
    }

    /// The units held and the latest expiry, in one pass (the expired already dropped).
    fn totals(&self) -> (u64, Option<u64>) {
        self.held.iter().fold((0, None), |(units, last), lease| {
            let last = last.map_or(lease.expires_at, |at: u64| at.max(lease.expires_at));
            (units + lease.id.cost(), Some(last))
        })
    }

    fn live_units(&self, now: u64) -> u64 {
        self.held
            .iter()
            .filter(|l| l.expires_at > now)
            .map(|l| l.id.cost())
            .sum()
    }

    /// An id granted again (a retried request) keeps one lease with the later expiry, as a
    /// sorted set keeps one member per id.
    fn renew_or_add(&mut self, id: LeaseId, expires_at: u64) {
        match self.held.iter_mut().find(|lease| lease.id == id) {
            Some(lease) => lease.expires_at = expires_at,
            None => self.held.push(HeldLease { id, expires_at }),
        }
    }

    /// Time until `units` units have expired, counting every leased unit by its lease's expiry,
    /// earliest first.
    fn time_until_free(&self, now: u64, units: u64) -> u64 {
        let mut expiries: Vec<(u64, u64)> = self
            .held
            .iter()
            .map(|lease| (lease.expires_at, lease.id.cost()))
            .collect();
        expiries.sort_unstable();
        let mut freed = 0;
        for (expires_at, cost) in expiries {
            freed += cost;
            if freed >= units {
                return expires_at - now;
            }
        }
        // Only a cost above the limit gets here, and those are refused before any store.
        0
    }
}
