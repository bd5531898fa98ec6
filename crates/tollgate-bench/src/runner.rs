//! The load loop: `concurrency` tasks, each keeping one request in flight, over a fixed key
//! sequence; per-task histograms merged at the end.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::report::Report;
use crate::target::Target;
use crate::workload::Workload;

/// Request numbers a task claims at once.
const CLAIM: u64 = 16;

/// Redis counters read before and after the timed phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisCounters {
    /// Commands the store sent (round trips), not counting those a script runs inside.
    pub calls: u64,
    /// Calls of the decision script (`evalsha` + `eval`).
    pub script_calls: u64,
    /// Server CPU µs spent in those calls.
    pub script_usec: u64,
}

impl RedisCounters {
    /// The commands the store sends from the client (`evalsha`, `eval`, `script|load`): Redis also
    /// counts the commands a script runs inside (`GET`, `SET`, `TIME`…), which are not round trips.
    pub fn from_commandstats(info: &str) -> RedisCounters {
        let mut counters = RedisCounters::default();
        for line in info.lines() {
            let Some((name, fields)) = line
                .trim()
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            match name {
                "evalsha" | "eval" => {
                    counters.calls += field("calls");
                    counters.script_calls += field("calls");
                    counters.script_usec += field("usec");
                }
                "script|load" => counters.calls += field("calls"),
                _ => {}
            }
        }
        counters
    }
}

/// Reads [`RedisCounters`] (a Redis target provides one; others pass `None`).
pub type CommandCounter =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Option<RedisCounters>> + Send>> + Send + Sync>;

/// A [`CommandCounter`] reading `INFO commandstats` of the Redis `client` points at (a
/// standalone server: on a Cluster, INFO answers for one node only).
pub fn redis_command_counter(client: redis::Client) -> CommandCounter {
    Arc::new(move || {
        let client = client.clone();
        Box::pin(async move {
            let mut connection = client.get_multiplexed_async_connection().await.ok()?;
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut connection)
                .await
                .ok()?;
            Some(RedisCounters::from_commandstats(&info))
        })
    })
}

/// Per-task tallies.
struct Tally {
    latency_ns: Histogram<u64>,
    allowed: u64,
    rejected: u64,
    degraded: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            // 1 ns .. 60 s, 3 significant figures.
            latency_ns: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
            allowed: 0,
            rejected: 0,
            degraded: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency_ns.add(&other.latency_ns);
        self.allowed += other.allowed;
        self.rejected += other.rejected;
        self.degraded += other.degraded;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Run `workload` against `target`. `variant` labels the report; `progress` draws a live bar on
/// stderr; `counter` reads Redis counters around the timed phase.
pub async fn run<T: Target>(
    target: Arc<T>,
    workload: &Workload,
    variant: String,
    progress: bool,
    counter: Option<CommandCounter>,
) -> Report {
    let keys: Arc<Vec<String>> = Arc::new(workload.key_names());
    let sequence: Arc<Vec<u32>> = Arc::new(workload.sequence(1 << 20));
    let concurrency = workload.concurrency.max(1);

    if workload.exhaust_first {
        exhaust(&target, &keys, workload.cost, concurrency).await;
    }

    let before = match &counter {
        Some(read) => read().await,
        None => None,
    };
    let next = Arc::new(AtomicU64::new(0));
    let bar = progress.then(|| {
        let bar = ProgressBar::new(workload.requests);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    });
    let ticker = bar.clone().map(|bar| {
        let next = next.clone();
        let requests = workload.requests;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                // Claimed, not yet decided: close enough for a progress bar.
                bar.set_position(next.load(Ordering::Relaxed).min(requests));
            }
        })
    });

    let started = Instant::now();
    let deadline = workload.duration.map(|d| started + d);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (target, keys, sequence, next) =
            (target.clone(), keys.clone(), sequence.clone(), next.clone());
        let (requests, cost) = (workload.requests, workload.cost);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new();
            // Request numbers are claimed CLAIM at a time: one shared counter bumped per
            // decision would bounce between cores and cap a fast target (the over-limit cache)
            // at the harness's speed.
            let (mut i, mut claimed_end) = (0, 0);
            loop {
                if i == claimed_end {
                    i = next.fetch_add(CLAIM, Ordering::Relaxed);
                    claimed_end = i + CLAIM;
                }
                if i >= requests || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let this = i;
                i += 1;
                let key = &keys[sequence[(this as usize) % sequence.len()] as usize];
                let t0 = Instant::now();
                let outcome = target.decide(key, cost).await;
                let ns = (t0.elapsed().as_nanos() as u64).max(1);
                let _ = tally.latency_ns.record(ns);
                match outcome {
                    Ok(o) => {
                        if o.allowed {
                            tally.allowed += 1;
                        } else {
                            tally.rejected += 1;
                        }
                        tally.degraded += u64::from(o.degraded);
                    }
                    Err(e) => {
                        tally.errors += 1;
                        if tally.first_error.is_none() {
                            tally.first_error = Some(e.to_string());
                        }
                    }
                }
            }
            tally
        }));
    }
    let mut total = Tally::new();
    for task in tasks {
        match task.await {
            Ok(t) => total.merge(t),
            Err(e) => {
                total.errors += 1;
                total
                    .first_error
                    .get_or_insert_with(|| format!("task failed: {e}"));
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let after = match &counter {
        Some(read) => read().await,
        None => None,
    };

    let decisions = total.allowed + total.rejected + total.errors;
    let redis = before.zip(after).filter(|_| decisions > 0);
    let q = |p: f64| total.latency_ns.value_at_quantile(p) as f64 / 1e6;
    Report {
        bench: "tollgate",
        variant,
        rps: decisions as f64 / elapsed.as_secs_f64().max(1e-9),
        p50_ms: q(0.50),
        p90_ms: q(0.90),
        p99_ms: q(0.99),
        p999_ms: q(0.999),
        decisions,
        allowed: total.allowed,
        rejected: total.rejected,
        degraded: total.degraded,
        errors: total.errors,
        rejected_frac: total.rejected as f64 / decisions.max(1) as f64,
        concurrency,
        elapsed_s: elapsed.as_secs_f64(),
        redis_calls_per_decision: redis
            .map(|(b, a)| a.calls.saturating_sub(b.calls) as f64 / decisions as f64),
        redis_usec_per_call: redis.and_then(|(b, a)| {
            let calls = a.script_calls.saturating_sub(b.script_calls);
            (calls > 0).then(|| a.script_usec.saturating_sub(b.script_usec) as f64 / calls as f64)
        }),
        first_error: total.first_error,
    }
}

/// Send requests to every key until it is rejected (at most 100,000 per key).
async fn exhaust<T: Target>(
    target: &Arc<T>,
    keys: &Arc<Vec<String>>,
    cost: u64,
    concurrency: usize,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (target, keys, next) = (target.clone(), keys.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(key) = keys.get(i) else { break };
                for _ in 0..100_000 {
                    match target.decide(key, cost).await {
                        Ok(o) if o.allowed => {}
                        _ => break,
                    }
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_round_trips_are_counted() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=150,usec_per_call=15.00,rejected_calls=0,failed_calls=0\r\ncmdstat_get:calls=10,usec=5\r\ncmdstat_script|load:calls=1,usec=30\r\ncmdstat_info:calls=2,usec=40,usec_per_call=20.00\r\n";
        let c = RedisCounters::from_commandstats(info);
        assert_eq!((c.calls, c.script_calls, c.script_usec), (11, 10, 150));
    }
}
