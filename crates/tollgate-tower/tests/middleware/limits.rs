//! Counting, headers, rejections, routes, tiers, peeks and missing keys.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use http::request::Parts;
use http::{Method, StatusCode};
use tollgate::{Algorithm, Limiter, MemoryStore};
use tollgate_tower::{BuildError, Key, MissingKey, RateLimitLayer, Route, Rule, Tiers};

use crate::common::{Server, echo, limiter, per_hour, serve};

#[tokio::test]
async fn limit_n_gives_exactly_n_then_429_with_headers() {
    let server = serve(
        RateLimitLayer::builder(limiter(&[("api", 5)]))
            .key(Key::header("x-user-id"))
            .default_policies("api"),
    )
    .await;
    let alice = [("x-user-id", "alice")];

    for i in 0..5 {
        let reply = server.get("/api/data", &alice).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
        assert_eq!(reply.body, format!("x-user-id:alice api {} true", 4 - i));
        assert_eq!(reply.policies(), [("api".to_owned(), 5, 3600)]);
        let quotas = reply.quotas();
        assert_eq!(quotas.len(), 1);
        let (name, r, t) = &quotas[0];
        assert_eq!((name.as_str(), *r), ("api", 4 - i));
        assert!((1..=3600).contains(t), "t={t}");
        assert!(reply.header("retry-after").is_none());
        assert!(
            reply.header("x-ratelimit-limit").is_none(),
            "legacy headers are off by default"
        );
    }

    for _ in 0..3 {
        let reply = server.get("/api/data", &alice).await;
        assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!(
            (1..=3600).contains(&retry_after),
            "Retry-After {retry_after}"
        );
        let json = reply.json();
        let retry_ms = json["error"]["retry_after_ms"].as_u64().unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "rate_limited", "retry_after_ms": retry_ms}})
        );
        assert!(retry_ms > 0);
        assert_eq!(
            retry_after,
            retry_ms.div_ceil(1000).max(1),
            "Retry-After rounds up"
        );
        assert_eq!(reply.policies(), [("api".to_owned(), 5, 3600)]);
        assert_eq!(reply.quotas()[0].1, 0, "r=0 when rejected");
    }

    // Another key has its own quota.
    let bob = server.get("/api/data", &[("x-user-id", "bob")]).await;
    assert_eq!(bob.status, StatusCode::OK);
    assert_eq!(bob.quotas()[0].1, 4);
}

#[tokio::test]
async fn exact_counts_for_every_algorithm() {
    for algorithm in Algorithm::ALL {
        let limiter = Limiter::new(MemoryStore::new())
            .with_policy("api", per_hour(algorithm, 7))
            .unwrap();
        let server = serve(RateLimitLayer::builder(limiter).default_policies("api")).await;
        let mut statuses = Vec::new();
        for _ in 0..10 {
            statuses.push(server.get("/x", &[]).await.status.as_u16());
        }
        assert_eq!(
            statuses,
            [[200; 7].as_slice(), &[429; 3]].concat(),
            "{algorithm}"
        );
    }
}

#[tokio::test]
async fn several_policies_are_all_or_nothing() {
    let server = serve(
        RateLimitLayer::builder(limiter(&[("small", 2), ("big", 5)]))
            .key(Key::header("x-user-id"))
            .route("/api/**", ["small", "big"]),
    )
    .await;
    let user = [("x-user-id", "u1")];
    for _ in 0..2 {
        assert_eq!(server.get("/api/a", &user).await.status, StatusCode::OK);
    }
    let rejected = server.get("/api/a", &user).await;
    assert_eq!(rejected.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        rejected.policies(),
        [("small".to_owned(), 2, 3600), ("big".to_owned(), 5, 3600)]
    );
    let quotas = rejected.quotas();
    assert_eq!((quotas[0].0.as_str(), quotas[0].1), ("small", 0));
    // The rejected requests took nothing from `big`.
    assert_eq!((quotas[1].0.as_str(), quotas[1].1), ("big", 3));
    let again = server.get("/api/a", &user).await;
    assert_eq!(again.quotas()[1].1, 3);
}

#[tokio::test]
async fn routes_first_match_wins_and_excluded_paths_are_untouched() {
    let server = serve(
        RateLimitLayer::builder(limiter(&[("login", 2), ("api", 4)]))
            .key(Key::header("x-user-id").or(Key::client_ip()))
            .exclude("/health")
            .exclude(Route::prefix("/metrics"))
            .rule(
                Rule::new(
                    Route::pattern("/api/auth/login").method(Method::POST),
                    "login",
                )
                .key(Key::client_ip()),
            )
            .route("/api/users/:id", "api")
            .route("/api/**", "api"),
    )
    .await;
    let user = [("x-user-id", "carol")];

    for _ in 0..10 {
        for path in ["/health", "/metrics", "/metrics/detail"] {
            let reply = server.get(path, &user).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}");
            assert_eq!(reply.body, "none", "{path} is not checked");
            assert!(!reply.has_quota_headers(), "{path} has no headers");
        }
    }
    // Paths no rule matches pass unlimited, without headers.
    let other = server.get("/other", &user).await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (StatusCode::OK, "none")
    );
    assert!(!other.has_quota_headers());

    // Log-in by address, whatever the user header says.
    for _ in 0..2 {
        let reply = server.send(Method::POST, "/api/auth/login", &user).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert!(
            reply.body.starts_with("ip:127.0.0.1 login "),
            "{}",
            reply.body
        );
    }
    let reply = server
        .send(Method::POST, "/api/auth/login", &[("x-user-id", "dave")])
        .await;
    assert_eq!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS,
        "same address, new user id"
    );

    // GET on the login path is not the log-in rule: it counts against `api`.
    let reply = server.get("/api/auth/login", &user).await;
    assert_eq!(reply.body, "x-user-id:carol api 3 true");
    let reply = server.get("/api/users/7", &user).await;
    assert_eq!(reply.body, "x-user-id:carol api 2 true");
}

