//! Rules: which policies a matching request is checked against, and tiers that pick them per
//! request.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::request::Parts;
use tollgate::Mode;

use crate::charge::Charge;
use crate::key::Key;
use crate::policy_set::PolicySet;
use crate::route::Route;

/// Names of policies checked together: the request passes only if all allow, and then each one
/// is charged (all-or-nothing, [`tollgate::Limiter::check_all`]).
///
/// Converts from `"api"`, `["api", "burst"]`, `vec!["api"]` or `Vec<String>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies(pub(crate) Vec<String>);

impl From<&str> for Policies {
    fn from(name: &str) -> Policies {
        Policies(vec![name.to_owned()])
    }
}

impl From<String> for Policies {
    fn from(name: String) -> Policies {
        Policies(vec![name])
    }
}

impl<const N: usize> From<[&str; N]> for Policies {
    fn from(names: [&str; N]) -> Policies {
        Policies(names.iter().map(|n| (*n).to_owned()).collect())
    }
}

impl From<&[&str]> for Policies {
    fn from(names: &[&str]) -> Policies {
        Policies(names.iter().map(|n| (*n).to_owned()).collect())
    }
}

impl From<Vec<&str>> for Policies {
    fn from(names: Vec<&str>) -> Policies {
        names.as_slice().into()
    }
}

impl From<Vec<String>> for Policies {
    fn from(names: Vec<String>) -> Policies {
        Policies(names)
    }
}

/// Picks a tier name from a request (borrowing from it).
pub type TierFn = Arc<dyn for<'a> Fn(&'a Parts) -> Option<&'a str> + Send + Sync>;

/// Policies chosen per request by tier, e.g. a `free` and a `premium` plan.
///
/// The tier name comes from a header or your function; an absent or unknown name gets the
/// default policies. A header is only safe if your gateway or auth layer sets it (a client would
/// otherwise just claim `premium`); a function usually reads what authentication put into the
/// request extensions.
///
/// ```
/// use tollgate_tower::Tiers;
///
/// #[derive(Clone)]
/// struct Account { plan: &'static str }
///
/// let by_plan = Tiers::from_fn(|parts| parts.extensions.get::<Account>().map(|a| a.plan), "api-free")
///     .tier("premium", "api-premium")
///     .tier("internal", ["api-premium", "api-internal"]);
/// # let _ = by_plan;
/// ```
#[derive(Clone)]
pub struct Tiers {
    select: TierSelect,
    default: Policies,
    tiers: Vec<(String, Policies)>,
}

#[derive(Clone)]
pub(crate) enum TierSelect {
    Header(HeaderName),
    Fn(TierFn),
    Invalid(String),
}

impl Tiers {
    /// Tier named by the value of header `name`; `default` when absent or unknown.
    pub fn header(name: &str, default: impl Into<Policies>) -> Tiers {
        let select = match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(header) => TierSelect::Header(header),
            Err(_) => TierSelect::Invalid(name.to_owned()),
        };
        Tiers {
            select,
            default: default.into(),
            tiers: Vec::new(),
        }
    }

    /// Tier named by `f`; `default` when it returns `None` or an unknown name.
    pub fn from_fn<F>(f: F, default: impl Into<Policies>) -> Tiers
    where
        F: for<'a> Fn(&'a Parts) -> Option<&'a str> + Send + Sync + 'static,
    {
        Tiers {
            select: TierSelect::Fn(Arc::new(f)),
            default: default.into(),
            tiers: Vec::new(),
        }
    }

    /// Requests of tier `name` are checked against `policies`.
    pub fn tier(mut self, name: &str, policies: impl Into<Policies>) -> Tiers {
        self.tiers.push((name.to_owned(), policies.into()));
        self
    }
}

impl fmt::Debug for Tiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = match &self.select {
            TierSelect::Header(name) => format!("header {name}"),
            TierSelect::Fn(_) => "fn".to_owned(),
            TierSelect::Invalid(name) => format!("invalid header {name:?}"),
        };
        f.debug_struct("Tiers")
            .field("by", &by)
            .field("default", &self.default)
            .field("tiers", &self.tiers)
            .finish()
    }
}

