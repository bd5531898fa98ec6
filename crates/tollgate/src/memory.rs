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
//!
//! **Overrides** ([`crate::overrides`]) live in the identifier's entry beside its state, so a
//! decision finds them with the lookup it makes anyway; an identifier with an override counts
//! toward `max_keys` like one with state, and is kept until its last override expires or is
//! deleted.

use std::sync::atomic::{AtomicUsize, Ordering};

use compact_str::CompactString;
use dashmap::DashMap;

use crate::algorithm::{Mode, State};
use crate::bounded_map::{SweepGate, shard_amount};
use crate::clock::Clock;
use crate::decision::Decision;
use crate::error::StoreError;
use crate::lease::{LeaseOp, LeaseOutcome};
use crate::overrides::{self, Override, OverridePage};
use crate::policy::Policy;
use crate::policy_name::PolicyName;
use crate::short_str::{self, KeyStr, KeyString};
use crate::store::{Check, Decisions, Store, StoreDecision};

/// Default bound on identifiers kept.
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

/// One policy's state for one identifier.
///
/// `repr(C)`, the state last: a `concurrency` state (a lease kept inline) is larger than any
/// other, and the bytes the others leave unused then sit at the end of the map's bucket, where
/// a check never reads them (see [`Entry`]).
#[derive(Debug)]
#[repr(C)]
struct Slot {
    /// The policy's name, inline up to 24 bytes: a check compares it on every visit, and a
    /// separate allocation would cost a cache miss each time.
    policy: CompactString,
    /// When the state is back to a full quota (µs); from then on it equals a fresh state.
    expires_at: u64,
    state: State,
}

/// The slots of one identifier: one inline (most identifiers are limited by one policy), or
/// all of them in one heap buffer (as a `SmallVec` spills). Its discriminant lives in the
/// slot's state tag, so this is no larger than a slot, and the one slot's state ends the map
/// bucket (see [`Entry`]).
#[derive(Debug, Default)]
enum Slots {
    #[default]
    Empty,
    One(Slot),
    Many(Vec<Slot>),
}

