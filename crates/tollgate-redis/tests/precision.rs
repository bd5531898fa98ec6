//! Numbers at the edge of what policies allow: Lua computes in doubles, exact only below 2^53,
//! so policies whose products come close to 2^53 (and limits just below it) must still get the
//! pure transitions' decisions, step for step.

use std::time::Duration;

use tollgate::PolicyName;
use tollgate::conformance::Rng;
use tollgate::{Algorithm, Check, ManualClock, Mode, Policy, State, Store};
use tollgate_redis::{RedisOptions, RedisStore};
use tollgate_testkit::shared_standalone;

const MAX_EXACT: u64 = 1 << 53;

/// Policies whose limit, capacity × period or limit × period sit just under 2^53.
fn edge_policies() -> Vec<Policy> {
    let p = |algorithm, limit: u64, period_us: u64, burst| {
        Policy::new(algorithm, limit, Duration::from_micros(period_us), burst)
            .unwrap_or_else(|e| panic!("{algorithm} {limit}/{period_us}µs: {e}"))
    };
    let big_burst = 1_000_000_007;
    vec![
        p(
            Algorithm::TokenBucket,
            1_000_003,
            (MAX_EXACT / 2 - 1) / 1_000_003,
            None,
        ),
        p(
            Algorithm::Gcra,
            1_000_003,
            (MAX_EXACT / 2 - 1) / 1_000_003,
            None,
        ),
        p(
            Algorithm::TokenBucket,
            7,
            (MAX_EXACT - 1) / (7 + big_burst),
            Some(big_burst),
        ),
        p(
            Algorithm::Gcra,
            7,
            (MAX_EXACT - 1) / (7 + big_burst),
            Some(big_burst),
        ),
        p(
            Algorithm::SlidingWindow,
            999_983,
            (MAX_EXACT / 2 - 1) / 999_983,
            None,
        ),
        p(Algorithm::FixedWindow, MAX_EXACT - 1, 86_400_000_000, None),
        p(
            Algorithm::SlidingLog,
            tollgate::policy::MAX_SLIDING_LOG_LIMIT,
            3_600_000_000,
            None,
        ),
        p(Algorithm::FixedWindow, 3, MAX_EXACT / 4 - 1, None),
    ]
}

#[tokio::test]
async fn decisions_stay_exact_near_2_pow_53() {
    let clock = ManualClock::new(0);
    let options = RedisOptions {
        prefix: "precision".into(),
        clock_override: Some(clock.clone()),
        ..RedisOptions::default()
    };
    let store = RedisStore::connect(&shared_standalone().url(), options)
        .await
        .unwrap();
    let mut rng = Rng::new(7);
    let mut now = 1_790_000_000_000_000u64;
    for (i, policy) in edge_policies().iter().enumerate() {
        let mut model = State::fresh(policy.algorithm());
        let key = format!("k{i}");
        let check = [Check {
            name: &PolicyName::from_static("p"),
            policy,
            key: &key,
        }];
        let capacity = policy.capacity();
        for step in 0..1_500 {
            now += match rng.below(4) {
                0 => rng.below(policy.period_us().min(1 << 40)),
                1 => 0,
                _ => rng.below(1_000_000),
            };
            clock.set_us(now);
            // Whole-capacity costs, any cost, and small ones.
            let cost = match rng.below(4) {
                0 => capacity,
                1 => 1 + rng.below(capacity),
                _ => 1 + rng.below(capacity.min(1_000)),
            };
            let mode = if rng.below(5) == 0 {
                Mode::Peek
            } else {
                Mode::Consume
            };
            let got = store.decide(&check, cost, mode).await.unwrap().decisions[0];
            let want = model.decide(now, policy, cost, mode);
            assert_eq!(
                got, want,
                "{policy:?} step {step} at {now} cost {cost} {mode:?}"
            );
        }
    }
}
