//! Remember keys the shared store rejected, until their `retry_after`, so a flood against an
//! over-limit key costs no round trips.
//!
//! **Why this never rejects what the store would allow.** For every algorithm, `retry_after` is
//! the earliest instant at which the same cost can pass *if nobody else consumes* (the property
//! tests check it is exact to the microsecond). Consumption by other instances can only push that
//! instant later, and a larger cost needs at least as long. So until `retry_after` has passed,
//! the store would reject the same or a larger cost: the cache answers those. A smaller cost may
//! fit earlier and goes to the store. The wait is measured from *before* the store was called, so
//! the network round trip cannot stretch it. The one event that can free quota early is an admin
//! reset: it clears this instance's entry; other instances keep theirs until it expires (at most
//! one second, as below). An entry also records the policy's configuration (algorithm, limit, period,
//! burst): after a reload that changes the policy under the same name, the old rejection no
//! longer applies and the store is asked again.
//!
//! **Overrides.** A per-key override set or deleted through this instance forgets its entry at
//! once. One set through another instance cannot reach this cache, so an entry answers for at
//! most [`MAX_ANSWERING_US`] after the store's rejection, whatever its `retry_after`: a raised
//! limit is obeyed everywhere within that time, and a flood against one key still costs at most
//! one round trip per key per second.

use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use smallvec::SmallVec;

use crate::bounded_map::{SweepGate, shard_amount};
use crate::decision::Decision;
use crate::policy::Policy;
use crate::policy_name::PolicyName;
use crate::store::Check;

/// Longest an entry answers for the store, µs: how soon an override raised elsewhere is obeyed
/// here.
pub const MAX_ANSWERING_US: u64 = 1_000_000;

/// One remembered rejection.
#[derive(Debug, Clone)]
struct Rejection {
    /// Local µs (same clock as the caller's `now`) until which the store would reject.
    until: u64,
    /// Until when this entry answers (at most [`MAX_ANSWERING_US`] after the rejection).
    answers_until: u64,
    /// Local µs at which the key is back to a full quota if nobody consumes (reported as
    /// `reset_after`).
    reset_at: u64,
    /// The smallest cost rejected until then.
    cost: u64,
    /// The policy's capacity and period, for the decision reported.
    limit: u64,
    period_us: u64,
    /// What was left when rejected (a floor: quota only grows while no one consumes).
    remaining: u64,
    /// The policy the rejection was decided under.
    policy: Policy,
}

/// The rejections remembered for one key, by policy name.
type PolicyRejections = SmallVec<[(PolicyName, Rejection); 1]>;

/// Bounded map `key -> [(policy, rejection)]`, looked up by `&str` without allocating.
#[derive(Debug)]
pub struct OverLimitCache {
    entries: DashMap<Box<str>, PolicyRejections, foldhash::fast::RandomState>,
    max_entries: usize,
    /// Keys held, counted here: `DashMap::len` would lock every shard on each rejection.
    len: AtomicUsize,
    forced_sweeps: SweepGate,
}

impl OverLimitCache {
    /// A cache holding at most `max_entries` keys (when full, new rejections are not cached
    /// until expired ones are swept).
    pub fn new(max_entries: usize) -> OverLimitCache {
        OverLimitCache {
            // As many shards as the memory store: a flood reads this map from every core.
            entries: DashMap::with_hasher_and_shard_amount(
                foldhash::fast::RandomState::default(),
                shard_amount(),
            ),
            max_entries,
            len: AtomicUsize::new(0),
            forced_sweeps: SweepGate::default(),
        }
    }

    /// A cached rejection of `cost` for `check` at `now`, if one still holds for the same
    /// policy configuration.
    pub fn lookup(&self, check: &Check<'_>, cost: u64, now: u64) -> Option<Decision> {
        // Every store decision asks first: with nothing cached, skip hashing the key and
        // locking its shard.
        if self.is_empty() {
            return None;
        }
        let slots = self.entries.get(check.key)?;
        let (_, hit) = slots.iter().find(|(p, _)| p == check.name)?;
        (now < hit.answers_until && cost >= hit.cost && hit.policy == *check.policy).then(|| {
            Decision {
                allowed: false,
                limit: hit.limit,
                period_us: hit.period_us,
                remaining: hit.remaining,
                reset_after_us: hit.reset_at.saturating_sub(now).max(hit.until - now),
                retry_after_us: hit.until - now,
            }
        })
    }

