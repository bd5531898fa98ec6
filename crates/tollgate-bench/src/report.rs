//! The numbers a run produces, as a table or one JSON line.

use std::fmt;
use std::time::Duration;

/// Result of a benchmark run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Always `tollgate` (joins the peers harness table).
    pub bench: &'static str,
    /// What was measured (target, algorithm, allow/reject…).
    pub variant: String,
    /// Decisions per second over the timed phase.
    pub rps: f64,
    /// Latency percentiles per decision, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Timed decisions.
    pub decisions: u64,
    /// Allowed.
    pub allowed: u64,
    /// Rejected.
    pub rejected: u64,
    /// Degraded (decided without the shared store).
    pub degraded: u64,
    /// Errors (no decision).
    pub errors: u64,
    /// Fraction rejected.
    pub rejected_frac: f64,
    /// Requests in flight.
    pub concurrency: usize,
    /// Wall time of the timed phase, seconds.
    pub elapsed_s: f64,
    /// Redis commands per decision (Redis targets: from INFO commandstats before and after).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_calls_per_decision: Option<f64>,
    /// Redis server CPU µs per call of the decision script (INFO commandstats usec_per_call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_usec_per_call: Option<f64>,
    /// First error seen, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Report {
    /// The report as one JSON line.
    pub fn json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Wall time of the timed phase.
    pub fn elapsed(&self) -> Duration {
        Duration::from_secs_f64(self.elapsed_s)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "target       {}", self.variant)?;
        writeln!(
            f,
            "decisions/s  {:.0}   ({} decisions in {:.2} s, {} in flight)",
            self.rps, self.decisions, self.elapsed_s, self.concurrency
        )?;
        writeln!(
            f,
            "latency ms   p50 {:.3}   p90 {:.3}   p99 {:.3}   p99.9 {:.3}",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms
        )?;
        writeln!(
            f,
            "outcomes     allowed {}   rejected {}   degraded {}   errors {}",
            self.allowed, self.rejected, self.degraded, self.errors
        )?;
        if let Some(calls) = self.redis_calls_per_decision {
            writeln!(f, "redis        {calls:.3} commands/decision")?;
        }
        match (self.redis_usec_per_call, self.redis_calls_per_decision) {
            // Calls of a standalone store carry several decisions each under load.
            (Some(usec), Some(calls)) => writeln!(
                f,
                "redis cpu    {usec:.2} µs/script call, {:.2} µs/decision",
                usec * calls
            )?,
            (Some(usec), None) => writeln!(f, "redis cpu    {usec:.2} µs/script call")?,
            _ => {}
        }
        if let Some(e) = &self.first_error {
            writeln!(f, "first error  {e}")?;
        }
        Ok(())
    }
}
