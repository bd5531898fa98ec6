//! Wall time of an acquire+release pair beside a check on the memory store, side by side in
//! one process: `Limiter::check` (GCRA) and `Limiter::acquire` + `Lease::release` (a
//! `concurrency` policy), each on its own store, in alternating bursts over the same keys
//! (ABBA), so drift on a shared machine hits both alike. Prints the median of the rounds'
//! ratios (pair time / check time), and the fastest round of each (the least disturbed by
//! other work on the host) with their ratio. The same workload as `keyed_loop limiter|leases`: 10,000
//! String keys in a fixed pseudo-random order, nothing ever rejected.
//!
//! `cargo run --release -p tollgate --example pair_vs_check [operations per burst]`

#[path = "shared/alternate.rs"]
mod alternate;

use std::hint::black_box;
use std::time::Duration;

use tollgate::{Algorithm, Limiter, MemoryStore, Policy};

/// Poll a future that never waits (the memory store's) to completion.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("memory store futures are always ready"),
    }
}

fn main() {
    let operations: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
    let mut x = 0x1234_5678_9abc_def0u64;
    let order: Vec<usize> = (0..operations)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % keys.len() as u64) as usize
        })
        .collect();
    leases_alternate(&keys, &order);
}

/// A limiter with one `concurrency` policy, "jobs", of 1,000 units: every acquire is granted.
fn leases_limiter() -> Limiter<MemoryStore> {
    let jobs = Policy::concurrency(1_000, Duration::from_secs(60)).unwrap();
    Limiter::new(MemoryStore::new())
        .with_policy("jobs", jobs)
        .unwrap()
}

/// One acquire+release pair per entry of `order`.
fn pairs_pass(limiter: &Limiter<MemoryStore>, keys: &[String], order: &[usize]) {
    for &k in order {
        let acquired = ready(limiter.acquire("jobs", &keys[k], 1)).unwrap();
        let lease = acquired
            .lease
            .expect("a limit of 1,000 grants every acquire");
        black_box(ready(lease.release()).is_ok());
    }
}

/// One `Limiter::check` per entry of `order`.
fn checks_pass(limiter: &Limiter<MemoryStore>, keys: &[String], order: &[usize]) {
    for &k in order {
        black_box(ready(limiter.check("api", &keys[k])).is_ok());
    }
}

/// The rounds: checks and pairs in alternating bursts, which goes first alternating.
fn leases_alternate(keys: &[String], order: &[usize]) {
    const ROUNDS: usize = 40;
    let checks = Limiter::new(MemoryStore::new())
        .with_policy("api", policy())
        .unwrap();
    let pairs = leases_limiter();
    let run_checks = || checks_pass(&checks, keys, order);
    let run_pairs = || pairs_pass(&pairs, keys, order);
    let rounds = alternate::rounds(ROUNDS, &run_checks, &run_pairs);
    let mut ratios: Vec<f64> = rounds.iter().map(|(c, p)| p / c).collect();
    ratios.sort_by(f64::total_cmp);
    let ns = |total: f64, rounds: usize| total * 1e9 / (rounds * order.len()) as f64;
    let fastest = |pick: fn(&(f64, f64)) -> f64| rounds.iter().map(pick).fold(f64::MAX, f64::min);
    let (check_min, pair_min) = (fastest(|r| r.0), fastest(|r| r.1));
    println!(
        "pair / check, {ROUNDS} rounds of {} operations: median {:.3}, quartiles {:.3}-{:.3}; \
         mean ns: check {:.1}, pair {:.1}; fastest round ns: check {:.1}, pair {:.1} ({:.3})",
        order.len(),
        ratios[ROUNDS / 2],
        ratios[ROUNDS / 4],
        ratios[3 * ROUNDS / 4],
        ns(rounds.iter().map(|r| r.0).sum(), ROUNDS),
        ns(rounds.iter().map(|r| r.1).sum(), ROUNDS),
        ns(check_min, 1),
        ns(pair_min, 1),
        pair_min / check_min,
    );
}

/// GCRA, 1e6 per minute: nothing is ever rejected.
fn policy() -> Policy {
    Policy::new(Algorithm::Gcra, 1_000_000, Duration::from_secs(60), None).unwrap()
}
