//! Resilience: a store wrapper that bounds every call in time and decides by policy when the
//! store is slow, down or failing over.
//!
//! [`Resilient`] wraps any [`Store`]:
//! 1. an [`OverLimitCache`] answers keys the store rejected, until their `retry_after`;
//! 2. a [`CircuitBreaker`] stops calling a store that keeps failing and probes it again about
//!    once a second, so a dead store costs no timeout per request;
//! 3. every call has a timeout (default 50 ms);
//! 4. a failed, timed-out or skipped call is decided by [`OnError`]: `deny`, `allow`, or `local`
//!    (an in-process memory store with each limit divided by the number of instances), the rule
//!    [`Fallback`] owns. Such decisions are marked `degraded`.
//!
//! A call that times out is not cancelled in the store: the request may already be on its way
//! (or queued in a frozen server) and may still consume there. Such a degraded decision can thus
//! count in the store too; that only ever makes the shared limit stricter. A call whose caller
//! goes away (its future dropped) is reported to the breaker, so an abandoned probe never leaves
//! it half-open. When a probe closes the breaker the over-limit cache is emptied, because the
//! store may have come back without the state its rejections came from. `docs/resilience.md`
//! explains the guarantees in full.
//!
//! Overrides go to the store (with the timeout; a failure is the caller's error, never decided
//! by `on_error`). Setting or deleting one forgets this instance's cached rejections of that
//! policy and key, so a raised limit is obeyed here on the next decision; other instances
//! forget theirs when their store hears of the change ([`Resilient::over_limit_cache`]). Decisions made
//! without the store (degraded) follow the configured policies: the overrides live in the
//! store.

pub mod breaker;
pub mod fallback;
pub mod over_limit_cache;

use std::sync::Arc;
use std::time::Duration;

use crate::algorithm::Mode;
use crate::clock::system_now_us;
use crate::counter::Counter;
use crate::decision::Decision;
use crate::error::StoreError;
use crate::lease::{LeaseOp, LeaseOutcome};
use crate::memory::DEFAULT_MAX_KEYS;
use crate::overrides::{Override, OverridePage};
use crate::policy::Policy;
use crate::policy_name::PolicyName;
use crate::store::{Check, Decisions, Store, StoreDecision};

pub use breaker::{Admission, BreakerConfig, BreakerState, CircuitBreaker};
pub use fallback::{Fallback, OnError, fixed_decisions, local_share};
pub use over_limit_cache::OverLimitCache;

/// Settings of [`Resilient`].
#[derive(Debug, Clone)]
pub struct ResilienceConfig {
    /// Longest a store call may take.
    pub timeout: Duration,
    /// What to decide when the store cannot.
    pub on_error: OnError,
    /// Instances sharing the limits (for `local`: each enforces `limit / instances`).
    pub instances: u32,
    /// Circuit breaker settings.
    pub breaker: BreakerConfig,
    /// Over-limit cache size in keys; 0 disables it.
    pub over_limit_cache: usize,
    /// Bound on the local fallback store's keys.
    pub local_max_keys: usize,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            timeout: Duration::from_millis(50),
            on_error: OnError::Local,
            instances: 1,
            breaker: BreakerConfig::default(),
            over_limit_cache: 100_000,
            local_max_keys: DEFAULT_MAX_KEYS,
        }
    }
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct ResilienceStats {
    /// Decisions made without the store.
    pub degraded: Counter,
    /// Decisions answered by the over-limit cache.
    pub cache_hits: Counter,
    /// Store calls that failed.
    pub store_errors: Counter,
    /// Store calls that timed out.
    pub timeouts: Counter,
    /// Decisions and lease calls the store did not answer, by kind
    /// ([`StoreError::kind_index`]): timed out, not made while the breaker was open, or failed
    /// with the store's own error.
    pub failures: [Counter; StoreError::KINDS.len()],
}

impl ResilienceStats {
    fn failed(&self, error: &StoreError) {
        self.failures[error.kind_index()].add(1);
    }
}

/// A store made safe to depend on. See the module docs.
#[derive(Debug)]
pub struct Resilient<S> {
    store: S,
    config: ResilienceConfig,
    breaker: CircuitBreaker,
    /// Shared, so a store's change notifications can reach it ([`Self::over_limit_cache`]).
    cache: Option<Arc<OverLimitCache>>,
    fallback: Fallback,
    /// Boxed: its counters take a cache line per thread.
    stats: Box<ResilienceStats>,
}

