//! `Rule::delay` / `RateLimitBuilder::delay`: a request over the limit waits for its cost to
//! fit, up to a bound, instead of a 429 at once.

use std::time::{Duration, Instant};

use axum::Router;
use http::StatusCode;
use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
use tollgate_tower::{Key, Quota, RateLimitLayer, Rule};

use crate::common::Server;

/// GCRA at `rate`, e.g. 5/s: one unit every 200 ms.
fn gcra(rate: &str) -> Limiter<MemoryStore> {
    Limiter::new(MemoryStore::new())
        .with_policy(
            "api",
            Policy::builder(Algorithm::Gcra).rate(rate).build().unwrap(),
        )
        .unwrap()
}

/// The handler answers how long its request waited, in ms.
async fn waited(quota: Quota) -> String {
    quota.waited().as_millis().to_string()
}

/// Send `n` requests at once; answer (status, ms from `started` until answered, body) of
/// each, by answer time.
async fn burst(server: &Server, n: usize, started: Instant) -> Vec<(StatusCode, u128, String)> {
    let client = reqwest::Client::new();
    let requests = (0..n).map(|_| {
        let request = client.get(server.url("/api"));
        async move {
            let reply = request.send().await.unwrap();
            let status = reply.status();
            let body = reply.text().await.unwrap();
            (status, started.elapsed().as_millis(), body)
        }
    });
    let mut answers = futures_util::future::join_all(requests).await;
    answers.sort_by_key(|(_, ms, _)| *ms);
    answers
}

#[tokio::test]
async fn queued_requests_are_served_in_turn_once_they_fit() {
    let limiter = gcra("5/s");
    let layer = RateLimitLayer::builder(limiter.clone())
        .key(Key::fixed("everyone"))
        .default_policies("api")
        .delay(Duration::from_secs(3))
        .build()
        .unwrap();
    let server = Server::start(Router::new().fallback(waited).layer(layer)).await;
    let spent = Instant::now();
    limiter.check_cost("api", "everyone", 5).await.unwrap();

    let answers = burst(&server, 3, spent).await;
    for (i, (status, ms, waited)) in answers.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "{answers:?}");
        // The i-th fits (i + 1) * 200 ms after the quota was spent; none passes early.
        let due = 200 * (i as u128 + 1);
        assert!(
            *ms >= due - 1,
            "request {i} answered after {ms} ms, due at {due}"
        );
        let waited: u128 = waited.parse().unwrap();
        assert!(waited <= *ms, "request {i} waited {waited} ms");
    }
    let last_waited: u128 = answers[2].2.parse().unwrap();
    assert!(last_waited > 0, "the third request waited for its turn");
}

#[tokio::test]
async fn past_the_bound_the_answer_is_a_429_at_once() {
    // One unit every 500 ms; wait up to 700 ms.
    let limiter = gcra("2/s");
    let layer = RateLimitLayer::builder(limiter.clone())
        .key(Key::fixed("everyone"))
        .rule(Rule::new("/api", "api").delay(Duration::from_millis(700)))
        .build()
        .unwrap();
    let server = Server::start(Router::new().fallback(waited).layer(layer)).await;
    let spent = Instant::now();
    limiter.check_cost("api", "everyone", 2).await.unwrap();

    // The first fits after 500 ms, within the bound; the second only after 1000 ms.
    let answers = burst(&server, 2, spent).await;
    let statuses: Vec<_> = answers.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::TOO_MANY_REQUESTS],
        "{answers:?}"
    );
    let (_, served_ms, waited) = &answers[0];
    assert!(
        *served_ms >= 499,
        "served after {served_ms} ms, not before it fitted"
    );
    assert!(waited.parse::<u128>().unwrap() > 0);

    // Charged 2 more after the fact, the key has nothing for a second and more: past the
    // bound, refused at once with the layer's 429.
    limiter.adjust("api", "everyone", 2).await.unwrap();
    let started = Instant::now();
    let refused = server.get("/api", &[]).await;
    assert!(started.elapsed() < Duration::from_millis(700));
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["error"]["code"], "rate_limited");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(refused.quotas()[0].1, 0);
}
