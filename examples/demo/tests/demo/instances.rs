//! The demo binary itself: three real processes sharing one password-protected Redis.

use std::sync::OnceLock;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use tollgate_testkit::RedisServer;

use crate::common::{Demo, get, user};

/// Has every character class the URL needs to encode.
const PASSWORD: &str = "s3cret/p@ss:w%rd";

/// One Redis for this binary, requiring [`PASSWORD`]. (It is started without one and given it
/// afterwards: the testkit's readiness check does not authenticate.)
fn redis() -> &'static RedisServer {
    static REDIS: OnceLock<RedisServer> = OnceLock::new();
    REDIS.get_or_init(|| {
        let server = RedisServer::start().expect("starting redis-server");
        let _: () = server
            .query(&["CONFIG", "SET", "requirepass", PASSWORD])
            .expect("setting a password");
        server
    })
}

/// Start an instance on the shared Redis, the password given separately as in Docker.
async fn instance(extra: &[(&str, &str)]) -> Demo {
    let url = redis().url();
    let mut vars = vec![("REDIS_URL", url.as_str()), ("REDIS_PASSWORD", PASSWORD)];
    vars.extend_from_slice(extra);
    Demo::start(&vars).await
}

#[tokio::test(flavor = "multi_thread")]
async fn fifteen_round_robin_requests_get_ten_200_then_five_429() {
    let demos = [
        instance(&[]).await,
        instance(&[]).await,
        instance(&[]).await,
    ];
    let user = user("round-robin");

    let mut statuses = Vec::new();
    for i in 0..15 {
        let demo = &demos[i % 3];
        let reply = get(demo.port, "/api/data", Some(&user)).await;
        let name = format!("127.0.0.1:{}", demo.port);
        statuses.push(reply.status.as_u16());

        // Which instance answered, for 200s and 429s alike.
        assert_eq!(reply.header("x-instance"), Some(name.as_str()));
        assert_eq!(reply.policies(), [("data".to_owned(), 10, 60)]);
        let quotas = reply.quotas();
        let (policy, remaining, reset) = &quotas[0];
        assert_eq!((quotas.len(), policy.as_str()), (1, "data"));
        assert!(*reset > 0 && *reset <= 60, "t={reset}");

        if i < 10 {
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "request {}: {}",
                i + 1,
                reply.body
            );
            let expected = 9 - i64::try_from(i).unwrap();
            assert_eq!(*remaining, expected);
            let body = reply.json();
            assert_eq!(body["instance"], name.as_str());
            assert_eq!(body["key"], format!("x-user-id:{user}"));
            assert_eq!(body["remaining"], expected);
            assert_eq!(body["limit"], 10);
            assert!(reply.header("retry-after").is_none());
        } else {
            assert_eq!(
                reply.status,
                StatusCode::TOO_MANY_REQUESTS,
                "request {}: {}",
                i + 1,
                reply.body
            );
            assert_eq!(*remaining, 0);
            // One token comes back every 6 s.
            let retry_after: u64 = reply.header("retry-after").unwrap().parse().unwrap();
            assert!((1..=6).contains(&retry_after), "Retry-After: {retry_after}");
            let body = reply.json();
            assert_eq!(body["error"]["code"], "rate_limited");
            let retry_ms = body["error"]["retry_after_ms"].as_u64().unwrap();
            assert!(retry_ms > 0 && retry_ms <= 6_000, "{retry_ms}");
        }
    }
    assert_eq!(statuses, [[200; 10].as_slice(), &[429; 5]].concat());

    // Every instance sees the same empty quota, and looking at it twice changes nothing.
    for demo in &demos {
        for _ in 0..2 {
            let status = get(demo.port, "/api/status", Some(&user)).await;
            assert_eq!(status.status, StatusCode::OK);
            let body = status.json();
            assert_eq!(body["remaining"], 0, "{body}");
            assert_eq!(body["limit"], 10);
            assert_eq!(body["policy"], "data");
            let retry = body["retry_after_ms"].as_u64().unwrap();
            assert!(retry > 0 && retry <= 6_000, "{body}");
        }
    }
    // Health is never limited.
    for demo in &demos {
        let health = get(demo.port, "/health", Some(&user)).await;
        assert_eq!(health.status, StatusCode::OK);
        assert!(health.header("ratelimit").is_none());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_the_quota_without_spending_it() {
    let demos = [instance(&[]).await, instance(&[]).await];
    let user = user("status");
    let status = |port| {
        let user = user.clone();
        async move {
            let reply = get(port, "/api/status", Some(&user)).await;
            assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
            assert_eq!(
                reply.quotas()[0].1,
                reply.json()["remaining"].as_i64().unwrap()
            );
            reply.json()
        }
    };

    for _ in 0..5 {
        for demo in &demos {
            let body = status(demo.port).await;
            assert_eq!(body["remaining"], 10, "{body}");
            assert_eq!(body["reset_after_ms"], 0, "{body}");
        }
    }
    let data = get(demos[0].port, "/api/data", Some(&user)).await;
    assert_eq!(data.json()["remaining"], 9);
    let body = status(demos[1].port).await;
    assert_eq!(body["remaining"], 9, "{body}");
    assert_eq!(body["key"], format!("x-user-id:{user}"));
    assert_eq!(body["instance"], format!("127.0.0.1:{}", demos[1].port));
    // One token spent: full again within 6 s.
    let reset = body["reset_after_ms"].as_u64().unwrap();
    assert!(reset > 0 && reset <= 6_000, "{body}");

    // Without X-User-ID the caller is counted by address.
    let anonymous = get(demos[0].port, "/api/status", None).await;
    assert_eq!(anonymous.json()["key"], "ip:127.0.0.1");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_gracefully_and_every_log_line_is_json() {
    let mut demo = instance(&[("INSTANCE", "demo-1")]).await;
    let reply = get(demo.port, "/api/data", Some(&user("logs"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-instance"), Some("demo-1"));
    assert_eq!(reply.json()["instance"], "demo-1");

    demo.signal(libc::SIGTERM);
    let status = demo.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status}; log:\n{}", demo.log());

    let log = demo.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let listening = &lines[messages
        .iter()
        .position(|m| *m == "demo listening")
        .unwrap()];
    assert_eq!(listening["instance"], "demo-1");
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "request" && l["path"] == "/api/data" && l["status"] == 200),
        "{log}"
    );
    assert!(messages.contains(&"signal received"), "{log}");
    assert_eq!(messages.last(), Some(&"stopped"), "{log}");
    assert!(!log.contains(PASSWORD), "the password leaked into the log");
}

/// Environment variables, the exit code they cause, and part of the logged error.
type Case<'a> = (&'a [(&'a str, &'a str)], i32, &'a str);

#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_and_an_unusable_redis_stop_it_with_a_clear_error() {
    let url = redis().url();
    let closed = format!("redis://127.0.0.1:{}", tollgate_testkit::free_port());
    let cases: [Case; 4] = [
        (&[("PORT", "80a")], 2, "PORT `80a` is not a port number"),
        (
            &[("REDIS_URL", &closed)],
            1,
            "connecting to Redis at redis://127.0.0.1",
        ),
        (
            &[("REDIS_URL", &url), ("REDIS_PASSWORD", "wrong-password")],
            1,
            "connecting to Redis",
        ),
        (
            &[("REDIS_URL", &url), ("INSTANCE", "caf\u{e9}")],
            2,
            "INSTANCE",
        ),
    ];
    // All at once: a refused or failed connection takes the Redis client a few seconds.
    let mut demos: Vec<Demo> = cases.iter().map(|(vars, ..)| Demo::spawn(vars)).collect();
    for ((vars, code, message), demo) in cases.into_iter().zip(&mut demos) {
        let status = demo.wait_exit(Duration::from_secs(15));
        let log = demo.log();
        assert_eq!(status.code(), Some(code), "{vars:?}: {log}");
        let last: Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
        assert_eq!(last["level"], "ERROR", "{log}");
        assert!(
            last["error"].as_str().unwrap().contains(message),
            "{vars:?}: {log}"
        );
        assert!(
            !log.contains("wrong-password"),
            "the password leaked: {log}"
        );
    }
}
