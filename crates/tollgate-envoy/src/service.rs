//! `ShouldRateLimit`: from a request's descriptors to per-descriptor statuses and an overall code.
//!
//! As upstream, every descriptor is counted on its own, not all-or-nothing: one descriptor over
//! its limit does not stop the others from counting the request. For each descriptor:
//! - no rule (unknown domain, nothing matched, a descriptor deeper or shallower than its rule, or
//!   a rule replaced by another matched rule's `replaces`): OK, no `current_limit`;
//! - an `unlimited` rule: OK, `limit_remaining` = `u32::MAX`, nothing counted;
//! - a limit (the request's `limit` override, else the rule's): what the descriptor asks
//!   (its own `hits_addend`, else the request's, 0 meaning 1) is asked of the rule's counter:
//!   - **hits** are taken in one atomic decision. A request over the limit consumes nothing
//!     (tollgate's rule; upstream counts it anyway), except in `quota_mode`: a quota is debited
//!     by what was used, and Envoy reports use after the fact (`apply_on_stream_done`), so hits
//!     over a quota are charged anyway (a second atomic call, [`tollgate::Store::adjust`], up
//!     to one limit past the quota), as upstream counts them, and answered OVER_LIMIT. More hits than the limit at
//!     once are over the limit, never an error.
//!   - **`hits_addend` 0** only looks and, as upstream, is over the limit only when the count
//!     is already above it: a peek of one unit under the limit plus one ([`Limit::look`]).
//!     Only a quota counter charged past its limit is ever above it.
//!   - **`is_negative_hits`** gives the hits back ([`tollgate::Store::adjust`] with a negative
//!     delta, on the same resolved check, the request's `limit` override included): never
//!     below zero, answered OK with what is left even while the count is still over the limit
//!     (upstream's rule, envoyproxy/ratelimit#1140), counted in `total_negative_hits`. A
//!     sliding-log rule keeps no count to lower (the core refuses its refunds): nothing is
//!     given back, and the answer is OK with what is left.
//! - `duration_until_reset` of a fixed window is the time to the window's end, as upstream
//!   reports it, also for a counter nothing has touched and for more hits at once than the
//!   limit; over the limit, `limit_remaining` is 0, as upstream's (its counter took the hits).
//! - `shadow_mode`: counted and reported in the stats, but the code is OK: the rule's policy is
//!   in the core's shadow mode (`Policy::with_shadow`, as `shadow: true` in the server's config).
//!
//! The overall code is OVER_LIMIT when a descriptor that is not in quota mode is over its limit,
//! or when every quota-mode descriptor is; the global shadow mode turns it OK.
//!
//! Decisions go through the core's [`Limiter`] (its store and failure policy), as the HTTP API's
//! do. A store error that reaches this service (the limiter has no failure policy, and no store
//! wrapper decided) fails the call with `UNAVAILABLE`; Envoy then applies its
//! `failure_mode_deny` setting, just as it does when upstream's Redis call fails. Refunds and
//! quota charges go to the limiter's store ([`Limiter::store`]): a failure policy cannot make an
//! adjustment up, so their store errors are `UNAVAILABLE` too (a quota hit the failure policy
//! already answered for is not charged).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use tollgate::policy::MAX_EXACT;
use tollgate::{Algorithm, Check, Decision, LimitError, Limiter, Mode, Store};
use tonic_health::server::HealthReporter;

use crate::config::{self, Config, EnvoyConfigError, Limit, Rule};
use crate::headers::{self, HeaderSource, ResponseHeaders};
use crate::keys::identifier;
use crate::matching::lookup;
use crate::metadata;
use crate::stats::{RuleStats, ServiceStats, StatsRegistry};
use crate::unit::Unit;

/// Most descriptors one request may carry: each is a store call, so an unbounded list would let
/// one request cost any number of round trips. Envoy sends a handful per request.
pub const MAX_DESCRIPTORS: usize = 256;

