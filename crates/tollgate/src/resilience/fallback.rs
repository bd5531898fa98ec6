//! Deciding without the store: the one rule for `on_error`.
//!
//! [`Fallback`] is what both ways of surviving a failed store call share: [`super::Resilient`]
//! (a shared store wrapped with a timeout and a breaker) and
//! [`Limiter::on_store_error`](crate::Limiter::on_store_error) (any store, the tower layer's
//! `local`). Each decision it makes is marked degraded by its caller.

use std::str::FromStr;
use std::time::Duration;

use crate::algorithm::Mode;
use crate::clock::Clock;
use crate::decision::Decision;
use crate::error::StoreError;
use crate::lease::{LeaseOp, LeaseOutcome};
use crate::memory::MemoryStore;
use crate::policy::Policy;
use crate::store::{Check, Decisions};

/// What a decision is when the store cannot make it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Fail closed: reject.
    Deny,
    /// Fail open: allow.
    Allow,
    /// Decide on a local memory store with each limit divided by the number of instances.
    #[default]
    Local,
}

impl FromStr for OnError {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deny" => Ok(OnError::Deny),
            "allow" => Ok(OnError::Allow),
            "local" => Ok(OnError::Local),
            other => Err(format!(
                "unknown on_error `{other}` (expected allow, deny or local)"
            )),
        }
    }
}

impl OnError {
    /// `deny`, `allow` or `local`.
    pub fn name(self) -> &'static str {
        match self {
            OnError::Deny => "deny",
            OnError::Allow => "allow",
            OnError::Local => "local",
        }
    }
}

/// Decisions made without the store, by an [`OnError`].
///
/// - `allow` allows, reporting a full quota less the cost (it knows nothing of the key);
/// - `deny` rejects, telling the caller to come back after `retry_after` (about when the store
///   is tried again);
/// - `local` decides on an in-process [`MemoryStore`] with each policy's share of the limit
///   (`limit / instances`, at least 1), and rejects what no share can hold or a full local store
///   cannot take.
#[derive(Debug)]
pub struct Fallback {
    on_error: OnError,
    instances: u32,
    retry_after_us: u64,
    local: MemoryStore,
}

impl Fallback {
    /// A fallback for `instances` instances sharing each limit, whose rejections last
    /// `retry_after`, with a local store of at most `local_max_keys` identifiers.
    pub fn new(
        on_error: OnError,
        instances: u32,
        retry_after: Duration,
        local_max_keys: usize,
    ) -> Fallback {
        Fallback {
            on_error,
            instances: instances.max(1),
            retry_after_us: u64::try_from(retry_after.as_micros()).unwrap_or(u64::MAX),
            local: MemoryStore::with_options(Clock::System, local_max_keys),
        }
    }

    /// The rule it follows.
    pub fn on_error(&self) -> OnError {
        self.on_error
    }

