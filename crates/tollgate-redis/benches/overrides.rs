//! What 100,000 stored overrides cost a decision, side by side in one run: checks of keys that
//! all have an override ("overridden") against the same checks of a policy with none
//! ("plain"), alternating in rounds, on the memory store and on a private Redis.
//!
//! `cargo bench -p tollgate-redis --bench overrides` (starts and stops its own redis-server)

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::{Algorithm, Limiter, MemoryStore, OverrideSpec, Policy, Store};
use tollgate_redis::keys::override_key;
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_testkit::RedisServer;

const OVERRIDES: usize = 100_000;
const ROUNDS: usize = 5;

fn policy() -> Policy {
    Policy::builder(Algorithm::Gcra)
        .rate("1000000/min")
        .build()
        .expect("valid policy")
}

/// The limiter with both policies; the keys `k<i>` of "overridden" all get an override.
fn limiter<S: Store>(store: S) -> Limiter<S> {
    Limiter::new(store)
        .with_policy("plain", policy())
        .unwrap()
        .with_policy("overridden", policy())
        .unwrap()
}

/// A fixed pseudo-random order over the keys (splitmix64).
fn order(n: usize) -> Vec<String> {
    let mut x = 0x1234_5678_9abc_def0u64;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            format!("k{}", (z ^ (z >> 31)) % OVERRIDES as u64)
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Decisions per second of `policy` over `keys` with `tasks` concurrent callers.
async fn rate<S: Store>(
    limiter: &Arc<Limiter<S>>,
    policy: &'static str,
    keys: &Arc<Vec<String>>,
    tasks: usize,
) -> f64 {
    let started = Instant::now();
    let mut joins = Vec::new();
    for t in 0..tasks {
        let (limiter, keys) = (limiter.clone(), keys.clone());
        joins.push(tokio::spawn(async move {
            for key in keys.iter().skip(t).step_by(tasks) {
                let decision = limiter.check(policy, key).await.expect("decided");
                std::hint::black_box(decision);
            }
        }));
    }
    for join in joins {
        join.await.expect("task ran");
    }
    keys.len() as f64 / started.elapsed().as_secs_f64()
}

async fn side_by_side<S: Store>(
    name: &str,
    limiter: Arc<Limiter<S>>,
    decisions: usize,
    tasks: usize,
) {
    let keys = Arc::new(order(decisions));
    rate(&limiter, "plain", &keys, tasks).await; // warm-up
    rate(&limiter, "overridden", &keys, tasks).await;
    let (mut plain, mut overridden, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let p = rate(&limiter, "plain", &keys, tasks).await;
        let o = rate(&limiter, "overridden", &keys, tasks).await;
        plain.push(p);
        overridden.push(o);
        ratios.push(p / o);
    }
    println!(
        "| {name} | {:.0} | {:.0} | {:.3} |",
        median(plain),
        median(overridden),
        median(ratios)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "| store | plain decisions/s | overridden decisions/s | cost ratio (plain/overridden) |"
        );
        println!("|---|---|---|---|");
        let memory = Arc::new(limiter(MemoryStore::new()));
        for i in 0..OVERRIDES {
            memory
                .set_override(
                    "overridden",
                    &format!("k{i}"),
                    OverrideSpec::limit(2_000_000),
                )
                .await
                .expect("override set");
        }
        side_by_side("memory (1 task)", memory, 2_000_000, 1).await;

        let server = RedisServer::start().expect("redis-server starts");
        let mut connection = server.connection().expect("connection");
        for chunk in (0..OVERRIDES).collect::<Vec<_>>().chunks(10_000) {
            let mut pipe = redis::pipe();
            for i in chunk {
                pipe.cmd("HSET")
                    .arg(override_key("bench", "overridden", &format!("k{i}")))
                    .arg(&[
                        "algorithm",
                        "gcra",
                        "limit",
                        "2000000",
                        "period_us",
                        "60000000",
                        "burst",
                        "2000000",
                    ])
                    .ignore();
            }
            let () = pipe.query(&mut connection).expect("overrides stored");
        }
        let options = RedisOptions {
            prefix: "bench".into(),
            response_timeout: Duration::from_secs(5),
            ..RedisOptions::default()
        };
        let store = RedisStore::connect(&server.url(), options)
            .await
            .expect("connected");
        let redis = Arc::new(limiter(store));
        let check = redis.get_override("overridden", "k7").await.expect("read");
        assert_eq!(check.map(|o| o.policy.limit()), Some(2_000_000));
        side_by_side("redis (64 tasks)", redis, 100_000, 64).await;
    });
}
