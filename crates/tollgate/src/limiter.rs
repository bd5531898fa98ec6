//! `Limiter`: named policies over a store — the API applications call.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;

use crate::algorithm::Mode;
use crate::decision::Decision;
use crate::error::LimitError;
use crate::error::PolicyError;
use crate::error::StoreError;
use crate::lease::{Acquired, Lease, LeaseId, LeaseOp, LeaseOutcome};
use crate::memory::DEFAULT_MAX_KEYS;
use crate::overrides::{self, Override, OverridePage, OverrideSpec};
use crate::policy::{Algorithm, MAX_EXACT, Policy};
use crate::policy_name::{PolicyName, PolicyNameError};
use crate::resilience::{Fallback, OnError};
use crate::short_str;
use crate::store::{Check, Decisions, Store};
use crate::wait::{DEFAULT_MAX_WAITERS, WaitQueues};

/// The queue of a waiting check: its policies and identifier, one per line (names that run
/// together would only share a queue, never a limit).
fn queue_name(policies: &[&str], key: &str) -> String {
    let mut name = policies.join("\n");
    name.push('\n');
    name.push_str(key);
    name
}

/// Longest identifier accepted, in bytes. Longer input is refused rather than truncated, so two
/// different callers can never share a limit by accident.
pub const MAX_KEY_LEN: usize = 1024;

/// The answer to a check over one or more policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The most restrictive policy's decision (a rejecting one if any rejected).
    pub decision: Decision,
    /// Index (into the policies asked for) of the policy `decision` belongs to.
    pub policy_index: usize,
    /// One decision per policy asked for, in order.
    pub decisions: Decisions,
    /// Where each policy asked for sits in the limiter ([`Limiter::policy_at`]), in order: what
    /// front ends index their per-policy metrics and headers by.
    pub policies: SmallVec<[usize; 2]>,
    /// Decided without the shared store (a fallback answered).
    pub degraded: bool,
    /// The reported policy is in shadow mode ([`Policy::shadow`]).
    pub shadow: bool,
    /// A shadow-mode policy would have rejected the request (it was let through).
    pub shadow_denied: bool,
}

impl Verdict {
    /// Whether the request may pass.
    pub fn allowed(&self) -> bool {
        self.decision.allowed
    }

    /// Where the reported policy ([`Self::decision`]'s) sits in the limiter.
    pub fn reported_policy(&self) -> usize {
        self.policies
            .get(self.policy_index)
            .copied()
            .unwrap_or_default()
    }
}

/// How long a request denied because the store failed is told to wait, µs: about the time a
/// circuit breaker waits before probing a failed store again.
pub const FAILURE_RETRY_US: u64 = 1_000_000;

/// What the limiter does when its store fails: see [`Limiter::on_store_error`].
#[derive(Clone)]
struct FailurePolicy {
    fallback: Arc<Fallback>,
    report: Arc<dyn Fn(&StoreError) + Send + Sync>,
}

impl fmt::Debug for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FailurePolicy")
            .field("on_error", &self.fallback.on_error())
            .finish_non_exhaustive()
    }
}

/// Named policies enforced on a store.
///
/// ```
/// use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
///
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let limiter = Limiter::new(MemoryStore::new())
///     .with_policy("api", Policy::builder(Algorithm::Gcra).rate("10/s").build()?)?;
/// let decision = limiter.check("api", "user-123").await?;
/// assert!(decision.allowed);
/// assert_eq!(decision.remaining, 9);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct Limiter<S> {
    store: Arc<S>,
    policies: PolicyTable,
    failure: Option<FailurePolicy>,
    /// The callers of [`Limiter::check_wait`] waiting now (shared by clones).
    waiting: Arc<WaitQueues>,
}

impl<S> Clone for Limiter<S> {
    fn clone(&self) -> Self {
        Limiter {
            store: self.store.clone(),
            policies: self.policies.clone(),
            failure: self.failure.clone(),
            waiting: self.waiting.clone(),
        }
    }
}

/// What [`Limiter::check_wait`] answers: the verdict once the cost fitted or the deadline
/// came, and how long the caller waited for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waited {
    /// The final verdict.
    pub verdict: Verdict,
    /// Time spent waiting (zero when answered at once).
    pub waited: Duration,
}

/// A limiter with no policies on a shared store, no failure policy.
impl<S: Store> From<Arc<S>> for Limiter<S> {
    fn from(store: Arc<S>) -> Limiter<S> {
        Limiter::from_shared(store)
    }
}

impl<S: Store> Limiter<S> {
    /// A limiter with no policies yet on `store`.
    pub fn new(store: S) -> Limiter<S> {
        Limiter::from_shared(Arc::new(store))
    }

    /// A limiter on a store shared with other limiters.
    pub fn from_shared(store: Arc<S>) -> Limiter<S> {
        Limiter {
            store,
            policies: PolicyTable::default(),
            failure: None,
            waiting: Arc::new(WaitQueues::new(DEFAULT_MAX_WAITERS)),
        }
    }

