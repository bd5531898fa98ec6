//! What a decision is when the store fails: the `store.on_error` policy (DESIGN §5).
//!
//! A Redis store sits behind `tollgate::Resilient`, which applies the policy itself (timeouts,
//! breaker, local fallback); this is the memory store's case, e.g. a full store.

use tollgate::resilience::fixed_decisions;
use tollgate::{Check, Decisions};

use crate::config::OnError;

/// How long a denied-by-failure request is told to wait, µs: the memory store's sweep interval,
/// and about the time a circuit breaker waits before probing a failed store again.
pub const FAILURE_RETRY_US: u64 = 1_000_000;

/// Decide `checks` for `cost` without the store, as `on_error` says.
///
/// - `allow`: every policy allows, reporting a full quota less `cost` (nothing is known);
/// - `deny`: every policy rejects with `retry_after` of [`FAILURE_RETRY_US`];
/// - `local`: the store that failed *is* the local memory store, so there is nothing more local:
///   it denies.
pub fn fallback(on_error: OnError, checks: &[Check<'_>], cost: u64) -> Decisions {
    let allowed = on_error == OnError::Allow;
    fixed_decisions(allowed, checks, cost, FAILURE_RETRY_US)
}
