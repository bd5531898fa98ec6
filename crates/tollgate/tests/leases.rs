//! `Limiter::acquire` and its lease guard on the memory store.

use std::time::Duration;

use tollgate::{Clock, LimitError, Limiter, ManualClock, MemoryStore, Policy, PolicyError};

fn limiter(clock: &ManualClock) -> Limiter<MemoryStore> {
    Limiter::new(MemoryStore::with_options(Clock::Manual(clock.clone()), 100))
        .with_policy(
            "jobs",
            Policy::concurrency(2, Duration::from_secs(10)).unwrap(),
        )
        .unwrap()
        .with_policy(
            "api",
            Policy::builder(tollgate::Algorithm::Gcra)
                .rate("10/s")
                .build()
                .unwrap(),
        )
        .unwrap()
}

#[tokio::test]
async fn a_dropped_lease_is_released_and_an_explicit_one_says_so() {
    let clock = ManualClock::new(1_000_000_000);
    let limiter = limiter(&clock);
    let first = limiter
        .acquire("jobs", "k", 1)
        .await
        .unwrap()
        .lease
        .unwrap();
    let second = limiter.acquire("jobs", "k", 1).await.unwrap();
    assert_eq!(second.decision.remaining, 0);
    assert!(
        limiter
            .acquire("jobs", "k", 1)
            .await
            .unwrap()
            .lease
            .is_none()
    );
    drop(second);
    // The drop releases in a task of this runtime: let it run.
    let mut freed = false;
    for _ in 0..100 {
        tokio::task::yield_now().await;
        if let Some(lease) = limiter.acquire("jobs", "k", 1).await.unwrap().lease {
            lease.detach();
            freed = true;
            break;
        }
    }
    assert!(freed, "dropping the guard did not free its slot");
    assert!(first.release().await.unwrap());
    let third = limiter
        .acquire("jobs", "k", 1)
        .await
        .unwrap()
        .lease
        .unwrap();
    // Renewed before it expires: still held after the first lease would have ended.
    clock.advance_us(9_000_000);
    let mut third = third;
    assert!(third.renew().await.unwrap());
    clock.advance_us(9_000_000);
    let id = third.detach();
    assert_eq!(
        limiter.renew("jobs", "k", id).await.unwrap(),
        Some(Duration::from_secs(10))
    );
    clock.advance_us(10_000_000);
    assert_eq!(limiter.renew("jobs", "k", id).await.unwrap(), None);
    assert!(!limiter.release("jobs", "k", id).await.unwrap());
}

#[tokio::test]
async fn leases_and_checks_do_not_mix() {
    let clock = ManualClock::new(1_000_000_000);
    let limiter = limiter(&clock);
    let err = limiter.check("jobs", "k").await.unwrap_err();
    assert!(
        matches!(
            err,
            LimitError::Policy {
                source: PolicyError::NeedsLease,
                ..
            }
        ),
        "{err}"
    );
    let err = limiter.acquire("api", "k", 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            LimitError::Policy {
                source: PolicyError::NotConcurrency(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(limiter.acquire("jobs", "k", 3).await.is_err());
    assert!(limiter.acquire("jobs", "", 1).await.is_err());
}
