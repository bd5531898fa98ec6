//! Leases and adjustments on Redis beside checks, side by side in one run, 50 callers in
//! flight on 10,000 keys: check decisions/s, acquire+release pairs/s (two script calls each)
//! and adjustments/s, alternating in rounds on a private redis-server, with the Redis CPU time
//! each operation took (`INFO cpu`, µs per check, pair or adjustment). Issue 19's target: pairs
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

/// One round's check, pair and adjustment: each (per second, Redis CPU µs per operation).
type Round = [(f64, f64); 3];

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Redis's CPU time so far (user + system), µs.
fn redis_cpu_us(server: &RedisServer) -> f64 {
    let info = server
        .node()
        .query_string(&["INFO", "cpu"])
        .expect("INFO cpu");
    let seconds = |field| {
        tollgate_testkit::info_field(&info, field)
            .and_then(|v| v.parse::<f64>().ok())
            .expect("INFO cpu has the field")
    };
    (seconds("used_cpu_user") + seconds("used_cpu_sys")) * 1e6
}

/// Operations per second of `operation` with `CALLERS` concurrent callers, and Redis's CPU
/// time per operation (µs).
async fn rate(
    server: &RedisServer,
    limiter: &Arc<Limiter<RedisStore>>,
    operation: Operation,
) -> (f64, f64) {
    let cpu_before = redis_cpu_us(server);
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
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = redis_cpu_us(server) - cpu_before;
    (OPERATIONS as f64 / elapsed, cpu / OPERATIONS as f64)
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
                .unwrap()
                .with_policy(
                    "jobs",
                    Policy::concurrency(1_000, Duration::from_secs(60)).expect("valid policy"),
                )
                .unwrap(),
        );
        for operation in [Operation::Check, Operation::Pair, Operation::Adjust] {
            rate(&server, &limiter, operation).await; // warm-up
        }
        let mut rounds: Vec<Round> = Vec::new();
        for _ in 0..ROUNDS {
            let mut round = [(0.0, 0.0); 3];
            for (i, operation) in [Operation::Check, Operation::Pair, Operation::Adjust]
                .into_iter()
                .enumerate()
            {
                round[i] = rate(&server, &limiter, operation).await;
            }
            rounds.push(round);
        }
        let column = |f: fn(&Round) -> f64| median(rounds.iter().map(f).collect());
        println!(
            "| checks/s | acquire+release pairs/s | pairs / checks | adjustments/s \
             | Redis CPU µs: check, pair, adjustment |"
        );
        println!("|---|---|---|---|---|");
        println!(
            "| {:.0} | {:.0} | {:.2} | {:.0} | {:.2}, {:.2}, {:.2} |",
            column(|r| r[0].0),
            column(|r| r[1].0),
            column(|r| r[1].0 / r[0].0),
            column(|r| r[2].0),
            column(|r| r[0].1),
            column(|r| r[1].1),
            column(|r| r[2].1),
        );
    });
}
