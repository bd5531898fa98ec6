//! An axum app behind tollgate's rate-limiting layer, on the in-process memory store.
//!
//! ```text
//! cargo run -p tollgate-tower --example axum
//! curl -i -H 'X-User-ID: alice' localhost:3000/api/data         # 200 with RateLimit headers
//! curl -i -H 'X-User-ID: alice' localhost:3000/api/status       # the quota, nothing spent
//! curl -i -X POST localhost:3000/api/auth/login                 # 5 per 15 minutes per address
//! ```
//! For several instances sharing one limit, build the `Limiter` on a Redis store instead.

use std::net::SocketAddr;

use axum::Router;
use axum::routing::{get, post};
use http::Method;
use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
use tollgate_tower::{Key, Quota, RateLimitLayer, Route, Rule, Tiers};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limiter = Limiter::new(MemoryStore::new())
        .with_policy(
            "login",
            Policy::builder(Algorithm::SlidingLog)
                .rate("5/15m")
                .build()?,
        )?
        .with_policy(
            "api",
            Policy::builder(Algorithm::Gcra).rate("100/h").build()?,
        )?
        .with_policy(
            "api-premium",
            Policy::builder(Algorithm::Gcra).rate("1000/h").build()?,
        )?;

    let rate_limit = RateLimitLayer::builder(limiter)
        // Signed-in users by id (set by your auth layer), everyone else by client address.
        .key(Key::header("x-user-id").or(Key::client_ip()))
        // Believe X-Forwarded-For only from these proxies (none are in front of this example).
        .trusted_proxies(["10.0.0.0/8", "fd00::/8"])
        .exclude("/health")
        .exclude("/metrics")
        // First match wins: specific routes first.
        .rule(
            Rule::new(
                Route::pattern("/api/auth/login").method(Method::POST),
                "login",
            )
            .key(Key::client_ip()),
        )
        .rule(Rule::new("/api/status", "api").peek())
        .route(
            "/api/**",
            Tiers::header("x-plan", "api").tier("premium", "api-premium"),
        )
        .legacy_headers(true)
        .build()?;

    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/metrics", get(|| async { "# no metrics here\n" }))
        .route("/api/auth/login", post(|| async { "welcome\n" }))
        .route("/api/data", get(data))
        .route("/api/status", get(status))
        .layer(rate_limit);

    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".to_owned());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // Connect info gives the layer the socket peer's address.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}

/// A limited route: the layer charged this request before the handler runs.
async fn data(quota: Quota) -> String {
    format!("data for {}\n", quota.key())
}

/// The caller's quota, read without spending it (the `peek` rule).
async fn status(quota: Quota) -> String {
    let d = quota.decision();
    format!(
        "{}: {} of {} left on `{}`, full again in {} ms\n",
        quota.key(),
        d.remaining,
        d.limit,
        quota.policy(),
        d.reset_after_ms()
    )
}
