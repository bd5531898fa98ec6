//! Overrides on a real Redis: two stores (two instances) see one override on their next
//! decision; listings page through the index; an expired override disappears by itself and
//! leaves the index when a listing meets it.

use std::time::{Duration, Instant};

use tollgate::PolicyName;
use tollgate::{Algorithm, Check, LimitError, Limiter, OverrideSpec, Policy, PolicyError, Store};
use tollgate_redis::keys::{override_index, override_key};
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_testkit::{shared_cluster, shared_standalone};

async fn limiter(url: &str, prefix: &str) -> Limiter<RedisStore> {
    let options = RedisOptions {
        prefix: prefix.into(),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(url, options).await.unwrap();
    Limiter::new(store)
        .with_policy(
            "api",
            Policy::builder(Algorithm::FixedWindow)
                .rate("2/h")
                .build()
                .unwrap(),
        )
        .unwrap()
        .with_policy(
            "burst",
            Policy::builder(Algorithm::Gcra)
                .rate("2/h")
                .build()
                .unwrap(),
        )
        .unwrap()
}

async fn two_instances_share_overrides(url: &str, prefix: &str) {
    let (one, two) = (limiter(url, prefix).await, limiter(url, prefix).await);
    for _ in 0..2 {
        assert!(one.check("api", "t-7").await.unwrap().allowed);
    }
    assert!(!two.check("api", "t-7").await.unwrap().allowed);
    let stored = one
        .set_override("api", "t-7", OverrideSpec::limit(5))
        .await
        .unwrap();
    assert_eq!(stored.policy.limit(), 5);
    let d = two.check("api", "t-7").await.unwrap();
    assert_eq!((d.allowed, d.limit, d.remaining), (true, 5, 2));
    // A multi-policy check reads the override too.
    let v = two.check_all(&["api", "burst"], "t-7", 1).await.unwrap();
    assert_eq!((v.decisions[0].limit, v.decisions[0].remaining), (5, 1));
    assert_eq!(
        two.get_override("api", "t-7").await.unwrap(),
        Some(stored.clone())
    );
    assert!(two.delete_override("api", "t-7").await.unwrap());
    let d = one.check("api", "t-7").await.unwrap();
    assert_eq!((d.allowed, d.limit), (false, 2));
    assert_eq!(one.get_override("api", "t-7").await.unwrap(), None);
    // A cost the policy admits but the key's override never can is refused as an error, as a
    // cost above the policy's own capacity is (not answered as a rejection to retry).
    one.set_override("api", "t-8", OverrideSpec::limit(1))
        .await
        .unwrap();
    let beyond = |result: Result<_, LimitError>| match result {
        Err(LimitError::Policy {
            source: PolicyError::CostExceedsCapacity { cost, capacity },
            ..
        }) => (cost, capacity),
        other => panic!("expected a cost above the override's capacity, got {other:?}"),
    };
    assert_eq!(
        beyond(two.check_cost("api", "t-8", 2).await.map(|_| ())),
        (2, 1)
    );
    assert_eq!(
        beyond(two.check_all(&["burst", "api"], "t-8", 2).await.map(|_| ())),
        (2, 1)
    );
    assert!(two.check_cost("api", "t-8", 1).await.unwrap().allowed);
    assert!(one.delete_override("api", "t-8").await.unwrap());
}

#[tokio::test]
async fn two_instances_share_overrides_on_standalone() {
    two_instances_share_overrides(&shared_standalone().url(), "ov-share").await;
}

#[tokio::test]
async fn two_instances_share_overrides_on_cluster() {
    two_instances_share_overrides(&shared_cluster().url(), "ov-share").await;
}

#[tokio::test]
async fn listings_page_and_expired_overrides_leave() {
    let redis = shared_standalone();
    let limiter = limiter(&redis.url(), "ov-list").await;
    for key in ["c", "a", "b{x}", "d"] {
        limiter
            .set_override("burst", key, OverrideSpec::limit(9).burst(12))
            .await
            .unwrap();
    }
    let spec = OverrideSpec::limit(3).expires_in(Duration::from_millis(150));
    let short = limiter.set_override("burst", "e", spec).await.unwrap();
    assert_eq!(short.expires_in, Some(Duration::from_millis(150)));
    let ttl: i64 = redis
        .query(&["PTTL", &override_key("ov-list", "burst", "e")])
        .unwrap();
    assert!((1..=150).contains(&ttl), "PTTL {ttl}");
    // A permanent override has no TTL: it is configuration, deleted by hand.
    let ttl: i64 = redis
        .query(&["PTTL", &override_key("ov-list", "burst", "a")])
        .unwrap();
    assert_eq!(ttl, -1);

    let first = limiter
        .list_overrides(&PolicyName::from_static("burst"), None, 3)
        .await
        .unwrap();
    let keys: Vec<&str> = first.overrides.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["a", "b{x}", "c"]);
    assert_eq!(first.overrides[0].1.policy.burst(), 12);
    let cursor = first.next_cursor.as_deref();
    assert_eq!(cursor, Some("c"));

    // The short one expires by itself; the listing drops it from the index.
    let deadline = Instant::now() + Duration::from_secs(10);
    while limiter.get_override("burst", "e").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "override did not expire");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rest = limiter
        .list_overrides(&PolicyName::from_static("burst"), cursor, 3)
        .await
        .unwrap();
    let keys: Vec<&str> = rest.overrides.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!((keys, rest.next_cursor), (vec!["d"], None));
    // A page holding exactly what is left says there is no more, as the memory store does.
    let all = limiter
        .list_overrides(&PolicyName::from_static("burst"), None, 4)
        .await
        .unwrap();
    assert_eq!((all.overrides.len(), all.next_cursor), (4, None));
    let indexed: Vec<String> = redis
        .query(&["ZRANGE", &override_index("ov-list", "burst"), "0", "-1"])
        .unwrap();
    assert_eq!(indexed, ["a", "b{x}", "c", "d"]);
    let d = limiter.check("burst", "b{x}").await.unwrap();
    assert_eq!((d.limit, d.remaining), (12, 11));
    // An override written for another algorithm (before a reload changed the policy's) is
    // ignored by the script and by reads alike.
    let fixed = Policy::builder(Algorithm::FixedWindow)
        .rate("2/h")
        .build()
        .unwrap();
    let target = Check {
        name: &PolicyName::from_static("burst"),
        policy: &fixed,
        key: "a",
    };
    assert_eq!(limiter.store().get_override(target).await.unwrap(), None);
}

