//! The decision engine behind every front end (HTTP and the Envoy gRPC service): the core's
//! [`Limiter`] over the configured store, with the failure policy, and the metrics.
//!
//! Policies are resolved and decided by the `Limiter` alone; this adds what only a server
//! needs around it: counting each decision and each store failure, and rendering metrics.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tollgate::{
    Decision, LeaseOp, LeaseOutcome, LimitError, Limiter, Mode, Policy, StoreError, Verdict, Waited,
};

use crate::config::{AdminToken, OnError, Settings};
use crate::metrics::{self, Metrics};
use crate::stats::Stats;
use crate::store::AnyStore;
use tollgate_envoy::EnvoyService;

/// Policies, store, failure policy and metrics.
#[derive(Debug)]
pub struct Service {
    limiter: Limiter<AnyStore>,
    /// The Envoy rate limit service sharing the store, when gRPC is on (for its metrics).
    envoy: Option<EnvoyService<AnyStore>>,
    admin_token: Option<AdminToken>,
    metrics: Arc<Metrics>,
    /// Live stats, unless `stats: false`.
    stats: Option<Stats>,
}

impl Service {
    /// A service deciding `settings.policies` on `store`.
    pub fn new(settings: &Settings, store: Arc<AnyStore>) -> Service {
        let metrics = Arc::new(Metrics::new(settings.policies.keys().map(String::as_str)));
        let mut limiter = Limiter::from_shared(store).on_store_error(
            settings.store.on_error,
            store_failed(settings.store.on_error, metrics.clone()),
        );
        for (name, policy) in &settings.policies {
            limiter = limiter.with_policy(name.as_str(), policy.clone());
        }
        let stats = settings
            .stats
            .then(|| Stats::new(settings.policies.keys().map(String::as_str)));
        Service {
            limiter,
            envoy: None,
            admin_token: settings.admin_token.clone(),
            metrics,
            stats,
        }
    }

    /// The limiter every front end decides through.
    pub fn limiter(&self) -> &Limiter<AnyStore> {
        &self.limiter
    }

    /// Every policy with its name, sorted by name; a verdict's [`Verdict::policies`] index it.
    pub fn policies(&self) -> impl ExactSizeIterator<Item = (&str, &Policy)> {
        self.limiter.policies()
    }

    /// The name of the policy at `position`.
    pub fn policy_name(&self, position: usize) -> &str {
        self.limiter
            .policy_at(position)
            .map_or("", |(name, _)| name)
    }

    /// The store.
    pub fn store(&self) -> &AnyStore {
        self.limiter.store()
    }

    /// The store, shared (the gRPC front end decides on the same one).
    pub fn shared_store(&self) -> Arc<AnyStore> {
        self.limiter.store().clone()
    }

    /// Attach the Envoy service whose metrics `/metrics` also renders.
    pub fn with_envoy(mut self, envoy: EnvoyService<AnyStore>) -> Service {
        self.envoy = Some(envoy);
        self
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The live stats, unless they are off.
    pub fn stats(&self) -> Option<&Stats> {
        self.stats.as_ref()
    }

    /// The token guarding reset, if any.
    pub fn admin_token(&self) -> Option<&AdminToken> {
        self.admin_token.as_ref()
    }

    /// Decide `cost` for `key` under every policy named, all or nothing, in `mode`, and count it.
    ///
    /// Errors are the caller's (unknown policy, bad key or cost); a store failure is never an
    /// error here: `on_error` decides and the verdict is marked degraded.
    pub async fn decide(
        &self,
        names: &[&str],
        key: &str,
        cost: u64,
        mode: Mode,
    ) -> Result<Verdict, LimitError> {
        let started = Instant::now();
        let verdict = self.limiter.run(names, key, cost, mode).await?;
        self.metrics.record_latency(started.elapsed());
        self.record(&verdict, key, mode);
        Ok(verdict)
    }

    /// [`Self::decide`] (consuming) waiting up to `max_wait` for the cost to fit
    /// ([`Limiter::check_wait`]), counted once, by its final verdict.
    pub async fn decide_waiting(
        &self,
        names: &[&str],
        key: &str,
        cost: u64,
        max_wait: std::time::Duration,
    ) -> Result<Waited, LimitError> {
        let waited = self.limiter.check_wait(names, key, cost, max_wait).await?;
        self.record(&waited.verdict, key, Mode::Consume);
        Ok(waited)
    }

    /// Count a verdict in the metrics, and in the stats when it limited a consuming request.
    fn record(&self, verdict: &Verdict, key: &str, mode: Mode) {
        self.metrics.record_decision(
            verdict.reported_policy(),
            mode,
            verdict.decision.allowed,
            verdict.degraded,
            verdict.shadow_denied,
        );
        let limited = !verdict.decision.allowed || verdict.shadow_denied;
        if let (Some(stats), Mode::Consume, true) = (&self.stats, mode, limited) {
            stats.record_limited(verdict.reported_policy(), key);
        }
    }

    /// Apply a lease operation of the `concurrency` policy `name` to `key` and count acquires
    /// as decisions; the policy's position comes back with the outcome.
    pub async fn lease(
        &self,
        name: &str,
        key: &str,
        op: LeaseOp,
    ) -> Result<(usize, LeaseOutcome), LimitError> {
        let started = Instant::now();
        let outcome = self.limiter.lease_op(name, key, op).await?;
        self.metrics.record_latency(started.elapsed());
        let position = self.limiter.policy_position(name).unwrap_or_default();
        if let LeaseOp::Acquire(_) = op {
            self.metrics.record_decision(
                position,
                Mode::Consume,
                outcome.decision.allowed,
                outcome.degraded,
                false,
            );
        }
        Ok((position, outcome))
    }

    /// Charge (`delta > 0`) or refund `key` under `name` after the fact ([`Limiter::adjust`]);
    /// the policy's position comes back with what a check of one unit would answer now.
    pub async fn adjust(
        &self,
        name: &str,
        key: &str,
        delta: i64,
    ) -> Result<(usize, Decision), LimitError> {
        let decision = self.limiter.adjust(name, key, delta).await?;
        Ok((
            self.limiter.policy_position(name).unwrap_or_default(),
            decision,
        ))
    }

    /// Forget `key`'s state under `name`.
    pub async fn reset(&self, name: &str, key: &str) -> Result<(), LimitError> {
        self.limiter.reset(name, key).await
    }

    /// Whether the store answers (`GET /ready`).
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store().ping().await
    }

