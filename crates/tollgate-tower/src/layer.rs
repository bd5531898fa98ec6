//! The layer, its builder, and the resolved configuration every request reads.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{Extensions, HeaderName, Method};
use tollgate::{LimitError, Limiter, Mode, OnError, Store};
use tower_layer::Layer;

use crate::cidr::Cidr;
use crate::client_ip::{ClientIp, ForwardedHeader};
use crate::error::BuildError;
use crate::headers::HeaderOptions;
use crate::key::Key;
use crate::log_throttle::LogThrottle;
use crate::policy_set::PolicySet;
use crate::quota::Quota;
use crate::route::Route;
use crate::rule::{CompiledRule, Policies, PolicyChoice, Rule, Select, TierSelect};
use crate::service::RateLimit;

/// What to do with a request from which no key can be extracted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissingKey {
    /// Count all such requests under one shared key (the default, with `"anonymous"`): they stay
    /// limited and are never refused for lack of a key, but they compete for one quota. End the
    /// key chain with [`Key::client_ip`] to make this rare.
    Shared(String),
    /// Answer 400 `{"error":{"code":"invalid_request",...}}`.
    Reject,
    /// Let the request through unlimited, without headers.
    Skip,
}

impl Default for MissingKey {
    fn default() -> Self {
        MissingKey::Shared("anonymous".to_owned())
    }
}

/// A tower [`Layer`] that rate-limits requests with a [`Limiter`].
///
/// Build it with [`RateLimitLayer::builder`]. Cloning is cheap (one `Arc`), and so is the
/// service it makes. For each request, in order:
///
/// 1. If an [excluded](RateLimitBuilder::exclude) route matches, it passes untouched.
/// 2. The first matching [rule](RateLimitBuilder::rule) (in the order added; the
///    [default policies](RateLimitBuilder::default_policies) come last) applies; no match passes
///    untouched. List specific routes before general ones.
/// 3. The rule's key (or the layer's) is extracted; without one, [`MissingKey`] decides.
/// 4. A unit of each of the rule's `concurrency` policies is leased; then all its other
///    policies are checked at once (all-or-nothing), waiting up to the rule's
///    [`delay`](Rule::delay) if it has one. Allowed: the handler runs with a [`Quota`] extension
///    and the response gets `RateLimit-Policy` and `RateLimit` headers. Rejected (a lease or a
///    check): 429 with `Retry-After`, the same headers and a JSON body, and the leases taken are
///    given back. Store failure: the layer's [`OnError`] decides
///    ([`RateLimitBuilder::on_store_error`]).
/// 5. When the response body ends or is dropped, the leases are released and the rule's
///    [`charge`](Rule::charge), if any, settles the real cost.
#[derive(Debug)]
pub struct RateLimitLayer<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for RateLimitLayer<S> {
    fn clone(&self) -> Self {
        RateLimitLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<S, I> Layer<I> for RateLimitLayer<S> {
    type Service = RateLimit<I, S>;

    fn layer(&self, inner: I) -> RateLimit<I, S> {
        RateLimit::new(inner, self.shared.clone())
    }
}

impl<S: Store> RateLimitLayer<S> {
    /// Start configuring a layer over `limiter` (which holds the policies and the store).
    pub fn builder(limiter: Limiter<S>) -> RateLimitBuilder<S> {
        RateLimitBuilder {
            limiter,
            key: Key::client_ip(),
            client_ip: ClientIp::default(),
            trusted: Vec::new(),
            rules: Vec::new(),
            default: None,
            excluded: Vec::new(),
            missing_key: MissingKey::default(),
            on_store_error: OnError::Allow,
            headers: HeaderOptions::default(),
            degraded_header: None,
            delay: None,
        }
    }

    /// The limiter, e.g. to reset a key from an admin handler.
    pub fn limiter(&self) -> &Limiter<S> {
        &self.shared.limiter
    }

    /// The client address of a request by the trusted-proxy rules (not grouped by prefix).
    pub fn client_ip(&self, parts: &Parts) -> Option<IpAddr> {
        self.shared.client_ip.resolve(parts)
    }

    /// The quota this request would be checked against, consuming nothing: `None` when the
    /// request is excluded, matches no rule, or has no key and [`MissingKey::Reject`] or
    /// [`MissingKey::Skip`] applies.
    ///
    /// For a status route the [`Rule::peek`] rule does the same without code in the handler;
    /// this is for handlers that need the quota of another route's rule. The route is the
    /// request's own unless you pass `route` as `(method, path)`. A rule with `concurrency`
    /// policies cannot be peeked: [`LimitError::Policy`] (a lease is held, not looked at).
    pub async fn peek(
        &self,
        parts: &Parts,
        route: Option<(&Method, &str)>,
    ) -> Result<Option<Quota>, LimitError> {
        let (method, path) = route.unwrap_or((&parts.method, parts.uri.path()));
        let Some(index) = self.shared.rule_for(method, path) else {
            return Ok(None);
        };
        let rule = &self.shared.rules[index];
        let set = rule.select.pick(parts).clone();
        let Some(key) = self.shared.key_for(rule, parts) else {
            return Ok(None);
        };
        let names: smallvec::SmallVec<[&str; 4]> = set.names().collect();
        let verdict = self
            .shared
            .limiter
            .run(&names, &key, rule.cost, Mode::Peek)
            .await?;
        drop(names);
        Ok(Some(Quota {
            key,
            policies: set,
            verdict,
            consumed: false,
            waited: Duration::ZERO,
        }))
    }
}

/// Configures a [`RateLimitLayer`]. See the crate docs for a complete example.
#[derive(Debug)]
pub struct RateLimitBuilder<S> {
    limiter: Limiter<S>,
    key: Key,
    client_ip: ClientIp,
    trusted: Vec<String>,
    rules: Vec<Rule>,
    default: Option<Rule>,
    excluded: Vec<Route>,
    missing_key: MissingKey,
    on_store_error: OnError,
    headers: HeaderOptions,
    degraded_header: Option<String>,
    delay: Option<Duration>,
}

impl<S: Store> RateLimitBuilder<S> {
    /// The key requests are counted under, unless a rule sets its own. Default:
    /// [`Key::client_ip`].
    pub fn key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }

    /// Proxies whose forwarding headers are believed: networks (`10.0.0.0/8`, `fd00::/8`) or
    /// single addresses. Default: none, so the socket peer is always the client.
    pub fn trusted_proxies<I>(mut self, networks: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.trusted
            .extend(networks.into_iter().map(|n| n.as_ref().to_owned()));
        self
    }

    /// The header trusted proxies append the client to. Default: `X-Forwarded-For`.
    pub fn forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.client_ip.set_header(header);
        self
    }

