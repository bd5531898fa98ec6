//! Policies: what a limit is (algorithm, limit, period, burst) and how it is validated.
//!
//! Every number a policy produces stays below 2^53 so that the Redis Lua scripts, whose numbers
//! are doubles, compute exactly what the Rust transitions compute.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::error::PolicyError;

/// Largest integer a Lua (double) number holds exactly: every intermediate value stays below it.
pub const MAX_EXACT: u64 = 1 << 53;

/// Largest `limit` of a sliding-log policy: its log keeps one entry per distinct instant, up to
/// the limit, and a rejection may walk it, so the limit bounds memory and work per key.
pub const MAX_SLIDING_LOG_LIMIT: u64 = 100_000;

/// Largest `limit` of a concurrency policy: Redis keeps one sorted-set member per leased unit,
/// so the limit bounds memory per key.
pub const MAX_CONCURRENCY_LIMIT: u64 = 100_000;

/// How long a lease lasts when the policy does not say (`lease`): a holder that crashed gives
/// its units back after this long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(60);

/// The rate-limit algorithm of a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Count per window aligned to the epoch: `[k·P, (k+1)·P)`.
    FixedWindow,
    /// Exact: the sum of costs in `(now − P, now]`. Memory O(limit) per key.
    SlidingLog,
    /// Two-counter approximation: `prev · (1 − elapsed/P) + curr`.
    SlidingWindow,
    /// Capacity `burst`, refilled continuously at `limit / period`.
    TokenBucket,
    /// Generic cell rate algorithm (leaky bucket as a meter): same decisions as the token bucket,
    /// one timestamp of state.
    Gcra,
    /// At most `limit` units leased at once; a lease not released expires after `lease` (the
    /// policy's period). Decided by [`crate::Limiter::acquire`], not by checks.
    Concurrency,
}

impl Algorithm {
    /// Every rate algorithm (all but [`Algorithm::Concurrency`]), in documentation order.
    pub const ALL: [Algorithm; 5] = [
        Algorithm::FixedWindow,
        Algorithm::SlidingLog,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
        Algorithm::Gcra,
    ];

    /// Every algorithm a policy can name: the rate algorithms, then `concurrency`.
    pub const EVERY: [Algorithm; 6] = [
        Algorithm::FixedWindow,
        Algorithm::SlidingLog,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
        Algorithm::Gcra,
        Algorithm::Concurrency,
    ];

    /// A second name of [`Algorithm::Gcra`] (GCRA is the leaky bucket as a meter).
    pub const GCRA_ALIAS: &'static str = "leaky-bucket";

    /// The names [`FromStr`] accepts, for error messages: `fixed-window, ..., gcra,
    /// leaky-bucket or concurrency`.
    pub fn accepted_names() -> String {
        let mut names: Vec<&str> = Vec::with_capacity(Algorithm::EVERY.len() + 1);
        for algorithm in Algorithm::EVERY {
            names.push(algorithm.name());
            if algorithm == Algorithm::Gcra {
                names.push(Algorithm::GCRA_ALIAS);
            }
        }
        let last = names.pop().unwrap_or_default();
        format!("{} or {last}", names.join(", "))
    }

    /// The config name (`fixed-window`, `sliding-log`, `sliding-window`, `token-bucket`, `gcra`,
    /// `concurrency`).
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fixed-window",
            Algorithm::SlidingLog => "sliding-log",
            Algorithm::SlidingWindow => "sliding-window",
            Algorithm::TokenBucket => "token-bucket",
            Algorithm::Gcra => "gcra",
            Algorithm::Concurrency => "concurrency",
        }
    }

    /// Whether requests are leased (acquired, then released) rather than checked.
    pub const fn is_concurrency(self) -> bool {
        matches!(self, Algorithm::Concurrency)
    }

    /// Whether `burst` means something for this algorithm.
    pub const fn has_burst(self) -> bool {
        matches!(self, Algorithm::TokenBucket | Algorithm::Gcra)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == Algorithm::GCRA_ALIAS {
            return Ok(Algorithm::Gcra);
        }
        Algorithm::EVERY
            .into_iter()
            .find(|algorithm| algorithm.name() == s)
            .ok_or_else(|| PolicyError::UnknownAlgorithm(s.to_owned()))
    }
}

