//! Concurrency: at most `limit` units leased at once; a lease expires `lease` after it was
//! granted or last renewed, so a holder that crashed cannot keep its units forever.

use std::num::NonZeroU64;

use crate::decision::Decision;
use crate::lease::{LeaseId, LeaseOp, LeaseOutcome};
use crate::policy::Policy;

/// The leases of one key. A lease whose expiry has passed is as if released; every operation
/// first drops those.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leases {
    held: Held,
}

/// One lease held.
///
/// `repr(C)`, the expiry last: it is never 0 (a lease ends a whole lease after a time of at
/// least 0), and that spare value tells `Held`'s two forms apart, so a key holding one lease
/// keeps it in 32 bytes and its whole state in 40, no more than the other algorithms' states
/// with their tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct HeldLease {
    /// Its id.
    pub id: LeaseId,
    expires_at: NonZeroU64,
}

impl HeldLease {
    /// A lease of `id` held until `expires_at` (µs, exclusive; 0 is read as 1, which no lease
    /// reaches: it ends a whole lease after a time of at least 0).
    pub fn new(id: LeaseId, expires_at: u64) -> HeldLease {
        HeldLease {
            id,
            expires_at: NonZeroU64::new(expires_at).unwrap_or(NonZeroU64::MIN),
        }
    }

    /// Until when it holds its units, µs (exclusive).
    #[inline]
    pub fn expires_at(&self) -> u64 {
        self.expires_at.get()
    }
}

/// The leases held, in the order granted: most keys hold one at a time, kept inline (a heap
/// buffer of its own would be one more cache line per operation); more move to the heap.
#[derive(Debug, Clone)]
enum Held {
    One(HeldLease),
    /// None (no allocation) or several.
    Many(Vec<HeldLease>),
}

/// The same leases in the same order, whichever form holds them.
impl PartialEq for Held {
    fn eq(&self, other: &Held) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Held {}

impl Default for Held {
    fn default() -> Held {
        Held::Many(Vec::new())
    }
}

impl Held {
    #[inline]
    fn as_slice(&self) -> &[HeldLease] {
        match self {
            Held::One(lease) => std::slice::from_ref(lease),
            Held::Many(leases) => leases,
        }
    }

    #[inline]
    fn iter(&self) -> std::slice::Iter<'_, HeldLease> {
        self.as_slice().iter()
    }

    #[inline]
    fn iter_mut(&mut self) -> std::slice::IterMut<'_, HeldLease> {
        match self {
            Held::One(lease) => std::slice::from_mut(lease).iter_mut(),
            Held::Many(leases) => leases.iter_mut(),
        }
    }

    #[inline]
    fn push(&mut self, lease: HeldLease) {
        match self {
            Held::Many(leases) if leases.is_empty() => *self = Held::One(lease),
            Held::Many(leases) => leases.push(lease),
            Held::One(first) => *self = Held::Many(vec![*first, lease]),
        }
    }

    /// Drop the lease at `at`.
    #[inline]
    fn remove(&mut self, at: usize) {
        match self {
            Held::One(_) => *self = Held::default(),
            Held::Many(leases) => {
                leases.remove(at);
                if let [one] = leases[..] {
                    *self = Held::One(one);
                }
            }
        }
    }

    /// Keep the leases `keep` says to.
    fn retain(&mut self, mut keep: impl FnMut(&HeldLease) -> bool) {
        match self {
            Held::One(lease) => {
                if !keep(lease) {
                    *self = Held::default();
                }
            }
            Held::Many(leases) => {
                leases.retain(keep);
                match leases[..] {
                    [one] => *self = Held::One(one),
                    [] => *self = Held::default(),
                    _ => {}
                }
            }
        }
    }
}

impl Leases {
    /// The leases held, in the order granted (expired ones included until an operation drops
    /// them).
    pub fn held(&self) -> &[HeldLease] {
        self.held.as_slice()
    }

