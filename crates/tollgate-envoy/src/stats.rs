//! Per-rule statistics, as upstream keeps them, and the service's own counters; rendered as
//! Prometheus text.
//!
//! A rule's series are named by its stats key (`<domain>.<key>_<value>...`, upstream's
//! `ratelimit.service.rate_limit.<key>.<stat>` path). Counters live in a registry keyed by that
//! name and outlive reloads, so a reload that keeps a rule keeps counting on the same series.
//! `detailed_metric` and `value_to_metric` rules add series per request value; those are
//! bounded by [`StatsRegistry::new`]'s limit, past which hits count on the rule's own series.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The counters of one rule (or one detailed series).
#[derive(Debug, Default)]
pub struct RuleStats {
    /// Hits (sum of `hits_addend`) of requests that matched the rule.
    pub total_hits: AtomicU64,
    /// Hits rejected (counted in shadow mode too).
    pub over_limit: AtomicU64,
    /// Allowed hits at or past the near-limit ratio (80% by default) of the limit.
    pub near_limit: AtomicU64,
    /// Allowed hits.
    pub within_limit: AtomicU64,
    /// Hits that were over the limit but answered OK because the rule is in shadow mode.
    pub shadow_mode: AtomicU64,
    /// Hits given back (`is_negative_hits`), as upstream's `total_negative_hits`.
    pub total_negative_hits: AtomicU64,
}

impl RuleStats {
    fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Record an allowed request of `hits` that left `used` of `limit` consumed, where the
    /// near-limit threshold is `near`: the hits above the threshold are near-limit hits.
    pub fn record_allowed(&self, hits: u64, used: u64, near: u64) {
        Self::add(&self.total_hits, hits);
        Self::add(&self.within_limit, hits);
        if used > near {
            let before = used.saturating_sub(hits);
            Self::add(&self.near_limit, used - before.max(near));
        }
    }

    /// Record a rejected request of `hits` (tollgate consumes nothing of a rejected request, so
    /// every hit of it is over the limit).
    pub fn record_rejected(&self, hits: u64, shadow: bool) {
        Self::add(&self.total_hits, hits);
        Self::add(&self.over_limit, hits);
        if shadow {
            Self::add(&self.shadow_mode, hits);
        }
    }

    /// Record a refund of `hits` (`is_negative_hits`): counted apart from the hits taken.
    pub fn record_refund(&self, hits: u64) {
        Self::add(&self.total_negative_hits, hits);
    }

    fn snapshot(&self) -> [u64; 6] {
        [
            self.total_hits.load(Ordering::Relaxed),
            self.over_limit.load(Ordering::Relaxed),
            self.near_limit.load(Ordering::Relaxed),
            self.within_limit.load(Ordering::Relaxed),
            self.shadow_mode.load(Ordering::Relaxed),
            self.total_negative_hits.load(Ordering::Relaxed),
        ]
    }
}

/// Stat names in render order, matching [`RuleStats::snapshot`].
const RULE_STATS: [(&str, &str); 6] = [
    ("total_hits", "Hits of requests that matched the rule."),
    (
        "over_limit",
        "Hits over the rule's limit (shadow mode included).",
    ),
    (
        "near_limit",
        "Allowed hits past the near-limit ratio of the rule's limit.",
    ),
    ("within_limit", "Allowed hits."),
    (
        "shadow_mode",
        "Over-limit hits answered OK because the rule is in shadow mode.",
    ),
    (
        "total_negative_hits",
        "Hits given back by descriptors with is_negative_hits.",
    ),
];

/// Every rule's counters by stats key.
#[derive(Debug)]
pub struct StatsRegistry {
    series: RwLock<HashMap<Arc<str>, Arc<RuleStats>>>,
    /// Series created at request time (detailed metrics), and their bound.
    dynamic: AtomicU64,
    max_dynamic: u64,
}

impl StatsRegistry {
    /// An empty registry that creates at most `max_dynamic` series at request time.
    pub fn new(max_dynamic: usize) -> StatsRegistry {
        StatsRegistry {
            series: RwLock::new(HashMap::new()),
            dynamic: AtomicU64::new(0),
            max_dynamic: max_dynamic as u64,
        }
    }

    /// The counters of a configured rule: the registered ones if the key is known, else new
    /// ones that [`Self::register`] adds once the whole config proved valid (so a rejected
    /// config leaves no series behind).
    pub fn staged(&self, key: &str) -> Arc<RuleStats> {
        self.registered(key).unwrap_or_default()
    }

