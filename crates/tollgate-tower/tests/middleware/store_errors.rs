//! What the layer does when the store fails or answers in degraded mode.
//!
//! The stores here are real `Store` implementations: one whose backend is always down (what a
//! store returns when Redis is unreachable), and the memory store answering as a fallback would.

use std::io;

use axum::Router;
use http::StatusCode;
use tollgate::{
    Check, LeaseOp, LeaseOutcome, Limiter, MemoryStore, Mode, Policy, Store, StoreDecision,
    StoreError,
};
use tollgate_tower::{OnError, RateLimitLayer};

use crate::common::{Server, echo, per_hour};

/// A store whose backend is unreachable.
struct DownStore;

fn refused() -> StoreError {
    StoreError::Backend(Box::new(io::Error::new(
        io::ErrorKind::ConnectionRefused,
        "connection refused",
    )))
}

impl Store for DownStore {
    async fn decide(&self, _: &[Check<'_>], _: u64, _: Mode) -> Result<StoreDecision, StoreError> {
        Err(refused())
    }

    async fn lease(&self, _: Check<'_>, _: LeaseOp) -> Result<LeaseOutcome, StoreError> {
        Err(refused())
    }

    async fn reset(&self, _: &[Check<'_>]) -> Result<(), StoreError> {
        Err(StoreError::Timeout(std::time::Duration::from_millis(50)))
    }
}

/// The memory store deciding as a local fallback does: every decision marked degraded.
struct FallbackStore(MemoryStore);

impl Store for FallbackStore {
    async fn decide(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<StoreDecision, StoreError> {
        let mut answer = self.0.decide(checks, cost, mode).await?;
        answer.degraded = true;
        Ok(answer)
    }

    async fn reset(&self, checks: &[Check<'_>]) -> Result<(), StoreError> {
        self.0.reset(checks).await
    }
}

fn down(on_error: OnError) -> RateLimitLayer<DownStore> {
    let limiter = Limiter::new(DownStore)
        .with_policy("api", per_hour(tollgate::Algorithm::FixedWindow, 1))
        .unwrap();
    RateLimitLayer::builder(limiter)
        .default_policies("api")
        .on_store_error(on_error)
        .degraded_header("X-RateLimit-Degraded")
        .build()
        .unwrap()
}

#[tokio::test]
async fn fail_open_lets_requests_through_without_headers() {
    let server = Server::start(Router::new().fallback(echo).layer(down(OnError::Allow))).await;
    for _ in 0..3 {
        let reply = server.get("/x", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "none", "no quota was decided");
        assert!(!reply.has_quota_headers());
    }
}

#[tokio::test]
async fn fail_closed_answers_503() {
    let server = Server::start(Router::new().fallback(echo).layer(down(OnError::Deny))).await;
    let reply = server.get("/x", &[]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    let json = reply.json();
    assert_eq!(json["error"]["code"], "rate_limiter_unavailable");
    assert!(json["error"]["message"].is_string());
    // Come back when the store is tried again (RFC 9110 lets a 503 say when); nothing is known
    // of the quota.
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("ratelimit"), None);
    assert_eq!(reply.header("ratelimit-policy"), None);
}

#[tokio::test]
async fn local_decides_on_this_instance_when_the_store_is_down() {
    let server = Server::start(Router::new().fallback(echo).layer(down(OnError::Local))).await;
    let first = server.get("/x", &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(first.has_quota_headers(), "a local decision has a quota");
    assert_eq!(first.header("x-ratelimit-degraded"), Some("1"));
    let second = server.get("/x", &[]).await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "1/hour, decided locally"
    );
    assert_eq!(second.header("x-ratelimit-degraded"), Some("1"));
}

#[tokio::test]
async fn local_leases_go_back_to_the_fallback_that_granted_them() {
    let jobs = Policy::concurrency(1, std::time::Duration::from_secs(60)).unwrap();
    let limiter = Limiter::new(DownStore).with_policy("jobs", jobs).unwrap();
    let layer = RateLimitLayer::builder(limiter)
        .default_policies("jobs")
        .on_store_error(OnError::Local)
        .degraded_header("X-RateLimit-Degraded")
        .build()
        .unwrap();
    let server = Server::start(Router::new().fallback(echo).layer(layer)).await;
    // One unit at a time: each response's end gives its local lease back, so the next request
    // finds the unit free (a release sent to the failed store instead would hold it a minute).
    for round in 0..5 {
        let reply = server.get("/x", &[]).await;
        assert_eq!(reply.status, StatusCode::OK, "round {round}");
        assert_eq!(reply.header("x-ratelimit-degraded"), Some("1"));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn degraded_decisions_are_enforced_and_flagged() {
    let limiter = Limiter::new(FallbackStore(MemoryStore::new()))
        .with_policy("api", per_hour(tollgate::Algorithm::FixedWindow, 1))
        .unwrap();
    let layer = RateLimitLayer::builder(limiter)
        .default_policies("api")
        .degraded_header("X-RateLimit-Degraded")
        .build()
        .unwrap();
    async fn degraded(quota: tollgate_tower::Quota) -> String {
        format!("degraded={}", quota.degraded())
    }
    let server = Server::start(Router::new().fallback(degraded).layer(layer)).await;
    let reply = server.get("/x", &[]).await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "degraded=true")
    );
    assert_eq!(reply.header("x-ratelimit-degraded"), Some("1"));
    let rejected = server.get("/x", &[]).await;
    assert_eq!(rejected.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rejected.header("x-ratelimit-degraded"), Some("1"));
}
