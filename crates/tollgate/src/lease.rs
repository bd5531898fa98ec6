//! Leases of `concurrency` policies: their ids, the operations on them, and the guard that
//! gives a lease back when it is dropped.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use compact_str::CompactString;

use crate::decision::Decision;
use crate::error::LimitError;
use crate::policy::Policy;
use crate::policy_name::PolicyName;
use crate::resilience::Fallback;
use crate::store::{Check, Store};

/// A lease's id: 128 random bits, unique across instances without coordination, and the
/// units it holds. Its text form, `<32 hex digits>-<cost>`, is what clients hold; it is opaque
/// to them, but a store reads the cost from it to give back exactly those units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId {
    /// The 128 random bits as two words: aligned as a `u64` (a `u128` would pad every lease
    /// operation, and each future that carries one, to 16 bytes).
    nonce: [u64; 2],
    cost: u64,
}

impl LeaseId {
    /// A fresh id for a lease of `cost` units.
    #[inline]
    pub fn new(cost: u64) -> LeaseId {
        LeaseId::from_parts(fastrand::u128(..), cost)
    }

    /// An id from its parts (tests and stores that parse ids themselves).
    pub fn from_parts(nonce: u128, cost: u64) -> LeaseId {
        let nonce = [(nonce >> 64) as u64, nonce as u64];
        LeaseId { nonce, cost }
    }

    fn nonce(&self) -> u128 {
        (u128::from(self.nonce[0]) << 64) | u128::from(self.nonce[1])
    }

    /// The units this lease holds.
    pub fn cost(&self) -> u64 {
        self.cost
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}-{}", self.nonce(), self.cost)
    }
}

/// A lease id that is not `<32 hex digits>-<cost>` (a cost of at least 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid lease id (expected the id an acquire returned)")]
pub struct InvalidLeaseId;

impl FromStr for LeaseId {
    type Err = InvalidLeaseId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (nonce, cost) = s.split_once('-').ok_or(InvalidLeaseId)?;
        let hex = nonce.len() == 32 && nonce.bytes().all(|b| b.is_ascii_hexdigit());
        let digits =
            !cost.is_empty() && cost.len() <= 15 && cost.bytes().all(|b| b.is_ascii_digit());
        if !hex || !digits || nonce.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(InvalidLeaseId);
        }
        let nonce = u128::from_str_radix(nonce, 16).map_err(|_| InvalidLeaseId)?;
        let cost = cost.parse().map_err(|_| InvalidLeaseId)?;
        if cost == 0 || s != LeaseId::from_parts(nonce, cost).to_string() {
            // One text per id (no leading zeros): stores compare ids as text.
            return Err(InvalidLeaseId);
        }
        Ok(LeaseId::from_parts(nonce, cost))
    }
}

/// What to do with a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseOp {
    /// Take the id's units if they fit under the limit.
    Acquire(LeaseId),
    /// Give them back (idempotent: a lease not held, or expired, is left as it is).
    Release(LeaseId),
    /// Extend a held lease to a full lease from now.
    Renew(LeaseId),
}

impl LeaseOp {
    /// The lease it applies to.
    pub fn id(self) -> LeaseId {
        match self {
            LeaseOp::Acquire(id) | LeaseOp::Release(id) | LeaseOp::Renew(id) => id,
        }
    }

    /// The units of that lease.
    pub fn cost(self) -> u64 {
        self.id().cost()
    }
}

/// What a lease operation answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseOutcome {
    /// `allowed`: the acquire was granted, the released lease was held, or the renewed lease
    /// was found; `remaining`: units free afterwards; `reset_after`: until every lease has
    /// expired; `retry_after`: for a refused acquire, until enough units expire.
    pub decision: Decision,
    /// For a granted acquire or a renew, how long the lease lasts from now, µs (else 0).
    pub lease_expires_in_us: u64,
    /// Decided without the shared store (see the resilience docs).
    pub degraded: bool,
}

impl LeaseOutcome {
    /// How long the lease lasts from now.
    pub fn lease_expires_in(&self) -> Duration {
        Duration::from_micros(self.lease_expires_in_us)
    }
}

/// What [`crate::Limiter::acquire`] answered: the decision, and the lease when granted.
#[derive(Debug)]
pub struct Acquired<'a, S: Store> {
    /// As [`LeaseOutcome::decision`].
    pub decision: Decision,
    /// The lease, given back when dropped (or by [`Lease::release`]); `None` when refused.
    pub lease: Option<Lease<'a, S>>,
    /// Decided without the shared store.
    pub degraded: bool,
}