/// Settings of the service. Each maps to an upstream environment variable where one exists.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// RateLimit headers in the response (upstream: `LIMIT_RESPONSE_HEADERS_ENABLED`). Off.
    pub response_headers: ResponseHeaders,
    /// Share of the limit past which allowed hits count as near the limit
    /// (upstream: `NEAR_LIMIT_RATIO`). 0.8.
    pub near_limit_ratio: f64,
    /// Answer OK whatever the limits say, still counting (upstream: `SHADOW_MODE`). Off.
    pub global_shadow_mode: bool,
    /// Let several files add to one domain (upstream: `MERGE_DOMAIN_CONFIG`). Off.
    pub merge_domains: bool,
    /// How long the watcher waits for a burst of file events to settle before reloading.
    pub reload_debounce: Duration,
    /// Bound on metric series created per request value (`detailed_metric`,
    /// `value_to_metric`, limit overrides); past it hits count on the rule's own series.
    pub max_detailed_series: usize,
    /// Answer with dynamic metadata ([`crate::metadata`]): the request, and the `metadata:` of
    /// the rules whose descriptors passed (upstream: `RESPONSE_DYNAMIC_METADATA`). Off.
    pub response_dynamic_metadata: bool,
}

impl Default for EnvoyOptions {
    fn default() -> Self {
        EnvoyOptions {
            response_headers: ResponseHeaders::Off,
            near_limit_ratio: 0.8,
            global_shadow_mode: false,
            merge_domains: false,
            reload_debounce: Duration::from_millis(200),
            max_detailed_series: 10_000,
            response_dynamic_metadata: false,
        }
    }
}

/// The Envoy rate limit service over a tollgate store. Cheap to clone (one `Arc`).
///
/// ```no_run
/// use std::sync::Arc;
/// use tollgate::MemoryStore;
/// use tollgate_envoy::{EnvoyOptions, EnvoyService};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let service = EnvoyService::new(Arc::new(MemoryStore::new()), "ratelimit", EnvoyOptions::default())?;
/// let _reloader = service.spawn_reloader()?;
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8081").await?;
/// service.serve(listener, std::future::pending()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct EnvoyService<S> {
    pub(crate) shared: Arc<Shared<S>>,
}

impl<S> Clone for EnvoyService<S> {
    fn clone(&self) -> Self {
        EnvoyService {
            shared: self.shared.clone(),
        }
    }
}

/// What every clone shares.
#[derive(Debug)]
pub(crate) struct Shared<S> {
    limiter: Limiter<S>,
    pub(crate) config_dir: PathBuf,
    pub(crate) options: EnvoyOptions,
    config: ArcSwap<Config>,
    registry: StatsRegistry,
    stats: ServiceStats,
    pub(crate) health: HealthReporter,
    /// Serializes reloads, so an older load never replaces a newer one.
    reload_lock: Mutex<()>,
}

/// One descriptor's plan before the store is asked.
struct Target {
    rule: Arc<Rule>,
    stats: Arc<RuleStats>,
    identifier: String,
    hits: Hits,
}

/// What a descriptor asks of its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hits {
    /// `hits_addend` 0: look, counting nothing.
    Look,
    /// Count this many hits.
    Take(u64),
    /// `is_negative_hits`: give this many back.
    Refund(u64),
}

impl Hits {
    /// The descriptor's `hits_addend` if set, else the request's (0 meaning 1), and its sign.
    fn of(descriptor: &RateLimitDescriptor, request: &RateLimitRequest) -> Hits {
        let hits = match &descriptor.hits_addend {
            Some(addend) => addend.value,
            None => u64::from(request.hits_addend.max(1)),
        };
        if descriptor.is_negative_hits {
            Hits::Refund(hits)
        } else if hits == 0 {
            Hits::Look
        } else {
            Hits::Take(hits)
        }
    }
}

