//! The HTTP API of docs/architecture.md §6, against a real server over real HTTP.

mod common;

use common::{TestServer, parse_sf_list, read};
use serde_json::json;

/// Limit 10 for every algorithm; a period long enough that no window edge is crossed mid-test.
const TEN_OF_EACH: &str = "
policies:
  fixed:   { algorithm: fixed-window,   rate: 10/100d }
  log:     { algorithm: sliding-log,    rate: 10/100d }
  sliding: { algorithm: sliding-window, rate: 10/100d }
  bucket:  { algorithm: token-bucket,   rate: 10/100d }
  gcra:    { algorithm: gcra,           rate: 10/100d }
  leaky:   { algorithm: leaky-bucket,   limit: 10, period: 100d }
  small:   { algorithm: fixed-window,   limit: 2, period: 100d }
";

#[tokio::test]
async fn fifteen_checks_allow_exactly_ten_for_every_algorithm() {
    let server = TestServer::start(TEN_OF_EACH).await;
    for policy in ["fixed", "log", "sliding", "bucket", "gcra", "leaky"] {
        let mut allowed = 0;
        for i in 0..15 {
            let reply = server
                .check(json!({"policy": policy, "key": "user-1"}))
                .await;
            assert_eq!(reply.status, 200, "{policy}: {reply:?}");
            let body = &reply.json;
            assert_eq!(body["policy"], policy);
            assert_eq!(body["limit"], 10);
            assert_eq!(body["degraded"], false);
            if body["allowed"] == true {
                allowed += 1;
                assert_eq!(body["remaining"], 9 - i, "{policy}");
                assert_eq!(body["retry_after_ms"], 0);
                assert!(reply.header("retry-after").is_none());
            } else {
                assert_eq!(body["remaining"], 0, "{policy}");
                let retry_ms = body["retry_after_ms"].as_u64().unwrap();
                assert!(retry_ms > 0, "{policy}: rejection without retry_after_ms");
                let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
                assert_eq!(retry_after, retry_ms.div_ceil(1000), "{policy}");
                assert!(retry_after >= 1);
            }
        }
        assert_eq!(allowed, 10, "{policy} allowed {allowed} of 15");
    }
    server.stop().await;
}

#[tokio::test]
async fn headers_are_structured_fields_matching_the_body() {
    let server = TestServer::start(TEN_OF_EACH).await;
    let reply = server
        .check(json!({"policy": "bucket", "key": "h", "cost": 3}))
        .await;
    let policy = parse_sf_list(reply.header("ratelimit-policy").unwrap());
    assert_eq!(policy.len(), 1);
    assert_eq!(policy[0].name, "bucket");
    assert_eq!(policy[0].param("q"), 10);
    assert_eq!(policy[0].param("w"), 100 * 86_400);
    let state = parse_sf_list(reply.header("ratelimit").unwrap());
    assert_eq!(state[0].name, "bucket");
    assert_eq!(state[0].param("r"), 7);
    assert_eq!(reply.json["remaining"], 7);
    let reset_ms = reply.json["reset_after_ms"].as_u64().unwrap() as i64;
    assert!(reset_ms > 0);
    assert_eq!(state[0].param("t"), (reset_ms + 999) / 1000);

    // Two policies: one item each, in request order; the body reports the stricter one.
    let reply = server
        .check(json!({"policies": ["log", "small"], "key": "h"}))
        .await;
    assert_eq!(reply.json["policy"], "small");
    let names = |h: &str| -> Vec<String> {
        parse_sf_list(reply.header(h).unwrap())
            .into_iter()
            .map(|i| i.name)
            .collect()
    };
    assert_eq!(names("ratelimit-policy"), ["log", "small"]);
    assert_eq!(names("ratelimit"), ["log", "small"]);
    let state = parse_sf_list(reply.header("ratelimit").unwrap());
    assert_eq!((state[0].param("r"), state[1].param("r")), (9, 1));
    server.stop().await;
}