impl Slots {
    fn as_slice(&self) -> &[Slot] {
        match self {
            Slots::Empty => &[],
            Slots::One(slot) => std::slice::from_ref(slot),
            Slots::Many(slots) => slots,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [Slot] {
        match self {
            Slots::Empty => &mut [],
            Slots::One(slot) => std::slice::from_mut(slot),
            Slots::Many(slots) => slots,
        }
    }

    /// The slot of policy `name`, added by `make` if absent.
    fn get_or_insert_with(&mut self, name: &str, make: impl FnOnce() -> Slot) -> &mut Slot {
        let found = self
            .as_slice()
            .iter()
            .position(|s| short_str::eq(&s.policy, name));
        match found {
            Some(at) => &mut self.as_mut_slice()[at],
            None => self.push(make()),
        }
    }

    /// Add `slot` (of a policy not present) and answer it.
    fn push(&mut self, slot: Slot) -> &mut Slot {
        *self = match std::mem::take(self) {
            Slots::Empty => Slots::One(slot),
            Slots::One(first) => Slots::Many(vec![first, slot]),
            Slots::Many(mut slots) => {
                slots.push(slot);
                Slots::Many(slots)
            }
        };
        let slots = self.as_mut_slice();
        let last = slots.len() - 1;
        &mut slots[last]
    }

    /// Drop the slot of policy `name`.
    fn remove(&mut self, name: &str) {
        let kept = |s: &Slot| !short_str::eq(&s.policy, name);
        *self = match std::mem::take(self) {
            Slots::One(slot) if !kept(&slot) => Slots::Empty,
            Slots::Many(mut slots) => {
                slots.retain(kept);
                match slots.len() {
                    0 => Slots::Empty,
                    1 => slots.pop().map_or(Slots::Empty, Slots::One),
                    _ => Slots::Many(slots),
                }
            }
            unchanged => unchanged,
        };
    }
}

/// One policy's override for one identifier.
#[derive(Debug)]
struct KeyOverride {
    /// The name of the policy it overrides.
    policy_name: CompactString,
    /// The policy decisions follow instead.
    policy: Policy,
    /// When it disappears (µs); `u64::MAX`: never.
    expires_at: u64,
}

impl KeyOverride {
    /// Whether it stands at `now` for a check of `check`'s policy (an override set for another
    /// algorithm, before a reload changed the policy's, does not).
    fn applies(&self, check: &Check<'_>, now: u64) -> bool {
        self.expires_at > now
            && self.policy.algorithm() == check.policy.algorithm()
            && short_str::eq(&self.policy_name, check.name)
    }

    fn to_override(&self, now: u64) -> Override {
        Override {
            policy: self.policy.clone(),
            expires_in: (self.expires_at != u64::MAX)
                .then(|| std::time::Duration::from_micros(self.expires_at - now)),
        }
    }
}

/// Every policy's state for one identifier, and its overrides.
///
/// `repr(C)`, the slots last: a bucket of the map is the key, this entry's overrides, then the
/// one slot's name, expiry and state. A state smaller than a `concurrency` one leaves the
/// bucket's last bytes unused, so a check reads one contiguous run from the bucket's start and
/// touches no more cache lines than it would in a bucket without that room.
#[derive(Debug, Default)]
#[repr(C)]
struct Entry {
    /// Boxed: most identifiers have none, and an absent list costs the entry one word (a
    /// `Vec` would cost three in every entry of the table).
    #[allow(clippy::box_collection)]
    overrides: Option<Box<Vec<KeyOverride>>>,
    slots: Slots,
}

impl Entry {
    fn is_live(&self, now: u64) -> bool {
        self.slots.as_slice().iter().any(|s| s.expires_at > now)
            || self
                .overrides
                .as_ref()
                .is_some_and(|list| list.iter().any(|o| o.expires_at > now))
    }

    /// Drop expired overrides (a sweep).
    fn drop_expired_overrides(&mut self, now: u64) {
        if let Some(list) = &mut self.overrides {
            list.retain(|o| o.expires_at > now);
            if list.is_empty() {
                self.overrides = None;
            }
        }
    }

    /// The override standing for `check` at `now`.
    #[inline]
    fn override_of(&self, check: &Check<'_>, now: u64) -> Option<&KeyOverride> {
        self.overrides
            .as_ref()?
            .iter()
            .find(|o| o.applies(check, now))
    }

    /// The slot of `check`, fresh if absent. The common case (the identifier's one slot, of
    /// this policy and algorithm) inline; the rest out of line.
    #[inline]
    fn slot(&mut self, check: &Check<'_>) -> &mut Slot {
        let algorithm = check.policy.algorithm();
        if matches!(&self.slots, Slots::One(slot)
                if short_str::eq(&slot.policy, check.name) && slot.state.algorithm() == algorithm)
            && let Slots::One(ref mut slot) = self.slots
        {
            return slot;
        }
        self.other_slot(check)
    }

    /// [`Self::slot`] past the common case.
    #[inline(never)]
    fn other_slot(&mut self, check: &Check<'_>) -> &mut Slot {
        let algorithm = check.policy.algorithm();
        let slot = self.slots.get_or_insert_with(check.name, || Slot {
            policy: check.name.as_str().into(),
            expires_at: 0,
            state: State::fresh(algorithm),
        });
        // A state past its expiry decides exactly as a fresh one would, so it is kept until a
        // sweep drops it (as Redis keeps a key until its TTL): were it replaced here, a clock
        // stepping back would find a fresh quota where the transitions would remember.
        if slot.state.algorithm() != algorithm {
            slot.state = State::fresh(algorithm);
        }
        slot
    }

    /// Decide one check on this entry, under its override if one stands.
    #[inline]
    fn decide_one(&mut self, check: &Check<'_>, cost: u64, mode: Mode, now: u64) -> Decision {
        let overridden = self.override_of(check, now).map(|o| o.policy.clone());
        let slot = self.slot(check);
        let decision = match &overridden {
            None => slot.state.decide(now, check.policy, cost, mode),
            Some(policy) => overrides::decide_within(policy, cost, || {
                slot.state.decide(now, policy, cost, mode)
            }),
        };
        if decision.allowed && mode == Mode::Consume {
            slot.expires_at = slot.expires_at.max(now + decision.reset_after_us);
        }
        decision
    }

    /// Apply a lease operation to one check on this entry.
    #[inline]
    fn lease(&mut self, check: &Check<'_>, op: LeaseOp, now: u64) -> LeaseOutcome {
        let slot = self.slot(check);
        let outcome = slot.state.lease(now, check.policy, op);
        slot.expires_at = slot.expires_at.max(now + outcome.decision.reset_after_us);
        outcome
    }

    /// Adjust one check on this entry after the fact, under its override if one stands.
    fn adjust(&mut self, check: &Check<'_>, delta: i64, now: u64) -> Decision {
        let overridden = self.override_of(check, now).map(|o| o.policy.clone());
        let policy = overridden.as_ref().unwrap_or(check.policy);
        let slot = self.slot(check);
        let decision = slot.state.adjust(now, policy, delta);
        slot.expires_at = slot.expires_at.max(now + decision.reset_after_us);
        decision
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
/// use tollgate::{Algorithm, Check, Mode, MemoryStore, Policy, PolicyName};
/// let store = MemoryStore::new();
/// let policy = Policy::builder(Algorithm::Gcra).rate("2/s").build().unwrap();
/// let check = [Check { name: &PolicyName::from_static("api"), policy: &policy, key: "user-1" }];
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
            entry.drop_expired_overrides(now);
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
    #[inline]
    pub fn lease_now(&self, check: &Check<'_>, op: LeaseOp) -> Result<LeaseOutcome, StoreError> {
        let mode = match op {
            LeaseOp::Acquire(_) => Mode::Consume,
            LeaseOp::Release(_) | LeaseOp::Renew(_) => Mode::Peek,
        };
        self.on_entry(check.key, mode, |entry, now| entry.lease(check, op, now))
    }

    /// Charge or refund synchronously (see [`Store::adjust`]). Only a charge creates an
    /// identifier: a refund of a key never seen finds a full quota already.
    pub fn adjust_now(&self, check: &Check<'_>, delta: i64) -> Result<Decision, StoreError> {
        let mode = if delta > 0 { Mode::Consume } else { Mode::Peek };
        self.on_entry(check.key, mode, |entry, now| {
            entry.adjust(check, delta, now)
        })
    }

    /// Store `value` as the override of `target` (see [`Store::set_override`]).
    pub fn set_override_now(&self, target: &Check<'_>, value: &Override) -> Result<(), StoreError> {
        let now = self.clock.now_us();
        let expires_at = value.expires_in.map_or(u64::MAX, |d| {
            now.saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        });
        let stored = KeyOverride {
            policy_name: target.name.as_str().into(),
            policy: value.policy.clone(),
            expires_at,
        };
        self.on_entry(target.key, Mode::Consume, |entry, _| {
            let list = entry.overrides.get_or_insert_with(Box::default);
            match list
                .iter_mut()
                .find(|o| short_str::eq(&o.policy_name, target.name))
            {
                Some(existing) => *existing = stored,
                None => list.push(stored),
            }
        })
    }

    /// The override of `target` standing now.
    pub fn get_override_now(&self, target: &Check<'_>) -> Option<Override> {
        let now = self.clock.now_us();
        let entry = self.entries.get(KeyStr::new(target.key))?;
        entry.override_of(target, now).map(|o| o.to_override(now))
    }

    /// Delete the override of `target`; whether one stood.
    pub fn delete_override_now(&self, target: &Check<'_>) -> bool {
        let now = self.clock.now_us();
        let Some(mut entry) = self.entries.get_mut(KeyStr::new(target.key)) else {
            return false;
        };
        let stood = entry.override_of(target, now).is_some();
        if let Some(list) = &mut entry.overrides {
            list.retain(|o| !short_str::eq(&o.policy_name, target.name));
        }
        entry.drop_expired_overrides(now);
        stood
    }

    /// Up to `count` overrides of policy `name` with keys after `after`, keys ascending. Scans
    /// every identifier: a listing is an administrator's call, not a decision's.
    pub fn list_overrides_now(
        &self,
        name: &PolicyName,
        policy: &Policy,
        after: Option<&str>,
        count: usize,
    ) -> OverridePage {
        let now = self.clock.now_us();
        let mut found: Vec<(String, Override)> = Vec::new();
        for entry in self.entries.iter() {
            let key = entry.key().as_str();
            if after.is_some_and(|after| key <= after) {
                continue;
            }
            let target = Check { name, policy, key };
            if let Some(o) = entry.override_of(&target, now) {
                found.push((key.to_owned(), o.to_override(now)));
            }
        }
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let next_cursor = (found.len() > count && count > 0).then(|| found[count - 1].0.clone());
        found.truncate(count);
        OverridePage {
            overrides: found,
            next_cursor,
        }
    }

    /// Forget the state of each check's policy for its identifier.
    pub fn reset_now(&self, checks: &[Check<'_>]) {
        for check in checks {
            if let Some(mut entry) = self.entries.get_mut(KeyStr::new(check.key)) {
                entry.slots.remove(check.name);
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

    #[inline]
    fn lease_ready(
        &self,
        check: Check<'_>,
        op: LeaseOp,
    ) -> Option<Result<LeaseOutcome, StoreError>> {
        Some(self.lease_now(&check, op))
    }

    async fn adjust(&self, check: Check<'_>, delta: i64) -> Result<Decision, StoreError> {
        self.adjust_now(&check, delta)
    }

    async fn set_override(&self, target: Check<'_>, value: &Override) -> Result<(), StoreError> {
        self.set_override_now(&target, value)
    }

    async fn get_override(&self, target: Check<'_>) -> Result<Option<Override>, StoreError> {
        Ok(self.get_override_now(&target))
    }

    async fn delete_override(&self, target: Check<'_>) -> Result<bool, StoreError> {
        Ok(self.delete_override_now(&target))
    }

    async fn list_overrides(
        &self,
        name: &PolicyName,
        policy: &Policy,
        after: Option<&str>,
        count: usize,
    ) -> Result<OverridePage, StoreError> {
        Ok(self.list_overrides_now(name, policy, after, count))
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
        let name_p = PolicyName::from_static("p");
        let check = |key| {
            [Check {
                name: &name_p,
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
            name: &PolicyName::from_static("p"),
            policy: &p,
            key: "k",
        }];
        store.decide_now(&c, 2, Mode::Consume).unwrap();
        assert!(!store.decide_now(&c, 1, Mode::Consume).unwrap()[0].allowed);
        store.reset_now(&c);
        assert_eq!(store.decide_now(&c, 1, Mode::Peek).unwrap()[0].remaining, 2);
    }

    /// An override expires by itself, counts toward the bound, keeps its identifier through
    /// sweeps while it stands, and lists in key order, page by page.
    #[test]
    fn overrides_expire_count_and_list() {
        let clock = ManualClock::new(10_000_000);
        let store = MemoryStore::with_options(Clock::Manual(clock.clone()), 3);
        let p = policy();
        let name_p = PolicyName::from_static("p");
        let target = |key| Check {
            name: &name_p,
            policy: &p,
            key,
        };
        let spec = |limit, secs| crate::OverrideSpec {
            expires_in: Some(Duration::from_secs(secs)),
            ..crate::OverrideSpec::limit(limit)
        };
        for (key, secs) in [("b", 5), ("a", 50), ("c", 50)] {
            let value = spec(7, secs).resolve(&p).unwrap();
            store.set_override_now(&target(key), &value).unwrap();
        }
        let value = spec(7, 5).resolve(&p).unwrap();
        assert!(matches!(
            store.set_override_now(&target("d"), &value),
            Err(StoreError::Full { max_keys: 3 })
        ));
        let page = store.list_overrides_now(&PolicyName::from_static("p"), &p, None, 2);
        let keys: Vec<&str> = page.overrides.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            (keys, page.next_cursor.as_deref()),
            (vec!["a", "b"], Some("b"))
        );
        let rest = store.list_overrides_now(&PolicyName::from_static("p"), &p, Some("b"), 2);
        assert_eq!((rest.overrides.len(), rest.next_cursor), (1, None));
        assert_eq!(
            store.get_override_now(&target("b")).unwrap().expires_in,
            Some(Duration::from_secs(5))
        );
        let one = [target("b")];
        assert_eq!(
            store.decide_now(&one, 1, Mode::Consume).unwrap()[0].limit,
            7
        );
        clock.advance_us(5_000_000);
        assert_eq!(store.get_override_now(&target("b")), None);
        assert_eq!(store.decide_now(&one, 1, Mode::Peek).unwrap()[0].limit, 2);
        // "b" had state until 11 s and an override until 15 s: swept now; "a" and "c" stay.
        assert_eq!(store.sweep(), 1);
        assert_eq!(store.len(), 2);
        assert!(store.delete_override_now(&target("a")));
        assert!(!store.delete_override_now(&target("a")));
        assert_eq!(store.sweep(), 1);
        assert_eq!(
            store
                .list_overrides_now(&PolicyName::from_static("p"), &p, None, 10)
                .overrides
                .len(),
            1
        );
    }

    /// An identifier under several policies keeps each one's state apart, through resets of
    /// the first and the last, down to one policy (kept inline again) and to none.
    #[test]
    fn several_policies_of_one_identifier_keep_their_state_through_resets() {
        let store = MemoryStore::new();
        let p = policy();
        let names = ["a", "b", "c"].map(PolicyName::from_static);
        let check = |i: usize| {
            [Check {
                name: &names[i],
                policy: &p,
                key: "k",
            }]
        };
        let remaining = |i: usize| store.decide_now(&check(i), 1, Mode::Peek).unwrap()[0].remaining;
        for (i, cost) in [(0, 1), (1, 2), (2, 1)] {
            store.decide_now(&check(i), cost, Mode::Consume).unwrap();
        }
        assert_eq!([remaining(0), remaining(1), remaining(2)], [1, 0, 1]);
        store.reset_now(&check(0));
        store.reset_now(&check(2));
        // (A peek of a known identifier adds the policy's slot, fresh: look at the slots first.)
        let entry = store.entries.get(KeyStr::new("k")).unwrap();
        assert!(matches!(&entry.slots, Slots::One(slot) if slot.policy == "b"));
        drop(entry);
        assert_eq!([remaining(0), remaining(1), remaining(2)], [2, 0, 2]);
        store.decide_now(&check(0), 2, Mode::Consume).unwrap();
        assert_eq!([remaining(0), remaining(1), remaining(2)], [0, 0, 2]);
        for i in 0..3 {
            store.reset_now(&check(i));
        }
        assert!(matches!(
            &store.entries.get(KeyStr::new("k")).unwrap().slots,
            Slots::Empty
        ));
    }

    /// The layout [`Entry`] promises: in a map bucket (key, entry), the state of an
    /// identifier's one slot is the last field, so the room a `concurrency` state needs beyond
    /// the others is the bucket's tail, never read by a check of another algorithm.
    #[test]
    fn the_one_state_ends_the_bucket() {
        let mut entry = Entry::default();
        let policy = Policy::new(Algorithm::Gcra, 10, Duration::from_secs(1), None).unwrap();
        let check = Check {
            name: &PolicyName::from_static("api"),
            policy: &policy,
            key: "k",
        };
        entry.slot(&check);
        let bucket = (KeyString::new("k"), entry);
        let Slots::One(first) = &bucket.1.slots else {
            panic!("one slot is kept inline");
        };
        let offset = |field: *const u8| field as usize - &raw const bucket as usize;
        let state_ends = offset((&raw const first.state).cast()) + size_of::<State>();
        assert_eq!(state_ends, size_of::<(KeyString, Entry)>());
        assert_eq!(offset((&raw const bucket.0).cast()), 0);
        // The one slot costs no discriminant of its own, nor does a lease set its one lease.
        assert_eq!(size_of::<Slots>(), size_of::<Slot>());
        assert_eq!(
            size_of::<crate::algorithm::Leases>(),
            size_of::<crate::algorithm::concurrency::HeldLease>()
        );
    }
}
