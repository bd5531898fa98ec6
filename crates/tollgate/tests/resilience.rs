//! The resilience wrapper around a store that can be made to fail or hang.
//!
//! The inner store here is the real memory store behind a switch; the fault tests against real
//! Redis processes live in `tollgate-redis`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tollgate::PolicyName;
use tollgate::resilience::{BreakerConfig, BreakerState};
use tollgate::{
    Algorithm, Check, Limiter, MemoryStore, Mode, OnError, Policy, ResilienceConfig, Resilient,
    Store, StoreDecision, StoreError,
};

const OK: u8 = 0;
const FAIL: u8 = 1;
const HANG: u8 = 2;

/// A memory store that can be told to fail or hang, and counts the calls that reach it.
#[derive(Default)]
struct Switched {
    inner: MemoryStore,
    mode: AtomicU8,
    calls: AtomicU64,
}

impl Store for Switched {
    async fn decide(
        &self,
        checks: &[Check<'_>],
        cost: u64,
        mode: Mode,
    ) -> Result<StoreDecision, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.mode.load(Ordering::SeqCst) {
            FAIL => Err(StoreError::Protocol("switched off".into())),
            HANG => std::future::pending().await,
            _ => self.inner.decide(checks, cost, mode).await,
        }
    }

    async fn reset(&self, checks: &[Check<'_>]) -> Result<(), StoreError> {
        self.inner.reset(checks).await
    }
}

fn setup(on_error: OnError, instances: u32) -> (Arc<Switched>, Limiter<Resilient<Arc<Switched>>>) {
    let switched = Arc::new(Switched::default());
    let config = ResilienceConfig {
        timeout: Duration::from_millis(50),
        on_error,
        instances,
        breaker: BreakerConfig {
            failure_threshold: 3,
            probe_interval: Duration::from_millis(200),
        },
        ..ResilienceConfig::default()
    };
    let policy = Policy::new(Algorithm::FixedWindow, 10, Duration::from_secs(3600), None).unwrap();
    let limiter = Limiter::new(Resilient::new(switched.clone(), config))
        .with_policy("p", policy)
        .unwrap();
    (switched, limiter)
}

#[tokio::test]
async fn failure_policies_decide_and_mark_degraded() {
    for (on_error, expect_allowed) in [(OnError::Allow, true), (OnError::Deny, false)] {
        let (switched, limiter) = setup(on_error, 1);
        switched.mode.store(FAIL, Ordering::SeqCst);
        let v = limiter.check_all(&["p"], "k", 1).await.unwrap();
        assert!(v.degraded);
        assert_eq!(v.allowed(), expect_allowed, "{on_error:?}");
        if !expect_allowed {
            assert!(v.decision.retry_after_us > 0);
        }
    }
    // local: the limit of 10 shared by 3 instances is 3 here.
    let (switched, limiter) = setup(OnError::Local, 3);
    switched.mode.store(FAIL, Ordering::SeqCst);
    let mut allowed = 0;
    for _ in 0..10 {
        let v = limiter.check_all(&["p"], "k", 1).await.unwrap();
        assert!(v.degraded);
        allowed += usize::from(v.allowed());
    }
    assert_eq!(allowed, 3);
    assert_eq!(limiter.store().stats().degraded.get(), 10);
}

/// The limiter's own failure policy (any store, no wrapper) and `Resilient` follow one rule:
/// the same failed store gets the same verdicts from both, `local` included.
#[tokio::test]
async fn the_limiter_failure_policy_decides_as_resilient_does() {
    for on_error in [OnError::Allow, OnError::Deny, OnError::Local] {
        let (switched, wrapped) = setup(on_error, 1);
        switched.mode.store(FAIL, Ordering::SeqCst);
        let failing = Arc::new(Switched::default());
        failing.mode.store(FAIL, Ordering::SeqCst);
        let reported = Arc::new(AtomicU64::new(0));
        let count = reported.clone();
        let policy =
            Policy::new(Algorithm::FixedWindow, 10, Duration::from_secs(3600), None).unwrap();
        let bare = Limiter::new(failing)
            .with_policy("p", policy)
            .unwrap()
            .on_store_error(on_error, move |_| {
                count.fetch_add(1, Ordering::SeqCst);
            });
        for cost in [4, 4, 4, 1, 1] {
            let expected = wrapped.check_all(&["p"], "k", cost).await.unwrap();
            let got = bare.check_all(&["p"], "k", cost).await.unwrap();
            assert!(got.degraded, "{on_error:?}");
            assert_eq!(
                (got.allowed(), got.decision.remaining, got.decision.limit),
                (
                    expected.allowed(),
                    expected.decision.remaining,
                    expected.decision.limit
                ),
                "{on_error:?}, cost {cost}"
            );
        }
        assert_eq!(
            reported.load(Ordering::SeqCst),
            5,
            "each failure is reported"
        );
    }
}

/// A lease the limiter's `local` failure policy grants goes back to it: released, dropped or
/// made owned, its unit is free again at once (the store never held it).
#[tokio::test]
async fn leases_granted_without_the_store_go_back_to_the_fallback() {
    let failing = Arc::new(Switched::default());
    failing.mode.store(FAIL, Ordering::SeqCst);
    let jobs = Policy::concurrency(1, Duration::from_secs(60)).unwrap();
    let limiter = Limiter::new(failing)
        .with_policy("jobs", jobs)
        .unwrap()
        .on_store_error(OnError::Local, |_| {});
    let acquire = async || limiter.acquire("jobs", "k", 1).await.unwrap();
    let first = acquire().await;
    assert!(first.degraded);
    let lease = first.lease.expect("granted locally");
    assert!(acquire().await.lease.is_none(), "one unit, held");
    assert!(lease.release().await.unwrap());
    let lease = acquire().await.lease.expect("free again after release");
    drop(lease);
    let owned = acquire()
        .await
        .lease
        .expect("free again after drop")
        .into_owned();
    assert!(acquire().await.lease.is_none(), "held by the owned guard");
    assert!(owned.release().await.unwrap());
    assert!(
        acquire().await.lease.is_some(),
        "free again after the owned release"
    );
}

#[tokio::test]
async fn a_hung_store_costs_at_most_the_timeout_then_the_breaker_skips_it() {
    let (switched, limiter) = setup(OnError::Deny, 1);
    switched.mode.store(HANG, Ordering::SeqCst);
    for _ in 0..3 {
        let started = Instant::now();
        let v = limiter.check_all(&["p"], "k", 1).await.unwrap();
        assert!(v.degraded && !v.allowed());
        // The store never answers: any bound proves the 50 ms timeout cut it short. A generous
        // one, since this machine's two cores may be busy with other builds.
        assert!(
            started.elapsed() < Duration::from_millis(50 + 950),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(limiter.store().breaker().state(), BreakerState::Open);
    let calls = switched.calls.load(Ordering::SeqCst);
    // Open: decisions are immediate and the store is not called.
    let started = Instant::now();
    for _ in 0..1000 {
        assert!(limiter.check_all(&["p"], "k", 1).await.unwrap().degraded);
    }
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(switched.calls.load(Ordering::SeqCst), calls);

    // Recovery: after the probe interval one probe reaches the store and closes the breaker.
    switched.mode.store(OK, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let v = limiter.check_all(&["p"], "k", 1).await.unwrap();
    assert!(!v.degraded && v.allowed());
    assert_eq!(limiter.store().breaker().state(), BreakerState::Closed);
}

#[tokio::test]
async fn over_limit_cache_absorbs_a_flood_without_rejecting_what_the_store_allows() {
    let (switched, limiter) = setup(OnError::Deny, 1);
    for _ in 0..10 {
        assert!(limiter.check("p", "hot").await.unwrap().allowed);
    }
    let before = switched.calls.load(Ordering::SeqCst);
    for _ in 0..100_000 {
        assert!(!limiter.check("p", "hot").await.unwrap().allowed);
    }
    let calls = switched.calls.load(Ordering::SeqCst) - before;
    assert!(
        calls < 100,
        "{calls} store calls for a flood on one over-limit key"
    );
    assert!(limiter.store().stats().cache_hits.get() > 99_900);

    // A smaller cost than the one cached still goes to the store.
    assert!(limiter.check_cost("p", "other", 9).await.unwrap().allowed);
    assert!(!limiter.check_cost("p", "other", 2).await.unwrap().allowed);
    assert!(limiter.check_cost("p", "other", 1).await.unwrap().allowed);
}

#[tokio::test]
async fn cached_rejections_never_outlive_the_stores_own() {
    // 4 per 100 ms: windows roll during the test, so cached entries must expire on time.
    let switched = Arc::new(Switched::default());
    let policy = Policy::new(Algorithm::SlidingLog, 4, Duration::from_millis(100), None).unwrap();
    let limiter = Limiter::new(Resilient::new(
        switched.clone(),
        ResilienceConfig::default(),
    ))
    .with_policy("p", policy.clone())
    .unwrap();
    let started = Instant::now();
    let mut cache_rejections = 0;
    let check = [Check {
        name: &PolicyName::from_static("p"),
        policy: &policy,
        key: "k",
    }];
    while started.elapsed() < Duration::from_millis(600) {
        // What the store would answer now; quota only grows until the next check consumes, so
        // if the store allows now, the check below must be allowed too.
        let truth = switched.inner.decide_now(&check, 1, Mode::Peek).unwrap()[0];
        let hits = limiter.store().stats().cache_hits.get();
        let d = limiter.check("p", "k").await.unwrap();
        let from_cache = limiter.store().stats().cache_hits.get() > hits;
        if from_cache {
            cache_rejections += 1;
            assert!(
                !truth.allowed,
                "cache rejected what the store allows: {truth:?} {d:?}"
            );
        }
        if truth.allowed {
            assert!(d.allowed);
        }
    }
    assert!(cache_rejections > 0);
}

#[tokio::test]
async fn a_probe_dropped_by_its_caller_does_not_leave_the_breaker_half_open() {
    let (switched, limiter) = setup(OnError::Deny, 1);
    switched.mode.store(HANG, Ordering::SeqCst);
    for _ in 0..3 {
        limiter.check_all(&["p"], "k", 1).await.unwrap();
    }
    assert_eq!(limiter.store().breaker().state(), BreakerState::Open);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The probe's caller gives up before the store timeout (an HTTP client disconnecting).
    let dropped =
        tokio::time::timeout(Duration::from_millis(5), limiter.check_all(&["p"], "k", 1)).await;
    assert!(dropped.is_err(), "the probe should still be in flight");
    assert_ne!(limiter.store().breaker().state(), BreakerState::HalfOpen);

    // The store is back: the very next call probes it and closes the breaker.
    switched.mode.store(OK, Ordering::SeqCst);
    let v = limiter.check_all(&["p"], "k", 1).await.unwrap();
    assert!(!v.degraded && v.allowed());
    assert_eq!(limiter.store().breaker().state(), BreakerState::Closed);
}

#[tokio::test]
async fn cached_rejections_are_dropped_when_the_store_comes_back_after_an_outage() {
    let (switched, limiter) = setup(OnError::Deny, 1);
    for _ in 0..10 {
        assert!(limiter.check("p", "hot").await.unwrap().allowed);
    }
    assert!(!limiter.check("p", "hot").await.unwrap().allowed);
    assert_eq!(limiter.store().cached_keys(), 1);

    // The store goes down and comes back without its state (a restart without persistence).
    switched.mode.store(FAIL, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(
            limiter
                .check_all(&["p"], "other", 1)
                .await
                .unwrap()
                .degraded
        );
    }
    assert_eq!(limiter.store().breaker().state(), BreakerState::Open);
    let policy = limiter.policy("p").unwrap().clone();
    switched
        .inner
        .reset(&[Check {
            name: &PolicyName::from_static("p"),
            policy: &policy,
            key: "hot",
        }])
        .await
        .unwrap();
    switched.mode.store(OK, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The probe closes the breaker and empties the cache: the key is asked of the store again,
    // which now allows it.
    let probe = limiter.check_all(&["p"], "other", 1).await.unwrap();
    assert!(!probe.degraded);
    assert_eq!(limiter.store().cached_keys(), 0);
    let d = limiter.check("p", "hot").await.unwrap();
    assert!(d.allowed, "{d:?}");
}

#[tokio::test]
async fn a_cached_rejection_does_not_outlive_a_change_of_its_policy() {
    let switched = Arc::new(Switched::default());
    let store = Arc::new(Resilient::new(
        switched.clone(),
        ResilienceConfig::default(),
    ));
    let hour = Duration::from_secs(3600);
    let strict = Policy::new(Algorithm::FixedWindow, 2, hour, None).unwrap();
    let limiter = Limiter::from_shared(store.clone())
        .with_policy("p", strict)
        .unwrap();
    for expected in [true, true, false] {
        assert_eq!(limiter.check("p", "k").await.unwrap().allowed, expected);
    }
    let calls = switched.calls.load(Ordering::SeqCst);
    assert!(!limiter.check("p", "k").await.unwrap().allowed);
    assert_eq!(
        switched.calls.load(Ordering::SeqCst),
        calls,
        "answered by the cache"
    );

    // A reload raises the limit under the same name: the store is asked, and allows.
    let relaxed = Policy::new(Algorithm::FixedWindow, 5, hour, None).unwrap();
    let reloaded = Limiter::from_shared(store)
        .with_policy("p", relaxed)
        .unwrap();
    assert!(reloaded.check("p", "k").await.unwrap().allowed);
    assert_eq!(switched.calls.load(Ordering::SeqCst), calls + 1);
}

/// A readiness ping on the switched store.
async fn ping(switched: &Arc<Switched>) -> Result<(), StoreError> {
    match switched.mode.load(Ordering::SeqCst) {
        OK => Ok(()),
        HANG => std::future::pending().await,
        _ => Err(StoreError::Protocol("switched off".into())),
    }
}

#[tokio::test]
async fn a_readiness_ping_probes_an_open_breaker_so_an_idle_instance_recovers() {
    let (switched, limiter) = setup(OnError::Deny, 1);
    let store = limiter.store();
    assert!(store.ready(ping).await.is_ok());

    // Failed pings count like failed calls, and a hung one costs the timeout.
    switched.mode.store(HANG, Ordering::SeqCst);
    assert!(matches!(
        store.ready(ping).await,
        Err(StoreError::Timeout(_))
    ));
    switched.mode.store(FAIL, Ordering::SeqCst);
    for _ in 0..2 {
        assert!(matches!(
            store.ready(ping).await,
            Err(StoreError::Backend(_))
        ));
    }
    assert_eq!(store.breaker().state(), BreakerState::Open);
    // Open, no probe due yet: not ready, without asking the store.
    assert!(matches!(
        store.ready(ping).await,
        Err(StoreError::CircuitOpen)
    ));

    // The store comes back while no request arrives: the next due ping closes the breaker.
    switched.mode.store(OK, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(store.ready(ping).await.is_ok());
    assert_eq!(store.breaker().state(), BreakerState::Closed);
    assert_eq!(
        switched.calls.load(Ordering::SeqCst),
        0,
        "no decision was needed"
    );
}

#[tokio::test]
async fn cached_rejections_report_the_time_until_full_not_until_retry() {
    let switched = Arc::new(Switched::default());
    let policy = Policy::new(Algorithm::Gcra, 10, Duration::from_secs(3600), None).unwrap();
    let limiter = Limiter::new(Resilient::new(
        switched.clone(),
        ResilienceConfig::default(),
    ))
    .with_policy("p", policy)
    .unwrap();
    for _ in 0..10 {
        assert!(limiter.check("p", "k").await.unwrap().allowed);
    }
    let from_store = limiter.check("p", "k").await.unwrap();
    let hits = limiter.store().stats().cache_hits.get();
    let cached = limiter.check("p", "k").await.unwrap();
    assert_eq!(limiter.store().stats().cache_hits.get(), hits + 1);
    assert!(!cached.allowed);
    // One token back in 6 minutes; the whole bucket in an hour.
    assert!(cached.retry_after_us <= from_store.retry_after_us);
    assert!(cached.reset_after_us > 3_500_000_000, "{cached:?}");
    assert!(cached.reset_after_us <= from_store.reset_after_us);
}