/// Fixed policies or tiers: what a [`Rule`] checks.
#[derive(Debug, Clone)]
pub enum PolicyChoice {
    /// The same policies for every request.
    Fixed(Policies),
    /// Policies picked per request.
    Tiered(Tiers),
}

macro_rules! fixed_from {
    ($($t:ty),*) => {$(
        impl From<$t> for PolicyChoice {
            fn from(names: $t) -> PolicyChoice {
                PolicyChoice::Fixed(names.into())
            }
        }
    )*};
}
fixed_from!(&str, String, &[&str], Vec<&str>, Vec<String>, Policies);

impl<const N: usize> From<[&str; N]> for PolicyChoice {
    fn from(names: [&str; N]) -> PolicyChoice {
        PolicyChoice::Fixed(names.into())
    }
}

impl From<Tiers> for PolicyChoice {
    fn from(tiers: Tiers) -> PolicyChoice {
        PolicyChoice::Tiered(tiers)
    }
}

/// A route and what to do with the requests it matches.
///
/// Its policies may include `concurrency` ones: each request then holds one unit of each
/// (a [`tollgate::Lease`]) from before the handler runs until its response body has ended or
/// was dropped, and is answered 429 when none is free.
///
/// ```
/// use http::Method;
/// use tollgate_tower::{Key, Route, Rule};
///
/// // Log-in attempts by client address (the user is not known yet), 3 units each.
/// let login = Rule::new(Route::pattern("/api/auth/login").method(Method::POST), "login")
///     .key(Key::client_ip())
///     .cost(3);
/// // A status page that shows the quota without spending it.
/// let status = Rule::new("/api/status", "api").peek();
/// # let _ = (login, status);
/// ```
///
/// An LLM route that reserves an estimate, waits up to 2 s for it to fit rather than failing,
/// runs at most 4 requests per key at once, and settles the real token count at the end:
///
/// ```
/// use std::time::Duration;
/// use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
/// use tollgate_tower::{Charge, RateLimitLayer, Rule};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let limiter = Limiter::new(MemoryStore::new())
///     .with_policy("tokens", Policy::builder(Algorithm::TokenBucket).rate("10000/min").build()?)?
///     .with_policy("in-flight", Policy::concurrency(4, Duration::from_secs(120))?)?;
/// let layer = RateLimitLayer::builder(limiter)
///     .rule(
///         Rule::new("/v1/chat", ["tokens", "in-flight"])
///             .cost(500)
///             .delay(Duration::from_secs(2))
///             .charge(Charge::header("x-tokens-used")),
///     )
///     .build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) route: Route,
    pub(crate) policies: PolicyChoice,
    pub(crate) key: Option<Key>,
    pub(crate) cost: u64,
    pub(crate) mode: Mode,
    pub(crate) delay: Option<Duration>,
    pub(crate) charge: Option<Charge>,
}

impl Rule {
    /// Check requests matching `route` against `policies` (names, or [`Tiers`]).
    pub fn new(route: impl Into<Route>, policies: impl Into<PolicyChoice>) -> Rule {
        Rule {
            route: route.into(),
            policies: policies.into(),
            key: None,
            cost: 1,
            mode: Mode::Consume,
            delay: None,
            charge: None,
        }
    }

    /// Use this key instead of the layer's.
    pub fn key(mut self, key: Key) -> Rule {
        self.key = Some(key);
        self
    }

    /// Charge `cost` units per request (default 1). Must not exceed any policy's capacity.
    /// (`concurrency` policies lease one unit per request whatever the cost.)
    pub fn cost(mut self, cost: u64) -> Rule {
        self.cost = cost;
        self
    }

