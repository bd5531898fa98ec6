//! `Rule::charge`: the cost read from the response replaces the estimate checked up front,
//! once the body has ended.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use tollgate::{Algorithm, Limiter, MemoryStore, Store};
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_tower::{BuildError, Charge, Key, RateLimitLayer, Rule};

use crate::common::{Server, per_hour};

const ESTIMATE: u64 = 100;

fn tokens<S: Store>(limiter: Limiter<S>) -> Limiter<S> {
    limiter
        .with_policy("tokens", per_hour(Algorithm::FixedWindow, 1000))
        .unwrap()
}

/// Answers with the count the request asks for (`x-used`) in header `x-tokens-used`, or, on
/// `/trailer`, in a trailer after the body.
fn app<S: Store>(limiter: Limiter<S>) -> Router {
    let layer = RateLimitLayer::builder(limiter)
        .key(Key::header("x-user-id"))
        .rule(
            Rule::new("/**", "tokens")
                .cost(ESTIMATE)
                .charge(Charge::header("x-tokens-used")),
        )
        .build()
        .unwrap();
    let header = |headers: HeaderMap| async move {
        let mut reply = HeaderMap::new();
        if let Some(used) = headers.get("x-used") {
            reply.insert("x-tokens-used", used.clone());
        }
        (reply, "answer")
    };
    let trailer = |headers: HeaderMap| async move {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-tokens-used", headers["x-used"].clone());
        let frames = [
            Frame::data(Bytes::from_static(b"answer")),
            Frame::trailers(trailers),
        ];
        Body::new(StreamBody::new(futures_util::stream::iter(
            frames.map(Ok::<_, Infallible>),
        )))
    };
    Router::new()
        .route("/header", get(header))
        .route("/trailer", get(trailer))
        .layer(layer)
}

/// Wait (up to 2 s: the charge is applied in the background) until the key has `expected`
/// left, and answer what it has.
async fn settles_to<S: Store>(limiter: &Limiter<S>, key: &str, expected: u64) -> u64 {
    let mut remaining = 0;
    for _ in 0..100 {
        remaining = limiter.peek("tokens", key, 1).await.unwrap().remaining;
        if remaining == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    remaining
}

async fn charges_exactly<S: Store>(limiter: Limiter<S>, user: &str) {
    let limiter = tokens(limiter);
    let server = Server::start(app(limiter.clone())).await;
    let client = reqwest::Client::new();
    let key = format!("x-user-id:{user}");

    let mut left = 1000;
    // (path, x-used, what is charged in the end)
    for (path, used, charged) in [
        ("/header", Some("40"), 40),         // a refund of 60
        ("/header", Some("250"), 250),       // 150 more
        ("/header", None, ESTIMATE),         // no count: the estimate stays
        ("/header", Some("lots"), ESTIMATE), // not a count: likewise
        ("/header", Some("100"), ESTIMATE),  // exactly the estimate
        ("/trailer", Some("7"), 7),          // a count known only at the end
        ("/header", Some("0"), 0),           // free after all
    ] {
        let mut request = client.get(server.url(path)).header("x-user-id", user);
        if let Some(used) = used {
            request = request.header("x-used", used);
        }
        let reply = request.send().await.unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(reply.text().await.unwrap(), "answer");
        left -= charged;
        assert_eq!(
            settles_to(&limiter, &key, left).await,
            left,
            "{path} with x-used {used:?} charges {charged}"
        );
    }
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        limiter.peek("tokens", &key, 1).await.unwrap().remaining,
        left
    );

    // A charge past the quota leaves the key in debt: the next request waits.
    let reply = client
        .get(server.url("/header"))
        .header("x-user-id", user)
        .header("x-used", "1500")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(settles_to(&limiter, &key, 0).await, 0);
    let after = client
        .get(server.url("/header"))
        .header("x-user-id", user)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn memory_charges_the_count_read_from_the_response() {
    charges_exactly(Limiter::new(MemoryStore::new()), "alice").await;
}

#[tokio::test]
async fn redis_charges_the_count_read_from_the_response() {
    let url = tollgate_testkit::shared_standalone().url();
    let options = RedisOptions {
        prefix: format!("tower-charges-{}", std::process::id()),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&url, options).await.unwrap();
    charges_exactly(Limiter::new(store), "bob").await;
}

/// A charge that fails (a sliding log takes no refunds) is logged; the response is untouched.
#[tokio::test]
async fn a_failed_charge_leaves_the_response_alone() {
    let limiter = Limiter::new(MemoryStore::new())
        .with_policy("tokens", per_hour(Algorithm::SlidingLog, 1000))
        .unwrap();
    let server = Server::start(app(limiter.clone())).await;
    let reply = server
        .get("/header", &[("x-user-id", "carol"), ("x-used", "1")])
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "answer");
    assert_eq!(reply.header("x-tokens-used"), Some("1"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let left = limiter.peek("tokens", "x-user-id:carol", 1).await.unwrap();
    assert_eq!(
        left.remaining,
        1000 - ESTIMATE,
        "the estimate stays charged"
    );
}

#[test]
fn charges_are_checked_at_build() {
    let limiter = || tokens(Limiter::new(MemoryStore::new()));
    let build = |rule: Rule| {
        RateLimitLayer::builder(limiter())
            .rule(rule)
            .build()
            .unwrap_err()
    };
    assert_eq!(
        build(Rule::new("/a", "tokens").charge(Charge::header("bad header"))),
        BuildError::HeaderName("bad header".to_owned())
    );
    assert_eq!(
        build(
            Rule::new("/a", "tokens")
                .peek()
                .charge(Charge::header("x-n"))
        ),
        BuildError::ChargeNothing
    );
}
