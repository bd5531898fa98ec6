//! An acquire+release pair beside a check on the memory store, through `Limiter`, on the same
//! 10,000 keys (issue target: a pair costs at most 2x a check).
//!
//! `memory`: each on a store of its own, so every identifier is under one policy (its entry
//! holds a GCRA state for the checks, a lease set for the pairs), as in `keyed_loop`.
//! `memory-shared`: both policies on one store, every identifier holding both states (each key
//! visited by a check and a pair before measuring, so both measure the same two-policy entries).
//!
//! `cargo bench -p tollgate --bench leases`

use std::hint::black_box;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tollgate::{Algorithm, Limiter, MemoryStore, Policy};

const KEYS: usize = 10_000;

/// Poll a future that never waits (the memory store's) to completion.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("memory store futures are always ready"),
    }
}

fn gcra() -> Policy {
    Policy::builder(Algorithm::Gcra)
        .rate("1000000/s")
        .build()
        .unwrap()
}

fn jobs() -> Policy {
    Policy::concurrency(1_000, Duration::from_secs(60)).unwrap()
}

fn check(limiter: &Limiter<MemoryStore>, key: &str) {
    black_box(ready(limiter.check("api", key)).unwrap());
}

fn pair(limiter: &Limiter<MemoryStore>, key: &str) {
    let acquired = ready(limiter.acquire("jobs", key, 1)).unwrap();
    let lease = acquired.lease.expect("granted");
    black_box(ready(lease.release()).unwrap());
}

/// Measure checks on `checks` and pairs on `pairs` in group `name`.
fn measure(
    c: &mut Criterion,
    name: &str,
    keys: &[String],
    checks: &Limiter<MemoryStore>,
    pairs: &Limiter<MemoryStore>,
) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("check", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            check(checks, &keys[i])
        })
    });
    g.bench_function("acquire+release", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            pair(pairs, &keys[i])
        })
    });
    g.finish();
}

fn pair_vs_check(c: &mut Criterion) {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("user-{i}")).collect();
    let checks = Limiter::new(MemoryStore::new())
        .with_policy("api", gcra())
        .unwrap();
    let pairs = Limiter::new(MemoryStore::new())
        .with_policy("jobs", jobs())
        .unwrap();
    measure(c, "memory", &keys, &checks, &pairs);

    let shared = Limiter::new(MemoryStore::new())
        .with_policy("api", gcra())
        .unwrap()
        .with_policy("jobs", jobs())
        .unwrap();
    for key in &keys {
        check(&shared, key);
        pair(&shared, key);
    }
    measure(c, "memory-shared", &keys, &shared, &shared);
}

criterion_group!(benches, pair_vs_check);
criterion_main!(benches);
