//! Prometheus metrics, rendered as text on `GET /metrics`.
//!
//! Each policy's counters ([`PolicyCounters`]) sit beside it in the live policy table
//! ([`crate::service::LivePolicies`]), so every series of a configured policy exists from the
//! moment it is (at zero), a reload keeps the counts of the policies it keeps, and recording a
//! decision is a couple of relaxed atomic adds to this thread's cells
//! ([`tollgate::counter::Counter`]): no label lookup, no lock, no shared cache line.

use std::fmt::Write as _;
use std::time::Duration;

use tollgate::counter::Counter;
use tollgate::{Mode, StoreError};

/// The error codes of the HTTP API, as they appear in `{"error":{"code":...}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: malformed JSON, bad field, bad cost or key.
    InvalidRequest,
    /// 404: no policy by that name.
    UnknownPolicy,
    /// 401: reset without a bearer token.
    Unauthorized,
    /// 403: reset with a wrong bearer token.
    Forbidden,
    /// 404: no such path.
    NotFound,
    /// 405: the path exists, the method does not.
    MethodNotAllowed,
    /// 413: body over 64 KiB.
    BodyTooLarge,
    /// 415: a body that is not JSON.
    UnsupportedMediaType,
    /// 408: the body did not arrive within [`crate::http::body::BODY_TIMEOUT`].
    RequestTimeout,
    /// 503: the store cannot be reached for an operation without a fallback (reset).
    StoreUnavailable,
    /// 500: a bug (a handler panicked); never caused by input on purpose.
    Internal,
}

impl ErrorCode {
    /// Every code, in a fixed order (the metric index).
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::InvalidRequest,
        ErrorCode::UnknownPolicy,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::BodyTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RequestTimeout,
        ErrorCode::StoreUnavailable,
        ErrorCode::Internal,
    ];

    /// The code as written in responses and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnknownPolicy => "unknown_policy",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Store failures by kind (`StoreError::KINDS`), the label of `tollgate_store_errors_total`.
pub type StoreFailures = [u64; StoreError::KINDS.len()];

/// Upper bounds of the latency histogram buckets, in nanoseconds, with their `le` labels.
/// From 1 µs (a memory store decision) to 1 s (a store timing out).
const LATENCY_BUCKETS: [(u64, &str); 18] = [
    (1_000, "0.000001"),
    (2_500, "0.0000025"),
    (5_000, "0.000005"),
    (10_000, "0.00001"),
    (25_000, "0.000025"),
    (50_000, "0.00005"),
    (100_000, "0.0001"),
    (250_000, "0.00025"),
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (1_000_000_000, "1"),
];

/// Upper bounds of the latency histogram's finite buckets, in nanoseconds.
pub fn latency_bounds_ns() -> [u64; LATENCY_BUCKETS.len()] {
    LATENCY_BUCKETS.map(|(bound, _)| bound)
}

/// Counters of one policy.
#[derive(Debug, Default)]
pub struct PolicyCounters {
    allowed: Counter,
    rejected: Counter,
    peek_allowed: Counter,
    peek_rejected: Counter,
    /// Checks a shadow-mode policy would have rejected (let through).
    shadow_denied: Counter,
    /// Peeks a shadow-mode policy answered allowed but would have rejected.
    peek_shadow_denied: Counter,
    degraded: Counter,
}

/// One policy's checks so far, by outcome (what live stats take their rates from).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PolicyTotals {
    /// Checks allowed.
    pub allowed: u64,
    /// Checks denied.
    pub denied: u64,
    /// Decisions made without the store (checks and peeks).
    pub degraded: u64,
    /// Checks a shadow-mode policy would have denied.
    pub shadow_denied: u64,
}

/// Buckets of the store latency histogram, `+Inf` included.
pub const LATENCY_BUCKET_COUNT: usize = LATENCY_BUCKETS.len() + 1;

/// Per-bucket (not cumulative) counts of the store latency histogram; the last one is `+Inf`.
pub type LatencyCounts = [u64; LATENCY_BUCKET_COUNT];

