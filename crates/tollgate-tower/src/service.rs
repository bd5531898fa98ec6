//! The rate-limiting `Service`: decide, then call the inner service or answer for it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use smallvec::{SmallVec, smallvec};
use tollgate::{
    Decision, Decisions, LimitError, Limiter, Mode, OnError, OwnedLease, PolicyError, Store,
    StoreError, Verdict,
};
use tower_service::Service;

use crate::body::{Finish, ResponseBody};
use crate::headers::{write_error, write_quota, write_rejection, write_unavailable};
use crate::layer::{MissingKey, Shared};
use crate::policy_set::PolicySet;
use crate::quota::Quota;
use crate::rule::CompiledRule;

/// The service made by [`RateLimitLayer`](crate::RateLimitLayer), wrapping `I`.
pub struct RateLimit<I, S> {
    inner: I,
    shared: Arc<Shared<S>>,
}

impl<I, S> RateLimit<I, S> {
    pub(crate) fn new(inner: I, shared: Arc<Shared<S>>) -> Self {
        RateLimit { inner, shared }
    }
}

impl<I: Clone, S> Clone for RateLimit<I, S> {
    fn clone(&self) -> Self {
        RateLimit {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<I: fmt::Debug, S> fmt::Debug for RateLimit<I, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

type Answer<B, E> = Result<Response<ResponseBody<B>>, E>;
type BoxFuture<B, E> = Pin<Box<dyn Future<Output = Answer<B, E>> + Send>>;

impl<I, S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<I, S>
where
    I: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    I::Future: Send,
    S: Store,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = I::Error;
    type Future = ResponseFuture<I::Future, ResBody, I::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), I::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let Some(index) = shared.rule_for(req.method(), req.uri().path()) else {
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        let (parts, body) = req.into_parts();
        let rule = &shared.rules[index];
        let Some(key) = shared.key_for(rule, &parts) else {
            if shared.missing_key == MissingKey::Skip {
                return ResponseFuture::passthrough(
                    self.inner.call(Request::from_parts(parts, body)),
                );
            }
            return ResponseFuture::ready(error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request carries no rate-limit key",
            ));
        };
        let set = rule.select.pick(&parts).clone();
        let shared = shared.clone();
        // `poll_ready` readied `self.inner`: take that one into the future, leave a clone.
        let ready = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, ready);
        ResponseFuture::limited(Box::pin(decide(
            shared,
            inner,
            Request::from_parts(parts, body),
            index,
            set,
            key,
        )))
    }
}

/// Check the request's policies, then call `inner` or answer for it.
async fn decide<I, S, ReqBody, ResBody>(
    shared: Arc<Shared<S>>,
    mut inner: I,
    mut req: Request<ReqBody>,
    index: usize,
    set: Arc<PolicySet>,
    key: String,
) -> Answer<ResBody, I::Error>
where
    I: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S: Store,
{
    let rule = &shared.rules[index];
    let Admission {
        verdict,
        leases,
        waited,
    } = match admit(&shared.limiter, rule, &set, &key).await {
        Ok(admission) => admission,
        Err(LimitError::Store(error)) => return store_failed(&shared, error, inner, req).await,
        // The route's cost passed the policy at build time, so the key's override (set at
        // run time) is what it exceeds: the key cannot pass while the override stands.
        Err(LimitError::Policy {
            source: PolicyError::CostExceedsCapacity { .. },
            ..
        }) => {
            return Ok(error_response(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "this request costs more than the key's limit can ever admit",
            ));
        }
        Err(error) => {
            // The configuration was checked at build time, so this is a bug, not bad input.
            tracing::error!(%error, "rate limiter refused a check");
            return Ok(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the rate limiter could not check this request",
            ));
        }
    };
    if verdict.shadow_denied {
        // A policy in shadow mode would have rejected: the request goes through, and says so.
        tracing::info!(
            key = %key,
            path = %req.uri().path(),
            "rate limit in shadow mode would have rejected this request; let through"
        );
    }

    if !verdict.allowed() && rule.mode == Mode::Consume {
        let mut headers = HeaderMap::new();
        write_quota(&mut headers, &set, &verdict, &shared.headers);
        let body = write_rejection(&mut headers, &verdict.decision);
        return Ok(layer_response(StatusCode::TOO_MANY_REQUESTS, headers, body));
    }

    let charged_key = rule.charge.as_ref().map(|_| key.clone());
    // The decision is small (inline), so the handler gets a copy and the headers the original.
    req.extensions_mut().insert(Quota {
        key,
        policies: set.clone(),
        verdict: verdict.clone(),
        consumed: rule.mode == Mode::Consume,
        waited,
    });
    let (mut parts, body) = inner.call(req).await?.into_parts();
    let body = match (charged_key, leases.is_empty()) {
        (None, true) => ResponseBody::inner(body),
        (charged_key, _) => {
            let settle = charged_key.map(|key| Settle {
                shared: shared.clone(),
                index,
                set: set.clone(),
                key,
                status: parts.status,
                headers: parts.headers.clone(),
            });
            ResponseBody::finishing(body, finish(leases, settle))
        }
    };
    write_quota(&mut parts.headers, &set, &verdict, &shared.headers);
    Ok(Response::from_parts(parts, body))
}

