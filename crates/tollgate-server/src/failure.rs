//! What a decision is when the store fails: the `store.on_error` policy (DESIGN §5).
//!
//! Timeouts and the circuit breaker are a later layer (a [`tollgate::Store`] wrapping the
//! backend, reporting `degraded` itself); this is the last word when a store call fails anyway.

use tollgate::{Check, Decision, Decisions};

use crate::config::OnError;

/// How long a denied-by-failure request is told to wait, µs: the memory store's sweep interval,
/// and about the time a circuit breaker waits before probing a failed store again.
pub const FAILURE_RETRY_US: u64 = 1_000_000;

/// Decide `checks` for `cost` without the store, as `on_error` says.
///
/// - `allow`: every policy allows, reporting a full quota less `cost` (nothing is known);
/// - `deny`: every policy rejects with `retry_after` of [`FAILURE_RETRY_US`];
/// - `local`: decide on a local memory store with the limit divided by `instances`. When the
///   store that failed *is* the memory store there is nothing more local, so it denies.
pub fn fallback(on_error: OnError, checks: &[Check<'_>], cost: u64) -> Decisions {
    checks
        .iter()
        .map(|check| {
            let limit = check.policy.capacity();
            match on_error {
                OnError::Allow => Decision {
                    allowed: true,
                    limit,
                    remaining: limit.saturating_sub(cost),
                    reset_after_us: 0,
                    retry_after_us: 0,
                },
                OnError::Deny | OnError::Local => Decision {
                    allowed: false,
                    limit,
                    remaining: 0,
                    reset_after_us: FAILURE_RETRY_US,
                    retry_after_us: FAILURE_RETRY_US,
                },
            }
        })
        .collect()
}
