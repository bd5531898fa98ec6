//! The last minute of the server's counters, one sample a second, and the rates and latency
//! percentiles read from it.
//!
//! Nothing here is on the decision path: the counters are the metrics' own (already kept per
//! thread), and a sampler copies their totals once a second. A rate over the last `n` seconds
//! is the difference between the newest sample and the one `n` samples before it, divided by
//! the time between them.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::metrics::{LatencyCounts, PolicyTotals};

/// Samples kept: one a second for a minute, plus the one the minute starts from.
pub const KEPT_SAMPLES: usize = 61;

/// The counters at one moment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Milliseconds since the stats started.
    pub at_ms: u64,
    /// Each policy's totals, by name: the policies live when the sample was taken (a reload
    /// may add or remove some between two samples; one missing from an older sample had not
    /// counted anything yet).
    pub policies: BTreeMap<Box<str>, PolicyTotals>,
    /// The store latency histogram's counts.
    pub latency: LatencyCounts,
}

/// Per-second rates of one policy's outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Checks allowed per second.
    pub allowed: f64,
    /// Checks denied per second.
    pub denied: f64,
    /// Decisions made without the store per second.
    pub degraded: f64,
    /// Checks a shadow-mode policy would have denied, per second.
    pub shadow_denied: f64,
}

impl Rates {
    /// The rates between two samples of the same totals taken `seconds` apart.
    fn between(older: &PolicyTotals, newer: &PolicyTotals, seconds: f64) -> Rates {
        let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / seconds;
        Rates {
            allowed: rate(older.allowed, newer.allowed),
            denied: rate(older.denied, newer.denied),
            degraded: rate(older.degraded, newer.degraded),
            shadow_denied: rate(older.shadow_denied, newer.shadow_denied),
        }
    }
}

/// Store latency over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Store calls in the window.
    pub calls: u64,
    /// Median, in milliseconds (`None` without calls).
    pub p50_ms: Option<f64>,
    /// 99th percentile, in milliseconds (`None` without calls).
    pub p99_ms: Option<f64>,
}

/// The samples of the last minute, oldest first.
#[derive(Debug, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Add the newest sample, dropping the oldest beyond [`KEPT_SAMPLES`].
    pub fn push(&mut self, sample: Sample) {
        if self.samples.len() == KEPT_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The newest sample.
    pub fn newest(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// The newest sample and the one `seconds` samples before it (or the oldest there is), if
    /// they are distinct, with the seconds between them.
    fn window(&self, seconds: usize) -> Option<(&Sample, &Sample, f64)> {
        let newest = self.samples.back()?;
        let older = self
            .samples
            .get(self.samples.len().saturating_sub(seconds + 1))?;
        let elapsed = newest.at_ms.checked_sub(older.at_ms)?;
        (elapsed > 0).then(|| (older, newest, elapsed as f64 / 1000.0))
    }

    /// Policy `name`'s rates over the last `seconds` samples (zero before there are two).
    pub fn rates(&self, name: &str, seconds: usize) -> Rates {
        self.window(seconds)
            .and_then(|(older, newer, elapsed)| between(name, older, newer, elapsed))
            .unwrap_or_default()
    }

    /// Policy `name`'s rates in each interval between samples, oldest first.
    pub fn per_second(&self, name: &str) -> Vec<Rates> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .filter_map(|(older, newer)| {
                let elapsed = newer.at_ms.checked_sub(older.at_ms).filter(|&ms| ms > 0)?;
                between(name, older, newer, elapsed as f64 / 1000.0)
            })
            .collect()
    }

    /// Store latency percentiles over the last `seconds` samples, from histogram buckets
    /// bounded by `bounds_ns`.
    pub fn latency(&self, seconds: usize, bounds_ns: &[u64]) -> Latency {
        let Some((older, newer, _)) = self.window(seconds) else {
            return Latency::default();
        };
        let counts: Vec<u64> = newer
            .latency
            .iter()
            .zip(&older.latency)
            .map(|(n, o)| n.saturating_sub(*o))
            .collect();
        let to_ms = |ns: f64| ns / 1e6;
        Latency {
            calls: counts.iter().sum(),
            p50_ms: quantile(&counts, bounds_ns, 0.50).map(to_ms),
            p99_ms: quantile(&counts, bounds_ns, 0.99).map(to_ms),
        }
    }
}