/// A granted lease, borrowing the limiter that granted it and the key: it holds no counted
/// pointer and no copy of the key, so taking and giving back a lease costs no atomic operation
/// and no copy beyond the store's own. A lease that must outlive the borrows (kept by a response body, moved to another task) becomes an
/// [`OwnedLease`] by [`Lease::into_owned`]. Dropping it releases it in the background (on the
/// current Tokio runtime; without one it expires after its lease); [`Lease::release`]
/// releases it and waits.
#[derive(Debug)]
pub struct Lease<'a, S: Store> {
    store: &'a Arc<S>,
    name: &'a PolicyName,
    policy: &'a Policy,
    key: &'a str,
    id: LeaseId,
    expires_in: Duration,
    /// Released, detached or made owned: nothing to do on drop.
    done: bool,
    /// Granted by the limiter's failure policy while the store failed: the store never held
    /// it, so it is released and renewed there.
    fallback: Option<Arc<Fallback>>,
}

impl<'a, S: Store> Lease<'a, S> {
    #[inline]
    pub(crate) fn new(
        store: &'a Arc<S>,
        name: &'a PolicyName,
        policy: &'a Policy,
        key: &'a str,
        id: LeaseId,
        expires_in: Duration,
    ) -> Lease<'a, S> {
        Lease {
            store,
            name,
            policy,
            key,
            id,
            expires_in,
            done: false,
            fallback: None,
        }
    }

    /// The same guard for a lease [`Fallback`] granted.
    #[cold]
    pub(crate) fn granted_by(mut self, fallback: Arc<Fallback>) -> Lease<'a, S> {
        self.fallback = Some(fallback);
        self
    }

    /// The lease's id.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// How long the lease lasted from when it was granted or last renewed.
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }

    /// Give the units back now. `Ok(false)` when the lease had already expired. (A future
    /// dropped before it is first polled still holds the guard, whose drop releases the lease
    /// in the background.)
    pub async fn release(mut self) -> Result<bool, LimitError> {
        self.done = true;
        let check = self.check();
        let op = LeaseOp::Release(self.id);
        if let Some(fallback) = &self.fallback {
            return Ok(fallback.lease(check, op).decision.allowed);
        }
        // No future of the store's from one that answers at once.
        let outcome = match self.store.lease_ready(check, op) {
            Some(answer) => answer?,
            None => self.store.lease(check, op).await?,
        };
        Ok(outcome.decision.allowed)
    }

    /// Extend the lease to a full lease from now. `Ok(false)` when it had already expired (its
    /// units may be someone else's now: stop the work it guarded).
    pub async fn renew(&mut self) -> Result<bool, LimitError> {
        let op = LeaseOp::Renew(self.id);
        let outcome = apply(&**self.store, self.fallback.as_deref(), self.check(), op).await?;
        if outcome.decision.allowed {
            self.expires_in = outcome.lease_expires_in();
        }
        Ok(outcome.decision.allowed)
    }

    /// Keep the lease held past this guard (to hand its id to another process, say): it is
    /// then released by id ([`crate::Limiter::release`]) or expires.
    pub fn detach(mut self) -> LeaseId {
        self.done = true;
        self.id
    }

    /// The same lease as a guard that owns what it needs (the store, the policy, a copy of the
    /// key), to outlive the borrows.
    pub fn into_owned(mut self) -> OwnedLease<S> {
        self.take_owned()
    }
}

impl<S: Store> Drop for Lease<'_, S> {
    fn drop(&mut self) {
        if !self.done {
            // The owned guard's drop releases it in the background.
            drop(self.take_owned());
        }
    }
}

impl<S: Store> Lease<'_, S> {
    /// [`Self::into_owned`] through a reference (for `drop`).
    fn take_owned(&mut self) -> OwnedLease<S> {
        self.done = true;
        OwnedLease {
            store: self.store.clone(),
            name: self.name.clone(),
            policy: self.policy.clone(),
            key: CompactString::from(self.key),
            id: self.id,
            expires_in: self.expires_in,
            done: false,
            fallback: self.fallback.take(),
        }
    }

    /// The check this lease was granted on.
    fn check(&self) -> Check<'_> {
        Check {
            name: self.name,
            policy: self.policy,
            key: self.key,
        }
    }
}