impl<S: Store> Resilient<S> {
    /// Wrap `store`.
    pub fn new(store: S, config: ResilienceConfig) -> Resilient<S> {
        Resilient {
            store,
            breaker: CircuitBreaker::new(config.breaker),
            cache: (config.over_limit_cache > 0)
                .then(|| Arc::new(OverLimitCache::new(config.over_limit_cache))),
            fallback: Fallback::new(
                config.on_error,
                config.instances,
                config.breaker.probe_interval,
                config.local_max_keys,
            ),
            stats: Box::default(),
            config,
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// The circuit breaker (its state is what `/ready` reports).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Counters.
    pub fn stats(&self) -> &ResilienceStats {
        &self.stats
    }

    /// Keys held by the over-limit cache.
    pub fn cached_keys(&self) -> usize {
        self.cache.as_ref().map_or(0, |cache| cache.len())
    }

    /// The over-limit cache, when one is kept: a store that hears of changes made by other
    /// instances (an override set elsewhere) tells it to forget what it cached for the key.
    pub fn over_limit_cache(&self) -> Option<&Arc<OverLimitCache>> {
        self.cache.as_ref()
    }

    /// The settings.
    pub fn config(&self) -> &ResilienceConfig {
        &self.config
    }

    /// For readiness checks (`GET /ready`): `Ok` when `ping` (a cheap call on the store, such as
    /// `PING`) answers within the timeout and the breaker lets it through.
    ///
    /// The ping takes part in the breaker like a decision: while the breaker is open and a probe
    /// is due, the ping *is* the probe, and its success closes the breaker. So an instance that a
    /// load balancer took out of rotation (no requests, hence no probes) still finds out that the
    /// store is back. While a probe is in flight or none is due yet, the answer is
    /// [`StoreError::CircuitOpen`] at once; a failed or timed-out ping counts as a failed call.
    ///
    /// ```
    /// use tollgate::{MemoryStore, ResilienceConfig, Resilient, StoreError};
    ///
    /// # let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    /// # rt.block_on(async {
    /// let store = Resilient::new(MemoryStore::new(), ResilienceConfig::default());
    /// let ready = store.ready(async |_memory| Ok::<(), StoreError>(())).await;
    /// assert!(ready.is_ok());
    /// # });
    /// ```
    pub async fn ready<E>(
        &self,
        ping: impl AsyncFnOnce(&S) -> Result<(), E>,
    ) -> Result<(), StoreError>
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let admission = self.breaker.admit();
        if admission == Admission::Skip {
            return Err(StoreError::CircuitOpen);
        }
        let in_flight = InFlight::new(&self.breaker, admission);
        let outcome = tokio::time::timeout(self.config.timeout, ping(&self.store)).await;
        in_flight.finished();
        match outcome {
            Ok(Ok(())) => {
                self.breaker.on_success(admission);
                if admission == Admission::Probe
                    && let Some(cache) = &self.cache
                {
                    cache.clear();
                }
                Ok(())
            }
            Ok(Err(error)) => {
                self.stats.store_errors.add(1);
                self.breaker.on_failure(admission);
                Err(StoreError::Backend(error.into()))
            }
            Err(_elapsed) => {
                self.stats.timeouts.add(1);
                self.breaker.on_failure(admission);
                Err(StoreError::Timeout(self.config.timeout))
            }
        }
    }

    /// Drop expired state from the local fallback store and the over-limit cache.
    pub fn sweep(&self) {
        self.fallback.sweep();
        if let Some(cache) = &self.cache {
            cache.sweep(system_now_us());
        }
    }

    /// `call` on the store, within the timeout.
    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.config.timeout, call)
            .await
            .unwrap_or(Err(StoreError::Timeout(self.config.timeout)))
    }

    /// Decide without the store, by `on_error`.
    fn fallback(&self, checks: &[Check<'_>], cost: u64, mode: Mode) -> StoreDecision {
        self.stats.degraded.add(1);
        StoreDecision {
            decisions: self.fallback.decide(checks, cost, mode),
            degraded: true,
        }
    }

    /// A lease operation without the store, by `on_error` ([`Fallback::lease`]).
    fn lease_fallback(&self, check: Check<'_>, op: LeaseOp) -> LeaseOutcome {
        self.stats.degraded.add(1);
        self.fallback.lease(check, op)
    }
}

/// A store call in progress. If its future is dropped before the call finishes (the caller went
/// away), the breaker hears of it, so a dropped probe cannot leave it half-open for good.
struct InFlight<'a> {
    breaker: &'a CircuitBreaker,
    admission: Admission,
}

