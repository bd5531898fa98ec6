//! A fixed keyed workload for instruction and cache counts under valgrind (stable on a noisy
//! machine, unlike wall time): `valgrind --tool=cachegrind --cache-sim=yes \
//! target/release/examples/keyed_loop tollgate|slice|limiter|leases|governor [checks]` (`tollgate`: the
//! memory store's one-check call `decide_one_now`, which `Limiter::check` ends in; `slice`: the
//! several-checks call `decide_now` with one check; `limiter`: `Limiter::check` on it, the
//! public API; `leases`: `Limiter::acquire` then `Lease::release` on a `concurrency` policy, one
//! pair per key visit).
//! 10,000 String keys, a fixed pseudo-random order, one check per key visit, never rejecting.

#[path = "shared/alternate.rs"]
mod alternate;
#[path = "shared/workload.rs"]
mod workload;

use std::hint::black_box;
use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tollgate::PolicyName;
use tollgate::{Check, MemoryStore, Mode, Policy};
use workload::{checks_limiter, checks_pass, keys, leases_limiter, order, pairs_pass, policy};

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "tollgate".into());
    let checks: usize = args
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let keys = keys();
    let order = order(checks, keys.len());
    match which.as_str() {
        "alternate" => alternate(&keys, &order),
        "governor" => governor_pass(&governor(), &keys, &order),
        "limiter" => checks_pass(&checks_limiter(), &keys, &order),
        "leases" => pairs_pass(&leases_limiter(), &keys, &order),
        "slice" => {
            let (policy, store) = (policy(), MemoryStore::new());
            let name = PolicyName::from_static("api");
            for &k in &order {
                let check = [Check {
                    name: &name,
                    policy: &policy,
                    key: &keys[k],
                }];
                black_box(store.decide_now(&check, 1, Mode::Consume).is_ok());
            }
        }
        _ => tollgate_pass(&MemoryStore::new(), &policy(), &keys, &order),
    }
}

/// governor's keyed limiter with the same quota.
fn governor() -> DefaultKeyedRateLimiter<String> {
    RateLimiter::keyed(Quota::per_minute(NonZeroU32::new(1_000_000).unwrap()))
}

/// One check per entry of `order` with governor's `check_key`.
fn governor_pass(governor: &DefaultKeyedRateLimiter<String>, keys: &[String], order: &[usize]) {
    for &k in order {
        black_box(governor.check_key(&keys[k]).is_ok());
    }
}

/// One check per entry of `order` with the memory store's one-check call.
fn tollgate_pass(store: &MemoryStore, policy: &Policy, keys: &[String], order: &[usize]) {
    let name = PolicyName::from_static("api");
    for &k in order {
        let check = Check {
            name: &name,
            policy,
            key: &keys[k],
        };
        black_box(store.decide_one_now(&check, 1, Mode::Consume).is_ok());
    }
}

/// Wall time, side by side: governor and the memory store's one-check call in alternating
/// bursts of the same checks (ABBA: which goes first alternates), so drift on a shared machine
/// hits both alike. Prints one JSON line per contender with its checks/s over all the bursts
/// (scripts/bench.sh records them), and on stderr the median of the rounds' ratios.
fn alternate(keys: &[String], order: &[usize]) {
    const ROUNDS: usize = 40;
    let (governor, policy, store) = (governor(), policy(), MemoryStore::new());
    let run_governor = || governor_pass(&governor, keys, order);
    let run_tollgate = || tollgate_pass(&store, &policy, keys, order);
    // Both maps are warmed with every key first.
    let rounds = alternate::rounds(ROUNDS, &run_governor, &run_tollgate);
    let checks = (ROUNDS * order.len()) as f64;
    for (who, seconds) in [
        ("governor", rounds.iter().map(|r| r.0).sum::<f64>()),
        ("tollgate-memory", rounds.iter().map(|r| r.1).sum::<f64>()),
    ] {
        println!(
            "{{\"bench\": \"keyed_loop alternate\", \"who\": \"{who}\", \"rps\": {:.0}, \"checks\": {checks}}}",
            checks / seconds
        );
    }
    let mut ratios: Vec<f64> = rounds.iter().map(|(g, t)| g / t).collect();
    ratios.sort_by(f64::total_cmp);
    eprintln!(
        "tollgate/governor checks/s, {ROUNDS} rounds of {} checks: median {:.3}, quartiles {:.3}-{:.3}",
        order.len(),
        ratios[ROUNDS / 2],
        ratios[ROUNDS / 4],
        ratios[3 * ROUNDS / 4]
    );
}