#[tokio::test]
async fn tiers_pick_policies_per_request() {
    let server = serve(
        RateLimitLayer::builder(limiter(&[("free", 2), ("premium", 4), ("partner", 3)]))
            .key(Key::header("x-user-id"))
            .route(
                "/api/**",
                Tiers::header("x-plan", "free").tier("premium", "premium"),
            )
            .route(
                "/partner/**",
                Tiers::from_fn(
                    |parts| {
                        let key = parts.headers.get("x-api-key")?.to_str().ok()?;
                        key.starts_with("pk_partner_").then_some("partner")
                    },
                    "free",
                )
                .tier("partner", "partner"),
            ),
    )
    .await;

    let count_ok = |user: &'static str, plan: Option<&'static str>, path: &'static str| {
        let server = &server;
        async move {
            let mut headers = vec![("x-user-id", user)];
            if let Some(plan) = plan {
                headers.push(("x-plan", plan));
                headers.push(("x-api-key", plan));
            }
            let mut ok = 0;
            for _ in 0..6 {
                match server.get(path, &headers).await.status {
                    StatusCode::OK => ok += 1,
                    StatusCode::TOO_MANY_REQUESTS => {}
                    other => panic!("unexpected {other}"),
                }
            }
            ok
        }
    };
    assert_eq!(count_ok("p1", Some("premium"), "/api/x").await, 4);
    assert_eq!(count_ok("f1", None, "/api/x").await, 2);
    assert_eq!(
        count_ok("g1", Some("gold"), "/api/x").await,
        2,
        "unknown tier: default"
    );
    assert_eq!(count_ok("a1", Some("pk_partner_1"), "/partner/x").await, 3);
    assert_eq!(count_ok("a2", Some("pk_other"), "/partner/x").await, 2);

    let reply = server
        .get("/api/x", &[("x-user-id", "p2"), ("x-plan", "premium")])
        .await;
    assert_eq!(reply.policies(), [("premium".to_owned(), 4, 3600)]);
}

#[tokio::test]
async fn peek_rule_shows_quota_without_spending_it() {
    let server = serve(
        RateLimitLayer::builder(limiter(&[("data", 5)]))
            .key(Key::header("x-user-id"))
            .rule(Rule::new("/api/status", "data").peek())
            .route("/api/**", "data"),
    )
    .await;
    let user = [("x-user-id", "erin")];
    for _ in 0..3 {
        assert_eq!(server.get("/api/data", &user).await.status, StatusCode::OK);
    }
    for _ in 0..5 {
        let status = server.get("/api/status", &user).await;
        assert_eq!(status.status, StatusCode::OK);
        assert_eq!(status.body, "x-user-id:erin data 2 false");
        assert_eq!(status.quotas()[0].1, 2);
    }
    for _ in 0..2 {
        assert_eq!(server.get("/api/data", &user).await.status, StatusCode::OK);
    }
    assert_eq!(
        server.get("/api/data", &user).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    // An exhausted quota is still shown, never refused.
    let status = server.get("/api/status", &user).await;
    assert_eq!(
        (status.status, status.body.as_str()),
        (StatusCode::OK, "x-user-id:erin data 0 false")
    );
}

#[tokio::test]
async fn peek_helper_reads_another_routes_quota() {
    let layer = RateLimitLayer::builder(limiter(&[("data", 3)]))
        .key(Key::header("x-user-id"))
        .exclude("/quota")
        .route("/api/**", "data")
        .build()
        .unwrap();
    async fn quota(State(layer): State<RateLimitLayer<MemoryStore>>, parts: Parts) -> String {
        match layer
            .peek(&parts, Some((&Method::GET, "/api/data")))
            .await
            .unwrap()
        {
            Some(q) => format!("{} {}", q.key(), q.decision().remaining),
            None => "none".to_owned(),
        }
    }
    let app = Router::new()
        .route("/quota", get(quota))
        .with_state(layer.clone())
        .fallback(echo)
        .layer(layer);
    let server = Server::start(app).await;
    let user = [("x-user-id", "fay")];
    assert_eq!(server.get("/quota", &user).await.body, "x-user-id:fay 3");
    server.get("/api/data", &user).await;
    assert_eq!(server.get("/quota", &user).await.body, "x-user-id:fay 2");
    assert_eq!(server.get("/quota", &user).await.body, "x-user-id:fay 2");
}

#[tokio::test]
async fn requests_without_a_key() {
    let builder = || {
        RateLimitLayer::builder(limiter(&[("api", 2)]))
            .key(Key::header("x-user-id"))
            .default_policies("api")
    };

    // Default: one shared "anonymous" key, still limited.
    let shared = serve(builder()).await;
    assert_eq!(shared.get("/x", &[]).await.body, "anonymous api 1 true");
    assert_eq!(
        shared.get("/x", &[("x-user-id", " ")]).await.body,
        "anonymous api 0 true"
    );
    assert_eq!(
        shared.get("/x", &[]).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );

    let reject = serve(builder().on_missing_key(MissingKey::Reject)).await;
    let reply = reject.get("/x", &[]).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.json()["error"]["code"], "invalid_request");
    assert_eq!(
        reject.get("/x", &[("x-user-id", "g")]).await.status,
        StatusCode::OK
    );

    let skip = serve(builder().on_missing_key(MissingKey::Skip)).await;
    for _ in 0..5 {
        let reply = skip.get("/x", &[]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "none")
        );
        assert!(!reply.has_quota_headers());
    }
}