/// A fixed-bucket histogram on per-thread counters (one shared atomic per request would bounce
/// between the server's worker threads).
#[derive(Debug, Default)]
struct Histogram {
    /// Per-bucket (not cumulative) counts; the last slot is `+Inf`.
    counts: [Counter; LATENCY_BUCKETS.len() + 1],
    sum_ns: Counter,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&(bound, _)| ns <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.counts[bucket].add(1);
        self.sum_ns.add(ns);
    }
}

impl PolicyCounters {
    /// One decision reported under this policy: a check ([`Mode::Consume`]) or a peek. A check
    /// or peek a shadow-mode policy would have rejected counts as `shadow_denied`, not allowed.
    #[inline]
    pub fn record(&self, mode: Mode, allowed: bool, degraded: bool, shadow_denied: bool) {
        let counter = match (mode, allowed) {
            (Mode::Consume, _) if shadow_denied => &self.shadow_denied,
            (Mode::Consume, true) => &self.allowed,
            (Mode::Consume, false) => &self.rejected,
            (Mode::Peek, _) if shadow_denied => &self.peek_shadow_denied,
            (Mode::Peek, true) => &self.peek_allowed,
            (Mode::Peek, false) => &self.peek_rejected,
        };
        counter.add(1);
        if degraded {
            self.degraded.add(1);
        }
    }

    /// The checks so far, by outcome.
    pub fn totals(&self) -> PolicyTotals {
        PolicyTotals {
            allowed: self.allowed.get(),
            denied: self.rejected.get(),
            degraded: self.degraded.get(),
            shadow_denied: self.shadow_denied.get(),
        }
    }
}

/// Every metric the server exports but the per-policy ones, which the live policy table holds.
#[derive(Debug, Default)]
pub struct Metrics {
    errors: [Counter; ErrorCode::ALL.len()],
    /// Failures the limiter saw (the memory store's; a Redis store's resilience layer decides
    /// its own and counts them itself).
    store_errors: [Counter; StoreError::KINDS.len()],
    latency: Histogram,
    /// Reloads of the config file applied (`ok`) and refused (`error`).
    reloads: [Counter; 2],
}

impl Metrics {
    /// Metrics with every count at zero.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// How long one store call took.
    #[inline]
    pub fn record_latency(&self, elapsed: Duration) {
        self.latency.observe(elapsed);
    }

    /// The store latency histogram's counts so far.
    pub fn latency_counts(&self) -> LatencyCounts {
        std::array::from_fn(|i| self.latency.counts[i].get())
    }

    /// A failed store call.
    pub fn record_store_error(&self, error: &StoreError) {
        self.store_errors[error.kind_index()].add(1);
    }

