//! Typed errors: a bad policy, a failed store, a refused check.

use crate::policy::Algorithm;

/// A policy (or a cost against it) that cannot be enforced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `limit: 0`.
    #[error("limit must be at least 1")]
    ZeroLimit,
    /// `period: 0`.
    #[error("period must be longer than zero")]
    ZeroPeriod,
    /// A period whose microseconds do not stay below 2^51.
    #[error("period is too long (at most about 71 years)")]
    PeriodTooLong,
    /// A limit of 2^53 or more.
    #[error("limit {limit} is too large (must stay below 2^53)")]
    LimitTooLarge {
        /// The limit given.
        limit: u64,
    },
    /// A sliding log longer than [`crate::policy::MAX_SLIDING_LOG_LIMIT`].
    #[error(
        "sliding-log limit {limit} is too large (at most 100000: the log keeps an entry per request instant); use sliding-window for large limits"
    )]
    LogTooLong {
        /// The limit given.
        limit: u64,
    },
    /// A concurrency limit above [`crate::policy::MAX_CONCURRENCY_LIMIT`].
    #[error("concurrency limit {limit} is too large (at most 100000 units leased at once)")]
    TooManyLeases {
        /// The limit given.
        limit: u64,
    },
    /// A check or peek of a `concurrency` policy.
    #[error("a concurrency policy is acquired and released, not checked (use acquire)")]
    NeedsLease,
    /// An override of a `concurrency` policy: its leases are counted against the configured
    /// limit only, so an override would be stored and never obeyed.
    #[error("a concurrency policy takes no per-key overrides (change its limit in the config)")]
    OverrideOfConcurrency,
    /// A lease asked of a rate policy.
    #[error("{0} is a rate algorithm: only concurrency policies grant leases")]
    NotConcurrency(Algorithm),
    /// `burst: 0`.
    #[error("burst must be at least 1")]
    ZeroBurst,
    /// `burst` given for a window algorithm.
    #[error("burst applies only to token-bucket and gcra, not to {0}")]
    BurstNotApplicable(Algorithm),
    /// Neither `limit` nor `rate`.
    #[error("missing limit (give `limit` and `period`, or `rate: N/unit`)")]
    MissingLimit,
    /// Neither `period` nor `rate`.
    #[error("missing period (give `limit` and `period`, or `rate: N/unit`)")]
    MissingPeriod,
    /// An algorithm name that is not known.
    #[error(
        "unknown algorithm `{0}` (expected {names})",
        names = crate::policy::Algorithm::accepted_names()
    )]
    UnknownAlgorithm(String),
    /// A `rate` that is not `N/unit`.
    #[error(
        "invalid rate `{0}` (expected N/unit, unit one of s, min, h, d or a duration like 15m)"
    )]
    InvalidRate(String),
    /// capacity × period (µs) would not stay exact in Redis's doubles.
    #[error(
        "{algorithm} with capacity {capacity} over {period_us} µs is too fine-grained: capacity × period in µs must stay below 2^53; use a shorter period with a proportional limit, or fixed-window"
    )]
    TooPrecise {
        /// The algorithm.
        algorithm: Algorithm,
        /// Its capacity (limit or burst).
        capacity: u64,
        /// Its period in microseconds.
        period_us: u64,
    },
    /// `period: month` on an algorithm other than fixed-window.
    #[error(
        "period: month (calendar months) applies only to fixed-window, not to {0}: use a fixed period such as 30d"
    )]
    MonthNeedsFixedWindow(Algorithm),
    /// An override's `expires_in` of zero.
    #[error("expires_in must be longer than zero (omit it for an override until deleted)")]
    ZeroExpiry,
    /// An override's expiry beyond the bound of a period.
    #[error("expires_in is too long (at most about 71 years)")]
    ExpiryTooLong,
    /// An adjustment of a policy that has none (`concurrency`: release leases instead).
    #[error("{0} policies are not adjusted: release or renew their leases instead")]
    NotAdjustable(Algorithm),
    /// A refund of a sliding log, which records when each unit was admitted.
    #[error(
        "sliding-log takes charges only (delta > 0): it cannot tell which admitted requests a refund would remove"
    )]
    RefundNotSupported,
    /// An adjustment beyond the exact integers of Redis's doubles.
    #[error("delta {delta} is out of range (|delta| must stay below 2^53)")]
    DeltaOutOfRange {
        /// The delta asked for.
        delta: i64,
    },
    /// Cost 0.
    #[error("cost must be at least 1")]
    ZeroCost,
    /// A cost that could never pass.
    #[error("cost {cost} exceeds the policy's capacity {capacity}: it could never be allowed")]
    CostExceedsCapacity {
        /// The cost asked for.
        cost: u64,
        /// The policy's capacity.
        capacity: u64,
    },
}

/// A store that could not decide.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The memory store holds `max_keys` live keys and a new key arrived.
    #[error("memory store is full ({max_keys} live keys)")]
    Full {
        /// The configured bound.
        max_keys: usize,
    },
    /// The store did not answer in time.
    #[error("store call timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The circuit breaker is open: the store is not being called.
    #[error("circuit breaker is open")]
    CircuitOpen,
    /// The backend failed (connection, protocol, script error).
    #[error("store backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store does not implement this operation (a store written before it existed).
    #[error("this store does not support {0}")]
    Unsupported(&'static str),
    /// The backend answered something that is not a decision.
    #[error("store answered an unexpected reply: {0}")]
    Protocol(String),
}

impl StoreError {
    /// The kinds of store failure by name, in [`Self::kind_index`] order: how metrics label
    /// them.
    pub const KINDS: [&'static str; 6] = [
        "full",
        "timeout",
        "circuit_open",
        "backend",
        "protocol",
        "unsupported",
    ];

    /// Where this error's kind is in [`Self::KINDS`].
    pub fn kind_index(&self) -> usize {
        match self {
            StoreError::Full { .. } => 0,
            StoreError::Timeout(_) => 1,
            StoreError::CircuitOpen => 2,
            StoreError::Backend(_) => 3,
            StoreError::Protocol(_) => 4,
            StoreError::Unsupported(_) => 5,
        }
    }
}

/// Why a [`Limiter`](crate::Limiter) call did not produce a decision.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// No policy by that name.
    #[error("unknown policy `{0}`")]
    UnknownPolicy(String),
    /// A check that names one policy twice.
    #[error("policy `{0}` is listed twice")]
    DuplicatePolicy(String),
    /// A check that names no policy.
    #[error("no policy given")]
    NoPolicy,
    /// The key is empty or too long.
    #[error("invalid key: {0}")]
    InvalidKey(&'static str),
    /// A lease id that no acquire returned.
    #[error(transparent)]
    InvalidLease(#[from] crate::lease::InvalidLeaseId),
    /// The cost cannot be enforced by the policy.
    #[error("policy `{policy}`: {source}")]
    Policy {
        /// The policy name.
        policy: String,
        /// What is wrong.
        #[source]
        source: PolicyError,
    },
    /// The store failed and the failure policy is `deny`-by-error (the caller decides).
    #[error(transparent)]
    Store(#[from] StoreError),
}