    /// Let at most `max_waiters` callers wait at once in [`Self::check_wait`] (default
    /// [`DEFAULT_MAX_WAITERS`]); one more is answered at once, as a check without waiting.
    pub fn with_max_waiters(mut self, max_waiters: usize) -> Limiter<S> {
        self.waiting = Arc::new(WaitQueues::new(max_waiters));
        self
    }

    /// How many callers wait in [`Self::check_wait`] now.
    pub fn waiting(&self) -> usize {
        self.waiting.waiting()
    }

    /// Decide without the store when it fails, as `on_error` says, instead of returning
    /// [`LimitError::Store`]. The rule is [`Fallback`]'s, which [`crate::Resilient`] follows too:
    /// - `allow` allows, reporting a full quota less the cost;
    /// - `deny` rejects with a retry of [`FAILURE_RETRY_US`];
    /// - `local` decides on an in-process memory store with each policy's full limit, but
    ///   refuses when the store is a full memory store ([`Fallback::rule_for`]). For a limit
    ///   shared by several instances, wrap the store in [`crate::Resilient`] with their number:
    ///   it decides on each instance's share, and never fails here.
    ///
    /// Lease operations follow the same rule; a lease granted without the store is released to
    /// the fallback that granted it. Such verdicts are marked degraded; `report` sees each error
    /// first (to count and log it).
    ///
    /// ```
    /// use tollgate::{Algorithm, Limiter, MemoryStore, OnError, Policy};
    /// use tollgate::clock::Clock;
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// // A memory store that holds one key at most: a second key finds it full.
    /// let limiter = Limiter::new(MemoryStore::with_options(Clock::System, 1))
    ///     .with_policy("api", Policy::builder(Algorithm::Gcra).rate("10/s").build()?)?
    ///     .on_store_error(OnError::Allow, |error| eprintln!("store failed: {error}"));
    /// limiter.check("api", "a").await?;
    /// let verdict = limiter.check_all(&["api"], "b", 1).await?;
    /// assert!(verdict.allowed() && verdict.degraded);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn on_store_error(
        mut self,
        on_error: OnError,
        report: impl Fn(&StoreError) + Send + Sync + 'static,
    ) -> Limiter<S> {
        self.failure = Some(FailurePolicy {
            fallback: Arc::new(Fallback::new(
                on_error,
                1,
                Duration::from_micros(FAILURE_RETRY_US),
                DEFAULT_MAX_KEYS,
            )),
            report: Arc::new(report),
        });
        self
    }

    /// Add (or replace) a named policy. The name is checked against the one rule for policy
    /// names ([`PolicyName`]) here, so the limiter never holds a name a store key, a header or
    /// a metric label could not carry; a [`PolicyName`] passes as it is.
    ///
    /// ```
    /// use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
    ///
    /// let policy = Policy::builder(Algorithm::Gcra).rate("10/s").build()?;
    /// let limiter = Limiter::new(MemoryStore::new()).with_policy("api", policy.clone())?;
    /// assert!(limiter.with_policy("api:v2", policy).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_policy<N>(self, name: N, policy: Policy) -> Result<Limiter<S>, PolicyNameError>
    where
        N: TryInto<PolicyName>,
        PolicyNameError: From<N::Error>,
    {
        Ok(self.with_named_policy(name.try_into()?, policy))
    }

    /// Add (or replace) a policy under a name validated already (a config file's, say): as
    /// [`Self::with_policy`], with nothing left to refuse.
    pub fn with_named_policy(mut self, name: PolicyName, policy: Policy) -> Limiter<S> {
        self.policies.insert(name, policy);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The policy named `name`.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.get(name).map(|(_, policy)| policy)
    }

    /// Every policy, by name, in the order added (the order of [`Self::policy_at`]).
    pub fn policies(&self) -> impl ExactSizeIterator<Item = (&PolicyName, &Policy)> {
        self.policies.entries.iter().map(|(n, p)| (n, p))
    }

    /// Where the policy named `name` sits ([`Verdict::policies`] holds such positions).
    pub fn policy_position(&self, name: &str) -> Option<usize> {
        self.policies.position(name)
    }

    /// The policy at `position`, with its name.
    pub fn policy_at(&self, position: usize) -> Option<(&PolicyName, &Policy)> {
        self.policies.entries.get(position).map(|(n, p)| (n, p))
    }

    /// Take one unit from `key` under `policy`.
    ///
    /// (`check`, `check_cost` and `peek` return `decide_one`'s future itself rather than
    /// awaiting it in an `async fn` of their own: one state machine instead of three nested ones,
    /// which is a tenth of a memory-store check.)
    pub fn check<'a>(
        &'a self,
        policy: &'a str,
        key: &'a str,
    ) -> impl Future<Output = Result<Decision, LimitError>> + 'a {
        self.decide_one(policy, key, 1, Mode::Consume)
    }

    /// Take `cost` units from `key` under `policy`.
    pub fn check_cost<'a>(
        &'a self,
        policy: &'a str,
        key: &'a str,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, LimitError>> + 'a {
        self.decide_one(policy, key, cost, Mode::Consume)
    }

    /// Take `cost` from `key` under every policy in `policies`, or from none: the request passes
    /// only if all allow. The verdict reports the most restrictive policy.
    pub async fn check_all(
        &self,
        policies: &[&str],
        key: &str,
        cost: u64,
    ) -> Result<Verdict, LimitError> {
        self.run(policies, key, cost, Mode::Consume).await
    }

    /// Take `cost` from `key` under every policy in `policies`, waiting up to `max_wait` for it
    /// to fit instead of being rejected (like NGINX's `limit_req ... delay`): callers waiting on
    /// the same key and policies in this limiter are served first come, first served; each
    /// tries when the store says the cost would fit (`retry_after`), and gives up at once when
    /// that is past its deadline. Nothing is admitted early: every try is an ordinary check.
    /// Over [`Self::with_max_waiters`] waiters, or with a zero `max_wait`, it answers at once.
    /// A degraded verdict (the store failed) is answered at once too.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// # rt.block_on(async {
    /// let limiter = Limiter::new(MemoryStore::new())
    ///     .with_policy("jobs", Policy::builder(Algorithm::Gcra).rate("20/s").build()?)?;
    /// for _ in 0..20 {
    ///     limiter.check("jobs", "queue-1").await?;
    /// }
    /// // The 21st fits 50 ms later: it waits for it rather than being rejected.
    /// let waited = limiter.check_wait(&["jobs"], "queue-1", 1, Duration::from_secs(1)).await?;
    /// assert!(waited.verdict.allowed());
    /// assert!(waited.waited >= Duration::from_millis(45));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn check_wait(
        &self,
        policies: &[&str],
        key: &str,
        cost: u64,
        max_wait: Duration,
    ) -> Result<Waited, LimitError> {
        let started = tokio::time::Instant::now();
        let answer = |verdict: Verdict| Waited {
            verdict,
            waited: started.elapsed(),
        };
        // Resolved and validated once, before anyone queues: a request that can never pass does
        // not wait, and the tries need no lookups.
        let (positions, checks) = self.checks(policies, key, cost)?;
        let decide = async |mode| -> Result<Verdict, LimitError> {
            let mut verdict = self.decide_checks(&checks, cost, mode).await?;
            verdict.policies = positions.clone();
            Ok(verdict)
        };
        if max_wait.is_zero() {
            return Ok(answer(decide(Mode::Consume).await?));
        }
        let Some(place) = self.waiting.join(&queue_name(policies, key)) else {
            return Ok(answer(decide(Mode::Consume).await?));
        };
        let deadline = started + max_wait;
        let Ok(_turn) = tokio::time::timeout_at(deadline, place.turn()).await else {
            // The callers ahead kept the key busy past this one's deadline.
            let mut verdict = decide(Mode::Peek).await?;
            verdict.decision.allowed = false;
            return Ok(answer(verdict));
        };
        loop {
            let verdict = decide(Mode::Consume).await?;
            let wait = Duration::from_micros(verdict.decision.retry_after_us);
            if verdict.allowed()
                || verdict.degraded
                || tokio::time::Instant::now() + wait > deadline
            {
                return Ok(answer(verdict));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// What `check_cost` would answer, consuming nothing.
    pub fn peek<'a>(
        &'a self,
        policy: &'a str,
        key: &'a str,
        cost: u64,
    ) -> impl Future<Output = Result<Decision, LimitError>> + 'a {
        self.decide_one(policy, key, cost, Mode::Peek)
    }

    /// One policy: no verdict to assemble. A valid call is recognised inline; any other goes
    /// through the full validation out of line ([`Self::validated`]), which names its error, so
    /// the common call carries no error values around.
    async fn decide_one(
        &self,
        policy: &str,
        key: &str,
        cost: u64,
        mode: Mode,
    ) -> Result<Decision, LimitError> {
        let check = match self.policies.get(policy) {
            Some((name, found)) if key_is_valid(key) && found.admits_cost(cost) => Check {
                name,
                policy: found,
                key,
            },
            _ => self.validated(policy, key, cost)?,
        };
        let mut decision = match self.store.decide_one(check, cost, mode).await {
            Ok(decision) => decision,
            Err(error) => self.without_store(error, &[check], cost, mode)?[0],
        };
        if !decision.allowed && cost > decision.limit {
            return Err(beyond_override(check.name, cost, decision.limit));
        }
        if check.policy.shadow() {
            let_through(&mut decision);
        }
        Ok(decision)
    }

    /// The check of a one-policy call, validated in the order [`Self::checks`] validates.
    #[cold]
    #[inline(never)]
    fn validated<'a>(
        &'a self,
        policy: &str,
        key: &'a str,
        cost: u64,
    ) -> Result<Check<'a>, LimitError> {
        validate_key(key)?;
        self.resolve(policy, key, cost)
    }

    /// Decide in `mode` over several policies: the general form of the calls above.
    pub async fn run(
        &self,
        policies: &[&str],
        key: &str,
        cost: u64,
        mode: Mode,
    ) -> Result<Verdict, LimitError> {
        let (positions, checks) = self.checks(policies, key, cost)?;
        let mut verdict = self.decide_checks(&checks, cost, mode).await?;
        if !verdict.allowed()
            && let Some((check, decision)) = checks
                .iter()
                .zip(&verdict.decisions)
                .find(|(_, d)| cost > d.limit)
        {
            return Err(beyond_override(check.name, cost, decision.limit));
        }
        verdict.policies = positions;
        Ok(verdict)
    }

    /// Decide checks resolved elsewhere (the Envoy service resolves descriptors to policies of
    /// its own) with this limiter's store and failure policy. The checks must satisfy
    /// [`Store::decide`]'s preconditions; [`Verdict::policies`] is left empty.
    pub async fn decide_checks(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<Verdict, LimitError> {
        if !checks.iter().any(|c| c.policy.shadow()) {
            let (decisions, degraded) = self.decide_all(checks, cost, mode).await?;
            return Ok(verdict(decisions, degraded));
        }
        self.decide_with_shadows(checks, cost, mode).await
    }

    /// The store's decisions for `checks`, or the failure policy's when the store failed.
    async fn decide_all(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<(Decisions, bool), LimitError> {
        match self.store.decide(checks, cost, mode).await {
            Ok(answer) => Ok((answer.decisions, answer.degraded)),
            Err(error) => Ok((self.without_store(error, checks, cost, mode)?, true)),
        }
    }

    /// [`Self::decide_checks`] when some policies are in shadow mode. The enforced policies
    /// decide first, all or nothing, as if the shadow ones were absent; the shadow ones then
    /// decide as usual among themselves (consuming only when the request passes the enforced
    /// ones; a request the enforced ones reject only looks), and whatever they reject is let
    /// through and reported as `shadow_denied`.
    async fn decide_with_shadows(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<Verdict, LimitError> {
        let (shadows, enforced): (SmallVec<[Check<'_>; 2]>, SmallVec<[Check<'_>; 2]>) =
            checks.iter().copied().partition(|c| c.policy.shadow());
        let mut degraded = false;
        let mut passed = true;
        let mut enforced_decisions = Decisions::new();
        if !enforced.is_empty() {
            let (decisions, by_fallback) = self.decide_all(&enforced, cost, mode).await?;
            degraded |= by_fallback;
            passed = decisions.iter().all(|d| d.allowed);
            enforced_decisions = decisions;
        }
        let shadow_mode = if passed { mode } else { Mode::Peek };
        let (shadow_decisions, by_fallback) = self.decide_all(&shadows, cost, shadow_mode).await?;
        degraded |= by_fallback;
        let mut shadow_denied = false;
        let (mut from_enforced, mut from_shadows) =
            (enforced_decisions.into_iter(), shadow_decisions.into_iter());
        let decisions: Decisions = checks
            .iter()
            .map(|c| {
                let next = if c.policy.shadow() {
                    from_shadows.next().map(|mut d| {
                        shadow_denied |= let_through(&mut d);
                        d
                    })
                } else {
                    from_enforced.next()
                };
                next.unwrap_or_default()
            })
            .collect();
        let mut verdict = verdict(decisions, degraded);
        verdict.shadow = checks
            .get(verdict.policy_index)
            .is_some_and(|c| c.policy.shadow());
        verdict.shadow_denied = shadow_denied;
        Ok(verdict)
    }

    /// Set the override of `policy` for `key` (see [`crate::overrides`]): from the next
    /// decision on, every instance on the store holds `key` to it. Returns it as stored.
    ///
    /// ```
    /// use tollgate::{Algorithm, Limiter, MemoryStore, OverrideSpec, Policy};
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let limiter = Limiter::new(MemoryStore::new())
    ///     .with_policy("api", Policy::builder(Algorithm::FixedWindow).rate("2/min").build()?)?;
    /// limiter.set_override("api", "tenant-7", OverrideSpec::limit(5000)).await?;
    /// let decision = limiter.check("api", "tenant-7").await?;
    /// assert_eq!((decision.limit, decision.remaining), (5000, 4999));
    /// assert_eq!(limiter.check("api", "someone-else").await?.limit, 2);
    /// assert!(limiter.delete_override("api", "tenant-7").await?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn set_override(
        &self,
        policy: &str,
        key: &str,
        spec: OverrideSpec,
    ) -> Result<Override, LimitError> {
        let target = self.target(policy, key)?;
        let value = spec
            .resolve(target.policy)
            .map_err(|source| LimitError::Policy {
                policy: policy.to_owned(),
                source,
            })?;
        self.store.set_override(target, &value).await?;
        Ok(value)
    }

    /// The override of `policy` for `key`, if one stands.
    pub async fn get_override(
        &self,
        policy: &str,
        key: &str,
    ) -> Result<Option<Override>, LimitError> {
        let target = self.target(policy, key)?;
        Ok(self.store.get_override(target).await?)
    }

    /// Delete the override of `policy` for `key`: the policy holds again from the next
    /// decision on. Returns whether one stood.
    pub async fn delete_override(&self, policy: &str, key: &str) -> Result<bool, LimitError> {
        let target = self.target(policy, key)?;
        Ok(self.store.delete_override(target).await?)
    }

    /// One page of `policy`'s overrides (at most `count`, capped at
    /// [`overrides::MAX_PAGE`]), keys ascending, starting after `cursor` (a page's
    /// `next_cursor`; `None` for the first page).
    ///
    /// ```
    /// use tollgate::{Algorithm, Limiter, MemoryStore, OverrideSpec, Policy};
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let limiter = Limiter::new(MemoryStore::new())
    ///     .with_policy("api", Policy::builder(Algorithm::Gcra).rate("10/s").build()?)?;
    /// for tenant in ["a", "b", "c"] {
    ///     limiter.set_override("api", tenant, OverrideSpec::limit(100)).await?;
    /// }
    /// let first = limiter.list_overrides("api", None, 2).await?;
    /// assert_eq!(first.overrides.len(), 2);
    /// let rest = limiter.list_overrides("api", first.next_cursor.as_deref(), 2).await?;
    /// assert_eq!((rest.overrides[0].0.as_str(), rest.next_cursor), ("c", None));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn list_overrides(
        &self,
        policy: &str,
        cursor: Option<&str>,
        count: usize,
    ) -> Result<OverridePage, LimitError> {
        let (name, found) = self.named(policy)?;
        let count = count.clamp(1, overrides::MAX_PAGE);
        Ok(self
            .store
            .list_overrides(name, found, cursor, count)
            .await?)
    }

    /// The policy `policy` applied to `key`, for the override calls.
    fn target<'a>(&'a self, policy: &str, key: &'a str) -> Result<Check<'a>, LimitError> {
        validate_key(key)?;
        let (name, found) = self.named(policy)?;
        Ok(Check {
            name,
            policy: found,
            key,
        })
    }

    /// Lease `cost` units of `key` under the `concurrency` policy `policy`: granted when they fit
    /// under its limit, and held until the lease is released (explicitly, or by dropping it) or
    /// expires after the policy's `lease`. The guard borrows this limiter and `key`; a guard that
    /// must outlive them is [`Lease::into_owned`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Limiter, MemoryStore, Policy};
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let limiter = Limiter::new(MemoryStore::new())
    ///     .with_policy("jobs", Policy::concurrency(2, Duration::from_secs(60))?)?;
    /// let first = limiter.acquire("jobs", "tenant-7", 1).await?.lease.expect("granted");
    /// let second = limiter.acquire("jobs", "tenant-7", 1).await?;
    /// assert_eq!(second.decision.remaining, 0);
    /// assert!(limiter.acquire("jobs", "tenant-7", 1).await?.lease.is_none());
    /// first.release().await?;
    /// assert!(limiter.acquire("jobs", "tenant-7", 1).await?.lease.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn acquire<'a>(
        &'a self,
        policy: &str,
        key: &'a str,
        cost: u64,
    ) -> Result<Acquired<'a, S>, LimitError> {
        let (name, found) = self.lease_policy(policy, key, cost)?;
        let id = LeaseId::new(cost);
        let check = Check {
            name,
            policy: found,
            key,
        };
        // The store called here, not through `lease_on_store`: one future fewer to build, none
        // from a store that answers at once.
        let op = LeaseOp::Acquire(id);
        let answer = match self.store.lease_ready(check, op) {
            Some(answer) => answer,
            None => self.store.lease(check, op).await,
        };
        let (outcome, fallback) = match answer {
            Ok(outcome) => (outcome, None),
            Err(error) => self.lease_without_store(check, op, error)?,
        };
        let lease = outcome.decision.allowed.then(|| {
            let lease = Lease::new(
                &self.store,
                name,
                found,
                key,
                id,
                outcome.lease_expires_in(),
            );
            match fallback {
                Some(fallback) => lease.granted_by(fallback),
                None => lease,
            }
        });
        Ok(Acquired {
            decision: outcome.decision,
            lease,
            degraded: outcome.degraded,
        })
    }

    /// Apply a lease operation by id (what a service answering remote holders needs; a Rust
    /// holder keeps the [`Lease`] guard instead). An acquire takes a fresh [`LeaseId::new`].
    pub async fn lease_op(
        &self,
        policy: &str,
        key: &str,
        op: LeaseOp,
    ) -> Result<LeaseOutcome, LimitError> {
        let (name, found) = self.lease_policy(policy, key, op.cost())?;
        let check = Check {
            name,
            policy: found,
            key,
        };
        self.lease_on_store(check, op).await
    }

    /// Run a lease operation on the store. When it fails and a failure policy is set
    /// ([`Self::on_store_error`]), the policy's [`Fallback`] decides it, marked degraded. A
    /// release the store answered also reaches the fallback, which may hold the lease (granted
    /// while the store failed).
    async fn lease_on_store(
        &self,
        check: Check<'_>,
        op: LeaseOp,
    ) -> Result<LeaseOutcome, LimitError> {
        match self.store.lease(check, op).await {
            Ok(outcome) => Ok(match &self.failure {
                Some(failure) => failure.fallback.after_store(check, op, outcome),
                None => outcome,
            }),
            Err(error) => Ok(self.lease_without_store(check, op, error)?.0),
        }
    }

    /// A lease operation once the store has failed with `error`: the failure policy's
    /// [`Fallback`] decides it, and is returned too, for the guard of a lease it granted.
    #[cold]
    fn lease_without_store(
        &self,
        check: Check<'_>,
        op: LeaseOp,
        error: StoreError,
    ) -> Result<(LeaseOutcome, Option<Arc<Fallback>>), LimitError> {
        let Some(failure) = &self.failure else {
            return Err(LimitError::Store(error));
        };
        (failure.report)(&error);
        let outcome = failure.fallback.lease_after(&error, check, op);
        Ok((outcome, Some(failure.fallback.clone())))
    }

    /// Give back the lease `id` (idempotent). `Ok(false)` when it was not held (released or
    /// expired already).
    pub async fn release(&self, policy: &str, key: &str, id: LeaseId) -> Result<bool, LimitError> {
        let outcome = self.lease_op(policy, key, LeaseOp::Release(id)).await?;
        Ok(outcome.decision.allowed)
    }

    /// Extend the lease `id` to a full lease from now; `None` when it has expired.
    pub async fn renew(
        &self,
        policy: &str,
        key: &str,
        id: LeaseId,
    ) -> Result<Option<std::time::Duration>, LimitError> {
        let outcome = self.lease_op(policy, key, LeaseOp::Renew(id)).await?;
        Ok(outcome.decision.allowed.then(|| outcome.lease_expires_in()))
    }

    /// Charge (`delta > 0`) or refund (`delta < 0`) `key` under `policy` once the real cost is
    /// known, e.g. the tokens an LLM response used after a check of an estimate. A charge may
    /// take the key up to one limit into debt, so the next requests wait; a refund never gives
    /// back more than a full quota. Answers what a check of one unit would answer now. The rule
    /// of each algorithm is in its `adjust` ([`crate::State::adjust`]); a sliding log takes
    /// charges only, and a `concurrency` policy none. Not idempotent: after a store timeout it
    /// may or may not have applied.
    ///
    /// ```
    /// use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    /// # rt.block_on(async {
    /// let limiter = Limiter::new(MemoryStore::new())
    ///     .with_policy("tokens", Policy::builder(Algorithm::TokenBucket).rate("1000/min").build()?)?;
    /// // Reserve an estimate, then settle the real count once the response has ended.
    /// limiter.check_cost("tokens", "tenant-7", 100).await?;
    /// let after = limiter.adjust("tokens", "tenant-7", 40 - 100).await?;
    /// assert_eq!(after.remaining, 960);
    /// let debt = limiter.adjust("tokens", "tenant-7", 1500).await?;
    /// assert!(!debt.allowed && debt.retry_after_ms() > 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn adjust(
        &self,
        policy: &str,
        key: &str,
        delta: i64,
    ) -> Result<Decision, LimitError> {
        validate_key(key)?;
        let (name, found) = self.named(policy)?;
        let refused = |source| LimitError::Policy {
            policy: name.to_string(),
            source,
        };
        match found.algorithm() {
            Algorithm::Concurrency => {
                return Err(refused(PolicyError::NotAdjustable(Algorithm::Concurrency)));
            }
            Algorithm::SlidingLog if delta < 0 => {
                return Err(refused(PolicyError::RefundNotSupported));
            }
            _ => {}
        }
        if delta.unsigned_abs() >= MAX_EXACT {
            return Err(refused(PolicyError::DeltaOutOfRange { delta }));
        }
        let check = Check {
            name,
            policy: found,
            key,
        };
        self.store
            .adjust(check, delta)
            .await
            .map_err(|error| self.reported(error))
    }

    /// Forget `key`'s state under `policy`.
    pub async fn reset(&self, policy: &str, key: &str) -> Result<(), LimitError> {
        // Any policy resets, a `concurrency` one included (its leases are all dropped): no cost
        // is asked of it, so none is validated.
        validate_key(key)?;
        let (name, policy) = self.named(policy)?;
        self.store
            .reset(&[Check { name, policy, key }])
            .await
            .map_err(|error| self.reported(error))
    }

    /// A store error the caller gets as it is, shown to the failure policy's report first.
    #[cold]
    fn reported(&self, error: StoreError) -> LimitError {
        if let Some(failure) = &self.failure {
            (failure.report)(&error);
        }
        LimitError::Store(error)
    }

    /// The decisions of a failed store call, by the failure policy; without one, the error.
    #[cold]
    fn without_store(
        &self,
        error: StoreError,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<Decisions, LimitError> {
        let Some(failure) = &self.failure else {
            return Err(LimitError::Store(error));
        };
        (failure.report)(&error);
        Ok(failure.fallback.decide_after(&error, checks, cost, mode))
    }

    /// Resolve and validate a request into store checks, with the policies' positions.
    #[allow(clippy::type_complexity)]
    fn checks<'a>(
        &'a self,
        policies: &[&'a str],
        key: &'a str,
        cost: u64,
    ) -> Result<(SmallVec<[usize; 2]>, SmallVec<[Check<'a>; 2]>), LimitError> {
        if policies.is_empty() {
            return Err(LimitError::NoPolicy);
        }
        validate_key(key)?;
        let mut positions = SmallVec::<[usize; 2]>::new();
        let mut checks = SmallVec::<[Check<'a>; 2]>::new();
        for &name in policies {
            let position = self
                .policies
                .position(name)
                .ok_or_else(|| LimitError::UnknownPolicy(name.to_owned()))?;
            if positions.contains(&position) {
                return Err(LimitError::DuplicatePolicy(name.to_owned()));
            }
            let (name, policy) = &self.policies.entries[position];
            checks.push(admitting(name, policy, key, cost)?);
            positions.push(position);
        }
        Ok((positions, checks))
    }
}

impl<S> Limiter<S> {
    /// Look up the concurrency policy `name` and check the key and a lease of `cost` against it.
    #[inline]
    fn lease_policy(
        &self,
        name: &str,
        key: &str,
        cost: u64,
    ) -> Result<(&PolicyName, &Policy), LimitError> {
        validate_key(key)?;
        let (name, policy) = self.named(name)?;
        policy
            .validate_lease_cost(cost)
            .map_err(|source| LimitError::Policy {
                policy: name.to_string(),
                source,
            })?;
        Ok((name, policy))
    }

    /// Look up `name` and check that `cost` can pass it.
    fn resolve<'a>(&'a self, name: &str, key: &'a str, cost: u64) -> Result<Check<'a>, LimitError> {
        let (name, policy) = self.named(name)?;
        admitting(name, policy, key, cost)
    }

    /// The policy named `name`, with its name as stored, or [`LimitError::UnknownPolicy`].
    #[inline]
    fn named(&self, name: &str) -> Result<(&PolicyName, &Policy), LimitError> {
        self.policies
            .get(name)
            .ok_or_else(|| LimitError::UnknownPolicy(name.to_owned()))
    }
}

/// A rejection whose cost is above the capacity it was decided under: the policy admits the
/// cost, so the key's override (read by the store in the same decision) does not, and the cost
/// can never pass while the override stands. Refused as a cost above a policy's capacity is,
/// rather than answered as a rejection to retry.
#[cold]
fn beyond_override(name: &PolicyName, cost: u64, capacity: u64) -> LimitError {
    LimitError::Policy {
        policy: name.to_string(),
        source: PolicyError::CostExceedsCapacity { cost, capacity },
    }
}

/// The check of `policy` (named `name`) for `key`, if `cost` can pass it.
fn admitting<'a>(
    name: &'a PolicyName,
    policy: &'a Policy,
    key: &'a str,
    cost: u64,
) -> Result<Check<'a>, LimitError> {
    policy
        .validate_cost(cost)
        .map_err(|source| LimitError::Policy {
            policy: name.to_string(),
            source,
        })?;
    Ok(Check { name, policy, key })
}

