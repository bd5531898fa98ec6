//! # tollgate-tower
//!
//! A tower [`Layer`](tower_layer::Layer) that rate-limits HTTP requests with a
//! [`tollgate::Limiter`]: on the in-process memory store for one instance, on Redis for many.
//! It works with axum 0.8, hyper 1 and tonic 0.14 (anything speaking `http::Request` /
//! `http::Response` with a `Bytes` body).
//!
//! ```
//! use axum::{Router, routing::{get, post}};
//! use http::Method;
//! use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
//! use tollgate_tower::{Key, Quota, RateLimitLayer, Route};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let limiter = Limiter::new(MemoryStore::new())
//!     .with_policy("login", Policy::builder(Algorithm::SlidingLog).rate("5/15m").build()?)?
//!     .with_policy("api", Policy::builder(Algorithm::Gcra).rate("100/h").build()?)?;
//!
//! let rate_limit = RateLimitLayer::builder(limiter)
//!     // Signed-in users by id, everyone else by address.
//!     .key(Key::header("x-user-id").or(Key::client_ip()))
//!     // Believe X-Forwarded-For only from our load balancers.
//!     .trusted_proxies(["10.0.0.0/8"])
//!     .exclude("/health")
//!     .route(Route::pattern("/api/auth/login").method(Method::POST), "login")
//!     .route("/api/**", "api")
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/health", get(|| async { "ok" }))
//!     .route("/api/auth/login", post(|| async { "welcome" }))
//!     .route("/api/data", get(|quota: Quota| async move {
//!         format!("{} requests left", quota.decision().remaining)
//!     }))
//!     .layer(rate_limit);
//! // Serve with `into_make_service_with_connect_info::<SocketAddr>()` so the layer sees the
//! // client address (see examples/axum.rs).
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! What the layer does per request is described on [`RateLimitLayer`]; keys on [`Key`]; how the
//! client address is found on [`ClientIp`]; routes on [`Route`] and [`Rule`]; tiers on
//! [`Tiers`]; the headers in [`headers`]. A rule may also hold a `concurrency` policy's lease
//! until the response body ends, [`charge`](Rule::charge) the real cost read from the response,
//! and [`delay`](Rule::delay) a request until its cost fits instead of a 429 (see [`Rule`]).
#![warn(missing_docs)]

mod body;
mod charge;
mod cidr;
mod client_ip;
mod error;
mod forwarded;
pub mod headers;
mod key;
mod layer;
mod log_throttle;
mod policy_set;
mod quota;
mod route;
mod rule;
mod service;

pub use body::ResponseBody;
pub use charge::{Charge, ChargeFn};
pub use cidr::{Cidr, CidrError, normalize};
pub use client_ip::{ClientIp, ForwardedHeader, PeerFn};
pub use error::BuildError;
pub use key::{Key, KeyFn};
pub use layer::{MissingKey, RateLimitBuilder, RateLimitLayer};
pub use policy_set::PolicySet;
pub use quota::Quota;
pub use route::Route;
pub use rule::{Policies, PolicyChoice, Rule, TierFn, Tiers};
pub use service::{RateLimit, ResponseFuture};
/// What the layer does when the store fails: the core's rule
/// ([`RateLimitBuilder::on_store_error`]).
pub use tollgate::OnError;

/// The README's Rust blocks compile as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
