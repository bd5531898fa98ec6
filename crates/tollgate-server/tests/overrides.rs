//! docs/architecture.md §9 per-key overrides over real HTTP: the routes, their errors and admin token, a
//! decision under an override (JSON and headers), shadow-mode policies, and three servers on
//! one real Redis obeying an override set through one of them.

mod common;

use common::{Reply, TestServer, read};
use serde_json::{Value, json};
use tollgate_testkit::shared_standalone;

const POLICIES: &str = "
policies:
  api:   { algorithm: fixed-window, rate: 10/100d }
  burst: { algorithm: token-bucket, rate: 10/100d, burst: 20 }
  trial: { algorithm: sliding-log, rate: 3/100d, shadow: true }
  jobs:  { algorithm: concurrency, limit: 2, lease: 60s }
";

async fn send(server: &TestServer, method: &str, path: &str, body: Option<Value>) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = server.client.request(method, server.url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.expect("request sent")).await
}

#[tokio::test]
async fn overrides_are_set_read_listed_and_deleted() {
    let server = TestServer::start(POLICIES).await;
    let put = json!({"policy": "burst", "key": "tenant-7", "limit": 50, "period": "1m",
        "burst": 60, "expires_in_ms": 86_400_000});
    let reply = send(&server, "PUT", "/v1/overrides", Some(put)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let stored = &reply.json;
    assert_eq!(
        (&stored["limit"], &stored["burst"], &stored["period_ms"]),
        (&json!(50), &json!(60), &json!(60_000))
    );
    assert_eq!(stored["expires_in_ms"], 86_400_000);
    let got = server.get("/v1/overrides?policy=burst&key=tenant-7").await;
    assert_eq!((got.status, &got.json["limit"]), (200, &json!(50)));

    // A decision under it reports its limit, in the body and in RateLimit-Policy.
    let decided = server
        .check(json!({"policy": "burst", "key": "tenant-7", "cost": 5}))
        .await;
    assert_eq!(
        (&decided.json["limit"], &decided.json["remaining"]),
        (&json!(60), &json!(55))
    );
    // The override's quota and window (1m), not the policy's (10/100d).
    assert_eq!(
        decided.header("ratelimit-policy"),
        Some("\"burst\";q=60;w=60"),
        "{decided:?}"
    );
    let other = server.check(json!({"policy": "burst", "key": "x"})).await;
    assert_eq!(other.json["limit"], 20);

    for key in ["b", "a", "c"] {
        let put = json!({"policy": "api", "key": key, "limit": 1});
        assert_eq!(
            send(&server, "PUT", "/v1/overrides", Some(put))
                .await
                .status,
            200
        );
    }
    let page = server.get("/v1/overrides?policy=api").await;
    let keys: Vec<&str> = page.json["overrides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(page.json["next_cursor"], Value::Null);
    assert_eq!(page.json["overrides"][0]["expires_in_ms"], Value::Null);
    let rest = server.get("/v1/overrides?policy=api&cursor=b").await;
    assert_eq!(rest.json["overrides"][0]["key"], "c");

    // /v1/stats shows them too, per policy, as the listing does.
    let stats = server.get("/v1/stats").await;
    assert_eq!(stats.status, 200, "{stats:?}");
    let by_policy = |name: &str| -> Vec<String> {
        let policy = stats.json["overrides"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["policy"] == name)
            .unwrap_or_else(|| panic!("no {name} in {}", stats.json));
        policy["overrides"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(by_policy("api"), ["a", "b", "c"]);
    assert_eq!(by_policy("burst"), ["tenant-7"]);
    assert_eq!(by_policy("trial"), Vec::<String>::new());

    let deleted = send(
        &server,
        "DELETE",
        "/v1/overrides?policy=burst&key=tenant-7",
        None,
    )
    .await;
    assert_eq!(deleted.status, 204);
    let gone = server.get("/v1/overrides?policy=burst&key=tenant-7").await;
    assert_eq!((gone.status, gone.code()), (404, "not_found"));
    server.stop().await;
}

#[tokio::test]
async fn bad_overrides_are_4xx_never_5xx() {
    let server = TestServer::start(POLICIES).await;
    let long = "k".repeat(1025);
    for (body, status, code) in [
        (
            json!({"policy": "nope", "key": "k", "limit": 5}),
            404,
            "unknown_policy",
        ),
        (
            json!({"policy": "api", "key": "k", "limit": 0}),
            400,
            "invalid_request",
        ),
        // Leases count against the configured limit only: an override would never be obeyed.
        (
            json!({"policy": "jobs", "key": "k", "limit": 4}),
            400,
            "invalid_request",
        ),
        (
            json!({"policy": "api", "key": "k", "limit": 5, "period": "100000y"}),
            400,
            "invalid_request",
        ),
        (
            json!({"policy": "api", "key": "k", "limit": 5, "period": "soon"}),
            400,
            "invalid_request",
        ),
        (
            json!({"policy": "api", "key": "k", "limit": 5, "burst": 9}),
            400,
            "invalid_request",
        ),
        (
            json!({"policy": "api", "key": "k", "limit": 5, "expires_in_ms": 0}),
            400,
            "invalid_request",
        ),
        (
            json!({"policy": "api", "key": long, "limit": 5}),
            400,
            "invalid_request",
        ),
        (
            json!({"policy": "api", "key": "", "limit": 5}),
            400,
            "invalid_request",
        ),
        (
            json!({"policy": "api", "key": "k", "limit": -1}),
            400,
            "invalid_request",
        ),
        (
            json!({"policy": "api", "key": "k", "limit": 5, "colour": 1}),
            400,
            "invalid_request",
        ),
    ] {
        let reply = send(&server, "PUT", "/v1/overrides", Some(body.clone())).await;
        assert_eq!(
            (reply.status, reply.code()),
            (status, code),
            "{body}: {reply:?}"
        );
    }
    let form = server
        .client
        .put(server.url("/v1/overrides"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("policy=api")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    for (method, path, status) in [
        ("GET", "/v1/overrides", 400),
        ("GET", "/v1/overrides?policy=nope", 404),
        ("GET", "/v1/overrides?policy=api&key=", 400),
        ("DELETE", "/v1/overrides?policy=api", 400),
        ("POST", "/v1/overrides?policy=api", 405),
    ] {
        let reply = send(&server, method, path, None).await;
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn overrides_need_the_admin_token_when_one_is_set() {
    let server = TestServer::start(&format!("admin_token: s3cret\n{POLICIES}")).await;
    let put = json!({"policy": "api", "key": "k", "limit": 5});
    let reply = send(&server, "PUT", "/v1/overrides", Some(put.clone())).await;
    assert_eq!(reply.status, 401);
    assert_eq!(
        send(&server, "GET", "/v1/overrides?policy=api", None)
            .await
            .status,
        401
    );
    let authorized = server
        .client
        .put(server.url("/v1/overrides"))
        .bearer_auth("s3cret")
        .json(&put)
        .send()
        .await
        .unwrap();
    assert_eq!(authorized.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn a_shadow_policy_never_denies_and_says_when_it_would_have() {
    let server = TestServer::start(POLICIES).await;
    for i in 0..5 {
        let reply = server.check(json!({"policy": "trial", "key": "s"})).await;
        let body = &reply.json;
        assert_eq!(
            (body["allowed"].clone(), body["shadow"].clone()),
            (json!(true), json!(true))
        );
        assert_eq!(body["shadow_denied"], i >= 3, "check {i}: {body}");
        assert!(reply.header("retry-after").is_none());
    }
    // Beside an enforced policy that allows: the request passes (and the enforced policy
    // counts it); the shadow one only reports, and is the one reported (nothing left).
    let both = server
        .check(json!({"policies": ["api", "trial"], "key": "s"}))
        .await;
    assert_eq!(both.json["allowed"], true);
    assert_eq!(both.json["shadow_denied"], true);
    assert_eq!(both.json["policy"], "trial");
    assert_eq!(server.peek("api", "s").await.json["remaining"], 9);
    let plain = server.check(json!({"policy": "api", "key": "s"})).await;
    assert!(plain.json.get("shadow").is_none(), "{:?}", plain.json);
    // A peek says the same, and counts as a peek the policy would have denied.
    let peek = server.peek("trial", "s").await;
    assert_eq!(
        (&peek.json["allowed"], &peek.json["shadow_denied"]),
        (&json!(true), &json!(true))
    );
    let metrics = server.get("/metrics").await;
    let text = metrics.json.as_str().unwrap();
    assert!(
        text.contains("tollgate_decisions_total{policy=\"trial\",outcome=\"shadow_denied\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("tollgate_peeks_total{policy=\"trial\",outcome=\"shadow_denied\"} 1"),
        "{text}"
    );
    let policies = server.get("/v1/policies").await;
    assert!(policies.json.to_string().contains("\"shadow\":true"));
    server.stop().await;
}

/// `RateLimit-Policy` under an override is the override's quota and window, on Redis as on
/// the memory store (the scripts answer the period decided under).
#[tokio::test]
async fn the_policy_header_follows_an_override_on_redis() {
    let config = format!(
        "store:\n  url: {}\n  prefix: policy-header\n{POLICIES}",
        shared_standalone().url()
    );
    let server = TestServer::start(&config).await;
    let put = json!({"policy": "burst", "key": "w", "limit": 50, "period": "1m", "burst": 60});
    assert_eq!(
        send(&server, "PUT", "/v1/overrides", Some(put))
            .await
            .status,
        200
    );
    let decided = server.check(json!({"policy": "burst", "key": "w"})).await;
    assert_eq!(
        decided.header("ratelimit-policy"),
        Some("\"burst\";q=60;w=60"),
        "{decided:?}"
    );
    let other = server.check(json!({"policy": "burst", "key": "x"})).await;
    assert_eq!(
        other.header("ratelimit-policy"),
        Some("\"burst\";q=20;w=8640000"),
        "{other:?}"
    );
    server.stop().await;
}

/// Three servers on one Redis: an override set through one is obeyed exactly by all three on
/// the next decision, under 32 concurrent clients; deleting it restores the policy.
#[tokio::test]
async fn three_servers_obey_one_override_at_once() {
    let redis = shared_standalone();
    let config = format!(
        "store:\n  url: {}\n  prefix: three-servers\n{POLICIES}",
        redis.url()
    );
    let servers = [
        TestServer::start(&config).await,
        TestServer::start(&config).await,
        TestServer::start(&config).await,
    ];
    // The policy's 10 spent across the three.
    for i in 0..10 {
        let reply = servers[i % 3]
            .check(json!({"policy": "api", "key": "tenant"}))
            .await;
        assert_eq!(reply.json["allowed"], true);
    }
    let put = json!({"policy": "api", "key": "tenant", "limit": 100});
    assert_eq!(
        send(&servers[0], "PUT", "/v1/overrides", Some(put))
            .await
            .status,
        200
    );
    // 32 clients, 4 rounds each, across the three: exactly 90 more pass.
    let mut clients = Vec::new();
    for c in 0..32 {
        let urls: Vec<String> = servers.iter().map(|s| s.url("/v1/check")).collect();
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut allowed = 0;
            for round in 0..4 {
                let url = &urls[(c + round) % 3];
                let reply: Value = client
                    .post(url)
                    .json(&json!({"policy": "api", "key": "tenant"}))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(reply["limit"], 100, "{reply}");
                allowed += usize::from(reply["allowed"] == true);
            }
            allowed
        }));
    }
    let mut allowed = 0;
    for client in clients {
        allowed += client.await.unwrap();
    }
    assert_eq!(allowed, 90);
    let deleted = send(
        &servers[2],
        "DELETE",
        "/v1/overrides?policy=api&key=tenant",
        None,
    )
    .await;
    assert_eq!(deleted.status, 204);
    // Rejected everywhere at once; the limit reported is the policy's again at once where the
    // override was deleted, and within a second elsewhere (a rejection the over-limit cache
    // remembered answers for at most a second).
    let reply = servers[2]
        .check(json!({"policy": "api", "key": "tenant"}))
        .await;
    assert_eq!(
        (&reply.json["allowed"], &reply.json["limit"]),
        (&json!(false), &json!(10))
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    for server in &servers {
        loop {
            let reply = server
                .check(json!({"policy": "api", "key": "tenant"}))
                .await;
            assert_eq!(reply.json["allowed"], false);
            if reply.json["limit"] == 10 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{reply:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    for server in servers {
        server.stop().await;
    }
}

/// Every instance caches the rejections of a spent key (the over-limit cache); an override
/// raising its limit, set through one instance, is obeyed by that one on its very next decision
/// and by every other as soon as the announcement reaches it (milliseconds, where the cache
/// alone would hold for up to a second): each hears of the change from Redis and forgets what
/// it cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_limit_beats_every_instances_cached_rejections() {
    let redis = shared_standalone();
    let config = format!(
        "store:\n  url: {}\n  prefix: cached-{}\npolicies:\n  hourly: {{ algorithm: fixed-window, limit: 3, period: 1h }}\n",
        redis.url(),
        std::process::id()
    );
    let servers = [
        TestServer::start(&config).await,
        TestServer::start(&config).await,
        TestServer::start(&config).await,
    ];
    // Each instance subscribes to the override channel in the background once it starts (a
    // cache filled before that is cleared when the subscription comes up): wait for all three.
    let channel = format!("cached-{}:overrides:changed", std::process::id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, subscribers): (String, u64) = redis
            .query(&["PUBSUB", "NUMSUB", &channel])
            .expect("PUBSUB NUMSUB");
        if subscribers >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{subscribers} of 3 subscribed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let check = json!({"policy": "hourly", "key": "tenant"});
    for _ in 0..3 {
        assert_eq!(servers[0].check(check.clone()).await.json["allowed"], true);
    }
    // Every instance is refused, and then answers from its cache (no Redis call).
    for (i, server) in servers.iter().enumerate() {
        for _ in 0..2 {
            assert_eq!(server.check(check.clone()).await.json["allowed"], false);
        }
        let metrics = server.metrics().await;
        let hits = metrics
            .lines()
            .find_map(|line| line.strip_prefix("tollgate_over_limit_cache_hits_total "))
            .and_then(|n| n.trim().parse::<u64>().ok());
        assert!(
            hits >= Some(1),
            "server {i} answered no rejection from its cache"
        );
    }
    let put = json!({"policy": "hourly", "key": "tenant", "limit": 10});
    assert_eq!(
        send(&servers[0], "PUT", "/v1/overrides", Some(put))
            .await
            .status,
        200
    );
    let reply = servers[0].check(check.clone()).await;
    assert_eq!(
        (&reply.json["allowed"], &reply.json["limit"]),
        (&json!(true), &json!(10)),
        "the instance that set it: {:?}",
        reply.json
    );
    // A cached rejection answers without Redis and consumes nothing, so asking again until the
    // announcement arrives costs nothing; it must arrive well within the cache's second.
    let set_at = std::time::Instant::now();
    for (i, server) in servers.iter().enumerate().skip(1) {
        let reply = loop {
            let reply = server.check(check.clone()).await;
            if reply.json["allowed"] == true
                || set_at.elapsed() > std::time::Duration::from_millis(300)
            {
                break reply;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        };
        assert_eq!(
            (&reply.json["allowed"], &reply.json["limit"]),
            (&json!(true), &json!(10)),
            "server {i} after {:?}: {:?}",
            set_at.elapsed(),
            reply.json
        );
    }
    for server in servers {
        server.stop().await;
    }
}

/// A cost the policy admits but the key's override can never admit is a 400, as a cost above
/// the policy's own capacity is: not a 429 whose retry would never pass.
#[tokio::test]
async fn a_cost_above_the_overrides_capacity_is_a_400() {
    let server = TestServer::start(POLICIES).await;
    for (policy, put) in [
        ("api", json!({"policy": "api", "key": "oc", "limit": 3})),
        (
            "burst",
            json!({"policy": "burst", "key": "oc", "limit": 3, "burst": 3}),
        ),
    ] {
        let reply = send(&server, "PUT", "/v1/overrides", Some(put)).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        let check = json!({"policy": policy, "key": "oc", "cost": 5});
        let refused = server.post_json("/v1/check", check).await;
        assert_eq!(
            (refused.status, refused.json["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{policy}: {:?}",
            refused.json
        );
        let fits = server
            .post_json(
                "/v1/check",
                json!({"policy": policy, "key": "oc", "cost": 3}),
            )
            .await;
        assert_eq!(fits.json["allowed"], true, "{policy}: {:?}", fits.json);
    }
}

/// `"period": "month"` sets an override in UTC calendar months, as `period: month` does in the
/// config; only a fixed window takes months (a clear 400 otherwise).
#[tokio::test]
async fn an_override_may_count_calendar_months() {
    let server = TestServer::start(POLICIES).await;
    let put = json!({"policy": "api", "key": "m", "limit": 3, "period": "month"});
    let reply = send(&server, "PUT", "/v1/overrides", Some(put)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["period"], "month", "{:?}", reply.json);
    let got = server.get("/v1/overrides?policy=api&key=m").await;
    assert_eq!(got.json["period"], "month", "{:?}", got.json);
    for _ in 0..3 {
        let allowed = server
            .post_json("/v1/check", json!({"policy": "api", "key": "m"}))
            .await;
        assert_eq!(allowed.json["allowed"], true);
    }
    let refused = server
        .post_json("/v1/check", json!({"policy": "api", "key": "m"}))
        .await;
    assert_eq!(
        (
            refused.json["allowed"].clone(),
            refused.json["limit"].clone()
        ),
        (json!(false), json!(3))
    );
    let put = json!({"policy": "burst", "key": "m", "limit": 3, "period": "month"});
    let reply = send(&server, "PUT", "/v1/overrides", Some(put)).await;
    assert_eq!(reply.status, 400, "{reply:?}");
    assert!(
        reply.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fixed-window"),
        "{:?}",
        reply.json
    );
}
