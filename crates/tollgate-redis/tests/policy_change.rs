//! A policy changed under the same name on a shared Redis (a config reload or a deploy) finds
//! state written under the old period: window keys must start afresh, not lock for centuries.

use std::time::Duration;

use tollgate::PolicyName;
use tollgate::{Algorithm, Check, Mode, Policy, Store};
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_testkit::shared_standalone;

#[tokio::test]
async fn a_longer_period_starts_window_keys_afresh() {
    let redis = shared_standalone();
    let options = RedisOptions {
        prefix: "policy-change".into(),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&redis.url(), options).await.unwrap();
    for algorithm in [Algorithm::FixedWindow, Algorithm::SlidingWindow] {
        let short = Policy::new(algorithm, 10, Duration::from_secs(1), None).unwrap();
        let long = Policy::new(algorithm, 10, Duration::from_secs(86_400), None).unwrap();
        let name = PolicyName::from_static("p");
        let check = |policy| {
            [Check {
                name: &name,
                policy,
                key: "k",
            }]
        };
        let spent = store
            .decide(&check(&short), 10, Mode::Consume)
            .await
            .unwrap();
        assert!(spent.decisions[0].allowed);
        let after = store.decide(&check(&long), 1, Mode::Consume).await.unwrap();
        let d = after.decisions[0];
        assert!(d.allowed, "{algorithm}: {d:?}");
        assert!(d.reset_after_us <= 2 * 86_400_000_000, "{algorithm}: {d:?}");
        let key = store.key(&check(&long)[0]);
        let ttl_ms: i64 = redis.query(&["PTTL", &key]).unwrap();
        assert!(
            (0..=2 * 86_400_000 + 1000).contains(&ttl_ms),
            "{algorithm}: PTTL {ttl_ms}"
        );
    }
}
