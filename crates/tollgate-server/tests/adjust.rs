//! `POST /v1/adjust` (docs/architecture.md §10): charges and refunds after the fact over HTTP,
//! the same answers on the memory store and on a real Redis, and its bad input.

mod common;

use common::{Reply, TestServer};
use serde_json::{Value, json};

const POLICIES: &str = "\
policies:
  tokens: { algorithm: token-bucket, rate: 1000/h }
  window: { algorithm: fixed-window, limit: 10, period: 1h }
  log: { algorithm: sliding-log, limit: 10, period: 1h }
  jobs: { algorithm: concurrency, limit: 2, lease: 60s }
";

async fn adjust(server: &TestServer, policy: &str, key: &str, delta: Value) -> Reply {
    server
        .post_json(
            "/v1/adjust",
            json!({"policy": policy, "key": key, "delta": delta}),
        )
        .await
}

/// An LLM-style budget: reserve an estimate, settle the real count, run into debt. Returns
/// what each step answered, as (status, allowed, remaining).
async fn settle(server: &TestServer, key: &str) -> Vec<(u16, Value, Value)> {
    let mut answers = Vec::new();
    let mut record = |reply: &Reply| {
        answers.push((
            reply.status,
            reply.json["allowed"].clone(),
            reply.json["remaining"].clone(),
        ));
    };
    let reserved = server
        .check(json!({"policy": "tokens", "key": key, "cost": 300}))
        .await;
    record(&reserved);
    // The response used 120 tokens: 180 come back.
    record(&adjust(server, "tokens", key, json!(-180)).await);
    // The next one used 2,000: the bucket is 1,000 below empty.
    record(&adjust(server, "tokens", key, json!(2000)).await);
    record(&server.check(json!({"policy": "tokens", "key": key})).await);
    record(&adjust(server, "window", key, json!(4)).await);
    record(&adjust(server, "window", key, json!(-10)).await);
    record(&adjust(server, "log", key, json!(25)).await);
    answers
}

#[tokio::test]
async fn charges_and_refunds_answer_as_documented() {
    let server = TestServer::start(POLICIES).await;
    let answers = settle(&server, "tenant-7").await;
    assert_eq!(
        answers,
        [
            (200, json!(true), json!(700)),
            (200, json!(true), json!(880)),
            // 120 + 2000 charged, capped at one limit (1000) past empty.
            (200, json!(false), json!(0)),
            (200, json!(false), json!(0)),
            (200, json!(true), json!(6)),
            (200, json!(true), json!(10)),
            // 25 charged, capped at twice the limit: in debt.
            (200, json!(false), json!(0)),
        ]
    );

    // The answer is a decision with its headers: in debt, how long until one unit passes.
    let debt = adjust(&server, "tokens", "tenant-7", json!(1)).await;
    assert_eq!(debt.json["policy"], "tokens");
    assert_eq!(debt.json["limit"], 1000);
    // 2,000 tokens missing (1,000 below empty), refilled at one per 3.6 s: one more passes
    // once 1,001 are back.
    assert_eq!(debt.json["retry_after_ms"], 3_603_600);
    assert_eq!(debt.header("retry-after"), Some("3604"));
    assert!(debt.header("ratelimit").is_some(), "{:?}", debt.headers);

    // A refund never fills the bucket past its capacity.
    let refunded = adjust(&server, "tokens", "tenant-7", json!(-1_000_000)).await;
    assert_eq!(
        (
            refunded.json["allowed"].clone(),
            refunded.json["remaining"].clone()
        ),
        (json!(true), json!(1000))
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_adjustments_are_refused_with_json_errors() {
    let server = TestServer::start(POLICIES).await;
    let refused = [
        // A sliding log takes charges only.
        (
            adjust(&server, "log", "k", json!(-1)).await,
            400,
            "invalid_request",
            "charges only",
        ),
        (
            adjust(&server, "jobs", "k", json!(1)).await,
            400,
            "invalid_request",
            "release",
        ),
        (
            adjust(&server, "nope", "k", json!(1)).await,
            404,
            "unknown_policy",
            "nope",
        ),
        (
            adjust(&server, "tokens", "k", json!(1.5)).await,
            400,
            "invalid_request",
            "invalid JSON",
        ),
        (
            adjust(&server, "tokens", "k", json!("5")).await,
            400,
            "invalid_request",
            "invalid JSON",
        ),
        (
            adjust(&server, "tokens", "k", json!(9_007_199_254_740_992_i64)).await,
            400,
            "invalid_request",
            "2^53",
        ),
        (
            adjust(&server, "tokens", "k", json!(1u64 << 63)).await,
            400,
            "invalid_request",
            "invalid JSON",
        ),
        (
            server
                .post_json("/v1/adjust", json!({"policy": "tokens", "key": "k"}))
                .await,
            400,
            "invalid_request",
            "delta",
        ),
    ];
    for (reply, status, code, words) in refused {
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{:?}",
            reply.json
        );
        let message = reply.json["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(words), "{message} should mention {words}");
    }
    // Nothing refused was applied.
    let untouched = server.peek("tokens", "k").await;
    assert_eq!(untouched.json["remaining"], 1000);
    server.stop().await;
}

/// The same sequence on a real Redis answers exactly as on the memory store.
#[tokio::test]
async fn redis_settles_as_the_memory_store_does() {
    let memory = TestServer::start(POLICIES).await;
    let expected = settle(&memory, "tenant-9").await;
    memory.stop().await;

    let url = tollgate_testkit::shared_standalone().url();
    let redis = TestServer::start(&format!(
        "store:\n  url: {url}\n  prefix: adjust-http\n  timeout: 2s\n{POLICIES}"
    ))
    .await;
    let key = format!("tenant-9-{}", std::process::id());
    assert_eq!(settle(&redis, &key).await, expected);
    redis.stop().await;
}
