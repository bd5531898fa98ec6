//! The conformance suite on the memory store.

use tollgate::conformance::{
    run_differential, run_lease_differential, run_lease_tables, run_override_tables, run_tables,
};
use tollgate::{Clock, ManualClock, MemoryStore};

fn store() -> (MemoryStore, ManualClock) {
    let clock = ManualClock::new(0);
    (
        MemoryStore::with_options(Clock::Manual(clock.clone()), 100_000),
        clock,
    )
}

#[tokio::test]
async fn tables_pass_on_memory() {
    let (store, clock) = store();
    let failures = run_tables(&store, &clock, "t:").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn differential_traces_match_the_model_on_memory() {
    let (store, clock) = store();
    for seed in 0..300 {
        run_differential(&store, &clock, seed, 2_000, "d:")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn lease_tables_pass_on_memory() {
    let (store, clock) = store();
    let failures = run_lease_tables(&store, &clock, "t:").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn lease_traces_match_the_model_on_memory() {
    let (store, clock) = store();
    for seed in 0..100 {
        run_lease_differential(&store, &clock, seed, 1_000, "d:")
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn override_tables_pass_on_memory() {
    let (store, clock) = store();
    let failures = run_override_tables(&store, &clock, "o:").await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
