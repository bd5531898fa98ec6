//! The rate-limiting `Service`: decide, then call the inner service or answer for it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use smallvec::SmallVec;
use tollgate::{LimitError, Mode, Store};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::headers::{write_error, write_quota, write_rejection};
use crate::layer::{MissingKey, OnStoreError, Shared};
use crate::policy_set::PolicySet;
use crate::quota::Quota;

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
    let names: SmallVec<[&str; 4]> = set.names().collect();
    let result = shared.limiter.run(&names, &key, rule.cost, rule.mode).await;
    drop(names);
    let verdict = match result {
        Ok(verdict) => verdict,
        Err(LimitError::Store(error)) => {
            return match shared.on_store_error {
                OnStoreError::FailOpen => {
                    if let Some(suppressed) = shared.store_error_log.admit() {
                        tracing::warn!(
                            %error,
                            suppressed,
                            "rate limiter store failed; requests let through (fail open)"
                        );
                    }
                    let response = inner.call(req).await?;
                    Ok(response.map(ResponseBody::inner))
                }
                OnStoreError::FailClosed => {
                    if let Some(suppressed) = shared.store_error_log.admit() {
                        tracing::warn!(
                            %error,
                            suppressed,
                            "rate limiter store failed; requests refused with 503 (fail closed)"
                        );
                    }
                    Ok(error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "rate_limiter_unavailable",
                        "the rate limiter's store is unavailable",
                    ))
                }
            };
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

    // The decision is small (inline), so the handler gets a copy and the headers the original.
    req.extensions_mut().insert(Quota {
        key,
        policies: set.clone(),
        verdict: verdict.clone(),
        consumed: rule.mode == Mode::Consume,
    });
    let mut response = inner.call(req).await?.map(ResponseBody::inner);
    write_quota(response.headers_mut(), &set, &verdict, &shared.headers);
    Ok(response)
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
