//! A resolved set of policies with its static header parts rendered once, at build time.

use http::HeaderValue;
use tollgate::headers::push_policy_item;
use tollgate::{Decision, Limiter, Policy, PolicyName, Store};

use crate::error::BuildError;

/// Policies checked together for one request, in order, as the layer resolved them.
///
/// Read it from [`Quota::policies`](crate::Quota::policies).
#[derive(Debug)]
pub struct PolicySet {
    names: Box<[PolicyName]>,
    /// Per name: a `concurrency` policy, whose unit is leased for the request's lifetime
    /// rather than checked.
    leased: Box<[bool]>,
    /// Per name: its policy, which `policy_header` describes.
    policies: Box<[Policy]>,
    /// `RateLimit-Policy` for every request decided under the configured quotas:
    /// `"api";q=100;w=60, ...` (under an override, the decision's own is rendered).
    policy_header: HeaderValue,
}

impl PolicySet {
    /// Resolve `names` against `limiter`: each must exist, appear once and accept `cost` (a
    /// `concurrency` policy: a lease of one unit). The limiter's names are [`PolicyName`]s, so
    /// each is a header item as it is.
    pub(crate) fn compile<S: Store>(
        names: &[String],
        limiter: &Limiter<S>,
        cost: u64,
    ) -> Result<PolicySet, BuildError> {
        if names.is_empty() {
            return Err(BuildError::NoPolicies);
        }
        let mut resolved: Vec<PolicyName> = Vec::with_capacity(names.len());
        let mut leased = Vec::with_capacity(names.len());
        let mut policies = Vec::with_capacity(names.len());
        let mut header = String::new();
        for name in names {
            let (name, policy) = limiter
                .policy_position(name)
                .and_then(|position| limiter.policy_at(position))
                .ok_or_else(|| BuildError::UnknownPolicy(name.clone()))?;
            if resolved.contains(name) {
                return Err(BuildError::DuplicatePolicy(name.to_string()));
            }
            let lease = policy.algorithm().is_concurrency();
            let fits = if lease {
                policy.validate_lease_cost(1)
            } else {
                policy.validate_cost(cost)
            };
            fits.map_err(|source| BuildError::Cost {
                policy: name.to_string(),
                source,
            })?;
            push_policy_item(&mut header, name, policy.capacity(), policy.period_us());
            policies.push(policy.clone());
            resolved.push(name.clone());
            leased.push(lease);
        }
        // Quoted valid names and numbers: printable ASCII, always a header value.
        let policy_header =
            HeaderValue::try_from(header).unwrap_or_else(|_| HeaderValue::from_static(""));
        Ok(PolicySet {
            names: resolved.into(),
            leased: leased.into(),
            policies: policies.into(),
            policy_header,
        })
    }

    /// The policy names, in check order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.names.iter().map(|n| &**n)
    }

    /// The name of the `i`-th policy.
    pub fn name(&self, i: usize) -> Option<&str> {
        self.names.get(i).map(|n| &**n)
    }

    /// Whether the `i`-th policy is a `concurrency` one (leased, not checked).
    pub fn is_leased(&self, i: usize) -> bool {
        self.leased.get(i).copied().unwrap_or(false)
    }

    /// Whether any policy is a `concurrency` one.
    pub(crate) fn has_leases(&self) -> bool {
        self.leased.contains(&true)
    }

    /// Whether any policy is checked (not leased).
    pub(crate) fn has_checks(&self) -> bool {
        self.leased.contains(&false)
    }

    /// The names of the policies leased, with their positions.
    pub(crate) fn leased(&self) -> impl Iterator<Item = (usize, &str)> {
        self.names().enumerate().filter(|(i, _)| self.leased[*i])
    }

    /// The names of the policies checked, with their positions.
    pub(crate) fn checked(&self) -> impl Iterator<Item = (usize, &str)> {
        self.names().enumerate().filter(|(i, _)| !self.leased[*i])
    }

    /// `RateLimit-Policy` for `decisions` (one per policy, in order): the one rendered at
    /// build time, unless some policy was decided under an override's capacity or period.
    pub(crate) fn policy_header(&self, decisions: &[Decision]) -> HeaderValue {
        let configured = self
            .policies
            .iter()
            .zip(decisions)
            .all(|(policy, d)| d.decided_under(policy));
        if configured {
            return self.policy_header.clone();
        }
        let mut header = String::new();
        for (name, d) in self.names.iter().zip(decisions) {
            push_policy_item(&mut header, name, d.limit, d.period_us);
        }
        HeaderValue::try_from(header).unwrap_or_else(|_| self.policy_header.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate::{Algorithm, MemoryStore, Policy};

    fn limiter() -> Limiter<MemoryStore> {
        let p = |rate| {
            Policy::builder(Algorithm::FixedWindow)
                .rate(rate)
                .build()
                .unwrap()
        };
        Limiter::new(MemoryStore::new())
            .with_policy("api", p("100/min"))
            .unwrap()
            .with_policy("login", p("5/15m"))
            .unwrap()
            .with_policy("envoy/rl.path_/a*/second", p("3/1500ms"))
            .unwrap()
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn renders_policy_header() {
        let set = PolicySet::compile(&names(&["login", "api"]), &limiter(), 1).unwrap();
        let decided = |(limit, period_us)| Decision {
            limit,
            period_us,
            ..Decision::default()
        };
        let configured = [decided((5, 900_000_000)), decided((100, 60_000_000))];
        assert_eq!(
            set.policy_header(&configured),
            "\"login\";q=5;w=900, \"api\";q=100;w=60"
        );
        // Under an override of `api` (its own limit and period): the decision's quota.
        let overridden = [decided((5, 900_000_000)), decided((7, 10_000_000))];
        assert_eq!(
            set.policy_header(&overridden),
            "\"login\";q=5;w=900, \"api\";q=7;w=10"
        );
        assert_eq!(set.names().collect::<Vec<_>>(), ["login", "api"]);
    }

    #[test]
    fn quotes_names_and_rounds_windows_up() {
        let set = PolicySet::compile(&names(&["envoy/rl.path_/a*/second"]), &limiter(), 1).unwrap();
        let configured = [Decision {
            limit: 3,
            period_us: 1_500_000,
            ..Decision::default()
        }];
        assert_eq!(
            set.policy_header(&configured),
            r#""envoy/rl.path_/a*/second";q=3;w=2"#
        );
    }

    #[test]
    fn refuses_bad_sets() {
        let l = limiter();
        let err = |n: &[&str], cost| PolicySet::compile(&names(n), &l, cost).unwrap_err();
        assert!(matches!(err(&[], 1), BuildError::NoPolicies));
        assert!(matches!(err(&["nope"], 1), BuildError::UnknownPolicy(_)));
        assert!(matches!(
            err(&["api", "api"], 1),
            BuildError::DuplicatePolicy(_)
        ));
        assert!(matches!(err(&["login"], 6), BuildError::Cost { .. }));
    }
}
