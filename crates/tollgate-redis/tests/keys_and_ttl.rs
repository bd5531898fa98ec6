//! Keys and expiry, checked from the outside with plain Redis commands: every key written has
//! a TTL within the documented bound, odd identifiers keep the key shape, peeks and rejections
//! write nothing, NOSCRIPT is handled, reset deletes.

use std::time::Duration;

use tollgate::PolicyName;
use tollgate::{Algorithm, Check, Mode, Policy, Store, StoreError};
use tollgate_redis::script::Shape;
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_testkit::{RedisNode, shared_cluster, shared_standalone};

async fn store(url: &str, prefix: &str) -> RedisStore {
    let options = RedisOptions {
        prefix: prefix.to_owned(),
        ..RedisOptions::default()
    };
    RedisStore::connect(url, options).await.unwrap()
}

fn policies() -> Vec<(PolicyName, Policy)> {
    let p = |algorithm, limit, secs, burst| {
        Policy::new(algorithm, limit, Duration::from_secs(secs), burst).unwrap()
    };
    vec![
        (
            PolicyName::from_static("fw"),
            p(Algorithm::FixedWindow, 10, 30, None),
        ),
        (
            PolicyName::from_static("sl"),
            p(Algorithm::SlidingLog, 10, 30, None),
        ),
        (
            PolicyName::from_static("sw"),
            p(Algorithm::SlidingWindow, 10, 30, None),
        ),
        // burst > limit: a spent bucket takes burst/limit periods (here 1.5) to refill.
        (
            PolicyName::from_static("tb"),
            p(Algorithm::TokenBucket, 10, 30, Some(15)),
        ),
        (
            PolicyName::from_static("gc"),
            p(Algorithm::Gcra, 10, 30, Some(15)),
        ),
    ]
}

/// The documented bound on a key's TTL: the time its state takes to be back to a full quota
/// at most — one period (two for sliding-window, burst/limit periods for the buckets) — plus 1 s.
fn ttl_bound_ms(policy: &Policy) -> u64 {
    let period_ms = policy.period_us().div_ceil(1000);
    let spent_ms = match policy.algorithm() {
        Algorithm::SlidingWindow => 2 * period_ms,
        Algorithm::TokenBucket | Algorithm::Gcra => {
            (period_ms * policy.capacity()).div_ceil(policy.limit())
        }
        _ => period_ms,
    };
    spent_ms + 1000
}

fn node_for<'a>(nodes: &'a [RedisNode], key: &str) -> &'a RedisNode {
    nodes
        .iter()
        .find(|n| n.query::<i64>(&["EXISTS", key]).unwrap_or(0) == 1)
        .unwrap_or_else(|| panic!("no node holds {key}"))
}

/// Every key of `prefix` on `nodes` (SCAN on each master).
fn keys_of(nodes: &[RedisNode], prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for node in nodes {
        let info = node.query_string(&["INFO", "replication"]).unwrap();
        if tollgate_testkit::info_field(&info, "role") != Some("master") {
            continue;
        }
        let mut connection = node.connection().unwrap();
        let found: Vec<String> = redis::cmd("SCAN")
            .cursor_arg(0)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .clone()
            .iter::<String>(&mut connection)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        keys.extend(found);
    }
    keys.sort();
    keys
}

async fn ttl_within_bound_on(url: &str, nodes: &[RedisNode], prefix: &str) {
    let store = store(url, prefix).await;
    let policies = policies();
    for (name, policy) in &policies {
        for cost in [1, 3, 10] {
            let check = [Check {
                name,
                policy,
                key: "ttl-user",
            }];
            let d = store.decide(&check, cost, Mode::Consume).await.unwrap();
            let key = store.key(&check[0]);
            let pttl: i64 = node_for(nodes, &key).query(&["PTTL", &key]).unwrap();
            let pttl = u64::try_from(pttl).unwrap_or_else(|_| panic!("{key} has no TTL"));
            let bound = ttl_bound_ms(policy);
            assert!(pttl <= bound, "{key}: PTTL {pttl} ms > bound {bound} ms");
            // The key outlives the state it holds: expiry never hands out quota early.
            let state_ms = d.decisions[0].reset_after_ms();
            if d.decisions[0].allowed {
                assert!(pttl >= state_ms, "{key}: PTTL {pttl} < reset {state_ms}");
            }
        }
    }
    // A key spent to the full (10 of 10 / 15 of 15) sits right at the bound.
    let keys = keys_of(nodes, prefix);
    assert_eq!(keys.len(), policies.len(), "{keys:?}");
}

#[tokio::test]
async fn every_key_has_a_ttl_within_the_bound_on_standalone() {
    let server = shared_standalone();
    ttl_within_bound_on(&server.url(), std::slice::from_ref(server.node()), "ttl").await;
}