/// `N/unit` shorthand for a limit and a period, e.g. `100/min` or `5/15m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests (cost units) per period.
    pub limit: u64,
    /// The period.
    pub period: Duration,
}

impl FromStr for Rate {
    type Err = PolicyError;

    /// Parses `N/unit` where unit is `s|sec|second|m|min|minute|h|hour|d|day` (plural forms too),
    /// optionally with a count (`10/5m`) or any humantime duration (`10/90s`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PolicyError::InvalidRate(s.to_owned());
        let (limit, unit) = s.split_once('/').ok_or_else(bad)?;
        let limit: u64 = limit.trim().parse().map_err(|_| bad())?;
        let unit = unit.trim();
        let period = match unit {
            "s" | "sec" | "second" | "secs" | "seconds" => Duration::from_secs(1),
            "m" | "min" | "minute" | "mins" | "minutes" => Duration::from_secs(60),
            "h" | "hour" | "hours" | "hr" => Duration::from_secs(3600),
            "d" | "day" | "days" => Duration::from_secs(86_400),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        Ok(Rate { limit, period })
    }
}

/// Whether `period` names UTC calendar months (`month`, `months`, `mo`, `1month`, `1 month`,
/// `1mo`): the one spelling rule that periods, rates (`N/month`, `N/1month`) and the override
/// API share.
pub fn is_month_period(period: &str) -> bool {
    matches!(
        period.trim(),
        "month" | "months" | "mo" | "1month" | "1 month" | "1mo"
    )
}

/// `Some(limit)` for `N/month` (`Some(None)` when N is not a number), `None` for other rates.
pub fn monthly_rate(rate: &str) -> Option<Option<u64>> {
    let (limit, unit) = rate.split_once('/')?;
    is_month_period(unit).then(|| limit.trim().parse().ok())
}

/// A validated rate-limit policy. Build one with [`Policy::new`] or [`Policy::builder`].
///
/// ```
/// use tollgate::{Algorithm, Policy};
/// let api = Policy::builder(Algorithm::TokenBucket).rate("100/min").burst(150).build().unwrap();
/// assert_eq!(api.capacity(), 150);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    algorithm: Algorithm,
    limit: u64,
    period_us: u64,
    burst: u64,
    shadow: bool,
    /// Windows are UTC calendar months (`period: month`); `period_us` is then the longest.
    monthly: bool,
}

impl Policy {
    /// A fixed-window policy of `limit` per UTC calendar month (`period: month`): windows start
    /// on the first of each month at 00:00 UTC. Other algorithms refuse it: their arithmetic
    /// needs a period of one length.
    pub fn monthly(algorithm: Algorithm, limit: u64) -> Result<Policy, PolicyError> {
        if algorithm != Algorithm::FixedWindow {
            return Err(PolicyError::MonthNeedsFixedWindow(algorithm));
        }
        let mut policy = Policy::new(
            algorithm,
            limit,
            Duration::from_micros(crate::calendar::LONGEST_MONTH_US),
            None,
        )?;
        policy.monthly = true;
        Ok(policy)
    }

    /// Whether the windows are UTC calendar months ([`Self::monthly`]).
    pub fn is_monthly(&self) -> bool {
        self.monthly
    }

