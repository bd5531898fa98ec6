//! The `Store` trait: where decisions are made and state is kept.

use std::future::Future;

use smallvec::SmallVec;

use crate::algorithm::Mode;
use crate::decision::Decision;
use crate::error::StoreError;
use crate::lease::{LeaseOp, LeaseOutcome};
use crate::overrides::{Override, OverridePage};
use crate::policy::Policy;
use crate::policy_name::PolicyName;

/// One policy applied to one identifier.
#[derive(Debug, Clone, Copy)]
pub struct Check<'a> {
    /// The policy's name (part of the key: two policies never share state). Validated where it
    /// was made, so a store puts it in keys as it is.
    pub name: &'a PolicyName,
    /// The policy.
    pub policy: &'a Policy,
    /// The identifier being limited (user id, API key, IP, route…).
    pub key: &'a str,
}

/// Per-policy decisions, in the order of the checks. Most checks name one or two policies.
pub type Decisions = SmallVec<[Decision; 1]>;

/// What a store answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDecision {
    /// One decision per check, in order. All allowed or none consumed anything.
    pub decisions: Decisions,
    /// The shared store was not used (a fallback decided): see the resilience docs.
    pub degraded: bool,
}

/// A place where rate-limit state lives and decisions are made atomically.
///
/// Implementations must decide all `checks` of one call atomically: the request is allowed only
/// if every check allows it, and then each consumes `cost`; otherwise nothing is consumed.
/// Callers guarantee the checks share one identifier, `1 <= cost <= capacity` of every policy,
/// and no policy name appears twice.
///
/// A store that keeps overrides ([`crate::overrides`]) decides a check whose key has one under
/// the override's policy instead of `check.policy`, in the same atomic step (a cost above the
/// override's capacity is [`crate::overrides::unpassable`]). The override methods' defaults
/// describe a store that keeps none.
pub trait Store: Send + Sync + 'static {
    /// Decide `checks` for `cost` in `mode`.
    fn decide(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> impl Future<Output = Result<StoreDecision, StoreError>> + Send;

    /// Forget the state of each check's key (back to a full quota).
    fn reset(&self, checks: &[Check<'_>]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Apply a lease operation to `check`'s key (a `concurrency` policy), atomically: the
    /// transition of [`crate::algorithm::Leases::apply`]. Callers guarantee the policy is a
    /// concurrency one and the lease's cost within its limit.
    ///
    /// The default answers [`StoreError::Unsupported`], so stores written before leases
    /// existed still compile; every store of this project implements it.
    fn lease(
        &self,
        check: Check<'_>,
        op: LeaseOp,
    ) -> impl Future<Output = Result<LeaseOutcome, StoreError>> + Send {
        let _ = (check, op);
        async { Err(StoreError::Unsupported("leases")) }
    }

    /// [`Self::lease`] answered at once, without a future, by a store that never waits (the
    /// memory store); `None` (the default) from a store that must wait, whose callers then
    /// await [`Self::lease`]. A lease operation is two calls where a check is one, and building,
    /// moving and polling the store's future is a measurable part of each on the memory store.
    fn lease_ready(
        &self,
        check: Check<'_>,
        op: LeaseOp,
    ) -> Option<Result<LeaseOutcome, StoreError>> {
        let _ = (check, op);
        None
    }

    /// Charge (`delta > 0`) or refund (`delta < 0`) `check`'s key after the fact, under its
    /// override if one stands, atomically: the transition of [`crate::State::adjust`], which
    /// answers what a check of one unit would answer now. Callers guarantee a rate policy
    /// (not `concurrency`), `|delta| < 2^53`, and `delta >= 0` for a sliding log.
    ///
    /// The default answers [`StoreError::Unsupported`], as [`Self::lease`]'s does.
    fn adjust(
        &self,
        check: Check<'_>,
        delta: i64,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send {
        let _ = (check, delta);
        async { Err(StoreError::Unsupported("adjust")) }
    }

    /// Store `value` as the override of `target.policy` (named `target.name`) for `target.key`,
    /// replacing any; obeyed from the next decision on.
    fn set_override(
        &self,
        target: Check<'_>,
        value: &Override,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (target, value);
        async { Err(StoreError::Unsupported("overrides")) }
    }

    /// The override of `target`, if one stands (of the policy's algorithm, not expired).
    fn get_override(
        &self,
        target: Check<'_>,
    ) -> impl Future<Output = Result<Option<Override>, StoreError>> + Send {
        let _ = target;
        async { Ok(None) }
    }

    /// Delete the override of `target`; whether there was one.
    fn delete_override(
        &self,
        target: Check<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let _ = target;
        async { Ok(false) }
    }

    /// Up to `count` overrides of the policy `name` with keys after `after` (all when `None`),
    /// keys ascending.
    fn list_overrides(
        &self,
        name: &PolicyName,
        policy: &Policy,
        after: Option<&str>,
        count: usize,
    ) -> impl Future<Output = Result<OverridePage, StoreError>> + Send {
        let _ = (name, policy, after, count);
        async { Ok(OverridePage::default()) }
    }

    /// Decide one check: what [`Self::decide`] answers for `[check]`, for the common call that
    /// names one policy. A store whose decision costs little (the memory store) answers it
    /// without a list of decisions to build and take apart again.
    fn decide_one(
        &self,
        check: Check<'_>,
        cost: u64,
        mode: Mode,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send {
        async move {
            let answer = self.decide(&[check], cost, mode).await?;
            answer
                .decisions
                .first()
                .copied()
                .ok_or_else(|| StoreError::Protocol("no decision for one check".into()))
        }
    }
}

/// A shared store is a store.
impl<S: Store> Store for std::sync::Arc<S> {
    fn decide(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> impl Future<Output = Result<StoreDecision, StoreError>> + Send {
        (**self).decide(checks, cost, mode)
    }

    fn reset(&self, checks: &[Check<'_>]) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).reset(checks)
    }

    fn decide_one(
        &self,
        check: Check<'_>,
        cost: u64,
        mode: Mode,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send {
        (**self).decide_one(check, cost, mode)
    }

    fn lease(
        &self,
        check: Check<'_>,
        op: LeaseOp,
    ) -> impl Future<Output = Result<LeaseOutcome, StoreError>> + Send {
        (**self).lease(check, op)
    }

    /// Inline: out of line, this forwarding call took the memory store's whole lease operation
    /// with it, and its arguments and answer then went through memory on each of a pair's two
    /// calls.
    #[inline]
    fn lease_ready(
        &self,
        check: Check<'_>,
        op: LeaseOp,
    ) -> Option<Result<LeaseOutcome, StoreError>> {
        (**self).lease_ready(check, op)
    }

    fn adjust(
        &self,
        check: Check<'_>,
        delta: i64,
    ) -> impl Future<Output = Result<Decision, StoreError>> + Send {
        (**self).adjust(check, delta)
    }

    fn set_override(
        &self,
        target: Check<'_>,
        value: &Override,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).set_override(target, value)
    }

    fn get_override(
        &self,
        target: Check<'_>,
    ) -> impl Future<Output = Result<Option<Override>, StoreError>> + Send {
        (**self).get_override(target)
    }

    fn delete_override(
        &self,
        target: Check<'_>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).delete_override(target)
    }

    fn list_overrides(
        &self,
        name: &PolicyName,
        policy: &Policy,
        after: Option<&str>,
        count: usize,
    ) -> impl Future<Output = Result<OverridePage, StoreError>> + Send {
        (**self).list_overrides(name, policy, after, count)
    }
}