    /// The decisions for `checks` at `cost`, in `mode`.
    pub fn decide(&self, checks: &[Check<'_>], cost: u64, mode: Mode) -> Decisions {
        self.decide_by(self.on_error, checks, cost, mode)
    }

    /// [`Self::decide`] once the store failed with `error` ([`Self::rule_for`]).
    pub fn decide_after(
        &self,
        error: &StoreError,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Decisions {
        self.decide_by(self.rule_for(error), checks, cost, mode)
    }

    /// The rule for a store that failed with `error`: a full memory store is the in-process
    /// store already, so `local` has no room to add and refuses, as its own local store does
    /// when full (another store beside it would lift the `max_keys` bound).
    pub fn rule_for(&self, error: &StoreError) -> OnError {
        match (self.on_error, error) {
            (OnError::Local, StoreError::Full { .. }) => OnError::Deny,
            (rule, _) => rule,
        }
    }

    fn decide_by(&self, rule: OnError, checks: &[Check<'_>], cost: u64, mode: Mode) -> Decisions {
        let fixed = |allowed| fixed_decisions(allowed, checks, cost, self.retry_after_us);
        match rule {
            OnError::Allow => fixed(true),
            OnError::Deny => fixed(false),
            OnError::Local => self
                .decide_locally(checks, cost, mode)
                .unwrap_or_else(|| fixed(false)),
        }
    }

    /// Decide on the local store with each policy's share of the limit. `None` when a share is
    /// smaller than the cost or the local store is full.
    fn decide_locally(&self, checks: &[Check<'_>], cost: u64, mode: Mode) -> Option<Decisions> {
        let shares: Vec<Policy> = checks
            .iter()
            .map(|c| local_share(c.policy, self.instances))
            .collect::<Option<_>>()?;
        if shares.iter().any(|p| p.validate_cost(cost).is_err()) {
            return None;
        }
        let local_checks: Vec<Check<'_>> = checks
            .iter()
            .zip(&shares)
            .map(|(c, policy)| Check { policy, ..*c })
            .collect();
        self.local.decide_now(&local_checks, cost, mode).ok()
    }

    /// A lease operation: `local` applies it to the local store under the policy's share;
    /// `allow` grants, releases and renews; `deny` refuses an acquire (come back after
    /// `retry_after`) and a renew, and releases nothing.
    pub fn lease(&self, check: Check<'_>, op: LeaseOp) -> LeaseOutcome {
        self.lease_by(self.on_error, check, op)
    }

    /// [`Self::lease`] once the store failed with `error` ([`Self::rule_for`]).
    pub fn lease_after(&self, error: &StoreError, check: Check<'_>, op: LeaseOp) -> LeaseOutcome {
        self.lease_by(self.rule_for(error), check, op)
    }

    fn lease_by(&self, rule: OnError, check: Check<'_>, op: LeaseOp) -> LeaseOutcome {
        let lease_us = check.policy.period_us();
        let fixed = |granted: bool| {
            let decision = fixed_decisions(granted, &[check], 1, self.retry_after_us)[0];
            let acquire = matches!(op, LeaseOp::Acquire(_));
            LeaseOutcome {
                decision: Decision {
                    retry_after_us: if acquire { decision.retry_after_us } else { 0 },
                    ..decision
                },
                lease_expires_in_us: if granted && !matches!(op, LeaseOp::Release(_)) {
                    lease_us
                } else {
                    0
                },
                degraded: true,
            }
        };
        match rule {
            OnError::Allow => fixed(true),
            OnError::Deny => fixed(false),
            OnError::Local => match self.lease_locally(check, op) {
                Some(outcome) => LeaseOutcome {
                    degraded: true,
                    ..outcome
                },
                None => fixed(false),
            },
        }
    }

    /// Apply a lease operation to the local store under the policy's share; `None` when the
    /// share cannot hold it or the local store is full.
    fn lease_locally(&self, check: Check<'_>, op: LeaseOp) -> Option<LeaseOutcome> {
        let share = local_share(check.policy, self.instances).filter(|s| s.limit() >= op.cost())?;
        let local = Check {
            policy: &share,
            ..check
        };
        self.local.lease_now(&local, op).ok()
    }

    /// After the store answered `outcome` to `op`: a release also reaches the local store,
    /// which holds the leases granted while the store was away, and the lease counts as held
    /// when either held it. Every release of a healthy store passes here: an empty local store
    /// (nothing was decided without the store) costs it one atomic load, no share, no lookup.
    pub fn after_store(
        &self,
        check: Check<'_>,
        op: LeaseOp,
        mut outcome: LeaseOutcome,
    ) -> LeaseOutcome {
        if self.on_error == OnError::Local
            && matches!(op, LeaseOp::Release(_))
            && !self.local.is_empty()
            && let Some(local) = self.lease_locally(check, op)
        {
            outcome.decision.allowed |= local.decision.allowed;
        }
        outcome
    }

    /// Forget the local state of `checks`' keys.
    pub fn reset(&self, checks: &[Check<'_>]) {
        self.local.reset_now(checks);
    }

    /// Drop local state that has returned to a full quota.
    pub fn sweep(&self) {
        self.local.sweep();
    }
}

/// Decisions made knowing nothing of the keys' state (`allow` / `deny` without a store): allowed
/// ones report a full quota less `cost`; rejected ones say to come back after `wait_us`, which is
/// also how long the rejection is expected to last.
pub fn fixed_decisions(allowed: bool, checks: &[Check<'_>], cost: u64, wait_us: u64) -> Decisions {
    checks
        .iter()
        .map(|check| {
            let limit = check.policy.capacity();
            if allowed {
                Decision {
                    allowed,
                    limit,
                    period_us: check.policy.period_us(),
                    remaining: limit.saturating_sub(cost),
                    reset_after_us: 0,
                    retry_after_us: 0,
                }
            } else {
                Decision {
                    allowed,
                    limit,
                    period_us: check.policy.period_us(),
                    remaining: 0,
                    reset_after_us: wait_us,
                    retry_after_us: wait_us,
                }
            }
        })
        .collect()
}

/// `policy` with its limit (and burst) divided by `instances`, at least 1.
pub fn local_share(policy: &Policy, instances: u32) -> Option<Policy> {
    let n = u64::from(instances.max(1));
    if n == 1 {
        return Some(policy.clone());
    }
    if policy.is_monthly() {
        return Policy::monthly(policy.algorithm(), (policy.limit() / n).max(1)).ok();
    }
    let burst = policy
        .algorithm()
        .has_burst()
        .then(|| (policy.burst() / n).max(1));
    Policy::new(
        policy.algorithm(),
        (policy.limit() / n).max(1),
        policy.period(),
        burst,
    )
    .ok()
}