impl<'a> InFlight<'a> {
    fn new(breaker: &'a CircuitBreaker, admission: Admission) -> InFlight<'a> {
        InFlight { breaker, admission }
    }

    /// The call returned (or timed out): its outcome is reported by the caller.
    fn finished(self) {
        std::mem::forget(self);
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.breaker.on_abandoned(self.admission);
    }
}

impl<S: Store> Store for Resilient<S> {
    async fn decide(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<StoreDecision, StoreError> {
        let sent_at = system_now_us();
        if let (Some(cache), [check], Mode::Consume) = (&self.cache, checks, mode)
            && let Some(decision) = cache.lookup(check, cost, sent_at)
        {
            self.stats.cache_hits.add(1);
            return Ok(StoreDecision {
                decisions: Decisions::from_buf([decision]),
                degraded: false,
            });
        }
        let admission = self.breaker.admit();
        if admission == Admission::Skip {
            self.stats.failed(&StoreError::CircuitOpen);
            return Ok(self.fallback(checks, cost, mode));
        }
        let in_flight = InFlight::new(&self.breaker, admission);
        let outcome =
            tokio::time::timeout(self.config.timeout, self.store.decide(checks, cost, mode)).await;
        in_flight.finished();
        match outcome {
            Ok(Ok(answer)) => {
                self.breaker.on_success(admission);
                if let Some(cache) = &self.cache {
                    if admission == Admission::Probe {
                        // Back after an outage: the store may have restarted or failed over and
                        // lost the state earlier rejections came from.
                        cache.clear();
                    }
                    if mode == Mode::Consume {
                        for (check, decision) in checks.iter().zip(&answer.decisions) {
                            // Only a policy that rejected on its own says how long it will refuse.
                            if decision.retry_after_us > 0 {
                                cache.remember(check, cost, sent_at, decision);
                            }
                        }
                    }
                }
                Ok(answer)
            }
            Ok(Err(error)) => {
                self.stats.store_errors.add(1);
                self.stats.failed(&error);
                self.breaker.on_failure(admission);
                tracing::debug!(%error, "store call failed");
                Ok(self.fallback(checks, cost, mode))
            }
            Err(_elapsed) => {
                self.stats.timeouts.add(1);
                self.stats.failed(&StoreError::Timeout(self.config.timeout));
                self.breaker.on_failure(admission);
                Ok(self.fallback(checks, cost, mode))
            }
        }
    }

    /// Through the breaker and the timeout like a decision; a failed acquire, release or renew
    /// is decided by `on_error` ([`Fallback::lease`]). Releases the store answered also
    /// reach the local store, which holds the leases granted while the store was away.
    async fn lease(&self, check: Check<'_>, op: LeaseOp) -> Result<LeaseOutcome, StoreError> {
        let admission = self.breaker.admit();
        if admission == Admission::Skip {
            self.stats.failed(&StoreError::CircuitOpen);
            return Ok(self.lease_fallback(check, op));
        }
        let in_flight = InFlight::new(&self.breaker, admission);
        let outcome = tokio::time::timeout(self.config.timeout, self.store.lease(check, op)).await;
        in_flight.finished();
        match outcome {
            Ok(Ok(answer)) => {
                self.breaker.on_success(admission);
                Ok(self.fallback.after_store(check, op, answer))
            }
            Ok(Err(StoreError::Unsupported(what))) => {
                self.breaker.on_success(admission);
                Err(StoreError::Unsupported(what))
            }
            Ok(Err(error)) => {
                self.stats.store_errors.add(1);
                self.stats.failed(&error);
                self.breaker.on_failure(admission);
                tracing::debug!(%error, "store lease call failed");
                Ok(self.lease_fallback(check, op))
            }
            Err(_elapsed) => {
                self.stats.timeouts.add(1);
                self.stats.failed(&StoreError::Timeout(self.config.timeout));
                self.breaker.on_failure(admission);
                Ok(self.lease_fallback(check, op))
            }
        }
    }

    async fn reset(&self, checks: &[Check<'_>]) -> Result<(), StoreError> {
        if let Some(cache) = &self.cache {
            for check in checks {
                cache.forget(check.name, check.key);
            }
        }
        self.fallback.reset(checks);
        self.bounded(self.store.reset(checks)).await
    }

    /// Bounded like the override calls. A failure is the caller's error: an adjustment is not a
    /// decision a fallback could make up (and after a timeout it may or may not have applied).
    /// A refund may open room, so rejections cached for the key are forgotten.
    async fn adjust(&self, check: Check<'_>, delta: i64) -> Result<Decision, StoreError> {
        let result = self.bounded(self.store.adjust(check, delta)).await;
        if let Some(cache) = &self.cache {
            cache.forget(check.name, check.key);
        }
        result
    }

    async fn set_override(&self, target: Check<'_>, value: &Override) -> Result<(), StoreError> {
        let result = self.bounded(self.store.set_override(target, value)).await;
        // Forgotten once the store holds the override: rejections cached before it was set
        // no longer answer for the key here.
        if let Some(cache) = &self.cache {
            cache.forget(target.name, target.key);
        }
        result
    }

    async fn get_override(&self, target: Check<'_>) -> Result<Option<Override>, StoreError> {
        self.bounded(self.store.get_override(target)).await
    }

    async fn delete_override(&self, target: Check<'_>) -> Result<bool, StoreError> {
        let result = self.bounded(self.store.delete_override(target)).await;
        if let Some(cache) = &self.cache {
            cache.forget(target.name, target.key);
        }
        result
    }

    async fn list_overrides(
        &self,
        name: &PolicyName,
        policy: &Policy,
        after: Option<&str>,
        count: usize,
    ) -> Result<OverridePage, StoreError> {
        self.bounded(self.store.list_overrides(name, policy, after, count))
            .await
    }
}
