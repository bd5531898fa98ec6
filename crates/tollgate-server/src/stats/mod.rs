//! Live stats: what the server is deciding right now, for `GET /v1/stats` and the dashboard.
//!
//! - Rates per policy over the last 10 s and minute, and a per-second series for a chart, come
//!   from the metrics' counters, sampled once a second ([`history`]): the decision path pays
//!   nothing for them.
//! - The most limited keys per policy come from a fixed-size sketch ([`top_keys`]) that the
//!   decision path feeds with each denied key ([`Stats::record_limited`]); allowed decisions
//!   never touch it.
//! - Store latency percentiles come from the metrics' latency histogram, sampled likewise.

pub mod history;
pub mod top_keys;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::Serialize;

use self::history::{History, Latency, Rates, Sample};
use self::top_keys::{TopKey, TopKeys};
use crate::metrics::{self, Metrics, PolicyTotals};

/// Keys reported per policy.
pub const TOP_KEYS_REPORTED: usize = 10;

/// The short window, in seconds.
pub const SHORT_WINDOW_S: usize = 10;
/// The long window, in seconds.
pub const LONG_WINDOW_S: usize = 60;

/// Live stats of every policy.
#[derive(Debug)]
pub struct Stats {
    policies: Box<[PolicyStats]>,
    history: Mutex<History>,
    started: Instant,
}

/// One policy's part.
#[derive(Debug)]
struct PolicyStats {
    name: Box<str>,
    limited: Mutex<TopKeys>,
}

/// How the store is doing, as the caller found it.
#[derive(Debug, Clone, Copy)]
pub struct StoreHealth {
    /// `memory` or `redis`.
    pub kind: &'static str,
    /// Whether `GET /ready` would answer 200 now.
    pub ready: bool,
    /// The circuit breaker's state (`closed`, `open`, `half_open`), when the store has one.
    pub breaker: Option<&'static str>,
}

/// The answer of `GET /v1/stats`.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    /// Seconds since the server started.
    pub uptime_s: u64,
    /// Milliseconds since start of the newest sample the figures come from.
    pub sampled_at_ms: u64,
    /// The seconds of the two windows (`last_10s`, `last_1m`).
    pub windows_s: [usize; 2],
    /// Every policy, in name order.
    pub policies: Vec<PolicyReport>,
    /// The store.
    pub store: StoreReport,
    /// The sketch behind `top_limited_keys`.
    pub top_keys_sketch: SketchReport,
}

/// One policy's figures.
#[derive(Debug, Serialize)]
pub struct PolicyReport {
    /// The policy's name.
    pub name: String,
    /// Per-second rates over the last 10 s.
    pub last_10s: Rates,
    /// Per-second rates over the last minute.
    pub last_1m: Rates,
    /// Counts since the server started.
    pub totals: PolicyTotals,
    /// Rates in each second of the last minute, oldest first.
    pub per_second: Vec<Rates>,
    /// The keys denied most since the server started, most first (identifiers the store would
    /// hash are shown hashed).
    pub top_limited_keys: Vec<TopKey>,
}

/// The store's figures.
#[derive(Debug, Serialize)]
pub struct StoreReport {
    /// `memory` or `redis`.
    pub kind: &'static str,
    /// Whether the store answers (`GET /ready` is 200).
    pub ready: bool,
    /// The circuit breaker's state, `null` for a store without one.
    pub breaker: Option<&'static str>,
    /// Whether decisions are being made without the shared store: the breaker is not closed,
    /// the store does not answer, or some decision of the last 10 s was degraded.
    pub degraded: bool,
    /// Store call latency over the last 10 s.
    pub latency_10s: Latency,
    /// Store call latency over the last minute.
    pub latency_1m: Latency,
}

/// The top-keys sketch's fixed size.
#[derive(Debug, Serialize)]
pub struct SketchReport {
    /// Keys watched per policy.
    pub capacity: usize,
    /// Bytes per policy, whatever the number of keys seen.
    pub bytes_per_policy: usize,
}

