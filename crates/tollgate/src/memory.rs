//! The in-process store: sharded, bounded, expiring.
//!
//! State is grouped by identifier: one map entry holds every policy's state for that identifier,
//! so a multi-policy check locks one entry and is atomic, just as one Lua script over one hash
//! slot is in Redis. Each policy's state carries the instant it is back to a full quota; past
//! that it is equivalent to a fresh key, so it is dropped, and [`MemoryStore::sweep`] removes
//! identifiers whose every state has expired.
//!
//! **When full.** At most `max_keys` identifiers are kept. A new identifier arriving at a full
//! store first triggers a sweep of expired entries (at most one sweep per 100 ms, so a flood of
//! unique keys cannot turn every request into a full scan); if the store is still full, the
//! check fails with [`StoreError::Full`] and the limiter's failure policy decides (the server's
//! default denies). Existing identifiers are never evicted early: evicting live state would
//! hand its owner a fresh quota, which is exactly what a flood of unique keys would aim for.

use std::sync::atomic::{AtomicUsize, Ordering};

use compact_str::CompactString;
use dashmap::DashMap;
use smallvec::SmallVec;

use crate::algorithm::{Mode, State};
use crate::bounded_map::{SweepGate, shard_amount};
use crate::clock::Clock;
use crate::decision::Decision;
use crate::error::StoreError;
use crate::lease::{LeaseOp, LeaseOutcome};
use crate::short_str::{self, KeyStr, KeyString};
use crate::store::{Check, Decisions, Store, StoreDecision};

/// Default bound on identifiers kept.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// One policy's state for one identifier.
#[derive(Debug)]
struct Slot {
    /// The policy's name, inline up to 24 bytes: a check compares it on every visit, and a
    /// separate allocation would cost a cache miss each time.
    policy: CompactString,
    state: State,
    /// When the state is back to a full quota (µs); from then on it equals a fresh state.
    expires_at: u64,
}

/// Every policy's state for one identifier.
#[derive(Debug, Default)]
struct Entry {
    slots: SmallVec<[Slot; 1]>,
}

impl Entry {
    fn is_live(&self, now: u64) -> bool {
        self.slots.iter().any(|s| s.expires_at > now)
    }

    /// The slot of `check`, fresh if absent.
    #[inline]
    fn slot(&mut self, check: &Check<'_>) -> &mut Slot {
        let algorithm = check.policy.algorithm();
        let found = self
            .slots
            .iter()
            .position(|s| short_str::eq(&s.policy, check.name));
        let slot = match found {
            Some(i) => &mut self.slots[i],
            None => {
                self.slots.push(Slot {
                    policy: check.name.into(),
                    state: State::fresh(algorithm),
                    expires_at: 0,
                });
                let last = self.slots.len() - 1;
                return &mut self.slots[last];
            }
        };
        // A state past its expiry decides exactly as a fresh one would, so it is kept until a
        // sweep drops it (as Redis keeps a key until its TTL): were it replaced here, a clock
        // stepping back would find a fresh quota where the transitions would remember.
        if slot.state.algorithm() != algorithm {
            slot.state = State::fresh(algorithm);
        }
        slot
    }

    /// Decide one check on this entry.
    #[inline]
    fn decide_one(&mut self, check: &Check<'_>, cost: u64, mode: Mode, now: u64) -> Decision {
        let slot = self.slot(check);
        let decision = slot.state.decide(now, check.policy, cost, mode);
        if decision.allowed && mode == Mode::Consume {
            slot.expires_at = slot.expires_at.max(now + decision.reset_after_us);
        }
        decision
    }

    /// Apply a lease operation to one check on this entry.
    fn lease(&mut self, check: &Check<'_>, op: LeaseOp, now: u64) -> LeaseOutcome {
        let slot = self.slot(check);
        let outcome = slot.state.lease(now, check.policy, op);
        slot.expires_at = slot.expires_at.max(now + outcome.decision.reset_after_us);
        outcome
    }