    /// A policy of `limit` per `period`; `burst` (token bucket and GCRA only) defaults to `limit`.
    pub fn new(
        algorithm: Algorithm,
        limit: u64,
        period: Duration,
        burst: Option<u64>,
    ) -> Result<Policy, PolicyError> {
        let period_us =
            u64::try_from(period.as_micros()).map_err(|_| PolicyError::PeriodTooLong)?;
        if limit == 0 {
            return Err(PolicyError::ZeroLimit);
        }
        if period_us == 0 {
            return Err(PolicyError::ZeroPeriod);
        }
        if period_us >= MAX_EXACT / 4 {
            return Err(PolicyError::PeriodTooLong);
        }
        if limit >= MAX_EXACT {
            return Err(PolicyError::LimitTooLarge { limit });
        }
        if algorithm == Algorithm::SlidingLog && limit > MAX_SLIDING_LOG_LIMIT {
            return Err(PolicyError::LogTooLong { limit });
        }
        if algorithm == Algorithm::Concurrency && limit > MAX_CONCURRENCY_LIMIT {
            return Err(PolicyError::TooManyLeases { limit });
        }
        let burst = match burst {
            Some(_) if !algorithm.has_burst() => {
                return Err(PolicyError::BurstNotApplicable(algorithm));
            }
            Some(0) => return Err(PolicyError::ZeroBurst),
            Some(b) => b,
            None => limit,
        };
        let policy = Policy {
            algorithm,
            limit,
            period_us,
            burst,
            shadow: false,
            monthly: false,
        };
        // Sliding window compares `prev·(P − e) + (curr + c)·P` with `L·P`; token bucket and GCRA
        // count in units where one token is P and one microsecond is L. Both need capacity·P exact.
        if matches!(
            algorithm,
            Algorithm::SlidingWindow | Algorithm::TokenBucket | Algorithm::Gcra
        ) {
            let product = u128::from(policy.capacity()) * u128::from(period_us)
                + u128::from(limit) * u128::from(period_us);
            if product >= u128::from(MAX_EXACT) {
                return Err(PolicyError::TooPrecise {
                    algorithm,
                    capacity: policy.capacity(),
                    period_us,
                });
            }
        }
        Ok(policy)
    }

    /// A `concurrency` policy: at most `limit` units leased at once, each lease lasting `lease`
    /// unless renewed or released.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::Policy;
    /// let jobs = Policy::concurrency(20, Duration::from_secs(60)).unwrap();
    /// assert_eq!(jobs.lease(), Duration::from_secs(60));
    /// ```
    pub fn concurrency(limit: u64, lease: Duration) -> Result<Policy, PolicyError> {
        Policy::new(Algorithm::Concurrency, limit, lease, None)
    }

    /// Start building a policy of the given algorithm.
    pub fn builder(algorithm: Algorithm) -> PolicyBuilder {
        PolicyBuilder {
            algorithm,
            limit: None,
            period: None,
            burst: None,
            shadow: false,
            monthly: false,
            rate_error: None,
        }
    }

    /// The same policy in shadow mode (or not): decided and counted as usual, but a request
    /// it would reject is let through and reported as `shadow_denied` (see [`Decision`]).
    ///
    /// [`Decision`]: crate::Decision
    pub fn with_shadow(mut self, shadow: bool) -> Policy {
        self.shadow = shadow;
        self
    }

    /// Whether the policy is in shadow mode: it never rejects, it only reports.
    pub fn shadow(&self) -> bool {
        self.shadow
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Requests (cost units) per period.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The period in microseconds.
    pub fn period_us(&self) -> u64 {
        self.period_us
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_micros(self.period_us)
    }

    /// How long a lease of a `concurrency` policy lasts (its period).
    pub fn lease(&self) -> Duration {
        self.period()
    }

    /// Burst (token bucket and GCRA capacity); equals `limit` for the window algorithms.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// The most a single key can take at once: `burst` for token bucket and GCRA, else `limit`.
    /// This is the `limit` reported in decisions, so `remaining <= limit` always holds.
    pub fn capacity(&self) -> u64 {
        if self.algorithm.has_burst() {
            self.burst
        } else {
            self.limit
        }
    }

    /// Whether [`Self::validate_cost`] accepts `cost`.
    #[inline]
    pub fn admits_cost(&self, cost: u64) -> bool {
        cost != 0 && cost <= self.capacity() && !self.algorithm.is_concurrency()
    }

    /// Check that a check (or peek) of `cost` can ever pass this policy. A `concurrency` policy
    /// takes no checks: its units are acquired and released ([`Self::validate_lease_cost`]).
    pub fn validate_cost(&self, cost: u64) -> Result<(), PolicyError> {
        if self.admits_cost(cost) {
            return Ok(());
        }
        if self.algorithm.is_concurrency() {
            return Err(PolicyError::NeedsLease);
        }
        self.validate_units(cost)
    }

    /// Check that a lease of `cost` units can ever be granted: the policy must be a
    /// `concurrency` one and the cost within its limit.
    pub fn validate_lease_cost(&self, cost: u64) -> Result<(), PolicyError> {
        if !self.algorithm.is_concurrency() {
            return Err(PolicyError::NotConcurrency(self.algorithm));
        }
        self.validate_units(cost)
    }

    /// `1 <= cost <= capacity`.
    fn validate_units(&self, cost: u64) -> Result<(), PolicyError> {
        if cost != 0 && cost <= self.capacity() {
            Ok(())
        } else if cost == 0 {
            Err(PolicyError::ZeroCost)
        } else {
            Err(PolicyError::CostExceedsCapacity {
                cost,
                capacity: self.capacity(),
            })
        }
    }
}

/// Builder for [`Policy`]: `limit` + `period`, or `rate`, and an optional `burst`.
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    algorithm: Algorithm,
    limit: Option<u64>,
    period: Option<Duration>,
    burst: Option<u64>,
    shadow: bool,
    monthly: bool,
    rate_error: Option<PolicyError>,
}

