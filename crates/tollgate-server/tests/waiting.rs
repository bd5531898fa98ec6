//! `"max_wait_ms"` in `POST /v1/check` (docs/architecture.md §10): waiting server-side, on a
//! real Redis, first come first served, never allowed early, answered with `waited_ms`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::json;

/// 20 callers waiting on a key with 5/s are served in the order they came, none before its
/// unit fits, each within its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_waiters_on_five_per_second_are_served_in_order() {
    let url = tollgate_testkit::shared_standalone().url();
    let server = Arc::new(
        TestServer::start(&format!(
            "store:\n  url: {url}\n  prefix: waiting-{}\n  timeout: 2s\npolicies:\n  jobs: {{ algorithm: gcra, rate: 5/s }}\n",
            std::process::id()
        ))
        .await,
    );
    for _ in 0..5 {
        let spent = server.check(json!({"policy": "jobs", "key": "q"})).await;
        assert_eq!(spent.json["allowed"], true);
    }
    let started = Instant::now();
    let mut callers = Vec::new();
    for i in 0..20u64 {
        let server = server.clone();
        callers.push(tokio::spawn(async move {
            let sent = started.elapsed();
            let reply = server
                .check(json!({"policy": "jobs", "key": "q", "max_wait_ms": 6000}))
                .await;
            (i, reply, sent, started.elapsed())
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut finished = Vec::new();
    for caller in callers {
        let (i, reply, sent, at) = caller.await.expect("caller");
        assert_eq!(reply.status, 200, "{:?}", reply.json);
        assert_eq!(reply.json["allowed"], true, "caller {i}: {:?}", reply.json);
        let waited = reply.json["waited_ms"].as_u64().expect("waited_ms");
        // Unit i+1 after the spent burst fits 200·(i+1) ms later (a few ms of slack for the
        // time between the burst and `started`).
        let fits = 200 * (i + 1) - 15;
        assert!(
            at >= Duration::from_millis(fits),
            "caller {i} allowed after {at:?}: before {fits} ms"
        );
        // It waited, server-side, about from when it was sent to when it was answered.
        let sent = sent.as_millis() as u64;
        assert!(
            waited + sent + 5 >= fits,
            "caller {i} sent at {sent} ms waited {waited} ms"
        );
        assert!(
            waited <= at.as_millis() as u64,
            "caller {i} waited {waited} ms"
        );
        finished.push((at, i));
    }
    finished.sort();
    let order: Vec<u64> = finished.iter().map(|&(_, i)| i).collect();
    assert_eq!(order, (0..20).collect::<Vec<_>>());
}

/// A deadline the cost cannot meet is answered at once; `max_wait_ms` over a minute is refused;
/// a check without it carries no `waited_ms`.
#[tokio::test]
async fn short_deadlines_and_bad_waits() {
    let server = TestServer::start("policies:\n  jobs: { algorithm: gcra, rate: 1/s }\n").await;
    let plain = server.check(json!({"policy": "jobs", "key": "k"})).await;
    assert!(plain.json.get("waited_ms").is_none(), "{:?}", plain.json);
    let started = Instant::now();
    let impatient = server
        .check(json!({"policy": "jobs", "key": "k", "max_wait_ms": 100}))
        .await;
    assert!(started.elapsed() < Duration::from_millis(90));
    assert_eq!(impatient.json["allowed"], false);
    assert_eq!(impatient.json["waited_ms"], 0);
    let patient = server
        .check(json!({"policy": "jobs", "key": "k", "max_wait_ms": 2000}))
        .await;
    assert_eq!(patient.json["allowed"], true);
    assert!(
        patient.json["waited_ms"].as_u64().unwrap() >= 800,
        "{:?}",
        patient.json
    );

    let too_long = server
        .check(json!({"policy": "jobs", "key": "k", "max_wait_ms": 60_001}))
        .await;
    assert_eq!((too_long.status, too_long.code()), (400, "invalid_request"));
    let negative = server
        .check(json!({"policy": "jobs", "key": "k", "max_wait_ms": -1}))
        .await;
    assert_eq!((negative.status, negative.code()), (400, "invalid_request"));
}