    /// Apply `op` at `now`: drop expired leases, then acquire (if `cost <= limit − held`),
    /// release or renew. The decision's `remaining` is `limit − held` afterwards,
    /// `reset_after` the time until the last lease expires, and for a refused acquire
    /// `retry_after` the time until enough units expire for its cost.
    #[inline]
    pub fn apply(&mut self, now: u64, policy: &Policy, op: LeaseOp) -> LeaseOutcome {
        match self.apply_alone(now, policy, op) {
            Some(outcome) => outcome,
            None => self.apply_any(now, policy, op),
        }
    }

    /// [`Self::apply`] in every case. Out of line, so that the common pair's shortcut is
    /// inlined into the store's lease operation without this larger body.
    #[inline(never)]
    fn apply_any(&mut self, now: u64, policy: &Policy, op: LeaseOp) -> LeaseOutcome {
        let (held, last_expiry) = self.trim(now);
        let lease_us = policy.period_us();
        // The units held and the latest expiry afterwards: known without another pass when a
        // lease is added or nothing changes, counted again otherwise.
        let (granted, lease_expires_in_us, retry_after_us, (units, last_expiry)) = match op {
            LeaseOp::Acquire(id) => {
                if id.cost() <= policy.limit().saturating_sub(held) {
                    let expires_at = now + lease_us;
                    let after = if self.renew_or_add(id, expires_at) {
                        self.totals()
                    } else {
                        let last = last_expiry.map_or(expires_at, |at| at.max(expires_at));
                        (held + id.cost(), Some(last))
                    };
                    (true, lease_us, 0, after)
                } else {
                    let retry = self.time_until_free(now, held + id.cost() - policy.limit());
                    (false, 0, retry, (held, last_expiry))
                }
            }
            LeaseOp::Release(id) => match self.held.iter().position(|lease| lease.id == id) {
                Some(at) => {
                    self.held.remove(at);
                    (true, 0, 0, self.totals())
                }
                None => (false, 0, 0, (held, last_expiry)),
            },
            LeaseOp::Renew(id) => match self.held.iter_mut().find(|lease| lease.id == id) {
                Some(lease) => {
                    *lease = HeldLease::new(id, now + lease_us);
                    (true, lease_us, 0, self.totals())
                }
                None => (false, 0, 0, (held, last_expiry)),
            },
        };
        LeaseOutcome {
            decision: Decision {
                allowed: granted,
                limit: policy.limit(),
                period_us: policy.period_us(),
                remaining: policy.limit().saturating_sub(units),
                reset_after_us: last_expiry.map_or(0, |at| at - now),
                retry_after_us,
            },
            lease_expires_in_us,
            degraded: false,
        }
    }