/// What a request was admitted with: the verdict over all its policies, the leases it holds
/// until its response has ended, and how long it waited for its cost to fit.
struct Admission<S: Store> {
    verdict: Verdict,
    leases: Vec<OwnedLease<S>>,
    waited: Duration,
}

/// Lease a unit of each `concurrency` policy of `set`, then check the others (waiting if the
/// rule delays). Refused by either, the request gives back every lease it took, so a refused
/// request holds nothing and consumes nothing.
async fn admit<S: Store>(
    limiter: &Limiter<S>,
    rule: &CompiledRule,
    set: &PolicySet,
    key: &str,
) -> Result<Admission<S>, LimitError> {
    if !set.has_leases() {
        let (verdict, waited) = check(limiter, rule, set, key, rule.mode).await?;
        return Ok(Admission {
            verdict,
            leases: Vec::new(),
            waited,
        });
    }
    // Boxed: its state (acquires, releases, a check) would otherwise size every request's
    // future, leases or not.
    Box::pin(admit_leased(limiter, rule, set, key)).await
}

/// [`admit`] for a set with `concurrency` policies.
async fn admit_leased<S: Store>(
    limiter: &Limiter<S>,
    rule: &CompiledRule,
    set: &PolicySet,
    key: &str,
) -> Result<Admission<S>, LimitError> {
    let mut decisions: Decisions = smallvec![Decision::default(); set.names().len()];
    let mut leases = Vec::new();
    let mut degraded = false;
    let mut refused = false;
    // Every lease is asked for even after a refusal: the headers report each policy.
    for (i, name) in set.leased() {
        let acquired = limiter.acquire(name, key, 1).await?;
        decisions[i] = acquired.decision;
        degraded |= acquired.degraded;
        match acquired.lease {
            Some(lease) => leases.push((i, lease)),
            None => refused = true,
        }
    }
    let (mut waited, mut shadow_denied) = (Duration::ZERO, false);
    if set.has_checks() {
        // Refused already: only look, so that the request consumes nothing.
        let mode = if refused { Mode::Peek } else { rule.mode };
        let (checked, wait) = check(limiter, rule, set, key, mode).await?;
        for ((i, _), decision) in set.checked().zip(&checked.decisions) {
            decisions[i] = *decision;
        }
        refused |= !checked.allowed();
        degraded |= checked.degraded;
        (waited, shadow_denied) = (wait, checked.shadow_denied);
    }
    if refused {
        for (i, lease) in leases.drain(..) {
            // A lease not given back here is released in the background or expires.
            if let Ok(true) = lease.release().await {
                decisions[i].remaining += 1;
            }
        }
    }
    let mut verdict = tollgate::limiter::verdict(decisions, degraded);
    verdict.shadow_denied = shadow_denied;
    Ok(Admission {
        verdict,
        leases: leases
            .into_iter()
            .map(|(_, lease)| lease.into_owned())
            .collect(),
        waited,
    })
}

/// Check the policies of `set` that are not leased, in `mode`, waiting up to the rule's delay
/// for a consuming check.
async fn check<S: Store>(
    limiter: &Limiter<S>,
    rule: &CompiledRule,
    set: &PolicySet,
    key: &str,
    mode: Mode,
) -> Result<(Verdict, Duration), LimitError> {
    let names: SmallVec<[&str; 4]> = set.checked().map(|(_, name)| name).collect();
    match rule.delay {
        Some(max_wait) if mode == Mode::Consume => {
            // Boxed, as the leases are: only a delaying rule pays for the waiting state.
            let waited = Box::pin(limiter.check_wait(&names, key, rule.cost, max_wait)).await?;
            Ok((waited.verdict, waited.waited))
        }
        _ => Ok((
            limiter.run(&names, key, rule.cost, mode).await?,
            Duration::ZERO,
        )),
    }
}