#[tokio::test]
async fn peek_consumes_nothing() {
    let server = TestServer::start(TEN_OF_EACH).await;
    for _ in 0..5 {
        let reply = server.peek("gcra", "p").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json["allowed"], true);
        assert_eq!(reply.json["remaining"], 10);
        assert!(reply.header("ratelimit").is_some());
    }
    server
        .check(json!({"policy": "gcra", "key": "p", "cost": 4}))
        .await;
    for _ in 0..3 {
        assert_eq!(server.peek("gcra", "p").await.json["remaining"], 6);
    }
    // A peek that would not pass says so, with a retry time, and still consumes nothing.
    let reply = server.get("/v1/peek?policy=gcra&key=p&cost=7").await;
    assert_eq!(reply.json["allowed"], false);
    assert!(reply.json["retry_after_ms"].as_u64().unwrap() > 0);
    assert!(reply.header("retry-after").is_some());
    assert_eq!(server.peek("gcra", "p").await.json["remaining"], 6);
    server.stop().await;
}

#[tokio::test]
async fn a_multi_policy_check_is_all_or_nothing() {
    let server = TestServer::start(TEN_OF_EACH).await;
    let both = json!({"policies": ["gcra", "small"], "key": "m"});
    assert_eq!(server.check(both.clone()).await.json["allowed"], true);
    assert_eq!(server.check(both.clone()).await.json["allowed"], true);
    let rejected = server.check(both.clone()).await;
    assert_eq!(rejected.json["allowed"], false);
    assert_eq!(rejected.json["policy"], "small");
    assert!(rejected.json["retry_after_ms"].as_u64().unwrap() > 0);
    // The rejection took nothing from `gcra`: two consumed, not three.
    assert_eq!(server.peek("gcra", "m").await.json["remaining"], 8);
    assert_eq!(server.peek("small", "m").await.json["remaining"], 0);
    server.stop().await;
}