/// The limiter's named policies, in the order added. Usually a handful: found by comparing the
/// names of the same length in turn (no hashing: cheaper than a hash map for a few names,
/// measured with callgrind), and by hash once there are more than [`SCAN_UP_TO`].
#[derive(Debug, Clone, Default)]
struct PolicyTable {
    entries: Vec<(PolicyName, Policy)>,
    /// Index into `entries` by name; filled only past [`SCAN_UP_TO`] policies.
    by_name: HashMap<PolicyName, usize, foldhash::fast::RandomState>,
}

/// Policies looked up by scanning; beyond, by hash.
const SCAN_UP_TO: usize = 8;

impl PolicyTable {
    /// Add `policy` under `name`, or replace the policy of that name.
    fn insert(&mut self, name: PolicyName, policy: Policy) {
        if let Some(i) = self.position(&name) {
            self.entries[i].1 = policy;
            return;
        }
        self.entries.push((name, policy));
        if self.entries.len() > SCAN_UP_TO {
            let from = if self.by_name.is_empty() {
                0
            } else {
                self.entries.len() - 1
            };
            for (i, (name, _)) in self.entries.iter().enumerate().skip(from) {
                self.by_name.insert(name.clone(), i);
            }
        }
    }

    #[inline]
    fn position(&self, name: &str) -> Option<usize> {
        if self.entries.len() > SCAN_UP_TO {
            return self.by_name.get(name).copied();
        }
        self.entries
            .iter()
            .position(|(n, _)| short_str::eq(n, name))
    }