    /// Count IPv6 clients by this prefix (default 64; 128 for single addresses).
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.client_ip.set_ipv6_prefix(prefix);
        self
    }

    /// Count IPv4 clients by this prefix (default 32: each address on its own).
    pub fn ipv4_prefix(mut self, prefix: u8) -> Self {
        self.client_ip.set_ipv4_prefix(prefix);
        self
    }

    /// Read the socket peer's address with `f` instead of from axum's `ConnectInfo<SocketAddr>`
    /// or a `SocketAddr` extension, e.g. for tonic:
    /// `|ext| ext.get::<TcpConnectInfo>()?.remote_addr().map(|a| a.ip())`.
    pub fn peer_ip<F>(mut self, f: F) -> Self
    where
        F: Fn(&Extensions) -> Option<IpAddr> + Send + Sync + 'static,
    {
        self.client_ip.set_peer(Arc::new(f));
        self
    }

    /// Check requests matching `route` against `policies` (shorthand for
    /// [`rule`](Self::rule)`(Rule::new(route, policies))`).
    pub fn route(self, route: impl Into<Route>, policies: impl Into<PolicyChoice>) -> Self {
        self.rule(Rule::new(route, policies))
    }

    /// Add a rule. Rules are tried in the order added; the first match wins.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Check requests that match no rule against `policies` (names or [`Tiers`](crate::Tiers)).
    /// Without it, such requests pass unlimited.
    pub fn default_policies(mut self, policies: impl Into<PolicyChoice>) -> Self {
        self.default = Some(Rule::new(Route::any(), policies));
        self
    }

    /// Requests matching `route` pass untouched: no check, no headers (e.g. `/health`,
    /// `/metrics`). Exclusions win over rules.
    pub fn exclude(mut self, route: impl Into<Route>) -> Self {
        self.excluded.push(route.into());
        self
    }

    /// What to do with requests without a key. Default: [`MissingKey::Shared`]`("anonymous")`.
    pub fn on_missing_key(mut self, missing: MissingKey) -> Self {
        self.missing_key = missing;
        self
    }

    /// What to do when the store fails ([`LimitError::Store`]: Redis down, a timeout, a full
    /// memory store), by the core's rule:
    /// - [`OnError::Allow`] (the default: an outage of the limiter does not become an outage of
    ///   the API) lets the request through without rate-limit headers or [`Quota`] (nothing is
    ///   known of its quota);
    /// - [`OnError::Deny`] answers 503 `{"error":{"code":"rate_limiter_unavailable",...}}` with
    ///   `Retry-After`;
    /// - [`OnError::Local`] has the limiter decide on an in-process memory store
    ///   ([`Limiter::on_store_error`]): those decisions are enforced as usual and marked
    ///   degraded (leases too).
    ///
    /// Each failure is logged (`tracing` warning, at most one line a second, never the key).
    /// A store that decides its failures itself ([`tollgate::Resilient`], or a limiter given
    /// its own failure policy) answers degraded decisions instead of failing: those are
    /// enforced as usual.
    pub fn on_store_error(mut self, on_error: OnError) -> Self {
        self.on_store_error = on_error;
        self
    }

    /// Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds
    /// until reset) for the most restrictive policy. Default: off.
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.headers.legacy = on;
        self
    }

    /// Send header `name: 1` on responses whose decision was made without the shared store
    /// (`Verdict::degraded`, e.g. a local fallback while Redis is down). Default: none.
    pub fn degraded_header(mut self, name: &str) -> Self {
        self.degraded_header = Some(name.to_ascii_lowercase());
        self
    }

    /// Wait up to `max_wait` for the cost to fit instead of answering 429 at once, on every
    /// rule without a [`delay`](Rule::delay) of its own (see there). Default: answer at once.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
    /// use tollgate_tower::RateLimitLayer;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let limiter = Limiter::new(MemoryStore::new())
    ///     .with_policy("api", Policy::builder(Algorithm::Gcra).rate("10/s").build()?)?;
    /// // A burst over 10/s is smoothed out: each request waits its turn, up to half a second.
    /// let layer = RateLimitLayer::builder(limiter)
    ///     .default_policies("api")
    ///     .delay(Duration::from_millis(500))
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok(())
    /// # }
    /// ```
    pub fn delay(mut self, max_wait: Duration) -> Self {
        self.delay = Some(max_wait);
        self
    }

    /// Check the configuration against the limiter and build the layer.
    pub fn build(self) -> Result<RateLimitLayer<S>, BuildError> {
        let RateLimitBuilder {
            mut limiter,
            key,
            mut client_ip,
            trusted,
            rules,
            default,
            excluded,
            missing_key,
            on_store_error,
            mut headers,
            degraded_header,
            delay,
        } = self;

        let trusted = trusted
            .iter()
            .map(|n| n.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()?;
        client_ip.set_trusted(trusted);
        if let Some(name) = degraded_header {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| BuildError::HeaderName(name.clone()))?;
            headers.degraded = Some(header);
        }
        check_key(&key)?;
        for route in &excluded {
            check_route(route)?;
        }
        if let MissingKey::Shared(shared) = &missing_key {
            if shared.is_empty() || shared.len() > tollgate::MAX_KEY_LEN {
                return Err(BuildError::SharedKey);
            }
        }

        let compiled = rules
            .into_iter()
            .chain(default)
            .map(|rule| compile_rule(rule, &limiter, delay))
            .collect::<Result<Vec<_>, _>>()?;
        if compiled.is_empty() {
            return Err(BuildError::NoRules);
        }
        let store_error_log = Arc::new(LogThrottle::new());
        if on_store_error == OnError::Local {
            let log = store_error_log.clone();
            limiter = limiter.on_store_error(OnError::Local, move |error| {
                log.store_failed(error, OnError::Local);
            });
        }

        Ok(RateLimitLayer {
            shared: Arc::new(Shared {
                limiter,
                key,
                client_ip,
                excluded,
                rules: compiled,
                missing_key,
                on_store_error,
                headers,
                store_error_log,
                charge_error_log: LogThrottle::new(),
            }),
        })
    }
}

