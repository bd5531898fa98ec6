//! Why a layer could not be built.

use tollgate::PolicyError;

use crate::cidr::CidrError;

/// A configuration mistake found by [`RateLimitBuilder::build`](crate::RateLimitBuilder::build),
/// so that it fails at start-up rather than on the first request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// No rule and no default policies: the layer would limit nothing.
    #[error("no rules and no default policies: the layer would limit nothing")]
    NoRules,
    /// A rule (or tier) with an empty policy list.
    #[error("a rule names no policy")]
    NoPolicies,
    /// A policy name the limiter does not have.
    #[error("unknown policy `{0}` (add it to the Limiter with `with_policy`)")]
    UnknownPolicy(String),
    /// A policy listed twice in one rule.
    #[error("policy `{0}` is listed twice in one rule")]
    DuplicatePolicy(String),
    /// A rule's cost that a policy could never allow.
    #[error("policy `{policy}`: {source}")]
    Cost {
        /// The policy.
        policy: String,
        /// Why the cost does not fit.
        #[source]
        source: PolicyError,
    },
    /// A header name that is not one.
    #[error("invalid header name `{0}`")]
    HeaderName(String),
    /// A route pattern that does not parse.
    #[error("invalid route pattern `{pattern}`: {reason}")]
    Route {
        /// The pattern.
        pattern: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A trusted proxy network that does not parse.
    #[error(transparent)]
    Cidr(#[from] CidrError),
    /// A [peek](crate::Rule::peek) rule naming a `concurrency` policy: there is nothing to
    /// look at without holding a lease.
    #[error("policy `{0}` is a concurrency policy: a peek rule cannot name it")]
    PeekLease(String),
    /// A [charge](crate::Rule::charge) on a rule that charges nothing up front: a peek rule, or
    /// one with only `concurrency` policies.
    #[error(
        "a rule with a charge must check a rate policy (not peek, not only concurrency policies)"
    )]
    ChargeNothing,
    /// A shared key for requests without one that is empty or too long.
    #[error("the shared key for requests without a key must be 1 to 1024 bytes")]
    SharedKey,
}