    /// The name as stored (borrowed by checks) and the policy.
    #[inline]
    fn get(&self, name: &str) -> Option<(&PolicyName, &Policy)> {
        let (name, policy) = self.entries.get(self.position(name)?)?;
        Some((name, policy))
    }
}

/// Whether [`validate_key`] accepts `key`.
#[inline]
fn key_is_valid(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN
}

/// Refuse identifiers that are empty or longer than [`MAX_KEY_LEN`].
pub fn validate_key(key: &str) -> Result<(), LimitError> {
    if key_is_valid(key) {
        Ok(())
    } else if key.is_empty() {
        Err(LimitError::InvalidKey("key is empty"))
    } else {
        Err(LimitError::InvalidKey("key is longer than 1024 bytes"))
    }
}

/// A shadow-mode policy's decision: allowed whatever it decided. Returns whether it would have
/// rejected.
fn let_through(decision: &mut Decision) -> bool {
    let denied = !decision.allowed;
    decision.allowed = true;
    decision.retry_after_us = 0;
    denied
}

/// Pick the most restrictive decision.
pub fn verdict(decisions: Decisions, degraded: bool) -> Verdict {
    let mut policy_index = 0;
    for (i, d) in decisions.iter().enumerate().skip(1) {
        if d.is_stricter_than(&decisions[policy_index]) {
            policy_index = i;
        }
    }
    Verdict {
        decision: decisions.get(policy_index).copied().unwrap_or_default(),
        policy_index,
        decisions,
        policies: SmallVec::new(),
        degraded,
        shadow: false,
        shadow_denied: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Algorithm;
    use std::time::Duration;

    fn policy(limit: u64) -> Policy {
        Policy::new(Algorithm::FixedWindow, limit, Duration::from_secs(1), None).unwrap()
    }

    /// A cost the policy admits but the key's override cannot is refused with the error a cost
    /// above the policy's capacity gets, by both paths; other keys and costs are unaffected.
    #[tokio::test]
    async fn a_cost_above_the_overrides_capacity_is_refused_as_an_error() {
        let limiter = Limiter::new(crate::MemoryStore::new())
            .with_policy("p", policy(10))
            .unwrap();
        limiter
            .set_override("p", "small", crate::OverrideSpec::limit(3))
            .await
            .unwrap();
        let want = LimitError::Policy {
            policy: "p".into(),
            source: PolicyError::CostExceedsCapacity {
                cost: 5,
                capacity: 3,
            },
        };
        let one = limiter.check_cost("p", "small", 5).await.unwrap_err();
        let all = limiter.check_all(&["p"], "small", 5).await.unwrap_err();
        assert_eq!(
            (one.to_string(), all.to_string()),
            (want.to_string(), want.to_string())
        );
        assert!(limiter.check_cost("p", "small", 3).await.unwrap().allowed);
        assert!(limiter.check_cost("p", "other", 5).await.unwrap().allowed);
    }

    /// The one-policy fast path refuses what the general path refuses, with the same error in
    /// the same order (key, then policy name, then cost), and decides what it decides.
    #[tokio::test]
    async fn one_policy_calls_refuse_and_decide_as_the_general_path() {
        let limiter = Limiter::new(crate::MemoryStore::new())
            .with_policy("p", policy(3))
            .unwrap();
        let long = "k".repeat(MAX_KEY_LEN + 1);
        for (name, key, cost) in [
            ("nope", "", 1),
            ("p", &*long, 1),
            ("nope", "k", 1),
            ("p", "k", 0),
            ("p", "k", 4),
            ("nope", "k", 0),
        ] {
            let one = limiter.check_cost(name, key, cost).await.unwrap_err();
            let all = limiter.check_all(&[name], key, cost).await.unwrap_err();
            assert_eq!(one.to_string(), all.to_string(), "{name} {key:.8} {cost}");
            let peeked = limiter.peek(name, key, cost).await.unwrap_err();
            assert_eq!(peeked.to_string(), all.to_string());
        }
        assert_eq!(limiter.check_cost("p", "k", 2).await.unwrap().remaining, 1);
        assert_eq!(
            limiter
                .check_all(&["p"], "k", 1)
                .await
                .unwrap()
                .decision
                .remaining,
            0
        );
        assert!(!limiter.check("p", "k").await.unwrap().allowed);
    }

    /// Scanned (a few names) or hashed (many), a name finds its own policy, and adding a name
    /// again replaces its policy.
    #[test]
    fn policies_are_found_by_name_however_many() {
        let mut table = PolicyTable::default();
        for n in 1..=20u64 {
            let name = PolicyName::try_from(format!("p{n}")).unwrap();
            table.insert(name.clone(), policy(n));
            table.insert(name, policy(n + 100));
            for m in 1..=n {
                let (name, found) = table.get(&format!("p{m}")).unwrap();
                assert_eq!(**name, *format!("p{m}"));
                assert_eq!(found.limit(), m + 100, "{m} of {n}");
            }
            assert!(table.get("p0").is_none() && table.get("").is_none());
            assert_eq!(table.entries.len(), n as usize);
        }
    }
}
