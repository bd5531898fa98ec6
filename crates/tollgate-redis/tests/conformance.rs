//! The core's conformance suite, unchanged, on Redis standalone and Cluster: the hand-written
//! tables and seeded differential traces against the pure transitions. Time is injected (the
//! suite drives a manual clock); everything else is the production path.

use tollgate::ManualClock;
use tollgate::conformance::{run_differential, run_override_tables, run_tables};
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_testkit::{shared_cluster, shared_standalone};

/// Seeds per topology, and steps per seed.
const SEEDS: u64 = 24;
const STEPS: usize = 1_500;

async fn store(url: &str, prefix: &str) -> (RedisStore, ManualClock) {
    let clock = ManualClock::new(0);
    let options = RedisOptions {
        prefix: prefix.to_owned(),
        clock_override: Some(clock.clone()),
        ..RedisOptions::default()
    };
    (RedisStore::connect(url, options).await.unwrap(), clock)
}

#[tokio::test]
async fn tables_pass_on_standalone() {
    let (store, clock) = store(&shared_standalone().url(), "conf-tables").await;
    let failures = run_tables(&store, &clock, "s:").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn tables_pass_on_cluster() {
    let (store, clock) = store(&shared_cluster().url(), "conf-tables").await;
    let failures = run_tables(&store, &clock, "c:").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn differential_traces_match_the_model_on_standalone() {
    let (store, clock) = store(&shared_standalone().url(), "conf-diff").await;
    for seed in 0..SEEDS {
        run_differential(&store, &clock, seed, STEPS, "s:")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn differential_traces_match_the_model_on_cluster() {
    let (store, clock) = store(&shared_cluster().url(), "conf-diff").await;
    // Other seeds than on standalone: more traces in all.
    for seed in SEEDS..2 * SEEDS {
        run_differential(&store, &clock, seed, STEPS, "c:")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn override_tables_pass_on_standalone() {
    let (store, clock) = store(&shared_standalone().url(), "conf-overrides").await;
    let failures = run_override_tables(&store, &clock, "s:").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn override_tables_pass_on_cluster() {
    let (store, clock) = store(&shared_cluster().url(), "conf-overrides").await;
    let failures = run_override_tables(&store, &clock, "c:").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
