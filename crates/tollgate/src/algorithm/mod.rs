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
use crate::policy::{Algorithm, Policy};

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
    /// See [`Leases`] (boxed, as the log: a set of leases).
    Concurrency(Box<Leases>),
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
            Algorithm::Concurrency => State::Concurrency(Box::default()),
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
    pub fn lease(&mut self, now: u64, policy: &Policy, op: LeaseOp) -> LeaseOutcome {
        if let State::Concurrency(leases) = self {
            return leases.apply(now, policy, op);
        }
        let mut leases = Box::<Leases>::default();
        let outcome = leases.apply(now, policy, op);
        *self = State::Concurrency(leases);
        outcome
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
