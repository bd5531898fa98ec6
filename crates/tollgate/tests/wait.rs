//! `Limiter::check_wait`: waiters on one key are served first come, first served, never
//! before the cost fits, and a bound on waiters answers the rest at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tollgate::{Algorithm, Limiter, MemoryStore, Policy};

fn limiter(rate: &str) -> Limiter<MemoryStore> {
    let policy = Policy::builder(Algorithm::Gcra)
        .rate(rate)
        .build()
        .expect("valid policy");
    Limiter::new(MemoryStore::new())
        .with_policy("jobs", policy)
        .unwrap()
}

async fn exhaust(limiter: &Limiter<MemoryStore>, key: &str) {
    while limiter.check("jobs", key).await.expect("check").allowed {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_in_order_and_never_early() {
    // One unit every 50 ms once the burst of 20 is spent.
    let limiter = Arc::new(limiter("20/s"));
    exhaust(&limiter, "q").await;
    let started = Instant::now();
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut callers = Vec::new();
    for i in 0..8u64 {
        let (limiter, order) = (limiter.clone(), order.clone());
        callers.push(tokio::spawn(async move {
            let waited = limiter
                .check_wait(&["jobs"], "q", 1, Duration::from_secs(3))
                .await
                .expect("check_wait");
            order.lock().unwrap().push(i);
            (i, waited, started.elapsed())
        }));
        // Arrive in a known order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for caller in callers {
        let (i, waited, at) = caller.await.expect("caller");
        assert!(waited.verdict.allowed(), "caller {i}: {waited:?}");
        // The (i+1)-th unit after the burst fits 50·(i+1) ms after it was spent; the clock of
        // the store and this one start a hair apart, hence the millisecond of slack.
        let fits = Duration::from_millis(50 * (i + 1) - 1);
        assert!(
            at >= fits,
            "caller {i} allowed after {at:?}, before {fits:?}"
        );
        assert!(waited.waited > Duration::ZERO);
    }
    assert_eq!(*order.lock().unwrap(), (0..8).collect::<Vec<_>>());
    assert_eq!(limiter.waiting(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_bound_or_past_the_deadline_answers_at_once() {
    let limiter = Arc::new(limiter("2/s").with_max_waiters(2));
    exhaust(&limiter, "q").await;
    // A unit fits in 500 ms: a caller ready to wait 100 ms is told so at once.
    let impatient = limiter
        .check_wait(&["jobs"], "q", 1, Duration::from_millis(100))
        .await
        .expect("check_wait");
    assert!(!impatient.verdict.allowed());
    assert!(
        impatient.waited < Duration::from_millis(50),
        "{impatient:?}"
    );
    assert!(impatient.verdict.decision.retry_after_us > 100_000);

    // Two wait (the bound); a third is answered at once, rejected.
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let limiter = limiter.clone();
        waiting.push(tokio::spawn(async move {
            limiter
                .check_wait(&["jobs"], "q", 1, Duration::from_secs(3))
                .await
                .expect("check_wait")
        }));
    }
    while limiter.waiting() < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let third = limiter
        .check_wait(&["jobs"], "q", 1, Duration::from_secs(3))
        .await
        .expect("check_wait");
    assert!(!third.verdict.allowed());
    assert!(third.waited < Duration::from_millis(50), "{third:?}");
    for waiter in waiting {
        assert!(waiter.await.expect("waiter").verdict.allowed());
    }

    // A request that can never pass is refused before it waits.
    assert!(
        limiter
            .check_wait(&["jobs"], "q", 3, Duration::from_secs(1))
            .await
            .is_err()
    );
    assert!(
        limiter
            .check_wait(&["nope"], "q", 1, Duration::from_secs(1))
            .await
            .is_err()
    );
}
