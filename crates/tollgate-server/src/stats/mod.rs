//! Live stats: what the server is deciding right now, for `GET /v1/stats` and the dashboard.
//!
//! - Rates per policy over the last 10 s and minute, and a per-second series for a chart, come
//!   from the metrics' counters, sampled once a second ([`history`]): the decision path pays
//!   nothing for them.
//! - The most limited keys per policy come from a fixed-size sketch ([`top_keys`]) that the
//!   decision path feeds with each denied key ([`LimitedKeys::observe`]); allowed decisions
//!   never touch it. Each policy's sketch sits beside it in the live policy table, so a reload
//!   keeps those of the policies it keeps.
//! - Store latency percentiles come from the metrics' latency histogram, sampled likewise.

pub mod history;
pub mod top_keys;

use std::collections::BTreeMap;
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
    history: Mutex<History>,
    started: Instant,
}

/// One policy's most limited keys.
#[derive(Debug, Default)]
pub struct LimitedKeys(Mutex<TopKeys>);

impl LimitedKeys {
    /// A check denied `key` (or would have, in shadow mode).
    pub fn observe(&self, key: &str) {
        let shown = tollgate_redis::keys::hash_tag(key);
        lock(&self.0).observe(&shown);
    }

    /// The `n` keys denied most, most first.
    pub fn top(&self, n: usize) -> Vec<TopKey> {
        lock(&self.0).top(n)
    }
}

/// A live policy as the stats see it: its name, its counters and its limited keys.
#[derive(Debug, Clone, Copy)]
pub struct PolicyView<'a> {
    /// The policy's name.
    pub name: &'a str,
    /// Its counts so far.
    pub totals: PolicyTotals,
    /// Its most limited keys.
    pub limited: &'a LimitedKeys,
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
    /// Stats starting now with every count at zero.
    pub fn new() -> Stats {
        let mut history = History::default();
        // Policies missing from a sample count from zero.
        history.push(Sample {
            at_ms: 0,
            policies: BTreeMap::new(),
            latency: [0; metrics::LATENCY_BUCKET_COUNT],
        });
        Stats {
            history: Mutex::new(history),
            started: Instant::now(),
        }
    }

    /// Take this second's sample of `metrics` and the live `policies` (the server calls it once
    /// a second).
    pub fn sample<'a>(&self, metrics: &Metrics, policies: impl Iterator<Item = PolicyView<'a>>) {
        let at_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let sample = Sample {
            at_ms,
            policies: policies.map(|p| (p.name.into(), p.totals)).collect(),
            latency: metrics.latency_counts(),
        };
        lock(&self.history).push(sample);
    }

    /// The figures of the live `policies` as of the newest sample, with the store as the
    /// caller found it.
    pub fn report<'a>(
        &self,
        store: StoreHealth,
        policies: impl Iterator<Item = PolicyView<'a>>,
    ) -> StatsReport {
        let history = lock(&self.history);
        let newest = history.newest();
        let policies: Vec<PolicyReport> = policies
            .map(|policy| PolicyReport {
                name: policy.name.to_owned(),
                last_10s: history.rates(policy.name, SHORT_WINDOW_S),
                last_1m: history.rates(policy.name, LONG_WINDOW_S),
                totals: newest
                    .and_then(|s| s.policies.get(policy.name).copied())
                    .unwrap_or_default(),
                per_second: history.per_second(policy.name),
                top_limited_keys: policy.limited.top(TOP_KEYS_REPORTED),
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

impl Default for Stats {
    fn default() -> Self {
        Stats::new()
    }
}

/// A lock whose holder panicked still guards consistent figures (counts only go up).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::PolicyCounters;
    use tollgate::Mode;

    const MEMORY: StoreHealth = StoreHealth {
        kind: "memory",
        ready: true,
        breaker: None,
    };

    #[test]
    fn reports_totals_rates_and_limited_keys_per_policy() {
        let metrics = Metrics::new();
        let stats = Stats::new();
        let counters = [PolicyCounters::default(), PolicyCounters::default()];
        let limited = [LimitedKeys::default(), LimitedKeys::default()];
        let views = || {
            ["api", "login"]
                .into_iter()
                .zip(&counters)
                .zip(&limited)
                .map(|((name, counters), limited)| PolicyView {
                    name,
                    totals: counters.totals(),
                    limited,
                })
        };
        for _ in 0..5 {
            counters[0].record(Mode::Consume, true, false, false);
        }
        counters[1].record(Mode::Consume, false, true, false);
        limited[1].observe("mallory");
        limited[1].observe("mallory");
        limited[1].observe("eve");
        limited[1].observe("a{b}");
        std::thread::sleep(std::time::Duration::from_millis(5));
        stats.sample(&metrics, views());

        let report = stats.report(MEMORY, views());
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
        let stats = Stats::new();
        let limited = LimitedKeys::default();
        let api = PolicyView {
            name: "api",
            totals: PolicyTotals::default(),
            limited: &limited,
        };
        let report = stats.report(
            StoreHealth {
                kind: "redis",
                ready: false,
                breaker: Some("open"),
            },
            std::iter::once(api),
        );
        assert_eq!(report.policies[0].last_10s, Rates::default());
        assert_eq!(report.store.latency_10s.p50_ms, None);
        assert!(report.store.degraded);
    }
}