#[tokio::test]
async fn every_key_has_a_ttl_within_the_bound_on_cluster() {
    let cluster = shared_cluster();
    ttl_within_bound_on(&cluster.url(), cluster.nodes(), "ttl").await;
}

async fn odd_identifiers_keep_the_key_shape_on(url: &str, nodes: &[RedisNode], prefix: &str) {
    let store = store(url, prefix).await;
    let policies = policies();
    let long = "L".repeat(300);
    let odd = [
        "a{b}c",
        "}{",
        "{",
        "tab\tinside",
        "nl\n",
        &long,
        "h:forged",
        "",
    ];
    for identifier in odd.iter().copied().chain(["plain-user"]) {
        // All five policies of one identifier in one call: one slot, or the Cluster refuses.
        let checks: Vec<Check<'_>> = policies
            .iter()
            .map(|(name, policy)| Check {
                name,
                policy,
                key: identifier,
            })
            .collect();
        let d = store.decide(&checks, 1, Mode::Consume).await.unwrap();
        assert!(d.decisions.iter().all(|d| d.allowed));
    }
    let keys = keys_of(nodes, prefix);
    assert_eq!(keys.len(), policies.len() * (odd.len() + 1), "{keys:?}");
    for key in &keys {
        let rest = key.strip_prefix(&format!("{prefix}:")).unwrap();
        let (policy, rest) = rest.split_once(':').unwrap();
        let (algorithm, tag) = rest.split_once(':').unwrap();
        assert!(policies.iter().any(|(n, _)| *n == policy), "{key}");
        assert!(algorithm.parse::<Algorithm>().is_ok(), "{key}");
        let inner = tag
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{key}: no hash tag"));
        assert!(!inner.contains(['{', '}']), "{key}");
        assert!(!inner.bytes().any(|b| b.is_ascii_control()), "{key}");
        assert!(inner == "plain-user" || inner.starts_with("h:") && inner.len() == 34);
    }
}

#[tokio::test]
async fn odd_identifiers_keep_the_key_shape_on_standalone() {
    let server = shared_standalone();
    odd_identifiers_keep_the_key_shape_on(
        &server.url(),
        std::slice::from_ref(server.node()),
        "odd",
    )
    .await;
}

#[tokio::test]
async fn odd_identifiers_keep_the_key_shape_on_cluster() {
    let cluster = shared_cluster();
    odd_identifiers_keep_the_key_shape_on(&cluster.url(), cluster.nodes(), "odd").await;
}

#[tokio::test]
async fn peeks_and_rejections_write_nothing() {
    let server = shared_standalone();
    let store = store(&server.url(), "quiet").await;
    let policies = policies();
    for (name, policy) in &policies {
        let check = [Check {
            name,
            policy,
            key: "quiet-user",
        }];
        let peeked = store.decide(&check, 1, Mode::Peek).await.unwrap();
        assert!(peeked.decisions[0].allowed);
        assert_eq!(peeked.decisions[0].remaining, policy.capacity());
    }
    assert!(keys_of(std::slice::from_ref(server.node()), "quiet").is_empty());

    // A multi-policy check rejected by one policy consumes from none.
    let (tight_name, tight) = (
        &PolicyName::from_static("tight"),
        Policy::new(Algorithm::FixedWindow, 1, Duration::from_secs(60), None).unwrap(),
    );
    let (loose_name, loose) = &policies[1];
    let both = [
        Check {
            name: tight_name,
            policy: &tight,
            key: "multi",
        },
        Check {
            name: loose_name,
            policy: loose,
            key: "multi",
        },
    ];
    assert!(
        store
            .decide(&both, 1, Mode::Consume)
            .await
            .unwrap()
            .decisions
            .iter()
            .all(|d| d.allowed)
    );
    let key = store.key(&both[1]);
    let before: Vec<String> = server.query(&["LRANGE", &key, "0", "-1"]).unwrap();
    let pttl_before: i64 = server.query(&["PTTL", &key]).unwrap();
    let rejected = store.decide(&both, 1, Mode::Consume).await.unwrap();
    assert!(rejected.decisions.iter().all(|d| !d.allowed));
    assert_eq!(rejected.decisions[1].remaining, 9);
    let after: Vec<String> = server.query(&["LRANGE", &key, "0", "-1"]).unwrap();
    let pttl_after: i64 = server.query(&["PTTL", &key]).unwrap();
    assert_eq!(before, after);
    assert!(pttl_after <= pttl_before);
}