    /// The counters registered under `key`, if any.
    fn registered(&self, key: &str) -> Option<Arc<RuleStats>> {
        self.series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Register the counters of a config that is now in force.
    pub fn register(&self, staged: impl IntoIterator<Item = (Arc<str>, Arc<RuleStats>)>) {
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        for (key, stats) in staged {
            series.entry(key).or_insert(stats);
        }
    }

    /// The counters of `key`, created if new: for series bounded by the config (one per domain).
    pub fn series(&self, key: &str) -> Arc<RuleStats> {
        if let Some(found) = self.registered(key) {
            return found;
        }
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        series.entry(Arc::from(key)).or_default().clone()
    }

    /// The counters of a request-time series, or `fallback` once the bound is reached.
    pub fn detailed(&self, key: &str, fallback: &Arc<RuleStats>) -> Arc<RuleStats> {
        if let Some(found) = self.registered(key) {
            return found;
        }
        if self.dynamic.load(Ordering::Relaxed) >= self.max_dynamic {
            return fallback.clone();
        }
        let mut series = self.series.write().unwrap_or_else(|e| e.into_inner());
        series
            .entry(Arc::from(key))
            .or_insert_with(|| {
                self.dynamic.fetch_add(1, Ordering::Relaxed);
                Arc::default()
            })
            .clone()
    }

    /// Append every rule series as Prometheus text: `tollgate_envoy_rule_<stat>_total{rule=...}`.
    pub fn render(&self, out: &mut String) {
        let mut rows: Vec<(Arc<str>, [u64; RULE_STATS.len()])> = self
            .series
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(key, stats)| (key.clone(), stats.snapshot()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        for (i, (stat, help)) in RULE_STATS.iter().enumerate() {
            let name = format!("tollgate_envoy_rule_{stat}_total");
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (key, values) in &rows {
                let _ = writeln!(out, "{name}{{rule=\"{}\"}} {}", label(key), values[i]);
            }
        }
    }
}

/// Service-wide counters.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Answers with overall code OK.
    pub ok: AtomicU64,
    /// Answers with overall code OVER_LIMIT.
    pub over_limit: AtomicU64,
    /// Requests refused as malformed (INVALID_ARGUMENT).
    pub invalid: AtomicU64,
    /// Requests the store could not decide (UNAVAILABLE).
    pub store_errors: AtomicU64,
    /// Requests for a domain no file defines.
    pub unknown_domain: AtomicU64,
    /// Answers turned OK by the global shadow mode.
    pub global_shadow_mode: AtomicU64,
    /// Config loads (start and reloads) that succeeded.
    pub config_load_success: AtomicU64,
    /// Config loads that failed (the previous config stayed).
    pub config_load_error: AtomicU64,
    /// Domains in the config in force.
    pub domains: AtomicU64,
}

impl ServiceStats {
    /// Count one.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Append the service counters as Prometheus text.
    pub fn render(&self, out: &mut String) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP tollgate_envoy_requests_total ShouldRateLimit answers by overall code.\n\
             # TYPE tollgate_envoy_requests_total counter\n\
             tollgate_envoy_requests_total{{code=\"ok\"}} {}\n\
             tollgate_envoy_requests_total{{code=\"over_limit\"}} {}",
            get(&self.ok),
            get(&self.over_limit)
        );
        let _ = writeln!(
            out,
            "# HELP tollgate_envoy_request_errors_total ShouldRateLimit calls answered with a gRPC error.\n\
             # TYPE tollgate_envoy_request_errors_total counter\n\
             tollgate_envoy_request_errors_total{{kind=\"invalid_argument\"}} {}\n\
             tollgate_envoy_request_errors_total{{kind=\"store\"}} {}",
            get(&self.invalid),
            get(&self.store_errors)
        );
        let simple: [(&str, &str, &str, &AtomicU64); 5] = [
            (
                "tollgate_envoy_unknown_domain_total",
                "counter",
                "Requests for a domain no config file defines.",
                &self.unknown_domain,
            ),
            (
                "tollgate_envoy_global_shadow_mode_total",
                "counter",
                "Over-limit answers turned OK by the global shadow mode.",
                &self.global_shadow_mode,
            ),
            (
                "tollgate_envoy_config_load_success_total",
                "counter",
                "Config loads that succeeded.",
                &self.config_load_success,
            ),
            (
                "tollgate_envoy_config_load_error_total",
                "counter",
                "Config loads that failed; the previous config stayed in force.",
                &self.config_load_error,
            ),
            (
                "tollgate_envoy_config_domains",
                "gauge",
                "Domains in the config in force.",
                &self.domains,
            ),
        ];
        for (name, kind, help, counter) in simple {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                get(counter)
            );
        }
    }
}

/// A Prometheus label value: backslash, quote and newline escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_limit_counts_only_the_hits_past_the_threshold() {
        let stats = RuleStats::default();
        // limit 10, threshold 8: used goes 7 -> 9 with 2 hits: one hit (the 9th) is near.
        stats.record_allowed(2, 9, 8);
        assert_eq!(stats.near_limit.load(Ordering::Relaxed), 1);
        stats.record_allowed(1, 10, 8);
        assert_eq!(stats.near_limit.load(Ordering::Relaxed), 2);
        stats.record_allowed(1, 3, 8);
        assert_eq!(stats.near_limit.load(Ordering::Relaxed), 2);
        assert_eq!(stats.within_limit.load(Ordering::Relaxed), 4);
        stats.record_rejected(3, true);
        assert_eq!(stats.snapshot(), [7, 3, 2, 4, 3, 0]);
    }

    #[test]
    fn detailed_series_are_bounded() {
        let registry = StatsRegistry::new(1);
        let rule = registry.staged("d.k");
        registry.register([(Arc::from("d.k"), rule.clone())]);
        assert!(Arc::ptr_eq(&registry.staged("d.k"), &rule));
        let a = registry.detailed("d.k_a", &rule);
        assert!(!Arc::ptr_eq(&a, &rule));
        assert!(Arc::ptr_eq(&registry.detailed("d.k_a", &rule), &a));
        assert!(Arc::ptr_eq(&registry.detailed("d.k_b", &rule), &rule));
        let mut text = String::new();
        registry.render(&mut text);
        assert!(text.contains("tollgate_envoy_rule_total_hits_total{rule=\"d.k_a\"} 0"));
        assert!(!text.contains("d.k_b"));
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
