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
#[path = "shared/workload.rs"]
mod workload;

use workload::{checks_limiter, checks_pass, keys, leases_limiter, order, pairs_pass};

fn main() {
    let operations: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let keys = keys();
    let order = order(operations, keys.len());
    leases_alternate(&keys, &order);
}

/// The rounds: checks and pairs in alternating bursts, which goes first alternating.
fn leases_alternate(keys: &[String], order: &[usize]) {
    const ROUNDS: usize = 40;
    let (checks, pairs) = (checks_limiter(), leases_limiter());
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
