//! The load loop counts what the store decides.

use std::sync::Arc;
use std::time::Duration;

use tollgate::{Algorithm, Limiter, MemoryStore, Policy};
use tollgate_bench::{StoreTarget, Workload, run};

fn target() -> Arc<StoreTarget<MemoryStore>> {
    let policy = Policy::new(Algorithm::FixedWindow, 5, Duration::from_secs(3600), None).unwrap();
    let limiter = Limiter::new(MemoryStore::new())
        .with_policy("p", policy)
        .unwrap();
    Arc::new(StoreTarget::new(limiter, "p", "memory"))
}

#[tokio::test]
async fn counts_allowed_and_rejected_exactly() {
    let workload = Workload {
        keys: 10,
        requests: 1_000,
        concurrency: 8,
        ..Workload::default()
    };
    let report = run(target(), &workload, "memory".into(), false, None).await;
    assert_eq!(report.decisions, 1_000);
    assert_eq!(report.allowed, 50, "10 keys x limit 5");
    assert_eq!(report.rejected, 950);
    assert_eq!(report.errors, 0);
    assert!(report.rps > 0.0 && report.p50_ms > 0.0 && report.p99_ms >= report.p50_ms);
    let json: serde_json::Value = serde_json::from_str(&report.json_line()).unwrap();
    assert_eq!(json["bench"], "tollgate");
    assert_eq!(json["variant"], "memory");
}

#[tokio::test]
async fn exhaust_first_times_only_rejections() {
    let workload = Workload {
        keys: 20,
        requests: 500,
        exhaust_first: true,
        ..Workload::default()
    };
    let report = run(target(), &workload, "reject".into(), false, None).await;
    assert_eq!(report.allowed, 0);
    assert_eq!(report.rejected, 500);
}