/// The store failed: the layer's [`OnError`] decides (under `local` the limiter decided
/// already, so only a failure it could not decide, such as a full local store, gets here:
/// then the request is refused, as `local` refuses what it cannot hold).
async fn store_failed<I, S, ReqBody, ResBody>(
    shared: &Shared<S>,
    error: StoreError,
    mut inner: I,
    req: Request<ReqBody>,
) -> Answer<ResBody, I::Error>
where
    I: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    shared
        .store_error_log
        .store_failed(&error, shared.on_store_error);
    match shared.on_store_error {
        OnError::Allow => {
            let response = inner.call(req).await?;
            Ok(response.map(ResponseBody::inner))
        }
        OnError::Deny | OnError::Local => {
            let mut headers = HeaderMap::new();
            let body = write_unavailable(&mut headers);
            Ok(layer_response(
                StatusCode::SERVICE_UNAVAILABLE,
                headers,
                body,
            ))
        }
    }
}

/// What runs when the response body has ended or was dropped: the leases are dropped (each
/// gives its unit back in the background) and the real cost is settled.
fn finish<S: Store>(leases: Vec<OwnedLease<S>>, settle: Option<Settle<S>>) -> Finish {
    Finish::new(settle.is_some(), move |trailers| {
        drop(leases);
        if let Some(settle) = settle {
            settle.run(trailers);
        }
    })
}

/// A charge to settle once the response has ended: the rule's, for this request.
struct Settle<S> {
    shared: Arc<Shared<S>>,
    index: usize,
    set: Arc<PolicySet>,
    key: String,
    status: StatusCode,
    headers: HeaderMap,
}

impl<S: Store> Settle<S> {
    /// Read the real cost from the response (trailers after headers) and adjust each checked
    /// policy by its difference from the cost charged up front, in the background.
    fn run(self, trailers: Option<HeaderMap>) {
        let Settle {
            shared,
            index,
            set,
            key,
            status,
            mut headers,
        } = self;
        let rule = &shared.rules[index];
        let Some(charge) = &rule.charge else {
            return;
        };
        if let Some(trailers) = trailers {
            headers.extend(trailers);
        }
        let Some(real) = charge.read(status, &headers) else {
            return;
        };
        let delta = i128::from(real) - i128::from(rule.cost);
        let delta = i64::try_from(delta).unwrap_or(i64::MAX);
        if delta == 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no Tokio runtime to charge the cost read from the response on");
            return;
        };
        runtime.spawn(async move {
            for (_, policy) in set.checked() {
                if let Err(error) = shared.limiter.adjust(policy, &key, delta).await {
                    if let Some(suppressed) = shared.charge_error_log.admit() {
                        tracing::warn!(
                            %error,
                            policy,
                            delta,
                            suppressed,
                            "charging the cost read from the response failed; the cost checked up front stays charged"
                        );
                    }
                }
            }
        });
    }
}

/// A JSON error answered by the layer.
fn error_response<B>(status: StatusCode, code: &str, message: &str) -> Response<ResponseBody<B>> {
    let mut headers = HeaderMap::new();
    let body = write_error(&mut headers, code, message);
    layer_response(status, headers, body)
}

/// A response written by the layer.
fn layer_response<B>(
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

pin_project_lite::pin_project! {
    /// The future of [`RateLimit`]: the inner service's future for untouched requests (no
    /// allocation), a boxed decision otherwise.
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project_lite::pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        Passthrough { #[pin] future: F },
        Ready { response: Option<Response<ResponseBody<B>>> },
        Limited { future: BoxFuture<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    fn passthrough(future: F) -> Self {
        ResponseFuture {
            kind: Kind::Passthrough { future },
        }
    }

    fn ready(response: Response<ResponseBody<B>>) -> Self {
        ResponseFuture {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }

    fn limited(future: BoxFuture<B, E>) -> Self {
        ResponseFuture {
            kind: Kind::Limited { future },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Answer<B, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => future
                .poll(cx)
                .map(|result| result.map(|r| r.map(ResponseBody::inner))),
            KindProj::Ready { response } => Poll::Ready(Ok(response
                .take()
                .expect("ResponseFuture polled after completion"))),
            KindProj::Limited { future } => future.as_mut().poll(cx),
        }
    }
}
