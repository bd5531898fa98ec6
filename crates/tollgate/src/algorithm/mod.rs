//! The algorithms as pure transitions: `(state, now, policy, cost, mode) -> (state', Decision)`.
//!
//! Each transition mutates its state in place only when it allows a request in
//! [`Mode::Consume`]; a rejection or a [`Mode::Peek`] leaves it untouched. Time is integer
//! microseconds; every product stays below 2^53 (see [`crate::policy::MAX_EXACT`]) so the Redis
//! Lua scripts, which compute in doubles, reach the same decisions. The conformance suite in
//! `tests/` is what proves that.

pub mod bucket;
pub mod concurrency;
pub mod fixed_window;
pub mod gcra;
pub mod sliding_log;
pub mod sliding_window;
pub mod token_bucket;

use crate::decision::Decision;
use crate::lease::{LeaseOp, LeaseOutcome};
use crate::policy::{Algorithm, MAX_EXACT, Policy};

pub use concurrency::Leases;
pub use fixed_window::FixedWindow;
pub use gcra::Gcra;
pub use sliding_log::SlidingLog;
pub use sliding_window::SlidingWindow;
pub use token_bucket::TokenBucket;

/// Whether a decision consumes its cost when allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Consume the cost when allowed.
    Consume,
    /// Answer what `Consume` would, but change nothing; `remaining` is what is left now.
    Peek,
}

/// The state of one key under one policy: one variant per algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// See [`FixedWindow`].
    FixedWindow(FixedWindow),
    /// See [`SlidingLog`] (boxed: the log is the one large state, and boxing keeps every other
    /// state small in the memory store's table).
    SlidingLog(Box<SlidingLog>),
    /// See [`SlidingWindow`].
    SlidingWindow(SlidingWindow),
    /// See [`TokenBucket`].
    TokenBucket(TokenBucket),
    /// See [`Gcra`].
    Gcra(Gcra),
    /// See [`Leases`] (inline: its vector is no larger than the sliding window's state, and
    /// every lease operation would otherwise start with one more pointer to follow).
    Concurrency(Leases),
}

impl State {
    /// The state of a key never seen (or expired): a full quota.
    pub fn fresh(algorithm: Algorithm) -> State {
        match algorithm {
            Algorithm::FixedWindow => State::FixedWindow(FixedWindow::default()),
            Algorithm::SlidingLog => State::SlidingLog(Box::default()),
            Algorithm::SlidingWindow => State::SlidingWindow(SlidingWindow::default()),
            Algorithm::TokenBucket => State::TokenBucket(TokenBucket::default()),
            Algorithm::Gcra => State::Gcra(Gcra::default()),
            Algorithm::Concurrency => State::Concurrency(Leases::default()),
        }
    }

    /// The algorithm this state belongs to.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            State::FixedWindow(_) => Algorithm::FixedWindow,
            State::SlidingLog(_) => Algorithm::SlidingLog,
            State::SlidingWindow(_) => Algorithm::SlidingWindow,
            State::TokenBucket(_) => Algorithm::TokenBucket,
            State::Gcra(_) => Algorithm::Gcra,
            State::Concurrency(_) => Algorithm::Concurrency,
        }
    }

    /// Apply a lease operation at `now`: the [`Leases`] transition (a state of another
    /// algorithm is replaced by an empty lease set first).
    #[inline]
    pub fn lease(&mut self, now: u64, policy: &Policy, op: LeaseOp) -> LeaseOutcome {
        if let State::Concurrency(leases) = self {
            return leases.apply(now, policy, op);
        }
        let mut leases = Leases::default();
        let outcome = leases.apply(now, policy, op);
        *self = State::Concurrency(leases);
        outcome
    }

    /// Charge (`delta > 0`) or refund (`delta < 0`) `key`'s state at `now` after the fact, then
    /// answer what a check of one unit would answer now (a [`Mode::Peek`]). The rule of each
    /// algorithm is in its `adjust`; all share [`adjust_count`]: a charge may take the key at
    /// most one limit past its quota (so the next requests wait), a refund never goes past a
    /// full quota. A sliding log takes charges only (a refund leaves it as it is); a
    /// `concurrency` state is not adjusted (its units are leases).
    pub fn adjust(&mut self, now: u64, policy: &Policy, delta: i64) -> Decision {
        if self.algorithm() != policy.algorithm() {
            *self = State::fresh(policy.algorithm());
        }
        match self {
            State::FixedWindow(s) => s.adjust(now, policy, delta),
            State::SlidingLog(s) => s.charge(now, policy, delta),
            State::SlidingWindow(s) => s.adjust(now, policy, delta),
            State::TokenBucket(s) => s.adjust(now, policy, delta),
            State::Gcra(s) => s.adjust(now, policy, delta),
            State::Concurrency(_) => {}
        }
        self.decide(now, policy, 1, Mode::Peek)
    }

    /// Apply one request of `cost` at `now` (µs). The cost must already be validated against
    /// the policy (`1 <= cost <= capacity`), and the state must be of the policy's algorithm
    /// (a mismatch is treated as a fresh key). A `concurrency` state is only read: its units
    /// are taken by leases ([`Leases::apply`]), so a check of it answers as a peek.
    #[inline]
    pub fn decide(&mut self, now: u64, policy: &Policy, cost: u64, mode: Mode) -> Decision {
        if self.algorithm() != policy.algorithm() {
            *self = State::fresh(policy.algorithm());
        }
        match self {
            State::FixedWindow(s) => s.decide(now, policy, cost, mode),
            State::SlidingLog(s) => s.decide(now, policy, cost, mode),
            State::SlidingWindow(s) => s.decide(now, policy, cost, mode),
            State::TokenBucket(s) => s.decide(now, policy, cost, mode),
            State::Gcra(s) => s.decide(now, policy, cost, mode),
            State::Concurrency(s) => s.peek(now, policy, cost),
        }
    }
}

/// `counted` after an adjustment of `delta` units of `unit` each: a charge adds up to
/// `ceiling` (never lowering a count already above it), a refund subtracts down to zero.
/// Saturating: a delta far beyond the ceiling is the ceiling (the Lua twins compute the same in
/// doubles, exact wherever the result is below the ceiling).
#[inline]
pub fn adjust_count(counted: u64, delta: i64, unit: u64, ceiling: u64) -> u64 {
    let units = delta.unsigned_abs().saturating_mul(unit);
    if delta >= 0 {
        counted.saturating_add(units).min(ceiling).max(counted)
    } else {
        counted.saturating_sub(units)
    }
}

/// The most a charge may count for a quota of `full`: one more `debt` past it, and never past
/// what Redis's doubles hold exactly.
#[inline]
pub fn charge_ceiling(full: u64, debt: u64) -> u64 {
    full.saturating_add(debt).min(MAX_EXACT - 1)
}
