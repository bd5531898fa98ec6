//! The decision engine behind every front end (HTTP and the Envoy gRPC service): the core's
//! [`Limiter`] over the configured store, with the failure policy, and the metrics.
//!
//! Policies are resolved and decided by the `Limiter` alone; this adds what only a server
//! needs around it: counting each decision and each store failure, rendering metrics, and
//! swapping the policies whole when the config file is reloaded ([`LivePolicies`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ::http::HeaderValue;
use arc_swap::{ArcSwap, Guard};
use tollgate::{
    Decision, Decisions, LeaseOp, LeaseOutcome, LimitError, Limiter, Mode, Policy, PolicyName,
    StoreError, Verdict,
};

use crate::config::{AdminToken, OnError, Settings};
use crate::http::headers;
use crate::metrics::{self, Metrics, PolicyCounters};
use crate::stats::{LimitedKeys, PolicyView, Stats, StatsReport, StoreHealth};
use crate::store::AnyStore;
use tollgate_envoy::EnvoyService;

/// Policies, store, failure policy and metrics.
#[derive(Debug)]
pub struct Service {
    /// The policies in force: read once per request, replaced whole by a reload.
    live: ArcSwap<LivePolicies>,
    /// The limiter without policies (the store and the failure policy) every table is built on.
    bare: Limiter<AnyStore>,
    /// The Envoy rate limit service sharing the store, when gRPC is on (for its metrics).
    envoy: Option<EnvoyService<AnyStore>>,
    admin_token: Option<AdminToken>,
    metrics: Arc<Metrics>,
    /// Live stats, unless `stats: false`.
    stats: Option<Stats>,
}

/// The policies in force and all the server resolves by a policy's position: a request takes
/// one table for its decision and its response, and a reload builds a whole new one before
/// swapping it in, so no request sees a half-loaded table or positions of another one.
#[derive(Debug)]
pub struct LivePolicies {
    limiter: Limiter<AnyStore>,
    /// By position, as the limiter's policies; shared with the next table for the names it
    /// keeps, so their counts go on.
    states: Box<[Arc<PolicyState>]>,
    /// Each policy's `RateLimit-Policy` item, rendered once per table.
    header_items: Box<[HeaderValue]>,
}

/// What the server keeps per policy name, whatever its limits: its counters and its most
/// limited keys (when stats are on).
#[derive(Debug, Default)]
struct PolicyState {
    counters: PolicyCounters,
    limited: Option<LimitedKeys>,
}

/// A decision with the table it was made on (its positions index that table).
pub struct Decided {
    /// The decision.
    pub verdict: Verdict,
    /// The table it was made on.
    pub policies: Guard<Arc<LivePolicies>>,
}

impl LivePolicies {
    /// The table of `policies` on `bare`, taking the state of each name `previous` has.
    fn build(
        bare: &Limiter<AnyStore>,
        policies: &BTreeMap<PolicyName, Policy>,
        previous: Option<&LivePolicies>,
        stats: bool,
    ) -> LivePolicies {
        let mut limiter = bare.clone();
        for (name, policy) in policies {
            limiter = limiter.with_named_policy(name.clone(), policy.clone());
        }
        let states = limiter
            .policies()
            .map(|(name, _)| {
                previous
                    .and_then(|p| Some(p.states.get(p.limiter.policy_position(name)?)?.clone()))
                    .unwrap_or_else(|| {
                        Arc::new(PolicyState {
                            counters: PolicyCounters::default(),
                            limited: stats.then(LimitedKeys::default),
                        })
                    })
            })
            .collect();
        let header_items = limiter
            .policies()
            .map(|(name, policy)| {
                let item = (name.as_str(), policy.capacity(), policy.period_us());
                headers::policy_header(std::iter::once(item))
            })
            .collect();
        LivePolicies {
            limiter,
            states,
            header_items,
        }
    }

    /// The limiter deciding these policies.
    pub fn limiter(&self) -> &Limiter<AnyStore> {
        &self.limiter
    }

    /// Every policy with its name, sorted by name; a verdict's [`Verdict::policies`] index it.
    pub fn policies(&self) -> impl ExactSizeIterator<Item = (&str, &Policy)> {
        self.limiter
            .policies()
            .map(|(name, policy)| (name.as_str(), policy))
    }

    /// The name of the policy at `position`.
    pub fn policy_name(&self, position: usize) -> &str {
        self.limiter
            .policy_at(position)
            .map_or("", |(name, _)| name)
    }

    /// The `RateLimit-Policy` item of the policy at `position`.
    pub fn header_item(&self, position: usize) -> Option<&HeaderValue> {
        self.header_items.get(position)
    }

    /// Count a decision under the policy it reports, and the key when it was limited.
    fn record(&self, verdict: &Verdict, mode: Mode, key: &str) {
        let Some(state) = self.states.get(verdict.reported_policy()) else {
            return;
        };
        let allowed = verdict.decision.allowed;
        state
            .counters
            .record(mode, allowed, verdict.degraded, verdict.shadow_denied);
        let limited = !allowed || verdict.shadow_denied;
        if let (Some(keys), Mode::Consume, true) = (&state.limited, mode, limited) {
            keys.observe(key);
        }
    }

    /// Each policy as the stats see it.
    fn views(&self) -> impl Iterator<Item = PolicyView<'_>> {
        self.limiter
            .policies()
            .zip(&self.states)
            .filter_map(|((name, _), state)| {
                Some(PolicyView {
                    name,
                    totals: state.counters.totals(),
                    limited: state.limited.as_ref()?,
                })
            })
    }
}

