//! The demo's HTTP app: three routes behind tollgate's rate-limiting layer.
//!
//! - `GET /health`: always 200, never limited (excluded from the layer);
//! - `GET /api/data`: 10 requests a minute per `X-User-ID` (per client address without one);
//! - `GET /api/status`: the caller's quota on `data`, read without spending any of it.
//!
//! Every response carries `x-instance`, so round-robin output shows which instance answered,
//! and is logged as one JSON line.

use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use serde_json::{Value, json};
use tollgate::{Algorithm, Limiter, Policy, PolicyError, Store};
use tollgate_tower::{BuildError, Key, Quota, RateLimitLayer, Rule};

/// The one policy's name, as it appears in the `RateLimit` headers.
pub const POLICY: &str = "data";

/// The header naming the instance that answered.
pub const INSTANCE_HEADER: HeaderName = HeaderName::from_static("x-instance");

/// `data`: 10 requests a minute per user, as a token bucket of 10 refilled at 10 a minute.
///
/// Not a fixed window: a run that straddles a window boundary would see a fresh quota halfway
/// through. The bucket refills one token every 6 s, so 15 requests sent within 6 s always get
/// exactly 10 x 200 and 5 x 429, whatever the wall clock says.
pub fn policy() -> Result<Policy, PolicyError> {
    Policy::builder(Algorithm::TokenBucket)
        .rate("10/min")
        .burst(10)
        .build()
}

/// The app: routes, the rate-limiting layer over `limiter` (which must hold [`POLICY`]), and
/// the instance stamp and request log around everything.
pub fn router<S: Store>(limiter: Limiter<S>, instance: HeaderValue) -> Result<Router, BuildError> {
    let rate_limit = RateLimitLayer::builder(limiter)
        // The user, else the client address: callers without an id are still limited.
        .key(Key::header("x-user-id").or(Key::client_ip()))
        .exclude("/health")
        // First match wins: the status route only looks at the quota `/api/**` spends.
        .rule(Rule::new("/api/status", POLICY).peek())
        .route("/api/**", POLICY)
        .build()?;

    Ok(Router::new()
        .route("/health", get(health))
        .route("/api/data", get(data))
        .route("/api/status", get(status))
        .layer(rate_limit)
        // Outside the limiter, so 429s are stamped and logged too.
        .layer(middleware::from_fn_with_state(instance.clone(), stamp))
        .with_state(instance))
}

/// Liveness: answers while the process serves, whatever Redis is doing.
async fn health(State(instance): State<HeaderValue>) -> Json<Value> {
    Json(json!({ "status": "ok", "instance": name_of(&instance) }))
}

/// The limited resource. The layer charged this request before the handler ran; a request
/// over the limit never gets here (the layer answers 429).
async fn data(State(instance): State<HeaderValue>, quota: Quota) -> Json<Value> {
    let d = quota.decision();
    Json(json!({
        "instance": name_of(&instance),
        "key": quota.key(),
        "data": "hello from tollgate",
        "limit": d.limit,
        "remaining": d.remaining,
    }))
}

/// The caller's quota without spending it (the `peek` rule): what is left now, and when the
/// quota is full again.
async fn status(State(instance): State<HeaderValue>, quota: Quota) -> Json<Value> {
    let d = quota.decision();
    Json(json!({
        "instance": name_of(&instance),
        "key": quota.key(),
        "policy": quota.policy(),
        "limit": d.limit,
        "remaining": d.remaining,
        "reset_after_ms": d.reset_after_ms(),
        "retry_after_ms": d.retry_after_ms(),
    }))
}

/// Stamp `x-instance` on the response and log the request as one line.
async fn stamp(State(instance): State<HeaderValue>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    response.headers_mut().insert(INSTANCE_HEADER, instance);
    tracing::info!(
        %method,
        path,
        status = response.status().as_u16(),
        elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    response
}

/// The instance name as text (checked to be ASCII when the settings were read).
pub fn name_of(instance: &HeaderValue) -> &str {
    instance.to_str().unwrap_or_default()
}
