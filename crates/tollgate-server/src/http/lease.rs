//! The lease routes of `concurrency` policies (docs/architecture.md §10): `POST /v1/acquire`, `/v1/release`
//! (idempotent, 204) and `/v1/renew` (404 `not_found` once the lease has expired).
//!
//! A release or renew that the failure policy refused because the store could not be reached
//! (`deny`, or `local` for a lease the store holds) is 503 `store_unavailable`, not an answer
//! about the lease: the store may well still hold it, and both are safe to send again.

use std::sync::Arc;

use super::Response;
use ::http::{Request, StatusCode, header};
use hyper::body::Incoming;
use serde::Serialize;
use tollgate::{LeaseId, LeaseOp, LeaseOutcome, LimitError};

use super::error::ApiError;
use super::request::{AcquireRequest, LeaseRequest};
use super::{Api, body, headers, json, no_content};
use crate::metrics::ErrorCode;

/// The answer to an acquire or a renew.
#[derive(Serialize)]
struct LeaseJson<'a> {
    allowed: bool,
    policy: &'a str,
    /// The lease id: only when granted (or renewed).
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<String>,
    limit: u64,
    remaining: u64,
    /// Only when granted (or renewed).
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_expires_in_ms: Option<u64>,
    reset_after_ms: u64,
    retry_after_ms: u64,
    degraded: bool,
}

impl<'a> LeaseJson<'a> {
    fn new(policy: &'a str, id: LeaseId, outcome: &LeaseOutcome) -> LeaseJson<'a> {
        let d = &outcome.decision;
        LeaseJson {
            allowed: d.allowed,
            policy,
            lease: d.allowed.then(|| id.to_string()),
            limit: d.limit,
            remaining: d.remaining,
            lease_expires_in_ms: d
                .allowed
                .then(|| outcome.lease_expires_in_us.div_ceil(1000)),
            reset_after_ms: d.reset_after_ms(),
            retry_after_ms: d.retry_after_ms(),
            degraded: outcome.degraded,
        }
    }
}

/// `POST /v1/acquire`: 200 with the lease when granted, or `"allowed":false` with
/// `retry_after_ms` (and `Retry-After`) when the limit is taken.
pub(super) async fn acquire(api: Arc<Api>, request: Request<Incoming>) -> Response {
    let result = async {
        let (parts, body) = request.into_parts();
        let body = body::read_json(&parts.headers, body).await?;
        let request: AcquireRequest = body::parse_json(&body)?;
        let id = LeaseId::new(request.cost.unwrap_or(1));
        let (name, outcome) = api
            .service
            .lease(
                request.policy.as_str(),
                request.key.as_str(),
                LeaseOp::Acquire(id),
            )
            .await?;
        let mut response = json(StatusCode::OK, &LeaseJson::new(&name, id, &outcome));
        if !outcome.decision.allowed {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, headers::retry_after(&outcome.decision));
        }
        Ok(response)
    }
    .await;
    api.respond(result)
}

/// `POST /v1/release`: 204 whether or not the lease was still held.
pub(super) async fn release(api: Arc<Api>, request: Request<Incoming>) -> Response {
    let result = async {
        let (parts, body) = request.into_parts();
        let body = body::read_json(&parts.headers, body).await?;
        let request: LeaseRequest = body::parse_json(&body)?;
        let id = lease_id(request.lease.as_str())?;
        let (_, outcome) = api
            .service
            .lease(
                request.policy.as_str(),
                request.key.as_str(),
                LeaseOp::Release(id),
            )
            .await?;
        unreached(&outcome, "released")?;
        Ok(no_content())
    }
    .await;
    api.respond(result)
}

/// `POST /v1/renew`: 200 with the new expiry, 404 `not_found` when the lease is gone.
pub(super) async fn renew(api: Arc<Api>, request: Request<Incoming>) -> Response {
    let result = async {
        let (parts, body) = request.into_parts();
        let body = body::read_json(&parts.headers, body).await?;
        let request: LeaseRequest = body::parse_json(&body)?;
        let id = lease_id(request.lease.as_str())?;
        let (name, outcome) = api
            .service
            .lease(
                request.policy.as_str(),
                request.key.as_str(),
                LeaseOp::Renew(id),
            )
            .await?;
        unreached(&outcome, "renewed")?;
        if !outcome.decision.allowed {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                "lease not held: it expired or was released",
            ));
        }
        Ok(json(StatusCode::OK, &LeaseJson::new(&name, id, &outcome)))
    }
    .await;
    api.respond(result)
}

/// 503 when the failure policy refused `outcome` without the store: whether the store still
/// holds the lease is unknown, so "not held" would be a guess.
fn unreached(outcome: &LeaseOutcome, done: &str) -> Result<(), ApiError> {
    if outcome.degraded && !outcome.decision.allowed {
        return Err(ApiError::new(
            ErrorCode::StoreUnavailable,
            format!("the store is unavailable: the lease was not {done}; send it again"),
        ));
    }
    Ok(())
}

fn lease_id(text: &str) -> Result<LeaseId, ApiError> {
    text.parse()
        .map_err(|e| ApiError::from(LimitError::InvalidLease(e)))
}
