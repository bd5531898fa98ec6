//! Leases of `concurrency` policies over HTTP (docs/architecture.md §10): the API on the memory store, and
//! three servers sharing one Redis under many concurrent clients.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Reply, TestServer};
use serde_json::{Value, json};

const MEMORY: &str = "\
policies:
  jobs: { algorithm: concurrency, limit: 2, lease: 60s }
  short: { algorithm: concurrency, limit: 1, lease: 300ms }
  api: { algorithm: gcra, rate: 10/s }
";

async fn acquire(server: &TestServer, policy: &str, key: &str, cost: u64) -> Reply {
    server
        .post_json(
            "/v1/acquire",
            json!({"policy": policy, "key": key, "cost": cost}),
        )
        .await
}

async fn lease_call(
    server: &TestServer,
    path: &str,
    policy: &str,
    key: &str,
    lease: &Value,
) -> Reply {
    server
        .post_json(path, json!({"policy": policy, "key": key, "lease": lease}))
        .await
}

#[tokio::test]
async fn acquire_release_renew_answer_as_documented() {
    let server = TestServer::start(MEMORY).await;
    let first = acquire(&server, "jobs", "t", 1).await;
    assert_eq!(first.status, 200, "{:?}", first.json);
    assert_eq!(first.json["allowed"], true);
    assert_eq!(first.json["policy"], "jobs");
    assert_eq!(first.json["remaining"], 1);
    assert_eq!(first.json["lease_expires_in_ms"], 60_000);
    let lease = first.json["lease"].clone();
    assert!(lease.as_str().is_some_and(|l| !l.is_empty()));

    let second = acquire(&server, "jobs", "t", 1).await;
    assert_eq!(
        (
            second.json["allowed"].clone(),
            second.json["remaining"].clone()
        ),
        (json!(true), json!(0))
    );
    assert_ne!(second.json["lease"], lease);

    // Full: refused with the time until a lease expires, no lease, and Retry-After.
    let refused = acquire(&server, "jobs", "t", 1).await;
    assert_eq!(refused.status, 200);
    assert_eq!(refused.json["allowed"], false);
    assert!(refused.json.get("lease").is_none(), "{:?}", refused.json);
    let retry = refused.json["retry_after_ms"].as_u64().unwrap();
    assert!(retry > 59_000 && retry <= 60_000, "{retry}");
    assert_eq!(refused.header("retry-after"), Some("60"));
    // Another key has its own slots.
    assert_eq!(acquire(&server, "jobs", "u", 2).await.json["allowed"], true);

    // Renew: a new full lease; release: 204, twice (idempotent); renew after release: 404.
    let renewed = lease_call(&server, "/v1/renew", "jobs", "t", &lease).await;
    assert_eq!(renewed.status, 200, "{:?}", renewed.json);
    assert_eq!(renewed.json["lease_expires_in_ms"], 60_000);
    assert_eq!(renewed.json["lease"], lease);
    for _ in 0..2 {
        let released = lease_call(&server, "/v1/release", "jobs", "t", &lease).await;
        assert_eq!(released.status, 204);
    }
    let gone = lease_call(&server, "/v1/renew", "jobs", "t", &lease).await;
    assert_eq!((gone.status, gone.code()), (404, "not_found"));
    // The released slot is free again.
    assert_eq!(acquire(&server, "jobs", "t", 1).await.json["allowed"], true);
    server.stop().await;
}