/// The index of a policy's overrides expires with the latest expiry it lists: it grows to a
/// longer one, never shrinks to a shorter one, and only a permanent override keeps it without
/// a TTL (as that override itself has none).
#[tokio::test]
async fn the_index_expires_with_what_it_lists() {
    let redis = shared_standalone();
    let limiter = limiter(&redis.url(), "ov-index-ttl").await;
    let index = override_index("ov-index-ttl", &PolicyName::from_static("api"));
    let _: i64 = redis.query(&["DEL", &index]).unwrap();
    let pttl = || -> i64 { redis.query(&["PTTL", &index]).unwrap() };
    let expiring = |key: &'static str, secs| {
        let spec = OverrideSpec::limit(5).expires_in(Duration::from_secs(secs));
        limiter.set_override("api", key, spec)
    };
    expiring("a", 60).await.unwrap();
    assert!((1..=60_000).contains(&pttl()), "PTTL {}", pttl());
    expiring("b", 600).await.unwrap();
    assert!((60_001..=600_000).contains(&pttl()), "PTTL {}", pttl());
    expiring("c", 30).await.unwrap();
    assert!(pttl() > 60_000, "shrunk to {}", pttl());
    limiter
        .set_override("api", "d", OverrideSpec::limit(5))
        .await
        .unwrap();
    assert_eq!(pttl(), -1);
    for key in ["a", "b", "c", "d"] {
        assert!(limiter.delete_override("api", key).await.unwrap());
    }
    assert_eq!(pttl(), -2, "an empty index is gone");
}
