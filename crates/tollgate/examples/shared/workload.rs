//! The memory-store workload the examples measure: 10,000 String keys visited in a fixed
//! pseudo-random order, nothing ever rejected, and the two library paths they compare
//! (`Limiter::check`; `Limiter::acquire` + `Lease::release`). Shared by `keyed_loop` and
//! `pair_vs_check` (`#[path]` module), so both measure the same thing.

use std::hint::black_box;
use std::time::Duration;

use tollgate::{Algorithm, Limiter, MemoryStore, Policy};

/// Poll a future that never waits (the memory store's) to completion.
#[inline(always)]
pub fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("memory store futures are always ready"),
    }
}

/// The 10,000 keys.
pub fn keys() -> Vec<String> {
    (0..10_000).map(|i| format!("user-{i}")).collect()
}

/// `visits` indexes into `keys` keys, the same pseudo-random order on every run (xorshift).
pub fn order(visits: usize, keys: usize) -> Vec<usize> {
    let mut x = 0x1234_5678_9abc_def0u64;
    (0..visits)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % keys as u64) as usize
        })
        .collect()
}

/// GCRA, 1e6 per minute: nothing is ever rejected.
pub fn policy() -> Policy {
    Policy::new(Algorithm::Gcra, 1_000_000, Duration::from_secs(60), None).unwrap()
}

/// A limiter with [`policy`] as "api".
pub fn checks_limiter() -> Limiter<MemoryStore> {
    Limiter::new(MemoryStore::new())
        .with_policy("api", policy())
        .unwrap()
}

/// A limiter with one `concurrency` policy, "jobs", of 1,000 units: every acquire is granted.
pub fn leases_limiter() -> Limiter<MemoryStore> {
    let jobs = Policy::concurrency(1_000, Duration::from_secs(60)).unwrap();
    Limiter::new(MemoryStore::new())
        .with_policy("jobs", jobs)
        .unwrap()
}

/// One `Limiter::check` per entry of `order`, on a [`checks_limiter`]. Inlined, as the timed
/// loops of the two passes are: compiled as if written in the caller, whichever example runs
/// them (out of line, the check's instruction count moved).
#[inline(always)]
pub fn checks_pass(limiter: &Limiter<MemoryStore>, keys: &[String], order: &[usize]) {
    for &k in order {
        black_box(ready(limiter.check("api", &keys[k])).is_ok());
    }
}

/// One acquire+release pair per entry of `order`, on a [`leases_limiter`].
#[inline(always)]
pub fn pairs_pass(limiter: &Limiter<MemoryStore>, keys: &[String], order: &[usize]) {
    for &k in order {
        let acquired = ready(limiter.acquire("jobs", &keys[k], 1)).unwrap();
        let lease = acquired
            .lease
            .expect("a limit of 1,000 grants every acquire");
        black_box(ready(lease.release()).is_ok());
    }
}