#[tokio::test]
async fn legacy_headers_when_asked() {
    let server = serve(
        RateLimitLayer::builder(limiter(&[("api", 2)]))
            .default_policies("api")
            .legacy_headers(true),
    )
    .await;
    let reply = server.get("/x", &[]).await;
    assert_eq!(reply.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("1"));
    let reset: u64 = reply.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((1..=3600).contains(&reset));
    server.get("/x", &[]).await;
    let rejected = server.get("/x", &[]).await;
    assert_eq!(rejected.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(rejected.header("x-ratelimit-remaining"), Some("0"));
}

#[test]
fn configuration_mistakes_fail_at_build() {
    let build = |b: tollgate_tower::RateLimitBuilder<MemoryStore>| b.build().unwrap_err();
    let base = || RateLimitLayer::builder(limiter(&[("api", 2)]));
    assert_eq!(build(base()), BuildError::NoRules);
    assert_eq!(
        build(base().route("/x", "nope")),
        BuildError::UnknownPolicy("nope".to_owned())
    );
    assert!(matches!(
        build(base().rule(Rule::new("/x", "api").cost(3))),
        BuildError::Cost { .. }
    ));
    assert!(matches!(
        build(
            base()
                .default_policies("api")
                .trusted_proxies(["10.0.0.0/99"])
        ),
        BuildError::Cidr(_)
    ));
    assert!(matches!(
        build(base().route("x/**", "api")),
        BuildError::Route { .. }
    ));
    assert_eq!(
        build(
            base()
                .default_policies("api")
                .key(Key::header("bad header"))
        ),
        BuildError::HeaderName("bad header".to_owned())
    );
    assert_eq!(
        build(base().route("/x", Tiers::header("x-plan", "api").tier("gold", "nope"))),
        BuildError::UnknownPolicy("nope".to_owned())
    );
}

/// A policy in shadow mode lets every request through, counting as usual: past its limit the
/// handler still runs (the layer logs it), and an enforced policy beside it still rejects.
#[tokio::test]
async fn a_shadow_policy_lets_requests_through() {
    let limiter = Limiter::new(MemoryStore::new())
        .with_policy(
            "trial",
            per_hour(Algorithm::SlidingLog, 2).with_shadow(true),
        )
        .unwrap()
        .with_policy("api", per_hour(Algorithm::FixedWindow, 5))
        .unwrap();
    let server = serve(
        RateLimitLayer::builder(limiter)
            .key(Key::header("x-user-id"))
            .route("/trial/**", "trial")
            .default_policies("api"),
    )
    .await;
    let alice = [("x-user-id", "alice")];
    for i in 0..4 {
        let reply = server.get("/trial/x", &alice).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
        assert!(reply.header("retry-after").is_none(), "request {i}");
    }
    for i in 0..6 {
        let reply = server.get("/api/x", &alice).await;
        let expected = if i < 5 {
            StatusCode::OK
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(reply.status, expected, "request {i}");
    }
}

/// A route whose cost the policy admits, on a key whose override (set at run time) never can:
/// 429 `rate_limited`, not a 500, and other keys pass as before.
#[tokio::test]
async fn a_cost_above_a_keys_override_is_a_429() {
    let limiter = limiter(&[("api", 5)]);
    limiter
        .set_override("api", "x-user:small", tollgate::OverrideSpec::limit(2))
        .await
        .unwrap();
    let server = serve(
        RateLimitLayer::builder(limiter)
            .rule(Rule::new("/x", "api").cost(3))
            .key(Key::header("x-user")),
    )
    .await;
    let refused = server.get("/x", &[("x-user", "small")]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.body.contains("rate_limited"), "{}", refused.body);
    let other = server.get("/x", &[("x-user", "other")]).await;
    assert_eq!(other.status, StatusCode::OK);
}