impl PolicyBuilder {
    /// Requests per period.
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The period.
    pub fn period(mut self, period: Duration) -> Self {
        self.period = Some(period);
        self
    }

    /// Windows of one UTC calendar month (fixed-window only): see [`Policy::monthly`].
    pub fn monthly(mut self) -> Self {
        self.monthly = true;
        self
    }

    /// `N/unit` shorthand for limit and period; `N/month` is [`Self::monthly`] with limit N.
    pub fn rate(mut self, rate: &str) -> Self {
        if let Some(limit) = monthly_rate(rate) {
            match limit {
                Some(limit) => {
                    self.limit = Some(limit);
                    self.monthly = true;
                }
                None => self.rate_error = Some(PolicyError::InvalidRate(rate.to_owned())),
            }
            return self;
        }
        match rate.parse::<Rate>() {
            Ok(r) => {
                self.limit = Some(r.limit);
                self.period = Some(r.period);
            }
            Err(e) => self.rate_error = Some(e),
        }
        self
    }

    /// How long a lease lasts (`concurrency` policies: the period). Default [`DEFAULT_LEASE`].
    pub fn lease(self, lease: Duration) -> Self {
        self.period(lease)
    }

    /// Token bucket / GCRA capacity.
    pub fn burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Shadow mode: see [`Policy::with_shadow`].
    pub fn shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// Validate and build.
    pub fn build(self) -> Result<Policy, PolicyError> {
        if let Some(e) = self.rate_error {
            return Err(e);
        }
        let limit = self.limit.ok_or(PolicyError::MissingLimit)?;
        if self.monthly {
            if self.burst.is_some() {
                return Err(PolicyError::BurstNotApplicable(self.algorithm));
            }
            return Ok(Policy::monthly(self.algorithm, limit)?.with_shadow(self.shadow));
        }
        let period = match (self.period, self.algorithm) {
            (Some(period), _) => period,
            (None, Algorithm::Concurrency) => DEFAULT_LEASE,
            (None, _) => return Err(PolicyError::MissingPeriod),
        };
        Ok(Policy::new(self.algorithm, limit, period, self.burst)?.with_shadow(self.shadow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One spelling rule for calendar months, in periods and in rates: `10/1month` is a month
    /// too, not a fixed 30.44 days.
    #[test]
    fn month_spellings() {
        for period in [
            "month", "months", "mo", "1month", "1 month", "1mo", " month ",
        ] {
            assert!(is_month_period(period), "{period}");
            assert_eq!(
                monthly_rate(&format!("10/{period}")),
                Some(Some(10)),
                "{period}"
            );
        }
        for period in ["2month", "30d", "m", "min", "monthly"] {
            assert!(!is_month_period(period), "{period}");
            assert_eq!(monthly_rate(&format!("10/{period}")), None, "{period}");
        }
        assert_eq!(monthly_rate("ten/month"), Some(None));
    }

    #[test]
    fn rates_parse() {
        let r: Rate = "100/min".parse().unwrap();
        assert_eq!((r.limit, r.period), (100, Duration::from_secs(60)));
        let r: Rate = "5/15m".parse().unwrap();
        assert_eq!((r.limit, r.period), (5, Duration::from_secs(900)));
        assert_eq!(
            "7/second".parse::<Rate>().unwrap().period,
            Duration::from_secs(1)
        );
        assert_eq!(
            "7/d".parse::<Rate>().unwrap().period,
            Duration::from_secs(86_400)
        );
        assert!("100".parse::<Rate>().is_err());
        assert!("x/min".parse::<Rate>().is_err());
        assert!("10/fortnight".parse::<Rate>().is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let p = |a, l, s, b| Policy::new(a, l, Duration::from_secs(s), b);
        assert_eq!(
            p(Algorithm::FixedWindow, 0, 1, None),
            Err(PolicyError::ZeroLimit)
        );
        assert_eq!(
            p(Algorithm::FixedWindow, 1, 0, None),
            Err(PolicyError::ZeroPeriod)
        );
        assert_eq!(
            p(Algorithm::Gcra, 1, 1, Some(0)),
            Err(PolicyError::ZeroBurst)
        );
        assert_eq!(
            p(Algorithm::SlidingLog, 1, 1, Some(3)),
            Err(PolicyError::BurstNotApplicable(Algorithm::SlidingLog))
        );
        assert!(matches!(
            p(Algorithm::TokenBucket, 1_000_000_000, 86_400, None),
            Err(PolicyError::TooPrecise { .. })
        ));
        assert_eq!(
            p(Algorithm::SlidingLog, 100_001, 60, None),
            Err(PolicyError::LogTooLong { limit: 100_001 })
        );
        // Fixed window needs no products: a billion a day is fine.
        assert!(p(Algorithm::FixedWindow, 1_000_000_000, 86_400, None).is_ok());
        assert_eq!("leaky-bucket".parse::<Algorithm>(), Ok(Algorithm::Gcra));
        assert!("leaky".parse::<Algorithm>().is_err());
        for algorithm in Algorithm::EVERY {
            assert_eq!(algorithm.name().parse::<Algorithm>(), Ok(algorithm));
        }
        assert_eq!(
            Algorithm::accepted_names(),
            "fixed-window, sliding-log, sliding-window, token-bucket, gcra, leaky-bucket or concurrency"
        );
        assert!(
            "leaky"
                .parse::<Algorithm>()
                .unwrap_err()
                .to_string()
                .ends_with("(expected fixed-window, sliding-log, sliding-window, token-bucket, gcra, leaky-bucket or concurrency)")
        );
        let tb = p(Algorithm::TokenBucket, 10, 1, Some(20)).unwrap();
        assert_eq!(tb.capacity(), 20);
        assert_eq!(tb.validate_cost(0), Err(PolicyError::ZeroCost));
        assert!(tb.validate_cost(20).is_ok());
        assert!(tb.validate_cost(21).is_err());
        assert_eq!(
            tb.validate_lease_cost(1),
            Err(PolicyError::NotConcurrency(Algorithm::TokenBucket))
        );
        let jobs = Policy::builder(Algorithm::Concurrency)
            .limit(4)
            .build()
            .unwrap();
        assert_eq!(jobs.lease(), DEFAULT_LEASE);
        assert_eq!(jobs.validate_cost(1), Err(PolicyError::NeedsLease));
        assert!(jobs.validate_lease_cost(4).is_ok());
        assert_eq!(jobs.validate_lease_cost(0), Err(PolicyError::ZeroCost));
        assert!(jobs.validate_lease_cost(5).is_err());
        assert_eq!(
            Policy::concurrency(100_001, DEFAULT_LEASE),
            Err(PolicyError::TooManyLeases { limit: 100_001 })
        );
    }
}