/// One descriptor's answer.
struct Answer {
    status: DescriptorStatus,
    over_limit: bool,
    quota_mode: bool,
    reset_secs: u64,
}

impl<S: Store> EnvoyService<S> {
    /// Load `config_dir` and build the service deciding through `limiter` (or a bare shared
    /// store). Fails if the directory cannot be read or a file is invalid; an empty directory
    /// is a valid config with no domains.
    pub fn new(
        limiter: impl Into<Limiter<S>>,
        config_dir: impl Into<PathBuf>,
        options: EnvoyOptions,
    ) -> Result<EnvoyService<S>, EnvoyConfigError> {
        let config_dir = config_dir.into();
        let registry = StatsRegistry::new(options.max_detailed_series);
        let files = config::read_dir(&config_dir)?;
        let loaded = config::load(&files, options.merge_domains, &registry)?;
        registry.register(loaded.staged);
        let stats = ServiceStats::default();
        ServiceStats::inc(&stats.config_load_success);
        stats.domains.store(
            loaded.config.domains.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        tracing::info!(
            dir = %config_dir.display(),
            files = files.len(),
            domains = loaded.config.domains.len(),
            "envoy rate limit config loaded"
        );
        let service = EnvoyService {
            shared: Arc::new(Shared {
                limiter: limiter.into(),
                config_dir,
                options,
                config: ArcSwap::from_pointee(loaded.config),
                registry,
                stats,
                health: HealthReporter::new(),
                reload_lock: Mutex::new(()),
            }),
        };
        service.init_health();
        Ok(service)
    }

    /// The directory the config is loaded from.
    pub fn config_dir(&self) -> &Path {
        &self.shared.config_dir
    }

    /// The options.
    pub fn options(&self) -> &EnvoyOptions {
        &self.shared.options
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.shared.config.load_full()
    }

    /// Load the directory again and put it in force if it is valid; otherwise log the error,
    /// count it, keep the config in force, and return the error.
    pub fn reload(&self) -> Result<(), EnvoyConfigError> {
        let shared = &self.shared;
        let _serial = shared.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let loaded = config::read_dir(&shared.config_dir)
            .and_then(|files| config::load(&files, shared.options.merge_domains, &shared.registry));
        match loaded {
            Ok(loaded) => {
                shared.registry.register(loaded.staged);
                let domains = loaded.config.domains.len();
                shared.config.store(Arc::new(loaded.config));
                ServiceStats::inc(&shared.stats.config_load_success);
                shared
                    .stats
                    .domains
                    .store(domains as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(dir = %shared.config_dir.display(), domains, "envoy rate limit config reloaded");
                Ok(())
            }
            Err(error) => {
                ServiceStats::inc(&shared.stats.config_load_error);
                tracing::error!(%error, "envoy rate limit config not reloaded; the previous config stays in force");
                Err(error)
            }
        }
    }

    /// Append every `tollgate_envoy_…` series as Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        self.shared.stats.render(out);
        self.shared.registry.render(out);
    }

    /// Answer one `ShouldRateLimit` request (what the gRPC method calls).
    pub async fn check(
        &self,
        request: &RateLimitRequest,
    ) -> Result<RateLimitResponse, tonic::Status> {
        let shared = &*self.shared;
        let targets = match self.plan(request) {
            Ok(targets) => targets,
            Err(status) => {
                ServiceStats::inc(&shared.stats.invalid);
                return Err(status);
            }
        };
        let decisions = futures_util::future::join_all(
            targets.iter().map(|target| self.decide(target.as_ref())),
        )
        .await;
        let mut answers = Vec::with_capacity(targets.len());
        for (target, decision) in targets.iter().zip(decisions) {
            match decision {
                Ok(decision) => answers.push(self.answer(target.as_ref(), decision)),
                Err(error) => {
                    ServiceStats::inc(&shared.stats.store_errors);
                    tracing::warn!(%error, domain = %request.domain, "store error answering ShouldRateLimit");
                    return Err(tonic::Status::unavailable(format!(
                        "rate limit store unavailable: {error}"
                    )));
                }
            }
        }
        Ok(self.respond(request, &targets, answers))
    }

    /// Match every descriptor, apply `replaces`, and work out what to ask the store.
    fn plan(&self, request: &RateLimitRequest) -> Result<Vec<Option<Target>>, tonic::Status> {
        if request.domain.is_empty() {
            return Err(tonic::Status::invalid_argument(
                "rate limit domain must not be empty",
            ));
        }
        if request.descriptors.is_empty() {
            return Err(tonic::Status::invalid_argument(
                "rate limit descriptor list must not be empty",
            ));
        }
        if request.descriptors.len() > MAX_DESCRIPTORS {
            return Err(tonic::Status::invalid_argument(format!(
                "{} descriptors in one request; at most {MAX_DESCRIPTORS}",
                request.descriptors.len()
            )));
        }
        let config = self.shared.config.load();
        let Some(root) = config.domains.get(request.domain.as_str()) else {
            ServiceStats::inc(&self.shared.stats.unknown_domain);
            return Ok(request.descriptors.iter().map(|_| None).collect());
        };
        let mut targets = Vec::with_capacity(request.descriptors.len());
        for (index, descriptor) in request.descriptors.iter().enumerate() {
            let hits = Hits::of(descriptor, request);
            let target = if let Some(limit) = &descriptor.limit {
                // The override keeps the algorithm of the rule the descriptor matches (fixed
                // window, upstream's, when none does).
                let algorithm = lookup(
                    &request.domain,
                    root,
                    &descriptor.entries,
                    &self.shared.registry,
                )
                .and_then(|matched| {
                    let policy = matched.rule.limit.as_ref()?.policy.as_ref()?;
                    Some(policy.algorithm())
                })
                .unwrap_or(Algorithm::FixedWindow);
                let rule = self.override_rule(&request.domain, index, limit, algorithm)?;
                let stats = self
                    .shared
                    .registry
                    .detailed(&descriptor_key(&request.domain, descriptor), &rule.stats);
                Some(Target {
                    identifier: identifier(
                        &request.domain,
                        descriptor.entries.iter().map(|e| (&*e.key, &*e.value)),
                    ),
                    rule,
                    stats,
                    hits,
                })
            } else {
                lookup(
                    &request.domain,
                    root,
                    &descriptor.entries,
                    &self.shared.registry,
                )
                .map(|matched| Target {
                    identifier: identifier(
                        &request.domain,
                        descriptor
                            .entries
                            .iter()
                            .enumerate()
                            .map(|(i, e)| (&*e.key, matched.value_of(i, e))),
                    ),
                    rule: matched.rule.clone(),
                    stats: matched.stats,
                    hits,
                })
            };
            targets.push(target);
        }
        // `replaces`: a limit named by any matched rule's `replaces` is not applied.
        let replaced: Vec<Box<str>> = targets
            .iter()
            .flatten()
            .flat_map(|t| t.rule.replaces.iter().cloned())
            .collect();
        if !replaced.is_empty() {
            for slot in &mut targets {
                let drop = slot.as_ref().is_some_and(|t| {
                    t.rule.limit.is_some()
                        && !t.rule.name.is_empty()
                        && replaced.iter().any(|name| **name == *t.rule.name)
                });
                if drop {
                    *slot = None;
                }
            }
        }
        Ok(targets)
    }

    /// The rule of a request's limit override (of `algorithm`, no shadow mode, unnamed).
    fn override_rule(
        &self,
        domain: &str,
        index: usize,
        limit: &RateLimitOverride,
        algorithm: Algorithm,
    ) -> Result<Arc<Rule>, tonic::Status> {
        let unit = Unit::from_proto(limit.unit).ok_or_else(|| {
            tonic::Status::invalid_argument(format!(
                "descriptor {index}: limit override has an unknown unit ({})",
                limit.unit
            ))
        })?;
        let stats_key = format!("{domain}.(override)");
        let limit = Limit::new(&stats_key, unit, limit.requests_per_unit, algorithm, None)
            .map_err(|e| tonic::Status::invalid_argument(format!("descriptor {index}: {e}")))?;
        Ok(Arc::new(Rule {
            stats: self.shared.registry.series(&stats_key),
            stats_key: stats_key.into(),
            name: Arc::from(""),
            replaces: Box::default(),
            shadow_mode: false,
            quota_mode: false,
            detailed_metric: false,
            limit: Some(limit),
            metadata: None,
        }))
    }

    /// Ask the store about one descriptor. `None` target or no limit: nothing to ask.
    async fn decide(&self, target: Option<&Target>) -> Result<Option<Decision>, LimitError> {
        let Some(target) = target else {
            return Ok(None);
        };
        let Some(limit) = &target.rule.limit else {
            return Ok(None);
        };
        let Some(policy) = &limit.policy else {
            // `requests_per_unit: 0`: every hit is over the limit (a refund is OK, as every
            // refund is); there is no window to report.
            let refund = matches!(target.hits, Hits::Refund(_));
            return Ok(Some(Decision {
                allowed: refund,
                ..Decision::default()
            }));
        };
        let check = Check {
            name: &limit.policy_name,
            policy,
            key: &target.identifier,
        };
        let decision = match target.hits {
            Hits::Look => self.look(limit, check).await?,
            Hits::Take(hits) => self.take(check, hits, target.rule.quota_mode).await?,
            Hits::Refund(hits) => self.refund(check, hits).await?,
        };
        Ok(Some(decision))
    }

    /// `hits_addend` 0, as upstream: over only when the count is already above the limit
    /// (only a quota-mode counter, charged past its limit, ever is), else what is left.
    async fn look(&self, limit: &Limit, check: Check<'_>) -> Result<Decision, LimitError> {
        let probe = Check {
            policy: limit.look.as_ref().unwrap_or(check.policy),
            ..check
        };
        let limiter = &self.shared.limiter;
        let mut decision = as_decided(&limiter.decide_checks(&[probe], 1, Mode::Peek).await?);
        if limit.look.is_some() {
            // Back from the roomier policy's figures to the limit's.
            decision.limit = check.policy.capacity();
            decision.remaining = decision.remaining.saturating_sub(1);
        }
        Ok(decision)
    }

    /// Count `hits` in one atomic decision. Over the limit, tollgate counts nothing, except in
    /// quota mode: a quota is debited by what was used, and Envoy reports use after the fact
    /// (`apply_on_stream_done`), so the hits are charged anyway, as upstream counts them, up
    /// to one limit past the quota (the core's rule for a charge); the next look is then over.
    async fn take(
        &self,
        check: Check<'_>,
        hits: u64,
        quota_mode: bool,
    ) -> Result<Decision, LimitError> {
        let limiter = &self.shared.limiter;
        // More than the capacity at once never fits: over the limit, never an error.
        let verdict = if hits > check.policy.capacity() {
            let mut verdict = limiter.decide_checks(&[check], 1, Mode::Peek).await?;
            verdict.decision.allowed = false;
            verdict
        } else {
            limiter.decide_checks(&[check], hits, Mode::Consume).await?
        };
        let decision = as_decided(&verdict);
        // A degraded answer (the store failed, the failure policy answered) stands as it is:
        // the store would fail the charge too.
        if decision.allowed || !quota_mode || verdict.degraded {
            return Ok(decision);
        }
        let mut charged = limiter
            .store()
            .adjust(check, exact_delta(hits))
            .await
            .map_err(LimitError::Store)?;
        charged.allowed = false;
        Ok(charged)
    }

    /// `is_negative_hits`: give `hits` back to the counter (never below zero), and answer OK
    /// with what is left, as upstream. A sliding log takes no refunds (the core keeps no
    /// count to lower): nothing is given back, and the answer is a look of what is left.
    async fn refund(&self, check: Check<'_>, hits: u64) -> Result<Decision, LimitError> {
        let mut decision = if check.policy.algorithm() == Algorithm::SlidingLog {
            tracing::debug!(
                policy = check.name.as_str(),
                "a sliding log takes no refunds; nothing given back"
            );
            let limiter = &self.shared.limiter;
            limiter
                .decide_checks(&[check], 1, Mode::Peek)
                .await?
                .decision
        } else {
            self.shared
                .limiter
                .store()
                .adjust(check, -exact_delta(hits))
                .await
                .map_err(LimitError::Store)?
        };
        decision.allowed = true;
        Ok(decision)
    }

    /// Turn a decision into a status, recording the rule's stats.
    fn answer(&self, target: Option<&Target>, decision: Option<Decision>) -> Answer {
        let no_limit = |remaining| Answer {
            status: DescriptorStatus {
                code: Code::Ok as i32,
                current_limit: None,
                limit_remaining: remaining,
                duration_until_reset: None,
                quota: None,
            },
            over_limit: false,
            quota_mode: false,
            reset_secs: 0,
        };
        let Some(target) = target else {
            return no_limit(0);
        };
        let (Some(limit), Some(decision)) = (&target.rule.limit, decision) else {
            return no_limit(u32::MAX);
        };
        let rule = &target.rule;
        match target.hits {
            Hits::Take(hits) if decision.allowed => {
                let near = (decision.limit as f64 * self.shared.options.near_limit_ratio).floor();
                let used = decision.limit.saturating_sub(decision.remaining);
                target.stats.record_allowed(hits, used, near as u64);
            }
            Hits::Take(hits) => target.stats.record_rejected(hits, rule.shadow_mode),
            Hits::Refund(hits) => target.stats.record_refund(hits),
            Hits::Look => {}
        }
        let over = !decision.allowed && !rule.shadow_mode;
        let reset_us = reset_us(&decision, limit.policy.as_ref());
        // Over the limit, nothing is left, as upstream answers (its counter took the hits).
        let remaining = if decision.allowed {
            decision.remaining
        } else {
            0
        };
        // Whole seconds, rounded up, as upstream reports them (never 0 while a reset is due).
        let reset_secs = reset_us.div_ceil(1_000_000);
        Answer {
            status: DescriptorStatus {
                code: if over { Code::OverLimit } else { Code::Ok } as i32,
                current_limit: Some(RateLimit {
                    name: rule.name.to_string(),
                    requests_per_unit: limit.requests_per_unit,
                    unit: limit.unit.to_proto(),
                }),
                limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                duration_until_reset: limit.policy.as_ref().map(|_| ProtoDuration {
                    seconds: i64::try_from(reset_secs).unwrap_or(i64::MAX),
                    nanos: 0,
                }),
                quota: None,
            },
            over_limit: over,
            quota_mode: rule.quota_mode,
            reset_secs,
        }
    }

    /// The overall code, headers and counters of a request's answers.
    fn respond(
        &self,
        request: &RateLimitRequest,
        targets: &[Option<Target>],
        answers: Vec<Answer>,
    ) -> RateLimitResponse {
        let stats = &self.shared.stats;
        let failed = answers.iter().any(|a| a.over_limit && !a.quota_mode);
        let quota = answers.iter().filter(|a| a.quota_mode);
        let quota_total = quota.clone().count();
        let quota_failed = quota.filter(|a| a.over_limit).count();
        let mut over = failed || (quota_total > 0 && quota_total == quota_failed);
        if over && self.shared.options.global_shadow_mode {
            over = false;
            ServiceStats::inc(&stats.global_shadow_mode);
        }
        ServiceStats::inc(if over { &stats.over_limit } else { &stats.ok });
        let kind = self.shared.options.response_headers;
        let response_headers_to_add = if kind == ResponseHeaders::Off {
            Vec::new()
        } else {
            let sources = targets.iter().zip(&answers).filter_map(|(target, answer)| {
                let target = target.as_ref()?;
                let limit = answer.status.current_limit.as_ref()?;
                let name = if target.rule.name.is_empty() {
                    &*target.rule.stats_key
                } else {
                    &*target.rule.name
                };
                Some(HeaderSource {
                    name,
                    quota: u64::from(limit.requests_per_unit),
                    window_secs: Unit::from_proto(limit.unit).map_or(0, Unit::seconds),
                    remaining: u64::from(answer.status.limit_remaining),
                    reset_secs: answer.reset_secs,
                    over_limit: answer.over_limit && !answer.quota_mode,
                })
            });
            headers::choose(sources)
                .map(|source| headers::render(kind, &source))
                .unwrap_or_default()
        };
        // Passed, as upstream: not over the limit (shadow mode answers OK) and not unlimited.
        let dynamic_metadata = self.shared.options.response_dynamic_metadata.then(|| {
            let passed = targets.iter().zip(&answers).filter_map(|(target, answer)| {
                let rule = target.as_ref().map(|t| &t.rule);
                let unlimited = rule.is_some_and(|r| r.limit.is_none());
                let ok = answer.status.code == Code::Ok as i32;
                (ok && !unlimited).then(|| rule.and_then(|r| r.metadata.as_ref()))
            });
            metadata::response(request, passed)
        });
        RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses: answers.into_iter().map(|a| a.status).collect(),
            response_headers_to_add,
            dynamic_metadata,
            ..RateLimitResponse::default()
        }
    }
}

