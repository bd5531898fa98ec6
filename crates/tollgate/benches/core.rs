//! Core benchmarks: one pure transition per algorithm, and keyed checks on the memory store
//! beside governor's keyed limiter on the same workload (10,000 String keys), 1 and 2 threads.
//!
//! `cargo bench -p tollgate --bench core`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use tollgate::{Algorithm, Check, Limiter, MemoryStore, Mode, Policy, PolicyName, State};

const KEYS: usize = 10_000;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("user-{i}")).collect()
}

/// A fixed pseudo-random key order (splitmix64), the same for every contender.
fn order(n: usize) -> Vec<usize> {
    let mut x = 0x1234_5678_9abc_def0u64;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) % KEYS as u64) as usize
        })
        .collect()
}

/// Poll a future that never waits (the memory store's) to completion.
fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("memory store futures are always ready"),
    }
}

fn transitions(c: &mut Criterion) {
    let mut g = c.benchmark_group("transition");
    g.throughput(Throughput::Elements(1));
    for algorithm in Algorithm::ALL {
        let policy = Policy::new(algorithm, 1_000, Duration::from_secs(60), None).unwrap();
        let mut state = State::fresh(algorithm);
        let mut now = 1_700_000_000_000_000u64;
        g.bench_function(algorithm.name(), |b| {
            b.iter(|| {
                now += 60_000; // one per emission interval: a steady allowed stream
                black_box(state.decide(black_box(now), &policy, 1, Mode::Consume))
            })
        });
    }
    g.finish();
}

/// Runs `per_thread` checks on each of `threads` threads, returns the wall time.
fn timed_threads(threads: usize, iters: u64, work: impl Fn(u64, usize) + Sync) -> Duration {
    let per_thread = iters.div_ceil(threads as u64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let work = &work;
            s.spawn(move || work(per_thread, t));
        }
    });
    start.elapsed()
}

/// One keyed contender: the work of `n` checks on thread `t`.
type Contender<'a> = (&'static str, Box<dyn Fn(u64, usize) + Sync + 'a>);

fn keyed(c: &mut Criterion) {
    let keys = keys();
    let order = order(1 << 16);
    let mut g = c.benchmark_group("keyed_10k");
    g.throughput(Throughput::Elements(1));
    // `KEYED_ORDER=reversed` measures the contenders in the opposite order, so a run that
    // alternates it (scripts/bench.sh does, by repetition) gives no contender the same slot.
    let reversed = std::env::var("KEYED_ORDER").is_ok_and(|v| v == "reversed");
    for threads in [1usize, 2] {
        let key = |i: usize, t: usize| &keys[order[(i * 2 + t) & 0xffff]];
        // governor: 1e6 per minute, never rejecting.
        let quota = Quota::per_minute(NonZeroU32::new(1_000_000).unwrap());
        let governor = RateLimiter::keyed(quota);
        let policy =
            Policy::new(Algorithm::Gcra, 1_000_000, Duration::from_secs(60), None).unwrap();
        let store = MemoryStore::new();
        let name = PolicyName::from_static("api");
        let limiter = Arc::new(
            Limiter::new(MemoryStore::new())
                .with_policy("api", policy.clone())
                .unwrap(),
        );
        let mut contenders: Vec<Contender<'_>> = vec![
            (
                "governor",
                Box::new(|n, t| {
                    for i in 0..n as usize {
                        black_box(governor.check_key(key(i, t)).is_ok());
                    }
                }),
            ),
            // tollgate memory store, its synchronous one-check call (the one `Limiter::check`
            // ends in, as governor's `check_key` is its one-key call).
            (
                "tollgate-memory",
                Box::new(|n, t| {
                    for i in 0..n as usize {
                        let check = Check {
                            name: &name,
                            policy: &policy,
                            key: key(i, t),
                        };
                        black_box(store.decide_one_now(&check, 1, Mode::Consume).is_ok());
                    }
                }),
            ),
            // tollgate Limiter::check (async API, name lookup, validation) on the memory store.
            (
                "tollgate-limiter",
                Box::new(|n, t| {
                    for i in 0..n as usize {
                        black_box(ready(limiter.check("api", key(i, t))).is_ok());
                    }
                }),
            ),
        ];
        if reversed {
            contenders.reverse();
        }
        for (name, work) in &contenders {
            g.bench_function(format!("{name}/{threads}t"), |b| {
                b.iter_custom(|iters| timed_threads(threads, iters, work))
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = transitions, keyed
}
criterion_main!(benches);
