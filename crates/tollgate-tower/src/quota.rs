//! The decision for a request, handed to the handler through request extensions.

use std::sync::Arc;
use std::time::Duration;

use tollgate::{Decision, Verdict};

use crate::policy_set::PolicySet;

/// What the layer decided for this request: the key, the policies and their decisions.
///
/// The layer inserts it into the request extensions of every request it checked and let through
/// (not into excluded or unmatched requests, nor when a store failure was let through). With
/// axum, extract it as `Quota` (or `Option<Quota>`), or `Extension<Quota>`:
///
/// ```
/// use tollgate_tower::Quota;
///
/// async fn handler(quota: Quota) -> String {
///     let d = quota.decision();
///     format!("{} of {} left on {}", d.remaining, d.limit, quota.policy())
/// }
/// # let _ = handler;
/// ```
#[derive(Debug, Clone)]
pub struct Quota {
    pub(crate) key: String,
    pub(crate) policies: Arc<PolicySet>,
    pub(crate) verdict: Verdict,
    pub(crate) consumed: bool,
    pub(crate) waited: Duration,
}

impl Quota {
    /// The key the request was counted under (`x-user-id:alice`, `ip:203.0.113.7`, ...).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The policies checked, in order.
    pub fn policies(&self) -> &PolicySet {
        &self.policies
    }

    /// The full verdict: the most restrictive decision and one per policy.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }

    /// The most restrictive policy's decision.
    pub fn decision(&self) -> &Decision {
        &self.verdict.decision
    }

    /// The name of the most restrictive policy.
    pub fn policy(&self) -> &str {
        self.policies
            .name(self.verdict.policy_index)
            .unwrap_or_default()
    }

    /// Each policy's name with its decision.
    pub fn decisions(&self) -> impl Iterator<Item = (&str, &Decision)> {
        self.policies.names().zip(self.verdict.decisions.iter())
    }

    /// Whether this request was charged (`false` for a [peek](crate::Rule::peek)).
    pub fn consumed(&self) -> bool {
        self.consumed
    }

    /// How long the request waited for its cost to fit (a rule with a
    /// [`delay`](crate::Rule::delay); zero otherwise).
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Whether the decision was made without the shared store (a fallback decided).
    pub fn degraded(&self) -> bool {
        self.verdict.degraded
    }
}

#[cfg(feature = "axum")]
mod extract {
    use std::convert::Infallible;

    use axum::extract::{FromRequestParts, OptionalFromRequestParts};
    use http::StatusCode;
    use http::request::Parts;

    use super::Quota;

    /// Fails with 500 when the request was not checked by a [`RateLimitLayer`](crate::RateLimitLayer)
    /// rule: a wiring mistake. Use `Option<Quota>` on routes that may be unlimited.
    impl<S: Send + Sync> FromRequestParts<S> for Quota {
        type Rejection = (StatusCode, &'static str);

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Quota, Self::Rejection> {
            parts.extensions.get::<Quota>().cloned().ok_or((
                StatusCode::INTERNAL_SERVER_ERROR,
                "no rate-limit quota: this route is not behind a RateLimitLayer rule",
            ))
        }
    }

    impl<S: Send + Sync> OptionalFromRequestParts<S> for Quota {
        type Rejection = Infallible;

        async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Quota>, Infallible> {
            Ok(parts.extensions.get::<Quota>().cloned())
        }
    }
}