/// Policy `name`'s rates between two samples `seconds` apart: none unless `newer` has the
/// policy; counted from zero when `older` does not (the policy came with a reload since).
fn between(name: &str, older: &Sample, newer: &Sample, seconds: f64) -> Option<Rates> {
    let newer = newer.policies.get(name)?;
    let older = older.policies.get(name).copied().unwrap_or_default();
    Some(Rates::between(&older, newer, seconds))
}

/// The `q` quantile of observations counted in buckets (`counts[i]` observations at most
/// `bounds[i]`, the last count above every bound), interpolated linearly inside its bucket as
/// Prometheus's `histogram_quantile` does, so the dashboard and a Grafana panel on
/// `/metrics` agree. A quantile in the open last bucket is reported as the highest bound.
pub fn quantile(counts: &[u64], bounds: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().map(|&b| b as f64);
            };
            let lower = if i == 0 { 0 } else { bounds[i - 1] };
            let within = (rank - below as f64) / count as f64;
            return Some(lower as f64 + (upper - lower) as f64 * within);
        }
        below += count;
    }
    bounds.last().map(|&b| b as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(allowed: u64, denied: u64) -> PolicyTotals {
        PolicyTotals {
            allowed,
            denied,
            ..PolicyTotals::default()
        }
    }

    fn sample(at_ms: u64, allowed: u64, denied: u64) -> Sample {
        Sample {
            at_ms,
            policies: BTreeMap::from([("api".into(), totals(allowed, denied))]),
            latency: [0; crate::metrics::LATENCY_BUCKET_COUNT],
        }
    }

    #[test]
    fn rates_over_ten_seconds_and_a_minute_from_one_sample_a_second() {
        let mut history = History::default();
        assert_eq!(history.rates("api", 10), Rates::default());
        // 100 allowed a second for the first 30 s, then 10 denied a second.
        for s in 0..=90u64 {
            let allowed = 100 * s.min(30);
            let denied = 10 * s.saturating_sub(30);
            history.push(sample(s * 1000, allowed, denied));
        }
        assert_eq!(history.samples.len(), KEPT_SAMPLES);
        let last_10 = history.rates("api", 10);
        assert_eq!((last_10.allowed, last_10.denied), (0.0, 10.0));
        let last_minute = history.rates("api", 60);
        assert_eq!((last_minute.allowed, last_minute.denied), (0.0, 10.0));
        let series = history.per_second("api");
        assert_eq!(series.len(), 60);
        assert!(series.iter().all(|r| r.denied == 10.0));
        // An unknown policy has no rates rather than a panic.
        assert_eq!(history.rates("nope", 10), Rates::default());
    }

    #[test]
    fn a_short_history_divides_by_the_time_it_covers() {
        let mut history = History::default();
        history.push(sample(0, 0, 0));
        history.push(sample(2000, 50, 4));
        let rates = history.rates("api", 10);
        assert_eq!((rates.allowed, rates.denied), (25.0, 2.0));
    }

    /// A policy a reload added counts from zero in the samples before it; one it removed has
    /// no rates.
    #[test]
    fn policies_come_and_go_between_samples() {
        let mut history = History::default();
        history.push(sample(0, 10, 0));
        let mut later = sample(1000, 20, 0);
        later.policies.insert("new".into(), totals(5, 1));
        later.policies.remove("api");
        history.push(later);
        let new = history.rates("new", 10);
        assert_eq!((new.allowed, new.denied), (5.0, 1.0));
        assert_eq!(history.rates("api", 10), Rates::default());
        assert!(history.per_second("api").is_empty());
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        let bounds = [10, 20, 40];
        // 50 observations at most 10, 50 in (10, 20].
        assert_eq!(quantile(&[50, 50, 0, 0], &bounds, 0.5), Some(10.0));
        assert_eq!(quantile(&[50, 50, 0, 0], &bounds, 0.75), Some(15.0));
        let p99 = quantile(&[0, 0, 100, 0], &bounds, 0.99).unwrap();
        assert!((p99 - 39.8).abs() < 1e-9, "{p99}");
        // Above the highest bound: the highest bound.
        assert_eq!(quantile(&[0, 0, 0, 5], &bounds, 0.5), Some(40.0));
        assert_eq!(quantile(&[0, 0, 0, 0], &bounds, 0.5), None);
    }
}