#[tokio::test]
async fn an_unreleased_lease_expires_after_its_lease() {
    let server = TestServer::start(MEMORY).await;
    let started = Instant::now();
    let held = acquire(&server, "short", "t", 1).await;
    assert_eq!(held.json["allowed"], true);
    let lease = held.json["lease"].clone();
    // Poll until the slot is free again: never before the lease has run out.
    loop {
        let next = acquire(&server, "short", "t", 1).await;
        if next.json["allowed"] == true {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never freed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    let gone = lease_call(&server, "/v1/renew", "short", "t", &lease).await;
    assert_eq!(gone.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn bad_lease_requests_are_clear_4xx() {
    let server = TestServer::start(MEMORY).await;
    let cases = [
        (
            "/v1/acquire",
            json!({"policy": "nope", "key": "k"}),
            404,
            "unknown_policy",
        ),
        (
            "/v1/acquire",
            json!({"policy": "api", "key": "k"}),
            400,
            "invalid_request",
        ),
        (
            "/v1/acquire",
            json!({"policy": "jobs", "key": "k", "cost": 3}),
            400,
            "invalid_request",
        ),
        (
            "/v1/acquire",
            json!({"policy": "jobs", "key": "k", "cost": 0}),
            400,
            "invalid_request",
        ),
        (
            "/v1/acquire",
            json!({"policy": "jobs", "key": ""}),
            400,
            "invalid_request",
        ),
        (
            "/v1/acquire",
            json!({"policy": "jobs", "key": "k", "lease": "x"}),
            400,
            "invalid_request",
        ),
        (
            "/v1/release",
            json!({"policy": "jobs", "key": "k", "lease": "not-a-lease"}),
            400,
            "invalid_request",
        ),
        (
            "/v1/release",
            json!({"policy": "jobs", "key": "k"}),
            400,
            "invalid_request",
        ),
        (
            "/v1/renew",
            json!({"policy": "jobs", "key": "k", "lease": 7}),
            400,
            "invalid_request",
        ),
        (
            "/v1/renew",
            json!({"policy": "api", "key": "k", "lease": format!("{}-1", "a".repeat(32))}),
            400,
            "invalid_request",
        ),
        // A concurrency policy is acquired, not checked.
        (
            "/v1/check",
            json!({"policy": "jobs", "key": "k"}),
            400,
            "invalid_request",
        ),
    ];
    for (path, body, status, code) in cases {
        let reply = server.post_json(path, body.clone()).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{path} {body}: {:?}",
            reply.json
        );
    }
    let get = server.get("/v1/acquire").await;
    assert_eq!(get.status, 405);
    // Releasing a well-formed id nobody holds is still a 204.
    let unknown = json!(format!("{}-1", "b".repeat(32)));
    assert_eq!(
        lease_call(&server, "/v1/release", "jobs", "k", &unknown)
            .await
            .status,
        204
    );
    server.stop().await;
}

/// Three servers on one Redis, 64 clients each holding a lease for a random short time: the
/// leases held at once, counted by the clients, never exceed the limit; every release frees a
/// slot (all are free at the end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_never_lease_more_than_the_limit() {
    const LIMIT: u64 = 8;
    let url = tollgate_testkit::shared_standalone().url();
    let yaml = format!(
        "store:\n  url: {url}\n  prefix: leases-multi\n  timeout: 2s\npolicies:\n  jobs: {{ algorithm: concurrency, limit: {LIMIT}, lease: 60s }}\n"
    );
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Arc::new(TestServer::start(&yaml).await));
    }
    let held = Arc::new(AtomicU64::new(0));
    let most = Arc::new(AtomicU64::new(0));
    let granted = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..192u64 {
        let server = servers[(c % 3) as usize].clone();
        let (held, most, granted) = (held.clone(), most.clone(), granted.clone());
        clients.push(tokio::spawn(async move {
            let mut seed = c.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for _ in 0..6 {
                let reply = acquire(&server, "jobs", "shared", 1).await;
                assert_eq!(reply.status, 200, "{:?}", reply.json);
                if reply.json["allowed"] != true {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                granted.fetch_add(1, Ordering::Relaxed);
                let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                tokio::time::sleep(Duration::from_millis(1 + seed % 15)).await;
                held.fetch_sub(1, Ordering::SeqCst);
                let lease = reply.json["lease"].clone();
                let released = lease_call(&server, "/v1/release", "jobs", "shared", &lease).await;
                assert_eq!(released.status, 204);
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= LIMIT, "{most} leases held at once, limit {LIMIT}");
    assert!(
        most >= 2,
        "the clients never overlapped: the test proves nothing"
    );
    assert!(granted.load(Ordering::Relaxed) >= LIMIT);
    // Every release freed its slot: the whole limit can be taken at once again.
    let all = acquire(&servers[1], "jobs", "shared", LIMIT).await;
    assert_eq!(all.json["allowed"], true, "{:?}", all.json);
    for server in servers {
        Arc::into_inner(server).unwrap().stop().await;
    }
}

/// A client that dies holding leases frees them once `lease` has passed, on every instance.
#[tokio::test]
async fn leases_of_a_dead_client_expire_across_instances() {
    let url = tollgate_testkit::shared_standalone().url();
    let yaml = format!(
        "store:\n  url: {url}\n  prefix: leases-dead\n  timeout: 2s\npolicies:\n  jobs: {{ algorithm: concurrency, limit: 3, lease: 1s }}\n"
    );
    let (a, b) = (
        TestServer::start(&yaml).await,
        TestServer::start(&yaml).await,
    );
    let started = Instant::now();
    // The "dead" client: takes every slot through one instance and never comes back.
    for _ in 0..3 {
        assert_eq!(acquire(&a, "jobs", "k", 1).await.json["allowed"], true);
    }
    let refused = acquire(&b, "jobs", "k", 1).await;
    assert_eq!(refused.json["allowed"], false);
    assert!(refused.json["retry_after_ms"].as_u64().unwrap() <= 1_000);
    loop {
        if acquire(&b, "jobs", "k", 3).await.json["allowed"] == true {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "never freed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(1));
    a.stop().await;
    b.stop().await;
}

/// While the store cannot be reached, a renew or release that the failure policy refuses is 503
/// `store_unavailable`: not 404 (the store still holds the lease) and not 204 (nothing was given
/// back). Once the store is back, the release goes through and the lease is gone; under
/// `local`, a lease the store holds is refused the same way.
#[tokio::test]
async fn renew_and_release_without_the_store_are_503_not_answers_about_the_lease() {
    let redis = tollgate_testkit::RedisServer::start().expect("redis-server");
    for on_error in ["deny", "local"] {
        let yaml = format!(
            "store:\n  url: {}\n  prefix: leases-outage-{on_error}\n  timeout: 100ms\n  on_error: {on_error}\npolicies:\n  jobs: {{ algorithm: concurrency, limit: 2, lease: 60s }}\n",
            redis.node().url()
        );
        let server = TestServer::start(&yaml).await;
        let granted = acquire(&server, "jobs", "k", 1).await;
        assert_eq!(granted.json["allowed"], true, "{:?}", granted.json);
        let lease = granted.json["lease"].clone();
        redis.node().pause().expect("SIGSTOP");
        for path in ["/v1/renew", "/v1/release"] {
            let reply = lease_call(&server, path, "jobs", "k", &lease).await;
            assert_eq!(
                (reply.status, reply.json["error"]["code"].as_str()),
                (503, Some("store_unavailable")),
                "{on_error} {path}: {:?}",
                reply.json
            );
        }
        redis.node().resume().expect("SIGCONT");
        // The calls that timed out may still run when Redis wakes (the release among them):
        // sending the release again is safe, and answers 204 once the breaker lets it through.
        let started = Instant::now();
        loop {
            let released = lease_call(&server, "/v1/release", "jobs", "k", &lease).await;
            if released.status == 204 {
                break;
            }
            assert_eq!(released.status, 503, "{on_error}: {:?}", released.json);
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "never released"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let gone = lease_call(&server, "/v1/renew", "jobs", "k", &lease).await;
        assert_eq!(gone.status, 404, "{:?}", gone.json);
        server.stop().await;
    }
}

/// `POST /v1/reset` on a `concurrency` policy drops the key's leases, on the memory store and
/// on Redis: an administrator's way out when holders crashed with long leases.
#[tokio::test]
async fn reset_drops_a_keys_leases() {
    let url = tollgate_testkit::shared_standalone().url();
    let on_redis = format!(
        "store:\n  url: {url}\n  prefix: leases-reset\npolicies:\n  jobs: {{ algorithm: concurrency, limit: 2, lease: 60s }}\n"
    );
    for yaml in [MEMORY, on_redis.as_str()] {
        let server = TestServer::start(yaml).await;
        let reset = || server.post_json("/v1/reset", json!({"policy": "jobs", "key": "r"}));
        // A run before this one may have left leases in the shared Redis.
        assert_eq!(reset().await.status, 204);
        for _ in 0..2 {
            assert_eq!(acquire(&server, "jobs", "r", 1).await.json["allowed"], true);
        }
        assert_eq!(
            acquire(&server, "jobs", "r", 1).await.json["allowed"],
            false
        );
        let reply = reset().await;
        assert_eq!(reply.status, 204, "{:?}", reply.json);
        let again = acquire(&server, "jobs", "r", 2).await;
        assert_eq!(again.json["allowed"], true, "{:?}", again.json);
        server.stop().await;
    }
}