    /// An error response.
    pub fn record_error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|&c| c == code) {
            self.errors[i].add(1);
        }
    }

    /// A reload of the config file: applied (`ok`) or refused, the running config kept.
    pub fn record_reload(&self, ok: bool) {
        self.reloads[usize::from(!ok)].add(1);
    }

    /// Append the Prometheus text exposition of every metric to `out`, with the counters of
    /// `policies` (the live ones, by name) and the store failures counted elsewhere (by the
    /// Redis store's resilience layer).
    pub fn render(
        &self,
        out: &mut String,
        policies: &[(&str, &PolicyCounters)],
        store_failures: &StoreFailures,
    ) {
        let load = Counter::get;

        header(
            out,
            "tollgate_decisions_total",
            "counter",
            "Checks decided, by the policy reported and outcome.",
        );
        for &(name, p) in policies {
            for (outcome, counter) in [
                ("allowed", &p.allowed),
                ("rejected", &p.rejected),
                ("shadow_denied", &p.shadow_denied),
            ] {
                let _ = writeln!(
                    out,
                    "tollgate_decisions_total{{policy=\"{name}\",outcome=\"{outcome}\"}} {}",
                    load(counter)
                );
            }
        }
        header(
            out,
            "tollgate_peeks_total",
            "counter",
            "Peeks answered (nothing consumed), by the policy reported and outcome.",
        );
        for &(name, p) in policies {
            for (outcome, counter) in [
                ("allowed", &p.peek_allowed),
                ("rejected", &p.peek_rejected),
                ("shadow_denied", &p.peek_shadow_denied),
            ] {
                let _ = writeln!(
                    out,
                    "tollgate_peeks_total{{policy=\"{name}\",outcome=\"{outcome}\"}} {}",
                    load(counter)
                );
            }
        }
        header(
            out,
            "tollgate_degraded_decisions_total",
            "counter",
            "Decisions made without the store (on_error applied), by policy.",
        );
        for &(name, p) in policies {
            let _ = writeln!(
                out,
                "tollgate_degraded_decisions_total{{policy=\"{name}\"}} {}",
                load(&p.degraded)
            );
        }
        header(
            out,
            "tollgate_store_errors_total",
            "counter",
            "Store calls that failed, by kind.",
        );
        for ((kind, counter), elsewhere) in StoreError::KINDS
            .iter()
            .zip(&self.store_errors)
            .zip(store_failures)
        {
            let _ = writeln!(
                out,
                "tollgate_store_errors_total{{kind=\"{kind}\"}} {}",
                load(counter) + elsewhere
            );
        }
        header(
            out,
            "tollgate_errors_total",
            "counter",
            "Error responses, by error code.",
        );
        for (code, counter) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                out,
                "tollgate_errors_total{{code=\"{}\"}} {}",
                code.as_str(),
                load(counter)
            );
        }
        header(
            out,
            "tollgate_config_reloads_total",
            "counter",
            "Reloads of the config file (on change or SIGHUP): applied (ok) or refused, the running policies kept (error).",
        );
        for (result, counter) in ["ok", "error"].iter().zip(&self.reloads) {
            let _ = writeln!(
                out,
                "tollgate_config_reloads_total{{result=\"{result}\"}} {}",
                load(counter)
            );
        }
        header(
            out,
            "tollgate_decision_duration_seconds",
            "histogram",
            "Time the store took to decide.",
        );
        let mut cumulative = 0;
        for ((_, le), counter) in LATENCY_BUCKETS.iter().zip(&self.latency.counts) {
            cumulative += load(counter);
            let _ = writeln!(
                out,
                "tollgate_decision_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += load(&self.latency.counts[LATENCY_BUCKETS.len()]);
        let _ = writeln!(
            out,
            "tollgate_decision_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = load(&self.latency.sum_ns) as f64 / 1e9;
        let _ = writeln!(out, "tollgate_decision_duration_seconds_sum {sum}");
        let _ = writeln!(out, "tollgate_decision_duration_seconds_count {cumulative}");
    }
}

/// Append the `# HELP` and `# TYPE` lines of a metric.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Append one gauge with its header.
pub fn gauge(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_from_the_start() {
        let m = Metrics::new();
        let (api, login) = (PolicyCounters::default(), PolicyCounters::default());
        api.record(Mode::Consume, true, false, false);
        login.record(Mode::Consume, false, true, false);
        login.record(Mode::Consume, true, false, true);
        m.record_latency(Duration::from_micros(3));
        m.record_latency(Duration::from_secs(5));
        m.record_error(ErrorCode::BodyTooLarge);
        m.record_reload(false);
        let mut out = String::new();
        m.render(&mut out, &[("api", &api), ("login", &login)], &[0; 6]);
        for line in [
            "tollgate_decisions_total{policy=\"api\",outcome=\"allowed\"} 1",
            "tollgate_decisions_total{policy=\"api\",outcome=\"rejected\"} 0",
            "tollgate_decisions_total{policy=\"login\",outcome=\"rejected\"} 1",
            "tollgate_decisions_total{policy=\"login\",outcome=\"shadow_denied\"} 1",
            "tollgate_decisions_total{policy=\"api\",outcome=\"shadow_denied\"} 0",
            "tollgate_degraded_decisions_total{policy=\"login\"} 1",
            "tollgate_errors_total{code=\"body_too_large\"} 1",
            "tollgate_decision_duration_seconds_bucket{le=\"0.000005\"} 1",
            "tollgate_decision_duration_seconds_bucket{le=\"1\"} 1",
            "tollgate_decision_duration_seconds_bucket{le=\"+Inf\"} 2",
            "tollgate_decision_duration_seconds_count 2",
            "tollgate_config_reloads_total{result=\"ok\"} 0",
            "tollgate_config_reloads_total{result=\"error\"} 1",
        ] {
            assert!(out.lines().any(|l| l == line), "missing {line}\n{out}");
        }
    }
}
