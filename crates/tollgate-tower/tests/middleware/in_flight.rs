//! `concurrency` policies in rules: at most L requests in flight per key, each holding its
//! slot until its response body has ended or was dropped.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::StatusCode;
use tokio::sync::mpsc;
use tollgate::{Limiter, MemoryStore, Policy, Store};
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_tower::{BuildError, Key, OnError, RateLimitLayer, Rule};

use crate::common::{Server, parse_list};

const LIMIT: usize = 3;

fn jobs<S: Store>(limiter: Limiter<S>) -> Limiter<S> {
    limiter
        .with_policy(
            "jobs",
            Policy::concurrency(LIMIT as u64, Duration::from_secs(60)).unwrap(),
        )
        .unwrap()
}

/// 32 clients hammer a route whose handler sleeps: the handler never sees more than `LIMIT`
/// requests at once, the refused get the layer's 429, and every slot is free at the end.
async fn never_more_than_the_limit_in_flight<S: Store>(limiter: Limiter<S>, user: &str) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let handler = {
        let (in_flight, peak) = (in_flight.clone(), peak.clone());
        move || async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(15)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            "done"
        }
    };
    // A store failure answers 503 here (not the default fail-open), so that the test names it
    // rather than miscounting.
    let layer = RateLimitLayer::builder(limiter.clone())
        .key(Key::header("x-user-id"))
        .on_store_error(OnError::Deny)
        .route("/work", "jobs")
        .build()
        .unwrap();
    let server = Server::start(Router::new().route("/work", get(handler)).layer(layer)).await;
    let client = reqwest::Client::new();
    let url = server.url("/work");

    let mut clients = Vec::new();
    for _ in 0..32 {
        let (client, url, user) = (client.clone(), url.clone(), user.to_owned());
        clients.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (0, 0);
            for _ in 0..15 {
                let reply = client
                    .get(&url)
                    .header("x-user-id", &user)
                    .send()
                    .await
                    .unwrap();
                match reply.status() {
                    StatusCode::OK => ok += 1,
                    StatusCode::TOO_MANY_REQUESTS => {
                        let policy = reply.headers()["ratelimit-policy"].to_str().unwrap();
                        assert_eq!(policy, r#""jobs";q=3;w=60"#);
                        let quota = parse_list(reply.headers()["ratelimit"].to_str().unwrap());
                        assert_eq!(quota[0].1["r"], 0);
                        assert!(reply.headers().contains_key("retry-after"));
                        let json: serde_json::Value =
                            serde_json::from_str(&reply.text().await.unwrap()).unwrap();
                        assert_eq!(json["error"]["code"], "rate_limited");
                        refused += 1;
                    }
                    status => panic!("unexpected {status}: {}", reply.text().await.unwrap()),
                }
            }
            (ok, refused)
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for client in clients {
        let (o, r) = client.await.unwrap();
        ok += o;
        refused += r;
    }
    assert_eq!(ok + refused, 32 * 15);
    assert_eq!(
        peak.load(Ordering::SeqCst),
        LIMIT,
        "never more than the limit in flight"
    );
    assert!(refused > 0, "32 clients on 3 slots: some are refused");
    assert!(
        ok > 3 * LIMIT,
        "released slots are taken again ({ok} served)"
    );

    // Every slot is free again (releases run in the background, so allow them a moment).
    let key = format!("x-user-id:{user}");
    let held = eventually_free(&limiter, &key).await;
    assert_eq!(
        held, LIMIT,
        "all {LIMIT} slots free once the clients are done"
    );
}

/// Acquire until refused, retrying for up to 2 s until all `LIMIT` slots are free; answers how
/// many were free (the leases taken are dropped, so released, on return).
async fn eventually_free<S: Store>(limiter: &Limiter<S>, key: &str) -> usize {
    let mut free = 0;
    for _ in 0..100 {
        let mut leases = Vec::new();
        while let Some(lease) = limiter.acquire("jobs", key, 1).await.unwrap().lease {
            leases.push(lease);
        }
        free = leases.len();
        for lease in leases {
            lease.release().await.unwrap();
        }
        if free == LIMIT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    free
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_never_more_than_the_limit_in_flight() {
    never_more_than_the_limit_in_flight(jobs(Limiter::new(MemoryStore::new())), "alice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_never_more_than_the_limit_in_flight() {
    let url = tollgate_testkit::shared_standalone().url();
    let options = RedisOptions {
        prefix: format!("tower-in-flight-{}", std::process::id()),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&url, options).await.unwrap();
    never_more_than_the_limit_in_flight(jobs(Limiter::new(store)), "bob").await;
}

/// A route whose body streams what the test sends: each request hands the test the sender
/// of its body, which ends when the sender is dropped.
fn streaming_app(limit: u64) -> (Router, mpsc::UnboundedReceiver<mpsc::Sender<Bytes>>) {
    let (bodies, handed) = mpsc::unbounded_channel();
    let handler = move || {
        let bodies = bodies.clone();
        async move {
            let (tx, rx) = mpsc::channel::<Bytes>(1);
            bodies.send(tx).unwrap();
            let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
                let chunk = rx.recv().await?;
                Some((Ok::<_, Infallible>(chunk), rx))
            });
            Body::from_stream(chunks)
        }
    };
    let limiter = Limiter::new(MemoryStore::new())
        .with_policy(
            "streams",
            Policy::concurrency(limit, Duration::from_secs(60)).unwrap(),
        )
        .unwrap();
    let layer = RateLimitLayer::builder(limiter)
        .route("/stream", "streams")
        .build()
        .unwrap();
    (
        Router::new().route("/stream", get(handler)).layer(layer),
        handed,
    )
}

/// Ask until one is let in (a released slot is free again shortly after, in the background).
async fn eventually_admitted(client: &reqwest::Client, url: &str) -> reqwest::Response {
    for _ in 0..100 {
        let reply = client.get(url).send().await.unwrap();
        if reply.status() == StatusCode::OK {
            return reply;
        }
        assert_eq!(reply.status(), StatusCode::TOO_MANY_REQUESTS);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the slot was never freed");
}

#[tokio::test]
async fn a_streaming_body_holds_its_slot_until_it_ends() {
    let (app, mut handed) = streaming_app(1);
    let server = Server::start(app).await;
    let client = reqwest::Client::new();
    let url = server.url("/stream");

    let mut first = client.get(&url).send().await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let quota = parse_list(first.headers()["ratelimit"].to_str().unwrap());
    assert_eq!(quota[0].1["r"], 0, "the one slot is taken");
    let sender = handed.recv().await.unwrap();
    sender.send(Bytes::from_static(b"part 1")).await.unwrap();
    assert_eq!(first.chunk().await.unwrap().unwrap(), "part 1");

    // The handler has returned, but the body is still streaming: the slot is still held.
    let second = client.get(&url).send().await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(handed.try_recv().is_err(), "the refused request never ran");

    drop(sender);
    assert!(first.chunk().await.unwrap().is_none(), "the body has ended");
    let third = eventually_admitted(&client, &url).await;
    drop(handed.recv().await.unwrap());
    assert!(third.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_client_gone_mid_body_frees_its_slot() {
    let (app, mut handed) = streaming_app(1);
    let server = Server::start(app).await;
    let client = reqwest::Client::new();
    let url = server.url("/stream");

    let mut first = client.get(&url).send().await.unwrap();
    let sender = handed.recv().await.unwrap();
    sender.send(Bytes::from_static(b"part 1")).await.unwrap();
    assert_eq!(first.chunk().await.unwrap().unwrap(), "part 1");
    assert_eq!(
        client.get(&url).send().await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );

    // The client goes away mid-body. The server learns it when a write fails, and drops the
    // body: its receiver closes, which is what ends this loop.
    drop(first);
    let mut dropped = false;
    for _ in 0..250 {
        if sender.send(Bytes::from_static(b"more")).await.is_err() {
            dropped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dropped, "the server dropped the body of the gone client");
    let next = eventually_admitted(&client, &url).await;
    drop(handed.recv().await.unwrap());
    assert!(next.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrency_policies_are_checked_at_build() {
    let limiter = jobs(Limiter::new(MemoryStore::new()));
    let err = RateLimitLayer::builder(limiter)
        .rule(Rule::new("/status", "jobs").peek())
        .build()
        .unwrap_err();
    assert_eq!(err, BuildError::PeekLease("jobs".to_owned()));
}

/// With rate policies in the same rule: a request refused by either holds nothing and
/// consumes nothing, and the headers report every policy.
#[tokio::test]
async fn a_refused_request_holds_and_consumes_nothing() {
    let limiter = jobs(crate::common::limiter(&[("api", 2)]));
    let layer = RateLimitLayer::builder(limiter.clone())
        .key(Key::fixed("everyone"))
        .route("/work", ["api", "jobs"])
        .build()
        .unwrap();
    let server = Server::start(
        Router::new()
            .route("/work", get(|| async { "done" }))
            .layer(layer),
    )
    .await;
    let key = "everyone";

    // All slots taken elsewhere: refused by `jobs`, `api` untouched.
    let mut held = Vec::new();
    for _ in 0..LIMIT {
        held.push(
            limiter
                .acquire("jobs", key, 1)
                .await
                .unwrap()
                .lease
                .unwrap(),
        );
    }
    let refused = server.get("/work", &[]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    let quotas = refused.quotas();
    assert_eq!(
        quotas
            .iter()
            .map(|(n, r, _)| (n.as_str(), *r))
            .collect::<Vec<_>>(),
        [("api", 2), ("jobs", 0)]
    );
    assert_eq!(limiter.peek("api", key, 1).await.unwrap().remaining, 2);
    for lease in held {
        lease.release().await.unwrap();
    }

    // Two pass; the third is refused by `api` and gives its lease back before answering.
    for remaining in [1, 0] {
        let reply = server.get("/work", &[]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.quotas()[0],
            ("api".to_owned(), remaining, reply.quotas()[0].2)
        );
    }
    let refused = server.get("/work", &[]).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"]["code"], "rate_limited");
    assert_eq!(refused.quotas()[0].1, 0);
    assert_eq!(eventually_free(&limiter, key).await, LIMIT);
}