/// A guard's lease operation: to the failure policy's fallback when it granted the lease (the
/// store never held it), else to the store.
async fn apply<S: Store>(
    store: &S,
    fallback: Option<&Fallback>,
    check: Check<'_>,
    op: LeaseOp,
) -> Result<LeaseOutcome, LimitError> {
    match fallback {
        Some(fallback) => Ok(fallback.lease(check, op)),
        None => Ok(store.lease(check, op).await?),
    }
}

/// A granted lease that owns its store, policy and key ([`Lease::into_owned`]): it can outlive
/// the limiter and move across tasks. Dropping it releases it in the background (on the
/// current Tokio runtime; without one it expires after its lease); [`OwnedLease::release`]
/// releases it and waits.
#[derive(Debug)]
pub struct OwnedLease<S: Store> {
    store: Arc<S>,
    name: PolicyName,
    policy: Policy,
    /// Inline up to 24 bytes: a guard for a short key allocates nothing.
    key: CompactString,
    id: LeaseId,
    expires_in: Duration,
    /// Released or detached: nothing to do on drop.
    done: bool,
    /// As [`Lease`]'s: a lease the limiter's failure policy granted goes back there.
    fallback: Option<Arc<Fallback>>,
}

impl<S: Store> OwnedLease<S> {
    /// The lease's id.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// How long the lease lasted from when it was granted or last renewed.
    pub fn expires_in(&self) -> Duration {
        self.expires_in
    }

    /// Give the units back now. `Ok(false)` when the lease had already expired.
    pub async fn release(mut self) -> Result<bool, LimitError> {
        self.done = true;
        let outcome = self.run(LeaseOp::Release(self.id)).await?;
        Ok(outcome.decision.allowed)
    }

    /// Extend the lease to a full lease from now. `Ok(false)` when it had already expired (its
    /// units may be someone else's now: stop the work it guarded).
    pub async fn renew(&mut self) -> Result<bool, LimitError> {
        let outcome = self.run(LeaseOp::Renew(self.id)).await?;
        if outcome.decision.allowed {
            self.expires_in = outcome.lease_expires_in();
        }
        Ok(outcome.decision.allowed)
    }

    /// Keep the lease held past this guard: it is then released by id
    /// ([`crate::Limiter::release`]) or expires.
    pub fn detach(mut self) -> LeaseId {
        self.done = true;
        self.id
    }

    async fn run(&self, op: LeaseOp) -> Result<LeaseOutcome, LimitError> {
        apply(&*self.store, self.fallback.as_deref(), self.check(), op).await
    }

    /// The check this lease was granted on.
    fn check(&self) -> Check<'_> {
        Check {
            name: &self.name,
            policy: &self.policy,
            key: &self.key,
        }
    }
}

impl<S: Store> Drop for OwnedLease<S> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(fallback) = &self.fallback {
            fallback.lease(self.check(), LeaseOp::Release(self.id));
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, name, policy) = (self.store.clone(), self.name.clone(), self.policy.clone());
        let (key, id) = (std::mem::take(&mut self.key), self.id);
        runtime.spawn(async move {
            let check = Check {
                name: &name,
                policy: &policy,
                key: &key,
            };
            if let Err(error) = store.lease(check, LeaseOp::Release(id)).await {
                tracing::debug!(%error, "dropped lease not released; it expires by itself");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_as_text_and_refuse_anything_else() {
        let id = LeaseId::new(3);
        let text = id.to_string();
        assert_eq!(text.len(), 34);
        assert_eq!(text.parse::<LeaseId>(), Ok(id));
        assert_ne!(LeaseId::new(3), id);
        let zeros = LeaseId::from_parts(0, 12).to_string();
        assert_eq!(zeros, format!("{}-12", "0".repeat(32)));
        for bad in [
            "",
            "-1",
            &format!("{}-0", "a".repeat(32)),
            &format!("{}-01", "a".repeat(32)),
            &format!("{}-1", "A".repeat(32)),
            &format!("{}-1", "a".repeat(31)),
            &format!("{}-x", "a".repeat(32)),
            &format!("{}--1", "a".repeat(32)),
            &format!("{}-1 ", "a".repeat(32)),
            &format!("{}-9999999999999999", "a".repeat(32)),
        ] {
            assert_eq!(bad.parse::<LeaseId>(), Err(InvalidLeaseId), "{bad}");
        }
    }
}
