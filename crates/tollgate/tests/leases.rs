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

/// Whether a unit of `jobs` for `k` comes free within 100 turns of this runtime (a dropped
/// guard releases in a task of its own); the unit taken to find out is left detached.
async fn freed_soon(limiter: &Limiter<MemoryStore>) -> bool {
    for _ in 0..100 {
        tokio::task::yield_now().await;
        if let Some(lease) = limiter.acquire("jobs", "k", 1).await.unwrap().lease {
            lease.detach();
            return true;
        }
    }
    false
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
    let freed = freed_soon(&limiter).await;
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

/// A lease made owned outlives the limiter that granted it (a response body keeps it past the
/// handler), and its release gives the units back to the shared store.
#[tokio::test]
async fn an_owned_lease_outlives_its_limiter() {
    let clock = ManualClock::new(1_000_000_000);
    let store = std::sync::Arc::new(MemoryStore::with_options(Clock::Manual(clock), 100));
    let jobs = Policy::concurrency(1, Duration::from_secs(10)).unwrap();
    let limiter = Limiter::from_shared(store.clone())
        .with_policy("jobs", jobs.clone())
        .unwrap();
    let key = String::from("k");
    let owned = limiter
        .acquire("jobs", &key, 1)
        .await
        .unwrap()
        .lease
        .unwrap()
        .into_owned();
    drop((limiter, key));
    let other = Limiter::from_shared(store)
        .with_policy("jobs", jobs)
        .unwrap();
    assert!(other.acquire("jobs", "k", 1).await.unwrap().lease.is_none());
    assert!(owned.release().await.unwrap());
    assert!(other.acquire("jobs", "k", 1).await.unwrap().lease.is_some());
}

/// A release future dropped before it is polled still gives the lease back (in the background,
/// as dropping the guard does).
#[tokio::test]
async fn an_unpolled_release_still_releases() {
    let clock = ManualClock::new(1_000_000_000);
    let limiter = Limiter::new(MemoryStore::with_options(Clock::Manual(clock), 100))
        .with_policy(
            "jobs",
            Policy::concurrency(1, Duration::from_secs(10)).unwrap(),
        )
        .unwrap();
    let lease = limiter
        .acquire("jobs", "k", 1)
        .await
        .unwrap()
        .lease
        .unwrap();
    drop(lease.release());
    let freed = freed_soon(&limiter).await;
    assert!(freed, "an unpolled release kept its lease");
}