    /// The Prometheus text exposition.
    pub fn render_metrics(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.metrics.render(&mut out);
        metrics::gauge(
            &mut out,
            "tollgate_policies",
            "Policies configured.",
            self.limiter.policies().len() as u64,
        );
        if let Some(memory) = self.store().as_memory() {
            metrics::gauge(
                &mut out,
                "tollgate_memory_store_keys",
                "Identifiers held by the memory store.",
                memory.len() as u64,
            );
            metrics::gauge(
                &mut out,
                "tollgate_memory_store_max_keys",
                "Bound on identifiers held by the memory store (store.max_keys).",
                memory.max_keys() as u64,
            );
        }
        if let Some(redis) = self.store().resilience() {
            render_resilience(&mut out, redis);
        }
        if let Some(envoy) = &self.envoy {
            envoy.render_metrics(&mut out);
        }
        metrics::header(
            &mut out,
            "tollgate_build_info",
            "gauge",
            "Version of the running tollgate.",
        );
        let _ = writeln!(
            out,
            "tollgate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// What the limiter calls when a store call fails: count it, and log it at most once a second
/// (a full store fails every new key; the metric counts them all).
fn store_failed(on_error: OnError, metrics: Arc<Metrics>) -> impl Fn(&StoreError) + Send + Sync {
    let started = Instant::now();
    let last_warning = AtomicU64::new(u64::MAX);
    move |error| {
        metrics.record_store_error(error);
        let second = started.elapsed().as_secs();
        if last_warning.swap(second, Ordering::Relaxed) != second {
            tracing::warn!(%error, on_error = %on_error.name(), "store call failed; deciding degraded");
        }
    }
}

/// Breaker state, degraded decisions and over-limit cache figures of the Redis store's
/// resilience layer.
fn render_resilience<S: tollgate::Store>(out: &mut String, redis: &tollgate::Resilient<S>) {
    use tollgate::resilience::BreakerState;
    let state = redis.breaker().state();
    metrics::header(
        out,
        "tollgate_store_breaker_state",
        "gauge",
        "Circuit breaker around the store: 1 for the current state.",
    );
    for candidate in [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
    ] {
        let _ = writeln!(
            out,
            "tollgate_store_breaker_state{{state=\"{}\"}} {}",
            candidate.name(),
            u8::from(candidate == state)
        );
    }
    let stats = redis.stats();
    for (name, help, value) in [
        (
            "tollgate_store_breaker_opened_total",
            "Times the circuit breaker opened.",
            redis.breaker().times_opened(),
        ),
        (
            "tollgate_store_degraded_total",
            "Decisions made without the shared store (timeout, error or open breaker).",
            stats.degraded.get(),
        ),
        (
            "tollgate_store_timeouts_total",
            "Store calls that exceeded store.timeout.",
            stats.timeouts.get(),
        ),
        (
            "tollgate_store_call_errors_total",
            "Store calls that failed.",
            stats.store_errors.get(),
        ),
        (
            "tollgate_over_limit_cache_hits_total",
            "Rejections answered by the over-limit cache without a store call.",
            stats.cache_hits.get(),
        ),
    ] {
        metrics::header(out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }
    metrics::gauge(
        out,
        "tollgate_over_limit_cache_keys",
        "Keys held by the over-limit cache.",
        redis.cached_keys() as u64,
    );
}