    /// Only look: add the quota headers and the [`Quota`](crate::Quota) extension, consume
    /// nothing and never reject.
    /// A `peek` rule cannot name `concurrency` policies (nothing to look at without holding
    /// a lease) nor [`charge`](Self::charge).
    pub fn peek(mut self) -> Rule {
        self.mode = Mode::Peek;
        self
    }

    /// Wait up to `max_wait` for the cost to fit instead of answering 429 at once (like
    /// NGINX's `limit_req ... delay`), with [`tollgate::Limiter::check_wait`]: requests waiting
    /// on one key are served first come, first served, none before its cost fits; one whose
    /// cost cannot fit by its deadline is answered 429 at once. Overrides the layer's
    /// [`delay`](crate::RateLimitBuilder::delay).
    pub fn delay(mut self, max_wait: Duration) -> Rule {
        self.delay = Some(max_wait);
        self
    }

    /// When the response body has ended (or was dropped), charge the real cost `charge` reads
    /// from the response instead of the [`cost`](Self::cost) checked up front: each checked
    /// policy is adjusted by the difference ([`tollgate::Limiter::adjust`]; more may leave the
    /// key in debt, so its next requests wait; less is refunded). It runs in the background
    /// after the response; a failure is logged and never touches the response. Sliding-log
    /// policies take only charges (a refund is logged as refused).
    pub fn charge(mut self, charge: Charge) -> Rule {
        self.charge = Some(charge);
        self
    }
}

/// A rule with its policy sets resolved against the limiter.
pub(crate) struct CompiledRule {
    pub(crate) route: Route,
    pub(crate) select: Select,
    pub(crate) key: Option<Key>,
    pub(crate) cost: u64,
    pub(crate) mode: Mode,
    /// The longest wait for the cost to fit (`None`: answer at once).
    pub(crate) delay: Option<Duration>,
    pub(crate) charge: Option<Charge>,
}

impl fmt::Debug for CompiledRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policies: Vec<&str> = match &self.select {
            Select::Fixed(set) => set.names().collect(),
            Select::Tiered { default, .. } => default.names().collect(),
        };
        f.debug_struct("Rule")
            .field("route", &self.route)
            .field("policies", &policies)
            .field("tiered", &matches!(self.select, Select::Tiered { .. }))
            .field("key", &self.key)
            .field("cost", &self.cost)
            .field("mode", &self.mode)
            .field("delay", &self.delay)
            .field("charge", &self.charge)
            .finish()
    }
}

/// Resolved policy sets of a rule.
pub(crate) enum Select {
    Fixed(Arc<PolicySet>),
    Tiered {
        by: TierSelect,
        tiers: Vec<(Box<str>, Arc<PolicySet>)>,
        default: Arc<PolicySet>,
    },
}

impl Select {
    /// Every policy set the rule may pick.
    pub(crate) fn sets(&self) -> impl Iterator<Item = &Arc<PolicySet>> {
        let (first, rest) = match self {
            Select::Fixed(set) => (set, &[][..]),
            Select::Tiered { tiers, default, .. } => (default, &tiers[..]),
        };
        std::iter::once(first).chain(rest.iter().map(|(_, set)| set))
    }

    /// The policy set for this request.
    pub(crate) fn pick(&self, parts: &Parts) -> &Arc<PolicySet> {
        match self {
            Select::Fixed(set) => set,
            Select::Tiered { by, tiers, default } => {
                let name = match by {
                    TierSelect::Header(header) => parts
                        .headers
                        .get(header)
                        .and_then(|v| v.to_str().ok())
                        .map(str::trim),
                    TierSelect::Fn(f) => f(parts),
                    TierSelect::Invalid(_) => None,
                };
                name.and_then(|name| tiers.iter().find(|(tier, _)| **tier == *name))
                    .map_or(default, |(_, set)| set)
            }
        }
    }
}

impl Tiers {
    pub(crate) fn parts(&self) -> (&TierSelect, &Policies, &[(String, Policies)]) {
        (&self.select, &self.default, &self.tiers)
    }
}