/// Microseconds until a descriptor's counter resets, as upstream reports them.
///
/// Upstream's windows are fixed: a fixed window's reset is the time to the window's end, also
/// for a counter nothing has touched (whose decision says it is full, reset 0) and for hits
/// refused without touching it (more at once than the limit). Any other algorithm refused
/// with nothing to wait for (more hits than it can ever hold) is told one period.
fn reset_us(decision: &Decision, policy: Option<&tollgate::Policy>) -> u64 {
    let reset = if decision.allowed {
        decision.reset_after_us
    } else {
        decision.reset_after_us.max(decision.retry_after_us)
    };
    match policy {
        Some(policy) if reset == 0 && policy.period_us() > 0 => {
            if policy.algorithm() == tollgate::Algorithm::FixedWindow {
                policy.period_us() - tollgate::clock::system_now_us() % policy.period_us()
            } else if !decision.allowed {
                policy.period_us()
            } else {
                0
            }
        }
        _ => reset,
    }
}

/// `hits` as a store adjustment: below 2^53, where every store counts exactly (a larger one
/// saturates the count as the largest does).
fn exact_delta(hits: u64) -> i64 {
    i64::try_from(hits.min(MAX_EXACT - 1)).unwrap_or(i64::MAX)
}

/// Upstream's stats key of a limit override: `<domain>.<key>_<value>.<key>...`.
fn descriptor_key(domain: &str, descriptor: &RateLimitDescriptor) -> String {
    let mut key = String::from(domain);
    for entry in &descriptor.entries {
        key.push('.');
        key.push_str(&entry.key);
        if !entry.value.is_empty() {
            key.push('_');
            key.push_str(&entry.value);
        }
    }
    key
}

/// The decision as the descriptor's limit made it. A `shadow_mode` rule's policy is in the
/// core's shadow mode, so the core lets an over-limit request through and says
/// `shadow_denied`; the over-limit answer is what upstream's stats and quota mode go by, and
/// [`EnvoyService`]'s answer turns it OK for a shadow rule.
fn as_decided(verdict: &tollgate::Verdict) -> Decision {
    let mut decision = verdict.decision;
    if verdict.shadow_denied {
        decision.allowed = false;
    }
    decision
}
