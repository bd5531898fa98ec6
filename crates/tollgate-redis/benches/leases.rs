//! Leases and adjustments on Redis beside checks, side by side in one run, 50 callers in
//! flight on 10,000 keys: check decisions/s, acquire+release pairs/s (two script calls each)
//! and adjustments/s, alternating in rounds on a private redis-server. Issue 19's target: pairs
//! at least 0.5x the checks of the same run.
//!
//! `cargo bench -p tollgate-redis --bench leases` (starts and stops its own redis-server)

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::{Algorithm, Limiter, Policy};
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_testkit::RedisServer;

const KEYS: usize = 10_000;
const CALLERS: usize = 50;
const OPERATIONS: usize = 60_000;
const ROUNDS: usize = 5;

#[derive(Clone, Copy)]
enum Operation {
    Check,
    Pair,
    Adjust,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Operations per second of `operation` with `CALLERS` concurrent callers.
async fn rate(limiter: &Arc<Limiter<RedisStore>>, operation: Operation) -> f64 {
    let started = Instant::now();
    let mut joins = Vec::new();
    for t in 0..CALLERS {
        let limiter = limiter.clone();
        joins.push(tokio::spawn(async move {
            for i in (t..OPERATIONS).step_by(CALLERS) {
                let key = format!("user-{}", (i * 7919) % KEYS);
                match operation {
                    Operation::Check => {
                        let decision = limiter.check("api", &key).await.expect("decided");
                        std::hint::black_box(decision);
                    }
                    Operation::Pair => {
                        let acquired = limiter.acquire("jobs", &key, 1).await.expect("acquired");
                        let lease = acquired.lease.expect("granted");
                        lease.release().await.expect("released");
                    }
                    Operation::Adjust => {
                        let after = limiter.adjust("api", &key, 1).await.expect("adjusted");
                        std::hint::black_box(after);
                    }
                }
            }
        }));
    }
    for join in joins {
        join.await.expect("caller ran");
    }
    OPERATIONS as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let server = RedisServer::start().expect("redis-server starts");
        let options = RedisOptions {
            prefix: "bench".into(),
            response_timeout: Duration::from_secs(5),
            ..RedisOptions::default()
        };
        let store = RedisStore::connect(&server.url(), options)
            .await
            .expect("connected");
        let limiter = Arc::new(
            Limiter::new(store)
                .with_policy(
                    "api",
                    Policy::builder(Algorithm::Gcra)
                        .rate("10000000/s")
                        .build()
                        .expect("valid policy"),
                )
                .with_policy(
                    "jobs",
                    Policy::concurrency(1_000, Duration::from_secs(60)).expect("valid policy"),
                ),
        );
        for operation in [Operation::Check, Operation::Pair, Operation::Adjust] {
            rate(&limiter, operation).await; // warm-up
        }
        let (mut checks, mut pairs, mut adjusts, mut ratios) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let c = rate(&limiter, Operation::Check).await;
            let p = rate(&limiter, Operation::Pair).await;
            let a = rate(&limiter, Operation::Adjust).await;
            checks.push(c);
            pairs.push(p);
            adjusts.push(a);
            ratios.push(p / c);
        }
        println!("| checks/s | acquire+release pairs/s | pairs / checks | adjustments/s |");
        println!("|---|---|---|---|");
        println!(
            "| {:.0} | {:.0} | {:.2} | {:.0} |",
            median(checks),
            median(pairs),
            median(ratios),
            median(adjusts)
        );
    });
}