    /// Decide several checks atomically on this entry.
    #[inline]
    fn decide(&mut self, checks: &[Check<'_>], cost: u64, mode: Mode, now: u64) -> Decisions {
        let run = |entry: &mut Entry, mode: Mode| -> Decisions {
            checks
                .iter()
                .map(|check| entry.decide_one(check, cost, mode, now))
                .collect()
        };
        if mode == Mode::Peek {
            return run(self, mode);
        }
        // All-or-nothing: look first, consume only if every policy allows.
        let looked = run(self, Mode::Peek);
        if looked.iter().all(|d| d.allowed) {
            run(self, Mode::Consume)
        } else {
            looked_as_rejection(looked)
        }
    }
}

/// A multi-policy rejection reports, for every policy, that nothing was consumed. The peeked
/// decisions already say so; only `allowed` must be false for the policies that would have
/// allowed, since the request as a whole did not pass.
fn looked_as_rejection(mut looked: Decisions) -> Decisions {
    for d in looked.iter_mut().filter(|d| d.allowed) {
        *d = Decision {
            allowed: false,
            ..*d
        };
    }
    looked
}

/// The in-process store. Cheap to share behind an `Arc`; all methods take `&self`.
///
/// ```
/// use tollgate::{Algorithm, Check, Mode, MemoryStore, Policy};
/// let store = MemoryStore::new();
/// let policy = Policy::builder(Algorithm::Gcra).rate("2/s").build().unwrap();
/// let check = [Check { name: "api", policy: &policy, key: "user-1" }];
/// let first = store.decide_now(&check, 1, Mode::Consume).unwrap();
/// assert!(first[0].allowed);
/// assert_eq!(first[0].remaining, 1);
/// ```
#[derive(Debug)]
pub struct MemoryStore {
    /// Keys up to 24 bytes are stored inline, so a lookup compares them without another cache
    /// miss (and, up to 16 bytes, without a call to `memcmp`).
    entries: DashMap<KeyString, Entry, foldhash::fast::RandomState>,
    clock: Clock,
    max_keys: usize,
    len: AtomicUsize,
    forced_sweeps: SweepGate,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// A store on the system clock holding at most [`DEFAULT_MAX_KEYS`] identifiers.
    pub fn new() -> MemoryStore {
        MemoryStore::with_options(Clock::System, DEFAULT_MAX_KEYS)
    }

    /// A store on `clock` holding at most `max_keys` identifiers (at least 1).
    pub fn with_options(clock: Clock, max_keys: usize) -> MemoryStore {
        MemoryStore {
            entries: DashMap::with_hasher_and_shard_amount(
                foldhash::fast::RandomState::default(),
                shard_amount(),
            ),
            clock,
            max_keys: max_keys.max(1),
            len: AtomicUsize::new(0),
            forced_sweeps: SweepGate::default(),
        }
    }

    /// Identifiers currently held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no identifier is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on identifiers.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// The store's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Drop every identifier whose states have all returned to a full quota. Returns how many
    /// were dropped. Call it periodically (the server does, every second).
    pub fn sweep(&self) -> usize {
        let now = self.clock.now_us();
        let mut dropped = 0;
        self.entries.retain(|_, entry| {
            let live = entry.is_live(now);
            if !live {
                dropped += 1;
            }
            live
        });
        self.len.fetch_sub(dropped, Ordering::Relaxed);
        dropped
    }

