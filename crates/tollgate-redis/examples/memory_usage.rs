//! Redis memory per key, per algorithm, measured with `MEMORY USAGE`.
//!
//! ```text
//! cargo run -p tollgate-redis --example memory_usage            # starts a private redis-server
//! cargo run -p tollgate-redis --example memory_usage -- redis://127.0.0.1:6379
//! ```
//! Keys are written under the prefix `tollgate-memory` and deleted afterwards.

use std::time::Duration;

use tollgate::PolicyName;
use tollgate::{Algorithm, Check, ManualClock, Mode, Policy, Store};
use tollgate_redis::{RedisOptions, RedisStore};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Without a URL, a private server that is gone when this program ends.
    let private;
    let url = match std::env::args().nth(1) {
        Some(url) => url,
        None => {
            private = tollgate_testkit::RedisServer::start()?;
            private.url()
        }
    };
    let client = redis::Client::open(url.as_str())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let version: String = redis::cmd("INFO")
        .arg("server")
        .query_async::<String>(&mut connection)
        .await?
        .lines()
        .find_map(|l| l.strip_prefix("redis_version:").map(str::to_owned))
        .unwrap_or_default();

    // Time is injected only to give each sliding-log entry its own microsecond quickly.
    let clock = ManualClock::new(1_700_000_000_000_000);
    let options = RedisOptions {
        prefix: "tollgate-memory".into(),
        clock_override: Some(clock.clone()),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&url, options).await?;
    let rate = |algorithm, rate: &str| Policy::builder(algorithm).rate(rate).build();
    let cases = [
        ("fixed-window", rate(Algorithm::FixedWindow, "100/min")?, 1),
        (
            "sliding-window",
            rate(Algorithm::SlidingWindow, "100/min")?,
            1,
        ),
        ("token-bucket", rate(Algorithm::TokenBucket, "100/min")?, 1),
        ("gcra", rate(Algorithm::Gcra, "100/min")?, 1),
        ("sliding-log", rate(Algorithm::SlidingLog, "5/15m")?, 1),
        ("sliding-log", rate(Algorithm::SlidingLog, "5/15m")?, 5),
        ("sliding-log", rate(Algorithm::SlidingLog, "100/min")?, 100),
        ("sliding-log", rate(Algorithm::SlidingLog, "1000/h")?, 1000),
    ];
    println!("Redis {version}, identifier `user-123456`, key prefix `tollgate-memory`\n");
    println!("| algorithm | policy | requests in window | key bytes | MEMORY USAGE (bytes) |");
    println!("|---|---|---|---|---|");
    for (name, policy, requests) in cases {
        let check = [Check {
            name: &PolicyName::from_static("api"),
            policy: &policy,
            key: "user-123456",
        }];
        store.reset(&check).await?;
        for _ in 0..requests {
            // Distinct instants: the worst case for the sliding log (no merged entries).
            clock.advance_us(1_000);
            store.decide(&check, 1, Mode::Consume).await?;
        }
        let key = store.key(&check[0]);
        let bytes: i64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut connection)
            .await?;
        let period = humantime::format_duration(Duration::from_micros(policy.period_us()));
        println!(
            "| {name} | {} per {period} | {requests} | {} | {bytes} |",
            policy.limit(),
            key.len()
        );
        store.reset(&check).await?;
    }
    Ok(())
}