#[tokio::test]
async fn noscript_is_reloaded_transparently() {
    let server = shared_standalone();
    let store = store(&server.url(), "noscript").await;
    let policy = Policy::new(Algorithm::Gcra, 5, Duration::from_secs(60), None).unwrap();
    let check = [Check {
        name: &PolicyName::from_static("api"),
        policy: &policy,
        key: "u",
    }];
    assert!(
        store
            .decide(&check, 1, Mode::Consume)
            .await
            .unwrap()
            .decisions[0]
            .allowed
    );
    let sha = RedisStore::script_sha(Shape::OnePolicy(Algorithm::Gcra));
    let _: String = server.query(&["SCRIPT", "FLUSH"]).unwrap();
    let exists: Vec<i64> = server.query(&["SCRIPT", "EXISTS", sha]).unwrap();
    assert_eq!(exists, [0]);
    let d = store.decide(&check, 1, Mode::Consume).await.unwrap();
    assert_eq!(d.decisions[0].remaining, 3, "state kept, script reloaded");
    let exists: Vec<i64> = server.query(&["SCRIPT", "EXISTS", sha]).unwrap();
    assert_eq!(exists, [1]);
}

#[tokio::test]
async fn noscript_is_reloaded_on_every_cluster_node() {
    let cluster = shared_cluster();
    let store = store(&cluster.url(), "noscript").await;
    let policy = Policy::new(Algorithm::TokenBucket, 5, Duration::from_secs(60), None).unwrap();
    for node in cluster.nodes() {
        let _: String = node.query(&["SCRIPT", "FLUSH"]).unwrap();
    }
    // Identifiers spread over the three masters.
    for i in 0..12 {
        let key = format!("user-{i}");
        let check = [Check {
            name: &PolicyName::from_static("api"),
            policy: &policy,
            key: &key,
        }];
        assert!(
            store
                .decide(&check, 1, Mode::Consume)
                .await
                .unwrap()
                .decisions[0]
                .allowed
        );
    }
}

#[tokio::test]
async fn reset_deletes_the_state() {
    let server = shared_standalone();
    let store = store(&server.url(), "reset").await;
    let policies = policies();
    let checks: Vec<Check<'_>> = policies
        .iter()
        .map(|(name, policy)| Check {
            name,
            policy,
            key: "r",
        })
        .collect();
    store.decide(&checks, 10, Mode::Consume).await.unwrap();
    assert!(
        !store
            .decide(&checks, 1, Mode::Consume)
            .await
            .unwrap()
            .decisions[0]
            .allowed
    );
    store.reset(&checks).await.unwrap();
    assert!(keys_of(std::slice::from_ref(server.node()), "reset").is_empty());
    let d = store.decide(&checks, 1, Mode::Peek).await.unwrap();
    assert!(
        d.decisions
            .iter()
            .all(|d| d.allowed && d.remaining == d.limit)
    );
}

#[test]
fn a_store_outside_a_runtime_is_an_error_not_a_panic() {
    let url = shared_standalone().url();
    assert!(matches!(
        RedisStore::connect_lazy(&url, RedisOptions::default()),
        Err(tollgate_redis::RedisStoreError::NoRuntime)
    ));
}

#[tokio::test]
async fn braces_in_the_prefix_and_policy_names_are_refused_not_hashed_into_another_slot() {
    let server = shared_standalone();
    let options = RedisOptions {
        prefix: "bad{prefix}".into(),
        ..RedisOptions::default()
    };
    assert!(matches!(
        RedisStore::connect_lazy(&server.url(), options),
        Err(tollgate_redis::RedisStoreError::Brace(_))
    ));
    // A policy name never reaches a store with a brace: no check can be made of one.
    for name in ["api{x}", "api}", "{api"] {
        assert!(name.parse::<PolicyName>().is_err(), "{name}");
    }
}

/// A key holding something that is not tollgate's state (another program's value, or state in
/// an older format) fails the decision loudly instead of reading as a fresh quota, with one
/// policy and with several.
#[tokio::test]
async fn foreign_values_are_errors_not_fresh_quotas() {
    let server = shared_standalone();
    let store = store(&server.url(), "foreign").await;
    let policies = policies();
    for (name, policy) in &policies {
        let check = Check {
            name,
            policy,
            key: "victim",
        };
        let key = store.key(&check);
        let foreign = if policy.algorithm() == Algorithm::SlidingLog {
            // A list whose length is even: no total in front.
            let _: i64 = server.query(&["RPUSH", &key, "1", "2"]).unwrap();
            "a list without its total"
        } else {
            let _: String = server.query(&["SET", &key, "1700000000000000:3"]).unwrap();
            "a text value"
        };
        for checks in [vec![check], vec![check, check]] {
            let result = store.decide(&checks, 1, Mode::Consume).await;
            let message = match result {
                Err(StoreError::Backend(e)) => e.to_string(),
                other => panic!("{name}: {foreign} gave {other:?}"),
            };
            assert!(message.contains("malformed"), "{name}: {message}");
        }
    }
}