fn check_key(key: &Key) -> Result<(), BuildError> {
    match key.invalid_header() {
        Some(name) => Err(BuildError::HeaderName(name.to_owned())),
        None => Ok(()),
    }
}

fn check_route(route: &Route) -> Result<(), BuildError> {
    match route.invalid() {
        Some((pattern, reason)) => Err(BuildError::Route {
            pattern: pattern.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn compile_rule<S: Store>(
    rule: Rule,
    limiter: &Limiter<S>,
    delay: Option<Duration>,
) -> Result<CompiledRule, BuildError> {
    check_route(&rule.route)?;
    if let Some(key) = &rule.key {
        check_key(key)?;
    }
    if let Some(name) = rule.charge.as_ref().and_then(|c| c.invalid_header()) {
        return Err(BuildError::HeaderName(name.to_owned()));
    }
    let set = |names: &Policies| PolicySet::compile(&names.0, limiter, rule.cost).map(Arc::new);
    let select = match &rule.policies {
        PolicyChoice::Fixed(names) => Select::Fixed(set(names)?),
        PolicyChoice::Tiered(tiers) => {
            let (by, default, named) = tiers.parts();
            if let TierSelect::Invalid(name) = by {
                return Err(BuildError::HeaderName(name.clone()));
            }
            Select::Tiered {
                by: by.clone(),
                default: set(default)?,
                tiers: named
                    .iter()
                    .map(|(name, names)| Ok((name.as_str().into(), set(names)?)))
                    .collect::<Result<_, BuildError>>()?,
            }
        }
    };
    for set in select.sets() {
        if rule.mode == Mode::Peek {
            if let Some((_, name)) = set.leased().next() {
                return Err(BuildError::PeekLease(name.to_owned()));
            }
        }
        if rule.charge.is_some() && (rule.mode == Mode::Peek || !set.has_checks()) {
            return Err(BuildError::ChargeNothing);
        }
    }
    Ok(CompiledRule {
        route: rule.route,
        select,
        key: rule.key,
        cost: rule.cost,
        mode: rule.mode,
        delay: rule.delay.or(delay).filter(|d| !d.is_zero()),
        charge: rule.charge,
    })
}

/// The resolved configuration, shared by every clone of the layer and its services.
#[derive(Debug)]
pub(crate) struct Shared<S> {
    pub(crate) limiter: Limiter<S>,
    pub(crate) key: Key,
    pub(crate) client_ip: ClientIp,
    pub(crate) excluded: Vec<Route>,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) missing_key: MissingKey,
    pub(crate) on_store_error: OnError,
    pub(crate) headers: HeaderOptions,
    /// Store failures are logged at most once a second (keys are never logged: they may be
    /// API keys). Shared with the limiter's failure policy under [`OnError::Local`].
    pub(crate) store_error_log: Arc<LogThrottle>,
    /// Failed charges after the fact, likewise.
    pub(crate) charge_error_log: LogThrottle,
}

impl<S> Shared<S> {
    /// The index of the rule for a request, or `None` when it passes untouched.
    pub(crate) fn rule_for(&self, method: &Method, path: &str) -> Option<usize> {
        if self.excluded.iter().any(|r| r.matches(method, path)) {
            return None;
        }
        self.rules
            .iter()
            .position(|r| r.route.matches(method, path))
    }

    /// The request's key under `rule`, with [`MissingKey::Shared`] applied. `None` means the
    /// request has no key and `Reject` or `Skip` applies.
    pub(crate) fn key_for(&self, rule: &CompiledRule, parts: &Parts) -> Option<String> {
        let key = rule.key.as_ref().unwrap_or(&self.key);
        key.extract(parts, &self.client_ip)
            .or_else(|| match &self.missing_key {
                MissingKey::Shared(shared) => Some(shared.clone()),
                MissingKey::Reject | MissingKey::Skip => None,
            })
    }
}