impl Service {
    /// A service deciding `settings.policies` on `store`.
    pub fn new(settings: &Settings, store: Arc<AnyStore>) -> Service {
        let metrics = Arc::new(Metrics::new());
        let bare = Limiter::from_shared(store).on_store_error(
            settings.store.on_error,
            store_failed(settings.store.on_error, metrics.clone()),
        );
        let live = LivePolicies::build(&bare, &settings.policies, None, settings.stats);
        Service {
            live: ArcSwap::from_pointee(live),
            bare,
            envoy: None,
            admin_token: settings.admin_token.clone(),
            metrics,
            stats: settings.stats.then(Stats::new),
        }
    }

    /// The policies in force now. Hold it for one request at most: a reload swaps in another.
    pub fn live(&self) -> Guard<Arc<LivePolicies>> {
        self.live.load()
    }

    /// Decide `policies` from now on, in one step: requests already holding the old table
    /// finish on it. Counters and limited keys of the names kept go on.
    pub fn replace_policies(&self, policies: &BTreeMap<PolicyName, Policy>) {
        let stats = self.stats.is_some();
        self.live
            .rcu(|current| LivePolicies::build(&self.bare, policies, Some(current), stats));
    }

    /// The limiter without policies: the store with the failure policy (the Envoy service
    /// decides its own rules through it).
    pub fn bare_limiter(&self) -> &Limiter<AnyStore> {
        &self.bare
    }

    /// The store.
    pub fn store(&self) -> &AnyStore {
        self.bare.store()
    }

    /// The store, shared (the gRPC front end decides on the same one).
    pub fn shared_store(&self) -> Arc<AnyStore> {
        self.bare.store().clone()
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

    /// Whether live stats are kept.
    pub fn stats_on(&self) -> bool {
        self.stats.is_some()
    }

    /// Take this second's sample for the live stats (nothing when they are off).
    pub fn sample_stats(&self) {
        if let Some(stats) = &self.stats {
            stats.sample(&self.metrics, self.live().views());
        }
    }

    /// The live stats of the policies in force, unless stats are off.
    pub fn stats_report(&self, store: StoreHealth) -> Option<StatsReport> {
        let stats = self.stats.as_ref()?;
        Some(stats.report(store, self.live().views()))
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
    ) -> Result<Decided, LimitError> {
        let started = Instant::now();
        let policies = self.live.load();
        let verdict = policies.limiter.run(names, key, cost, mode).await?;
        self.metrics.record_latency(started.elapsed());
        policies.record(&verdict, mode, key);
        Ok(Decided { verdict, policies })
    }

    /// [`Self::decide`] (consuming) waiting up to `max_wait` for the cost to fit
    /// ([`Limiter::check_wait`]), counted once, by its final verdict; with how long it waited.
    /// The table is held as an `Arc` for the wait (a reload meanwhile does not change the
    /// policies this request is decided under).
    pub async fn decide_waiting(
        &self,
        names: &[&str],
        key: &str,
        cost: u64,
        max_wait: std::time::Duration,
    ) -> Result<(Decided, std::time::Duration), LimitError> {
        let policies = Guard::from_inner(self.live.load_full());
        let waited = policies
            .limiter
            .check_wait(names, key, cost, max_wait)
            .await?;
        policies.record(&waited.verdict, Mode::Consume, key);
        let decided = Decided {
            verdict: waited.verdict,
            policies,
        };
        Ok((decided, waited.waited))
    }

    /// Apply a lease operation of the `concurrency` policy `name` to `key` and count acquires
    /// as decisions; the policy's name comes back with the outcome.
    pub async fn lease(
        &self,
        name: &str,
        key: &str,
        op: LeaseOp,
    ) -> Result<(String, LeaseOutcome), LimitError> {
        let started = Instant::now();
        let policies = self.live.load();
        let outcome = policies.limiter.lease_op(name, key, op).await?;
        self.metrics.record_latency(started.elapsed());
        let position = policies.limiter.policy_position(name).unwrap_or_default();
        if let (LeaseOp::Acquire(_), Some(state)) = (op, policies.states.get(position)) {
            state.counters.record(
                Mode::Consume,
                outcome.decision.allowed,
                outcome.degraded,
                false,
            );
        }
        Ok((policies.policy_name(position).to_owned(), outcome))
    }

    /// Charge (`delta > 0`) or refund `key` under `name` after the fact ([`Limiter::adjust`]),
    /// answered as what a check of one unit would answer now.
    pub async fn adjust(&self, name: &str, key: &str, delta: i64) -> Result<Decided, LimitError> {
        let policies = self.live.load();
        let decision: Decision = policies.limiter.adjust(name, key, delta).await?;
        let mut verdict = tollgate::limiter::verdict(Decisions::from_buf([decision]), false);
        let position = policies.limiter.policy_position(name).unwrap_or_default();
        verdict.policies = std::iter::once(position).collect();
        Ok(Decided { verdict, policies })
    }

    /// Forget `key`'s state under `name`.
    pub async fn reset(&self, name: &str, key: &str) -> Result<(), LimitError> {
        self.live.load().limiter.reset(name, key).await
    }

    /// Whether the store answers (`GET /ready`).
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store().ping().await
    }

    /// The Prometheus text exposition.
    pub fn render_metrics(&self) -> String {
        let mut out = String::with_capacity(4096);
        let live = self.live();
        let counters: Vec<(&str, &PolicyCounters)> = live
            .policies()
            .zip(&live.states)
            .map(|((name, _), state)| (name, &state.counters))
            .collect();
        let store_failures: metrics::StoreFailures = match self.store().resilience() {
            Some(redis) => std::array::from_fn(|kind| redis.stats().failures[kind].get()),
            None => [0; StoreError::KINDS.len()],
        };
        self.metrics.render(&mut out, &counters, &store_failures);
        metrics::gauge(
            &mut out,
            "tollgate_policies",
            "Policies configured.",
            counters.len() as u64,
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