    /// Decide synchronously (the memory store never waits on I/O).
    pub fn decide_now(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<Decisions, StoreError> {
        match checks {
            [] => Ok(Decisions::new()),
            [check] => self
                .decide_one_now(check, cost, mode)
                .map(|decision| Decisions::from_buf([decision])),
            [first, ..] => self.on_entry(first.key, mode, |entry, now| {
                entry.decide(checks, cost, mode, now)
            }),
        }
    }

    /// [`Self::decide_now`] for one check.
    #[inline]
    pub fn decide_one_now(
        &self,
        check: &Check<'_>,
        cost: u64,
        mode: Mode,
    ) -> Result<Decision, StoreError> {
        self.on_entry(check.key, mode, |entry, now| {
            entry.decide_one(check, cost, mode, now)
        })
    }

    /// Run `decide` on `key`'s entry under its shard's lock, creating the entry when a
    /// consuming decision finds none.
    #[inline]
    fn on_entry<T>(
        &self,
        key: &str,
        mode: Mode,
        decide: impl FnOnce(&mut Entry, u64) -> T,
    ) -> Result<T, StoreError> {
        let now = self.clock.now_us();
        if let Some(mut entry) = self.entries.get_mut(KeyStr::new(key)) {
            return Ok(decide(&mut entry, now));
        }
        if mode == Mode::Peek {
            // A key never seen is a fresh key; a peek must not create it.
            return Ok(decide(&mut Entry::default(), now));
        }
        self.make_room(now)?;
        let mut entry = self.entries.entry(KeyString::new(key)).or_insert_with(|| {
            self.len.fetch_add(1, Ordering::Relaxed);
            Entry::default()
        });
        Ok(decide(&mut entry, now))
    }

    /// Before inserting a new identifier: sweep if full, fail if still full.
    fn make_room(&self, now: u64) -> Result<(), StoreError> {
        if self.len() < self.max_keys {
            return Ok(());
        }
        if self.forced_sweeps.claim(now) {
            self.sweep();
        }
        if self.len() < self.max_keys {
            Ok(())
        } else {
            Err(StoreError::Full {
                max_keys: self.max_keys,
            })
        }
    }

    /// Apply a lease operation synchronously. Only an acquire creates an identifier.
    pub fn lease_now(&self, check: &Check<'_>, op: LeaseOp) -> Result<LeaseOutcome, StoreError> {
        let mode = match op {
            LeaseOp::Acquire(_) => Mode::Consume,
            LeaseOp::Release(_) | LeaseOp::Renew(_) => Mode::Peek,
        };
        self.on_entry(check.key, mode, |entry, now| entry.lease(check, op, now))
    }

    /// Forget the state of each check's policy for its identifier.
    pub fn reset_now(&self, checks: &[Check<'_>]) {
        for check in checks {
            if let Some(mut entry) = self.entries.get_mut(KeyStr::new(check.key)) {
                entry
                    .slots
                    .retain(|s| !short_str::eq(&s.policy, check.name));
            }
        }
    }
}

impl Store for MemoryStore {
    async fn decide(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<StoreDecision, StoreError> {
        Ok(StoreDecision {
            decisions: self.decide_now(checks, cost, mode)?,
            degraded: false,
        })
    }

    async fn reset(&self, checks: &[Check<'_>]) -> Result<(), StoreError> {
        self.reset_now(checks);
        Ok(())
    }

    async fn decide_one(
        &self,
        check: Check<'_>,
        cost: u64,
        mode: Mode,
    ) -> Result<Decision, StoreError> {
        self.decide_one_now(&check, cost, mode)
    }

    async fn lease(&self, check: Check<'_>, op: LeaseOp) -> Result<LeaseOutcome, StoreError> {
        self.lease_now(&check, op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::policy::{Algorithm, Policy};
    use std::time::Duration;

    fn policy() -> Policy {
        Policy::new(Algorithm::FixedWindow, 2, Duration::from_secs(1), None).unwrap()
    }

    #[test]
    fn full_store_sweeps_then_refuses() {
        let clock = ManualClock::new(10_000_000);
        let store = MemoryStore::with_options(Clock::Manual(clock.clone()), 2);
        let p = policy();
        let check = |key| {
            [Check {
                name: "p",
                policy: &p,
                key,
            }]
        };
        assert!(store.decide_now(&check("a"), 1, Mode::Consume).is_ok());
        assert!(store.decide_now(&check("b"), 1, Mode::Consume).is_ok());
        assert!(matches!(
            store.decide_now(&check("c"), 1, Mode::Consume),
            Err(StoreError::Full { max_keys: 2 })
        ));
        // Known keys still decide while full; peeks of unknown keys create nothing.
        assert!(store.decide_now(&check("a"), 1, Mode::Consume).is_ok());
        assert!(store.decide_now(&check("z"), 1, Mode::Peek).is_ok());
        assert_eq!(store.len(), 2);
        // After the window the old keys expire and the sweep makes room.
        clock.advance_us(1_000_000);
        assert!(store.decide_now(&check("c"), 1, Mode::Consume).is_ok());
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn reset_restores_full_quota() {
        let store = MemoryStore::new();
        let p = policy();
        let c = [Check {
            name: "p",
            policy: &p,
            key: "k",
        }];
        store.decide_now(&c, 2, Mode::Consume).unwrap();
        assert!(!store.decide_now(&c, 1, Mode::Consume).unwrap()[0].allowed);
        store.reset_now(&c);
        assert_eq!(store.decide_now(&c, 1, Mode::Peek).unwrap()[0].remaining, 2);
    }
}