    /// Remember that the store rejected `cost` for `check`; `sent_at` is the local time just
    /// before the store was called.
    pub fn remember(&self, check: &Check<'_>, cost: u64, sent_at: u64, decision: &Decision) {
        if decision.allowed || decision.retry_after_us == 0 {
            return;
        }
        if self.len() >= self.max_entries {
            if self.forced_sweeps.claim(sent_at) {
                self.sweep(sent_at);
            }
            if self.len() >= self.max_entries {
                return;
            }
        }
        let rejection = Rejection {
            until: sent_at + decision.retry_after_us,
            answers_until: sent_at + decision.retry_after_us.min(MAX_ANSWERING_US),
            reset_at: sent_at + decision.reset_after_us.max(decision.retry_after_us),
            cost,
            limit: decision.limit,
            period_us: decision.period_us,
            remaining: decision.remaining,
            policy: check.policy.clone(),
        };
        let mut slots = self.entries.entry(check.key.into()).or_insert_with(|| {
            self.len.fetch_add(1, Ordering::Relaxed);
            PolicyRejections::new()
        });
        match slots.iter_mut().find(|(p, _)| p == check.name) {
            Some((_, r)) => {
                // Keep what covers more: a smaller cost, or a later deadline for the same cost;
                // a rejection under another configuration of the policy is replaced.
                if r.answers_until <= sent_at
                    || r.policy != *check.policy
                    || cost < r.cost
                    || (cost == r.cost && rejection.until > r.until)
                {
                    *r = rejection;
                }
            }
            None => slots.push((check.name.clone(), rejection)),
        }
    }

    /// Forget `(policy, key)` (after an admin reset).
    pub fn forget(&self, policy: &str, key: &str) {
        if let Some(mut slots) = self.entries.get_mut(key) {
            slots.retain(|(p, _)| &**p != policy);
        }
    }

    /// Forget everything (the store may have lost the state the rejections came from).
    pub fn clear(&self) {
        self.retain(|_| false);
    }

    /// Drop expired entries.
    pub fn sweep(&self, now: u64) {
        self.retain(|slots| {
            slots.retain(|(_, r)| r.answers_until > now);
            !slots.is_empty()
        });
    }

    /// Keep the keys `keep` says to, counting the others out.
    fn retain(&self, mut keep: impl FnMut(&mut PolicyRejections) -> bool) {
        let mut dropped = 0;
        self.entries.retain(|_, slots| {
            let kept = keep(slots);
            dropped += usize::from(!kept);
            kept
        });
        self.len.fetch_sub(dropped, Ordering::Relaxed);
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Algorithm;
    use std::time::Duration;

    /// The count of keys follows insertions, sweeps and `clear`, and holds the bound.
    #[test]
    fn the_bound_holds_and_the_count_follows() {
        let policy = Policy::new(Algorithm::Gcra, 1, Duration::from_secs(1), None).unwrap();
        let rejected = Decision {
            allowed: false,
            limit: 1,
            period_us: 1_000_000,
            remaining: 0,
            reset_after_us: 1_000_000,
            retry_after_us: 1_000_000,
        };
        let cache = OverLimitCache::new(3);
        let name_p = PolicyName::from_static("p");
        let check = |key| Check {
            name: &name_p,
            policy: &policy,
            key,
        };
        for key in ["a", "b", "c", "d"] {
            cache.remember(&check(key), 1, 0, &rejected);
        }
        cache.remember(&check("a"), 1, 0, &rejected); // an existing key: no new entry
        assert_eq!(cache.len(), 3);
        assert!(
            cache.lookup(&check("d"), 1, 1).is_none(),
            "full: not cached"
        );
        // Expired by now: the full cache sweeps itself and takes the new key.
        cache.remember(&check("d"), 1, 2_000_000, &rejected);
        assert_eq!(cache.len(), 1);
        assert!(cache.lookup(&check("d"), 1, 2_000_001).is_some());
        cache.clear();
        assert!(cache.is_empty());
    }
}