#[tokio::test]
async fn reset_needs_the_admin_token_when_one_is_set() {
    let server = TestServer::start(&format!("admin_token: s3cret\n{TEN_OF_EACH}")).await;
    for _ in 0..2 {
        server.check(json!({"policy": "small", "key": "r"})).await;
    }
    assert_eq!(server.peek("small", "r").await.json["remaining"], 0);
    let reset = |auth: Option<&'static str>| {
        let mut request = server
            .client
            .post(server.url("/v1/reset"))
            .json(&json!({"policy": "small", "key": "r"}));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move { read(request.send().await.unwrap()).await }
    };
    let missing = reset(None).await;
    assert_eq!((missing.status, missing.code()), (401, "unauthorized"));
    assert_eq!(missing.header("www-authenticate"), Some("Bearer"));
    let wrong = reset(Some("Bearer nope")).await;
    assert_eq!((wrong.status, wrong.code()), (403, "forbidden"));
    let basic = reset(Some("Basic czNjcmV0")).await;
    assert_eq!(basic.status, 401);
    assert_eq!(server.peek("small", "r").await.json["remaining"], 0);
    let ok = reset(Some("Bearer s3cret")).await;
    assert_eq!(ok.status, 204);
    assert_eq!(server.peek("small", "r").await.json["remaining"], 2);
    // Errors in the body come after authorization.
    let unknown = server
        .client
        .post(server.url("/v1/reset"))
        .header("authorization", "bearer s3cret")
        .json(&json!({"policy": "nope", "key": "r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    server.stop().await;
}

#[tokio::test]
async fn reset_is_open_without_an_admin_token() {
    let server = TestServer::start(TEN_OF_EACH).await;
    server.check(json!({"policy": "small", "key": "o"})).await;
    let reply = server
        .post_json("/v1/reset", json!({"policy": "small", "key": "o"}))
        .await;
    assert_eq!(reply.status, 204);
    assert_eq!(server.peek("small", "o").await.json["remaining"], 2);
    server.stop().await;
}

#[tokio::test]
async fn policies_health_ready_and_metrics() {
    let server = TestServer::start(
        "policies:\n  api: { algorithm: token-bucket, rate: 100/min, burst: 150 }\n  login: { algorithm: sliding-log, limit: 5, period: 15m }\n",
    )
    .await;
    let list = server.get("/v1/policies").await;
    assert_eq!(list.status, 200);
    assert_eq!(
        list.json,
        json!({"policies": [
            {"name": "api", "algorithm": "token-bucket", "limit": 100, "period_ms": 60000, "period": "1m", "burst": 150},
            {"name": "login", "algorithm": "sliding-log", "limit": 5, "period_ms": 900000, "period": "15m", "burst": null},
        ]})
    );
    assert_eq!(server.get("/health").await.status, 200);
    assert_eq!(server.get("/ready").await.status, 200);

    for _ in 0..6 {
        server
            .check(json!({"policy": "login", "key": "alice"}))
            .await;
    }
    server.peek("api", "bob").await;
    server.check(json!({"policy": "nope", "key": "x"})).await;
    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for line in [
        "tollgate_decisions_total{policy=\"login\",outcome=\"allowed\"} 5",
        "tollgate_decisions_total{policy=\"login\",outcome=\"rejected\"} 1",
        "tollgate_decisions_total{policy=\"api\",outcome=\"allowed\"} 0",
        "tollgate_peeks_total{policy=\"api\",outcome=\"allowed\"} 1",
        "tollgate_degraded_decisions_total{policy=\"login\"} 0",
        "tollgate_errors_total{code=\"unknown_policy\"} 1",
        "tollgate_decision_duration_seconds_count 7",
        "tollgate_memory_store_keys 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.starts_with("tollgate_"),
            "series not named tollgate_*: {line}"
        );
    }
    assert!(text.contains("# TYPE tollgate_decision_duration_seconds histogram"));
    assert!(text.contains("tollgate_decision_duration_seconds_bucket{le=\"+Inf\"} 7"));
    server.stop().await;
}

#[tokio::test]
async fn a_full_store_applies_on_error_and_marks_degraded() {
    let policies = "policies:\n  api: { algorithm: gcra, rate: 10/min }\n";
    for (on_error, allowed) in [("deny", false), ("local", false), ("allow", true)] {
        let server = TestServer::start(&format!(
            "store:\n  max_keys: 2\n  on_error: {on_error}\n{policies}"
        ))
        .await;
        for key in ["a", "b"] {
            let reply = server.check(json!({"policy": "api", "key": key})).await;
            assert_eq!(reply.json["degraded"], false);
        }
        let reply = server.check(json!({"policy": "api", "key": "c"})).await;
        assert_eq!(reply.status, 200, "{on_error}");
        assert_eq!(reply.json["degraded"], true, "{on_error}");
        assert_eq!(reply.json["allowed"], allowed, "{on_error}");
        if !allowed {
            assert!(reply.json["retry_after_ms"].as_u64().unwrap() > 0);
            assert!(reply.header("retry-after").is_some());
        }
        // Known keys still decide normally.
        let known = server.check(json!({"policy": "api", "key": "a"})).await;
        assert_eq!(known.json["degraded"], false);
        let metrics = server.get("/metrics").await.json;
        let text = metrics.as_str().unwrap();
        assert!(text.contains("tollgate_degraded_decisions_total{policy=\"api\"} 1"));
        assert!(text.contains("tollgate_store_errors_total{kind=\"full\"} 1"));
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checks_of_one_key_never_overshoot() {
    let server = std::sync::Arc::new(TestServer::start(TEN_OF_EACH).await);
    for policy in ["fixed", "log", "sliding", "bucket", "gcra"] {
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let server = server.clone();
                tokio::spawn(async move {
                    server
                        .check(json!({"policy": policy, "key": "race"}))
                        .await
                        .json["allowed"]
                        == true
                })
            })
            .collect();
        let mut allowed = 0;
        for task in tasks {
            allowed += usize::from(task.await.unwrap());
        }
        assert_eq!(
            allowed, 10,
            "{policy}: {allowed} of 40 concurrent checks allowed"
        );
    }
}

#[tokio::test]
async fn http2_clients_get_the_same_decisions_and_headers() {
    let server = TestServer::start(TEN_OF_EACH).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    // Limit 2: allowed with 1 and 0 left, then refused, which is a decision like any other
    // (200, with Retry-After).
    for (allowed, remaining) in [(true, 1), (true, 0), (false, 0)] {
        let response = h2
            .post(server.url("/v1/check"))
            .json(&json!({"policy": "small", "key": "h2"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert!(response.headers().contains_key("ratelimit"));
        assert_eq!(response.headers().contains_key("retry-after"), !allowed);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            (body["allowed"].as_bool(), body["remaining"].as_u64()),
            (Some(allowed), Some(remaining))
        );
    }
    let missing = h2.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await;
}
