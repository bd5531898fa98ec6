//! The server and the tower middleware send the same `RateLimit` / `RateLimit-Policy` headers
//! for the same policy and state: both render with `tollgate::headers`.

mod common;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use common::TestServer;
use serde_json::json;
use tollgate::{Limiter, MemoryStore, Policy};
use tollgate_tower::{Key, RateLimitLayer};
use tower::ServiceExt;

/// A bucket whose burst (150) is above its rate (100/min): `q` is the capacity, so `r <= q`.
const POLICIES: [(&str, &str, &str, Option<u64>); 3] = [
    ("api", "token-bucket", "100/min", Some(150)),
    ("login", "sliding-log", "5/15m", None),
    ("daily", "fixed-window", "1000/d", None),
];

#[tokio::test]
async fn server_and_middleware_send_identical_headers() {
    let mut config = String::from("policies:\n");
    let mut limiter = Limiter::new(MemoryStore::new());
    for (name, algorithm, rate, burst) in POLICIES {
        let burst_yaml = burst.map(|b| format!(", burst: {b}")).unwrap_or_default();
        config.push_str(&format!(
            "  {name}: {{ algorithm: {algorithm}, rate: {rate}{burst_yaml} }}\n"
        ));
        let mut builder = Policy::builder(algorithm.parse().unwrap()).rate(rate);
        if let Some(b) = burst {
            builder = builder.burst(b);
        }
        limiter = limiter.with_policy(name, builder.build().unwrap()).unwrap();
    }
    let server = TestServer::start(&config).await;
    let layer = RateLimitLayer::builder(limiter)
        .key(Key::header("x-user-id"))
        .route("/one/**", "api")
        .route("/all/**", vec!["api", "login", "daily"])
        .build()
        .unwrap();
    let app = Router::new()
        .route("/one/x", get(|| async { "ok" }))
        .route("/all/x", get(|| async { "ok" }))
        .layer(layer);

    for round in 0..3 {
        for (path, body) in [
            ("/one/x", json!({"policy": "api", "key": "u"})),
            (
                "/all/x",
                json!({"policies": ["api", "login", "daily"], "key": "u"}),
            ),
        ] {
            let from_server = server.check(body).await;
            let request = axum::http::Request::get(path)
                .header("x-user-id", "u")
                .body(Body::empty())
                .unwrap();
            let from_layer = app.clone().oneshot(request).await.unwrap();
            for name in ["ratelimit-policy", "ratelimit"] {
                let layer_value = from_layer.headers().get(name).and_then(|v| v.to_str().ok());
                assert_eq!(
                    from_server.header(name),
                    layer_value,
                    "{name} on {path}, round {round}"
                );
                assert!(layer_value.is_some(), "{name} missing on {path}");
            }
        }
    }
    let last = server.check(json!({"policy": "api", "key": "v"})).await;
    assert_eq!(last.header("ratelimit-policy"), Some("\"api\";q=150;w=60"));
    assert_eq!(last.header("ratelimit"), Some("\"api\";r=149;t=1"));
    server.stop().await;
}