impl Stats {
    /// Stats for the policies named, in index order, starting now with every count at zero.
    pub fn new<'a>(policy_names: impl IntoIterator<Item = &'a str>) -> Stats {
        let policies: Box<[PolicyStats]> = policy_names
            .into_iter()
            .map(|name| PolicyStats {
                name: name.into(),
                limited: Mutex::new(TopKeys::new()),
            })
            .collect();
        let mut history = History::default();
        history.push(Sample {
            at_ms: 0,
            policies: vec![PolicyTotals::default(); policies.len()].into(),
            latency: [0; metrics::LATENCY_BUCKET_COUNT],
        });
        Stats {
            policies,
            history: Mutex::new(history),
            started: Instant::now(),
        }
    }

    /// A check under policy `index` denied `key` (or would have, in shadow mode).
    pub fn record_limited(&self, index: usize, key: &str) {
        if let Some(policy) = self.policies.get(index) {
            let shown = tollgate_redis::keys::hash_tag(key);
            lock(&policy.limited).observe(&shown);
        }
    }

    /// Take this second's sample of `metrics` (the server calls it once a second).
    pub fn sample(&self, metrics: &Metrics) {
        let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let sample = Sample {
            at_ms,
            policies: metrics.policy_totals().collect(),
            latency: metrics.latency_counts(),
        };
        lock(&self.history).push(sample);
    }

    /// The figures as of the newest sample, with the store as the caller found it.
    pub fn report(&self, store: StoreHealth) -> StatsReport {
        let history = lock(&self.history);
        let newest = history.newest();
        let policies: Vec<PolicyReport> = self
            .policies
            .iter()
            .enumerate()
            .map(|(i, policy)| PolicyReport {
                name: policy.name.to_string(),
                last_10s: history.rates(i, SHORT_WINDOW_S),
                last_1m: history.rates(i, LONG_WINDOW_S),
                totals: newest
                    .and_then(|s| s.policies.get(i).copied())
                    .unwrap_or_default(),
                per_second: history.per_second(i),
                top_limited_keys: lock(&policy.limited).top(TOP_KEYS_REPORTED),
            })
            .collect();
        let bounds = metrics::latency_bounds_ns();
        let degraded = store.breaker.is_some_and(|state| state != "closed")
            || !store.ready
            || policies.iter().any(|p| p.last_10s.degraded > 0.0);
        StatsReport {
            uptime_s: self.started.elapsed().as_secs(),
            sampled_at_ms: newest.map_or(0, |s| s.at_ms),
            windows_s: [SHORT_WINDOW_S, LONG_WINDOW_S],
            policies,
            store: StoreReport {
                kind: store.kind,
                ready: store.ready,
                breaker: store.breaker,
                degraded,
                latency_10s: history.latency(SHORT_WINDOW_S, &bounds),
                latency_1m: history.latency(LONG_WINDOW_S, &bounds),
            },
            top_keys_sketch: SketchReport {
                capacity: top_keys::CAPACITY,
                bytes_per_policy: TopKeys::memory_bytes(),
            },
        }
    }
}

/// A lock whose holder panicked still guards consistent figures (counts only go up).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate::Mode;

    const MEMORY: StoreHealth = StoreHealth {
        kind: "memory",
        ready: true,
        breaker: None,
    };

    #[test]
    fn reports_totals_rates_and_limited_keys_per_policy() {
        let metrics = Metrics::new(["api", "login"]);
        let stats = Stats::new(["api", "login"]);
        for _ in 0..5 {
            metrics.record_decision(0, Mode::Consume, true, false, false);
        }
        metrics.record_decision(1, Mode::Consume, false, true, false);
        stats.record_limited(1, "mallory");
        stats.record_limited(1, "mallory");
        stats.record_limited(1, "eve");
        stats.record_limited(1, "a{b}");
        stats.record_limited(9, "nobody");
        std::thread::sleep(std::time::Duration::from_millis(5));
        stats.sample(&metrics);

        let report = stats.report(MEMORY);
        let api = &report.policies[0];
        assert_eq!(api.name, "api");
        assert_eq!(api.totals.allowed, 5);
        assert!(api.last_10s.allowed > 0.0);
        assert_eq!(api.per_second.len(), 1);
        assert!(api.top_limited_keys.is_empty());
        let login = &report.policies[1];
        assert_eq!(login.totals.denied, 1);
        let keys: Vec<(&str, u64)> = login
            .top_limited_keys
            .iter()
            .map(|k| (k.key.as_str(), k.count))
            .collect();
        assert_eq!(keys[0], ("mallory", 2));
        assert!(keys.contains(&("eve", 1)));
        // Shown as the store keys it: hashed.
        assert!(keys.iter().any(|(k, _)| k.starts_with("h:")), "{keys:?}");
        assert!(
            report.store.degraded,
            "a degraded decision in the last 10 s"
        );
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["policies"][1]["last_10s"]["shadow_denied"], 0.0);
        assert_eq!(json["store"]["breaker"], serde_json::Value::Null);
    }

    #[test]
    fn a_fresh_server_reports_zeros_not_errors() {
        let stats = Stats::new(["api"]);
        let report = stats.report(StoreHealth {
            kind: "redis",
            ready: false,
            breaker: Some("open"),
        });
        assert_eq!(report.policies[0].last_10s, Rates::default());
        assert_eq!(report.store.latency_10s.p50_ms, None);
        assert!(report.store.degraded);
    }
}
