//! An acquire+release pair beside a check on the memory store, through `Limiter`, on the same
//! 10,000 keys (issue target: a pair costs at most 2x a check).
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

fn pair_vs_check(c: &mut Criterion) {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("user-{i}")).collect();
    let limiter = Limiter::new(MemoryStore::new())
        .with_policy(
            "api",
            Policy::builder(Algorithm::Gcra)
                .rate("1000000/s")
                .build()
                .unwrap(),
        )
        .unwrap()
        .with_policy(
            "jobs",
            Policy::concurrency(1_000, Duration::from_secs(60)).unwrap(),
        )
        .unwrap();
    let mut g = c.benchmark_group("memory");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("check", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(ready(limiter.check("api", &keys[i])).unwrap())
        })
    });
    g.bench_function("acquire+release", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            let acquired = ready(limiter.acquire("jobs", &keys[i], 1)).unwrap();
            let lease = acquired.lease.expect("granted");
            black_box(ready(lease.release()).unwrap())
        })
    });
    g.finish();
}

criterion_group!(benches, pair_vs_check);
criterion_main!(benches);