    /// [`Self::apply`] for the common pair, a key's only lease taken and given back: an
    /// acquire finding no lease held, a release of the one lease held and still live. Both
    /// know the answer without the passes over the leases [`Self::apply_any`] makes (a lease
    /// is two store calls where a check is one, so every pass shows against a check); `None`
    /// for every other case. It answers what `apply_any` would, as a test below checks.
    #[inline]
    fn apply_alone(&mut self, now: u64, policy: &Policy, op: LeaseOp) -> Option<LeaseOutcome> {
        let (lease_expires_in_us, units, reset_after_us) = match (&self.held, op) {
            (Held::Many(none), LeaseOp::Acquire(id))
                if none.is_empty() && id.cost() <= policy.limit() =>
            {
                let lease_us = policy.period_us();
                self.held = Held::One(HeldLease::new(id, now + lease_us));
                (lease_us, id.cost(), lease_us)
            }
            (Held::One(lease), LeaseOp::Release(id))
                if lease.id == id && lease.expires_at() > now =>
            {
                self.held = Held::default();
                (0, 0, 0)
            }
            _ => return None,
        };
        Some(LeaseOutcome {
            decision: Decision {
                allowed: true,
                limit: policy.limit(),
                period_us: policy.period_us(),
                remaining: policy.limit() - units,
                reset_after_us,
                retry_after_us: 0,
            },
            lease_expires_in_us,
            degraded: false,
        })
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
                .filter(|l| l.expires_at() > now)
                .map(|l| l.expires_at() - now)
                .max()
                .unwrap_or(0);
        }
        decision
    }

    /// Drop the leases expired at `now`; answer the units still held and the latest expiry
    /// ([`Self::totals`] of what is left, in the same pass).
    fn trim(&mut self, now: u64) -> (u64, Option<u64>) {
        let (mut units, mut last, mut expired) = (0, None, false);
        for lease in self.held.iter() {
            let expires_at = lease.expires_at();
            if expires_at > now {
                units += lease.id.cost();
                last = Some(last.map_or(expires_at, |at: u64| at.max(expires_at)));
            } else {
                expired = true;
            }
        }
        if expired {
            self.held.retain(|lease| lease.expires_at() > now);
        }
        (units, last)
    }

    /// The units held and the latest expiry, in one pass (the expired already dropped).
    fn totals(&self) -> (u64, Option<u64>) {
        self.held.iter().fold((0, None), |(units, last), lease| {
            let last = last.map_or(lease.expires_at(), |at: u64| at.max(lease.expires_at()));
            (units + lease.id.cost(), Some(last))
        })
    }

    fn live_units(&self, now: u64) -> u64 {
        self.held
            .iter()
            .filter(|l| l.expires_at() > now)
            .map(|l| l.id.cost())
            .sum()
    }

    /// An id granted again (a retried request) keeps one lease with the new expiry, as a
    /// sorted set keeps one member per id. Answers whether the id was held already.
    fn renew_or_add(&mut self, id: LeaseId, expires_at: u64) -> bool {
        match self.held.iter_mut().find(|lease| lease.id == id) {
            Some(lease) => {
                *lease = HeldLease::new(id, expires_at);
                true
            }
            None => {
                self.held.push(HeldLease::new(id, expires_at));
                false
            }
        }
    }

    /// Time until `units` units have expired, counting every leased unit by its lease's expiry,
    /// earliest first.
    fn time_until_free(&self, now: u64, units: u64) -> u64 {
        let mut expiries: Vec<(u64, u64)> = self
            .held
            .iter()
            .map(|lease| (lease.expires_at(), lease.id.cost()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The shortcut of the common pair answers what the general transition answers, and
    /// leaves the same leases: random walks of acquires, releases and renewals (held, expired
    /// and unknown ids; costs up to the limit and past what is free), applied both ways.
    #[test]
    fn the_lone_lease_shortcut_changes_no_answer() {
        let policy = Policy::concurrency(3, Duration::from_secs(2)).unwrap();
        for seed in 0..200 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let (mut fast, mut general) = (Leases::default(), Leases::default());
            let mut issued: Vec<LeaseId> = Vec::new();
            let mut now = 1_000_000;
            for _ in 0..60 {
                now += [0, 1, 500_000, 2_000_000, 2_500_000][rng.usize(..5)];
                let op = match rng.u8(..6) {
                    0..=2 => {
                        let id = LeaseId::from_parts(rng.u128(..), rng.u64(1..=3));
                        issued.push(id);
                        LeaseOp::Acquire(id)
                    }
                    pick => {
                        let id = match issued.len() {
                            0 => LeaseId::new(1),
                            n => issued[rng.usize(..n)],
                        };
                        if pick == 5 {
                            LeaseOp::Renew(id)
                        } else {
                            LeaseOp::Release(id)
                        }
                    }
                };
                let want = general.apply_any(now, &policy, op);
                assert_eq!(fast.apply(now, &policy, op), want, "seed {seed}: {op:?}");
                assert_eq!(fast, general, "seed {seed}: {op:?}");
            }
        }
    }
}
