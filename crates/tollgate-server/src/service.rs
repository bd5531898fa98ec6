//! The decision engine behind every front end (HTTP now, gRPC later): named policies over the
//! configured store, the failure policy, and the metrics.
//!
//! It resolves policy names itself rather than going through [`tollgate::Limiter`] because the
//! front ends need each policy's index (metrics and response headers are precomputed per
//! policy) and a failed store call must still produce a decision (`on_error`), not an error.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use smallvec::SmallVec;
use tollgate::limiter::{validate_key, verdict};
use tollgate::{Check, LimitError, Mode, Policy, Store, StoreError, Verdict};

use crate::config::{AdminToken, OnError, Settings};
use crate::failure::fallback;
use crate::metrics::{self, Metrics};
use crate::store::AnyStore;
use std::sync::Arc;
use tollgate_envoy::EnvoyService;

/// One configured policy.
#[derive(Debug)]
pub struct PolicyEntry {
    /// Its name.
    pub name: Box<str>,
    /// The policy.
    pub policy: Policy,
}

/// The answer to a check or peek, with the policies it covered.
#[derive(Debug)]
pub struct Outcome {
    /// The decisions and the most restrictive one.
    pub verdict: Verdict,
    /// Indices (into [`Service::policies`]) of the policies checked, in request order.
    pub policies: SmallVec<[usize; 2]>,
}

impl Outcome {
    /// Index of the policy the verdict reports.
    pub fn reported(&self) -> usize {
        self.policies
            .get(self.verdict.policy_index)
            .copied()
            .unwrap_or_default()
    }
}

/// Policies, store, failure policy and metrics.
#[derive(Debug)]
pub struct Service {
    store: Arc<AnyStore>,
    /// The Envoy rate limit service sharing the store, when gRPC is on (for its metrics).
    envoy: Option<EnvoyService<AnyStore>>,
    policies: Box<[PolicyEntry]>,
    by_name: HashMap<Box<str>, usize>,
    on_error: OnError,
    admin_token: Option<AdminToken>,
    metrics: Metrics,
    /// Second (since the epoch of `started`) of the last store-failure warning logged.
    last_store_warning: AtomicU64,
    started: Instant,
}

impl Service {
    /// A service deciding `settings.policies` on `store`.
    pub fn new(settings: &Settings, store: Arc<AnyStore>) -> Service {
        let policies: Box<[PolicyEntry]> = settings
            .policies
            .iter()
            .map(|(name, policy)| PolicyEntry {
                name: name.as_str().into(),
                policy: policy.clone(),
            })
            .collect();
        let by_name = policies
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), i))
            .collect();
        let metrics = Metrics::new(policies.iter().map(|p| &*p.name));
        Service {
            store,
            envoy: None,
            policies,
            by_name,
            on_error: settings.store.on_error,
            admin_token: settings.admin_token.clone(),
            metrics,
            last_store_warning: AtomicU64::new(u64::MAX),
            started: Instant::now(),
        }
    }

    /// Every policy, sorted by name.
    pub fn policies(&self) -> &[PolicyEntry] {
        &self.policies
    }

    /// The store.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// The store, shared (the gRPC front end decides on the same one).
    pub fn shared_store(&self) -> Arc<AnyStore> {
        self.store.clone()
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

    /// The token guarding reset, if any.
    pub fn admin_token(&self) -> Option<&AdminToken> {
        self.admin_token.as_ref()
    }

    /// Decide `cost` for `key` under every policy named, all or nothing, in `mode`.
    ///
    /// Errors are the caller's (unknown policy, bad key or cost); a store failure is never an
    /// error here: `on_error` decides and the verdict is marked degraded.
    pub async fn decide(
        &self,
        names: &[&str],
        key: &str,
        cost: u64,
        mode: Mode,
    ) -> Result<Outcome, LimitError> {
        let (indices, checks) = self.resolve(names, key, cost)?;
        let started = Instant::now();
        let answer = self.store.decide(&checks, cost, mode).await;
        self.metrics.record_latency(started.elapsed());
        let (decisions, degraded) = match answer {
            Ok(answer) => (answer.decisions, answer.degraded),
            Err(error) => {
                self.store_failed(&error);
                (fallback(self.on_error, &checks, cost), true)
            }
        };
        let outcome = Outcome {
            verdict: verdict(decisions, degraded),
            policies: indices,
        };
        self.metrics.record_decision(
            outcome.reported(),
            mode,
            outcome.verdict.decision.allowed,
            degraded,
        );
        Ok(outcome)
    }

    /// Forget `key`'s state under `name`.
    pub async fn reset(&self, name: &str, key: &str) -> Result<(), LimitError> {
        let (_, checks) = self.resolve(&[name], key, 1)?;
        self.store.reset(&checks).await.map_err(|error| {
            self.store_failed(&error);
            LimitError::Store(error)
        })
    }

    /// Whether the store answers (`GET /ready`).
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// The Prometheus text exposition.
    pub fn render_metrics(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.metrics.render(&mut out);
        metrics::gauge(
            &mut out,
            "tollgate_policies",
            "Policies configured.",
            self.policies.len() as u64,
        );
        if let Some(memory) = self.store.as_memory() {
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
        if let Some(redis) = self.store.resilience() {
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

    /// Resolve names to policies and validate the request, as the core's `Limiter` does.
    #[allow(clippy::type_complexity)]
    fn resolve<'a>(
        &'a self,
        names: &[&str],
        key: &'a str,
        cost: u64,
    ) -> Result<(SmallVec<[usize; 2]>, SmallVec<[Check<'a>; 2]>), LimitError> {
        if names.is_empty() {
            return Err(LimitError::NoPolicy);
        }
        validate_key(key)?;
        let mut indices = SmallVec::new();
        let mut checks = SmallVec::new();
        for &name in names {
            let index = *self
                .by_name
                .get(name)
                .ok_or_else(|| LimitError::UnknownPolicy(name.to_owned()))?;
            if indices.contains(&index) {
                return Err(LimitError::DuplicatePolicy(name.to_owned()));
            }
            let entry = &self.policies[index];
            entry
                .policy
                .validate_cost(cost)
                .map_err(|source| LimitError::Policy {
                    policy: name.to_owned(),
                    source,
                })?;
            indices.push(index);
            checks.push(Check {
                name: &entry.name,
                policy: &entry.policy,
                key,
            });
        }
        Ok((indices, checks))
    }

    /// Count a store failure and log it, at most once a second (a full store fails every new
    /// key; the metric counts them all).
    fn store_failed(&self, error: &StoreError) {
        self.metrics.record_store_error(error);
        let second = self.started.elapsed().as_secs();
        if self.last_store_warning.swap(second, Ordering::Relaxed) != second {
            tracing::warn!(%error, on_error = %self.on_error.name(), "store call failed; deciding degraded");
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
