//! The conformance suite: the same scenarios against any [`Store`], on a [`ManualClock`].
//!
//! Enabled by the `conformance` feature; every store's test suite runs it (memory here, Redis
//! standalone and Cluster in `tollgate-redis`). Two kinds of scenario:
//! - **tables**: hand-written steps `(time, policies, key, cost, mode) -> expected decision`,
//!   covering window edges, refill fractions, costs, peeks, multi-policy all-or-nothing and
//!   clocks that step back;
//! - **differential traces**: seeded pseudo-random traces replayed on the store and on the pure
//!   transitions of [`crate::algorithm`]; every decision must be identical.
//!
//! A store under test must take its time from the clock given to its constructor.

use std::time::Duration;

use crate::algorithm::{Mode, State};
use crate::clock::ManualClock;
use crate::decision::Decision;
use crate::lease::{LeaseId, LeaseOp};
use crate::limiter::verdict;
use crate::overrides::OverrideSpec;
use crate::policy::{Algorithm, Policy};
use crate::policy_name::PolicyName;
use crate::store::{Check, Decisions, Store};

/// What a step expects; `None` fields are not compared.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect {
    /// Allowed.
    pub allowed: bool,
    /// Remaining after the step.
    pub remaining: Option<u64>,
    /// Reset after, µs.
    pub reset_after_us: Option<u64>,
    /// Retry after, µs.
    pub retry_after_us: Option<u64>,
}

/// One request in a table.
#[derive(Debug, Clone)]
pub struct Step {
    /// Absolute time of the request, µs.
    pub at_us: u64,
    /// Policy names (one or more).
    pub policies: Vec<&'static str>,
    /// Identifier.
    pub key: &'static str,
    /// Cost.
    pub cost: u64,
    /// Consume or peek.
    pub mode: Mode,
    /// Instead of a decision, an adjustment of the first policy by this delta
    /// ([`Store::adjust`]; `cost` and `mode` are not used): what it answers must be `expect`.
    pub adjust: Option<i64>,
    /// What the verdict's reported decision must be.
    pub expect: Expect,
}

/// A named scenario.
#[derive(Debug, Clone)]
pub struct Table {
    /// Scenario name (used in failure messages and as a key prefix).
    pub name: &'static str,
    /// The policies the steps name.
    pub policies: Vec<(&'static str, Policy)>,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

const SEC: u64 = 1_000_000;
/// A base instant well past the epoch, aligned to every period used below, like real time.
const T0: u64 = 1_700_000_040 * SEC;

fn policy(algorithm: Algorithm, limit: u64, period: Duration, burst: Option<u64>) -> Policy {
    match Policy::new(algorithm, limit, period, burst) {
        Ok(p) => p,
        Err(e) => panic!("conformance policy is invalid: {e}"),
    }
}

fn step(at_us: u64, cost: u64, allowed: bool, remaining: u64) -> Step {
    Step {
        at_us,
        policies: vec!["p"],
        key: "k",
        cost,
        mode: Mode::Consume,
        adjust: None,
        expect: Expect {
            allowed,
            remaining: Some(remaining),
            ..Expect::default()
        },
    }
}

/// An adjustment by `delta` answering `allowed` (a unit would pass) and `remaining`.
fn adjust(at_us: u64, delta: i64, allowed: bool, remaining: u64) -> Step {
    Step {
        adjust: Some(delta),
        ..step(at_us, 1, allowed, remaining)
    }
}

fn with_times(mut s: Step, reset_after_us: u64, retry_after_us: u64) -> Step {
    s.expect.reset_after_us = Some(reset_after_us);
    s.expect.retry_after_us = Some(retry_after_us);
    s
}

fn peek(mut s: Step) -> Step {
    s.mode = Mode::Peek;
    s
}

/// Every table.
pub fn tables() -> Vec<Table> {
    let mut tables = Vec::new();
    // The headline: limit 10, 15 checks of one key at one instant allow exactly 10.
    for algorithm in Algorithm::ALL {
        let p = policy(algorithm, 10, Duration::from_secs(60), None);
        let mut steps = Vec::new();
        for i in 0..15u64 {
            let allowed = i < 10;
            let mut s = step(T0 + 1_000, 1, allowed, 9u64.saturating_sub(i));
            if !allowed {
                s.expect.remaining = Some(0);
            }
            steps.push(s);
        }
        tables.push(Table {
            name: algorithm.name(),
            policies: vec![("p", p)],
            steps,
        });
    }

    // Fixed window: edges are exact; a rejection waits for the next window.
    let fw = policy(Algorithm::FixedWindow, 3, Duration::from_secs(10), None);
    tables.push(Table {
        name: "fixed-window-edges",
        policies: vec![("p", fw)],
        steps: vec![
            with_times(step(T0 + 9 * SEC, 2, true, 1), SEC, 0),
            with_times(step(T0 + 9 * SEC + 999_999, 2, false, 1), 1, 1),
            with_times(step(T0 + 10 * SEC - 1, 1, true, 0), 1, 0),
            with_times(step(T0 + 10 * SEC, 3, true, 0), 10 * SEC, 0),
            with_times(peek(step(T0 + 15 * SEC, 1, false, 0)), 5 * SEC, 5 * SEC),
            with_times(step(T0 + 20 * SEC, 1, true, 2), 10 * SEC, 0),
            // The clock steps back into the previous window: the count is not forgotten.
            with_times(step(T0 + 19 * SEC, 2, true, 0), 11 * SEC, 0),
        ],
    });

    // Calendar months: Jan 31 23:59:59.999 UTC and Feb 1 00:00 are different windows, and
    // February 2027 lasts 28 days.
    let month = match Policy::monthly(Algorithm::FixedWindow, 2) {
        Ok(p) => p,
        Err(e) => panic!("conformance policy is invalid: {e}"),
    };
    let feb_1 = 1_801_440_000 * SEC;
    let day = 86_400 * SEC;
    tables.push(Table {
        name: "fixed-window-month",
        policies: vec![("p", month)],
        steps: vec![
            with_times(step(feb_1 - 1_000, 2, true, 0), 1_000, 0),
            with_times(step(feb_1 - 1, 1, false, 0), 1, 1),
            with_times(step(feb_1, 1, true, 1), 28 * day, 0),
            with_times(peek(step(feb_1 + 10 * day, 1, true, 1)), 18 * day, 0),
            with_times(step(feb_1 + 28 * day - 1, 1, true, 0), 1, 0),
            with_times(step(feb_1 + 28 * day - 1, 1, false, 0), 1, 1),
            // March: 31 days.
            with_times(step(feb_1 + 28 * day, 2, true, 0), 31 * day, 0),
        ],
    });

    // Sliding log: exact window (now − P, now]; cost entries leave one by one.
    let sl = policy(Algorithm::SlidingLog, 4, Duration::from_secs(10), None);
    tables.push(Table {
        name: "sliding-log-exact",
        policies: vec![("p", sl)],
        steps: vec![
            with_times(step(T0, 2, true, 2), 10 * SEC, 0),
            with_times(step(T0 + 3 * SEC, 1, true, 1), 10 * SEC, 0),
            with_times(step(T0 + 4 * SEC, 1, true, 0), 10 * SEC, 0),
            // 2 more need the T0 entry (cost 2) to leave: at T0 + 10 s.
            with_times(step(T0 + 5 * SEC, 2, false, 0), 9 * SEC, 5 * SEC),
            with_times(step(T0 + 10 * SEC - 1, 1, false, 0), 4 * SEC + 1, 1),
            with_times(step(T0 + 10 * SEC, 2, true, 0), 10 * SEC, 0),
            with_times(peek(step(T0 + 13 * SEC, 1, true, 1)), 7 * SEC, 0),
            with_times(step(T0 + 30 * SEC, 4, true, 0), 10 * SEC, 0),
        ],
    });

    // Sliding window counter: the previous window's count decays linearly.
    let sw = policy(Algorithm::SlidingWindow, 10, Duration::from_secs(10), None);
    tables.push(Table {
        name: "sliding-window-weights",
        policies: vec![("p", sw)],
        steps: vec![
            with_times(step(T0 + 5 * SEC, 10, true, 0), 15 * SEC, 0),
            // Next window at 2 s: prev weighs 10 × 0.8 = 8, so 2 fit.
            with_times(step(T0 + 12 * SEC, 2, true, 0), 18 * SEC, 0),
            // At 5 s prev weighs 5 and curr is 2: 3 fit, 4 must wait until weight 4 (6 s).
            with_times(step(T0 + 15 * SEC, 4, false, 3), 15 * SEC, SEC),
            with_times(step(T0 + 16 * SEC, 4, true, 0), 14 * SEC, 0),
            // curr 6 ≥ L − 5: 5 more must wait for the next window, where 6·(1 − e/P) <= 5.
            with_times(
                step(T0 + 17 * SEC, 5, false, 1),
                13 * SEC,
                3 * SEC + 1_666_667,
            ),
            with_times(step(T0 + 21_666_667, 5, true, 0), 18_333_333, 0),
            // Two windows later nothing is left.
            with_times(step(T0 + 45 * SEC, 10, true, 0), 15 * SEC, 0),
        ],
    });

    // Token bucket and GCRA: continuous refill, no lost fractions (3 per 10 s: one per 3.33 s).
    for algorithm in [Algorithm::TokenBucket, Algorithm::Gcra] {
        let b = policy(algorithm, 3, Duration::from_secs(10), Some(2));
        tables.push(Table {
            name: if algorithm == Algorithm::Gcra {
                "gcra-refill"
            } else {
                "token-bucket-refill"
            },
            policies: vec![("p", b)],
            steps: vec![
                with_times(step(T0, 2, true, 0), 6_666_667, 0),
                with_times(step(T0 + 3_333_333, 1, false, 0), 3_333_334, 1),
                with_times(step(T0 + 3_333_334, 1, true, 0), 6_666_666, 0),
                // The thirds of a token left over by each step add up exactly.
                with_times(step(T0 + 6_666_667, 1, true, 0), 6_666_667, 0),
                with_times(step(T0 + 6_666_668, 1, false, 0), 6_666_666, 3_333_332),
                with_times(peek(step(T0 + 20 * SEC, 2, true, 2)), 0, 0),
                with_times(step(T0 + 20 * SEC, 1, true, 1), 3_333_334, 0),
            ],
        });
    }

    // Adjustments after the fact (State::adjust): a charge may run one limit into debt, a
    // refund never past a full quota. At one instant every rate algorithm counts alike.
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
        Algorithm::Gcra,
    ] {
        let p = policy(algorithm, 10, Duration::from_secs(60), None);
        let t = T0 + 1_000;
        let mut steps = vec![
            step(t, 4, true, 6),
            adjust(t, 3, true, 3),
            adjust(t, -5, true, 8),
            adjust(t, -100, true, 10),
            // 15 charged: 5 in debt (capped at one limit: 20 charged would count as 20 too).
            adjust(t, 15, false, 0),
            step(t, 1, false, 0),
            adjust(t, 100, false, 0),
            adjust(t, -9, false, 0),
            adjust(t, -2, true, 1),
        ];
        // How long the debt lasts, by each algorithm's rule.
        let later = match algorithm {
            // Not carried past the window's end.
            Algorithm::FixedWindow => step(T0 + 60 * SEC, 10, true, 0),
            // 9 counted at 1 ms into a 60 s window: weighs 9·(1 − e/P) in the next one.
            Algorithm::SlidingWindow => step(T0 + 90 * SEC, 5, true, 0),
            // 9 of 10 tokens missing, refilled at one per 6 s: 7 after 12 s.
            _ => with_times(step(t + 12 * SEC, 4, false, 3), 42 * SEC, 6 * SEC),
        };
        steps.push(later);
        tables.push(Table {
            name: match algorithm {
                Algorithm::FixedWindow => "adjust-fixed-window",
                Algorithm::SlidingWindow => "adjust-sliding-window",
                Algorithm::TokenBucket => "adjust-token-bucket",
                _ => "adjust-gcra",
            },
            policies: vec![("p", p)],
            steps,
        });
    }
    // A sliding log takes charges, admitted as requests at that instant.
    let log = policy(Algorithm::SlidingLog, 10, Duration::from_secs(60), None);
    tables.push(Table {
        name: "adjust-sliding-log",
        policies: vec![("p", log)],
        steps: vec![
            step(T0, 4, true, 6),
            adjust(T0 + 10 * SEC, 3, true, 3),
            with_times(adjust(T0 + 20 * SEC, 30, false, 0), 60 * SEC, 60 * SEC),
            // Capped at twice the limit: 13 of the 30 charged. 4 leave at T0 + 60 s, 3 at
            // T0 + 70 s: the 13 still count until T0 + 80 s.
            with_times(step(T0 + 70 * SEC, 1, false, 0), 10 * SEC, 10 * SEC),
            step(T0 + 80 * SEC, 10, true, 0),
        ],
    });

    // Multi-policy: all-or-nothing, the most restrictive policy reported.
    let burst = policy(Algorithm::TokenBucket, 5, Duration::from_secs(1), None);
    let daily = policy(Algorithm::FixedWindow, 7, Duration::from_secs(86_400), None);
    let both = |at, cost, allowed, remaining| Step {
        policies: vec!["burst", "daily"],
        ..step(at, cost, allowed, remaining)
    };
    let only_daily = |at, cost, allowed, remaining| Step {
        policies: vec!["daily"],
        ..step(at, cost, allowed, remaining)
    };
    tables.push(Table {
        name: "multi-policy",
        policies: vec![("burst", burst), ("daily", daily)],
        steps: vec![
            both(T0, 5, true, 0),
            // burst is empty: rejected, and daily (2 left) is not charged.
            both(T0 + 1, 1, false, 0),
            only_daily(T0 + 2, 2, true, 0),
            only_daily(T0 + 3, 1, false, 0),
            // burst refilled, but daily is spent: rejected, burst not charged.
            both(T0 + 2 * SEC, 1, false, 0),
            Step {
                policies: vec!["burst"],
                ..peek(step(T0 + 2 * SEC, 5, true, 5))
            },
        ],
    });
    tables
}

/// A table's policies with their names validated (the names are the suite's own literals).
fn named<'a>(policies: &'a [(&'static str, Policy)]) -> Vec<(PolicyName, &'a Policy)> {
    policies
        .iter()
        .map(|(name, policy)| (PolicyName::from_static(name), policy))
        .collect()
}

/// Run one table against `store`, whose clock is `clock`. `prefix` keeps runs apart in a
/// shared store. Returns a description of the first mismatch.
pub async fn run_table<S: Store>(
    store: &S,
    clock: &ManualClock,
    table: &Table,
    prefix: &str,
) -> Result<(), String> {
    let key_of = |k: &str| format!("{prefix}{}:{k}", table.name);
    let policies = named(&table.policies);
    for (i, step) in table.steps.iter().enumerate() {
        clock.set_us(step.at_us);
        let key = key_of(step.key);
        let checks: Vec<Check<'_>> = step
            .policies
            .iter()
            .map(|name| {
                let (name, policy) = policies
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(n, p)| (n, *p))
                    .ok_or_else(|| {
                        format!("{}: step {i} names unknown policy {name}", table.name)
                    })?;
                Ok(Check {
                    name,
                    policy,
                    key: &key,
                })
            })
            .collect::<Result<_, String>>()?;
        let got = match (step.adjust, checks.first()) {
            (Some(delta), Some(check)) => store.adjust(*check, delta).await,
            _ => store
                .decide(&checks, step.cost, step.mode)
                .await
                .map(|answer| verdict(answer.decisions, answer.degraded).decision),
        }
        .map_err(|e| format!("{}: step {i}: store error {e}", table.name))?;
        let e = step.expect;
        let ok = got.allowed == e.allowed
            && e.remaining.is_none_or(|r| r == got.remaining)
            && e.reset_after_us.is_none_or(|r| r == got.reset_after_us)
            && e.retry_after_us.is_none_or(|r| r == got.retry_after_us)
            && (got.allowed || got.retry_after_us > 0);
        if !ok {
            return Err(format!(
                "{}: step {i} at {} cost {} {:?}: expected {e:?}, got {got:?}",
                table.name, step.at_us, step.cost, step.mode
            ));
        }
    }
    Ok(())
}

/// Run every table; collects all mismatches.
pub async fn run_tables<S: Store>(store: &S, clock: &ManualClock, prefix: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for table in tables() {
        if let Err(e) = run_table(store, clock, &table, prefix).await {
            failures.push(e);
        }
    }
    failures
}

/// A small deterministic generator (splitmix64), so traces are the same on every run.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Policies for differential traces: small limits and odd periods, to hit fractions and edges.
pub fn trace_policies() -> Vec<(&'static str, Policy)> {
    let mut out = Vec::new();
    let names = [
        ["fw-a", "fw-b"],
        ["sl-a", "sl-b"],
        ["sw-a", "sw-b"],
        ["tb-a", "tb-b"],
        ["gc-a", "gc-b"],
    ];
    for (algorithm, [a, b]) in Algorithm::ALL.into_iter().zip(names) {
        let burst = |x| algorithm.has_burst().then_some(x);
        out.push((
            a,
            policy(algorithm, 7, Duration::from_micros(3_000_007), burst(9)),
        ));
        out.push((
            b,
            policy(algorithm, 3, Duration::from_micros(1_000_000), burst(3)),
        ));
    }
    out
}

/// Replay `steps` seeded-random requests (times advancing by up to ~1.5 periods, a few keys,
/// single and paired policies, costs, peeks) on `store` and on the pure transitions; fail at the
/// first difference.
pub async fn run_differential<S: Store>(
    store: &S,
    clock: &ManualClock,
    seed: u64,
    steps: usize,
    prefix: &str,
) -> Result<(), String> {
    let traced = trace_policies();
    let policies = named(&traced);
    let keys: Vec<String> = (0..3).map(|k| format!("{prefix}trace{seed}:{k}")).collect();
    // Model: per (key, policy) state.
    let mut model: Vec<Vec<State>> = keys
        .iter()
        .map(|_| {
            policies
                .iter()
                .map(|(_, p)| State::fresh(p.algorithm()))
                .collect()
        })
        .collect();
    let mut rng = Rng::new(seed);
    let mut now = T0 + rng.below(SEC);
    for i in 0..steps {
        now += match rng.below(10) {
            0 => rng.below(4_500_000),
            1..=3 => 0,
            _ => rng.below(400_000),
        };
        if rng.below(50) == 0 && now > T0 + SEC {
            // An occasional clock step back.
            now -= rng.below(200_000);
        }
        clock.set_us(now);
        let k = rng.below(keys.len() as u64) as usize;
        let first = rng.below(policies.len() as u64) as usize;
        let mut chosen = vec![first];
        if rng.below(4) == 0 {
            let second = rng.below(policies.len() as u64) as usize;
            if second != first {
                chosen.push(second);
            }
        }
        let max_cost = chosen
            .iter()
            .map(|&p| policies[p].1.capacity())
            .min()
            .unwrap_or(1);
        let cost = if rng.below(3) == 0 {
            1 + rng.below(max_cost)
        } else {
            1
        };
        let mode = if rng.below(6) == 0 {
            Mode::Peek
        } else {
            Mode::Consume
        };

        let checks: Vec<Check<'_>> = chosen
            .iter()
            .map(|&p| Check {
                name: &policies[p].0,
                policy: policies[p].1,
                key: &keys[k],
            })
            .collect();
        if rng.below(8) == 0 {
            // An adjustment of the first policy, within and beyond its bounds.
            let (name, policy) = &policies[first];
            let span = 3 * policy.capacity() as i64;
            let mut delta = rng.below(2 * span as u64 + 1) as i64 - span;
            if policy.algorithm() == Algorithm::SlidingLog {
                delta = delta.abs();
            }
            let got = store
                .adjust(checks[0], delta)
                .await
                .map_err(|e| format!("trace {seed} step {i}: store error {e}"))?;
            let expected = model[k][first].adjust(now, policy, delta);
            if got != expected {
                return Err(format!(
                    "trace {seed} step {i} at {now} key {k} {name} adjust {delta}: \
                     store {got:?} != model {expected:?}"
                ));
            }
            continue;
        }
        // Single checks go through `decide_one` on odd steps: a store's fast path for the
        // common call must decide exactly as its general one.
        let got = match checks.as_slice() {
            [check] if i % 2 == 1 => store
                .decide_one(*check, cost, mode)
                .await
                .map(|decision| Decisions::from_buf([decision])),
            _ => store
                .decide(&checks, cost, mode)
                .await
                .map(|answer| answer.decisions),
        }
        .map_err(|e| format!("trace {seed} step {i}: store error {e}"))?;

        // The model: look with Peek, consume only if all allow (single checks consume directly).
        let states = &mut model[k];
        let expected: Vec<Decision> = if chosen.len() == 1 || mode == Mode::Peek {
            chosen
                .iter()
                .map(|&p| states[p].decide(now, policies[p].1, cost, mode))
                .collect()
        } else {
            let looked: Vec<Decision> = chosen
                .iter()
                .map(|&p| states[p].decide(now, policies[p].1, cost, Mode::Peek))
                .collect();
            if looked.iter().all(|d| d.allowed) {
                chosen
                    .iter()
                    .map(|&p| states[p].decide(now, policies[p].1, cost, Mode::Consume))
                    .collect()
            } else {
                looked
                    .into_iter()
                    .map(|d| Decision {
                        allowed: false,
                        ..d
                    })
                    .collect()
            }
        };
        if got.as_slice() != expected.as_slice() {
            let names: Vec<&str> = chosen.iter().map(|&p| policies[p].0.as_str()).collect();
            return Err(format!(
                "trace {seed} step {i} at {now} key {k} {names:?} cost {cost} {mode:?}: \
                 store {got:?} != model {expected:?}"
            ));
        }
    }
    Ok(())
}

/// What an override scenario does at one instant.
#[derive(Debug, Clone)]
pub enum OverrideAction {
    /// Set the override of the step's first policy.
    Set(OverrideSpec),
    /// Delete the override of the step's first policy; whether one stood.
    Delete(bool),
    /// Decide `cost` in `mode` and expect `(allowed, limit, remaining)` of the reported
    /// decision, and its `retry_after_us` when given.
    Decide {
        /// The cost.
        cost: u64,
        /// Consume or peek.
        mode: Mode,
        /// `(allowed, limit, remaining)`.
        expect: (bool, u64, u64),
        /// `retry_after_us`, when compared.
        retry_after_us: Option<u64>,
    },
}

/// One step of an override scenario.
#[derive(Debug, Clone)]
pub struct OverrideStep {
    /// Absolute time, µs.
    pub at_us: u64,
    /// The policies (the first is the one `Set` and `Delete` act on).
    pub policies: Vec<&'static str>,
    /// What happens.
    pub action: OverrideAction,
}

/// A named override scenario: a key with state changes limit, by the rule of
/// [`crate::overrides`] for its algorithm.
#[derive(Debug, Clone)]
pub struct OverrideTable {
    /// Scenario name (failure messages, key prefix).
    pub name: String,
    /// The policies the steps name.
    pub policies: Vec<(&'static str, Policy)>,
    /// The steps, in order.
    pub steps: Vec<OverrideStep>,
}

fn decide_step(at_us: u64, cost: u64, expect: (bool, u64, u64)) -> OverrideStep {
    OverrideStep {
        at_us,
        policies: vec!["p"],
        action: OverrideAction::Decide {
            cost,
            mode: Mode::Consume,
            expect,
            retry_after_us: None,
        },
    }
}

fn override_step(at_us: u64, action: OverrideAction) -> OverrideStep {
    OverrideStep {
        at_us,
        policies: vec!["p"],
        action,
    }
}

/// Every override scenario: per algorithm a raise, a lowering, a deletion and a cost the
/// override cannot admit; and a multi-policy check with one policy overridden.
pub fn override_tables() -> Vec<OverrideTable> {
    use OverrideAction::{Delete, Set};
    let mut tables = Vec::new();
    for algorithm in Algorithm::ALL {
        let base = policy(algorithm, 3, Duration::from_secs(10), None);
        // Raised from 3 to 5 after 3 were taken at T0: the windows, the log and the token
        // bucket admit the difference at once; GCRA keeps the 10 s it owes and reads them
        // at the new interval (2 s per unit).
        let raised_passes = algorithm != Algorithm::Gcra;
        let mut steps = vec![
            decide_step(T0, 3, (true, 3, 0)),
            decide_step(T0, 1, (false, 3, 0)),
            override_step(T0 + 1, Set(OverrideSpec::limit(5))),
        ];
        if raised_passes {
            steps.push(decide_step(T0 + 1, 1, (true, 5, 1)));
            steps.push(decide_step(T0 + 1, 1, (true, 5, 0)));
            steps.push(decide_step(T0 + 1, 1, (false, 5, 0)));
        } else {
            let mut rejected = decide_step(T0 + 1, 1, (false, 5, 0));
            if let OverrideAction::Decide { retry_after_us, .. } = &mut rejected.action {
                *retry_after_us = Some(2 * SEC - 1);
            }
            steps.push(rejected);
        }
        // Deleted: the policy's 3 hold again.
        steps.push(override_step(T0 + 2, Delete(true)));
        steps.push(override_step(T0 + 2, Delete(false)));
        steps.push(decide_step(T0 + 2, 1, (false, 3, 0)));
        tables.push(OverrideTable {
            name: format!("override-raised-{algorithm}"),
            policies: vec![("p", base.clone())],
            steps,
        });

        // Lowered from 3 to 1 after 2 were taken: nothing passes until what was taken is
        // below the new limit; in the next window (the windows) only the new limit passes.
        let mut steps = vec![
            decide_step(T0, 2, (true, 3, 1)),
            override_step(T0 + 1, Set(OverrideSpec::limit(1))),
            decide_step(T0 + 1, 1, (false, 1, 0)),
            // A cost above the override's capacity can never pass while it stands.
            OverrideStep {
                at_us: T0 + 2,
                policies: vec!["p"],
                action: OverrideAction::Decide {
                    cost: 2,
                    mode: Mode::Consume,
                    expect: (false, 1, 0),
                    retry_after_us: Some(10 * SEC),
                },
            },
        ];
        if matches!(algorithm, Algorithm::FixedWindow) {
            steps.push(decide_step(T0 + 10 * SEC, 1, (true, 1, 0)));
            steps.push(decide_step(T0 + 10 * SEC, 1, (false, 1, 0)));
        }
        tables.push(OverrideTable {
            name: format!("override-lowered-{algorithm}"),
            policies: vec![("p", base)],
            steps,
        });
    }

    // Several policies, one overridden: the check reads each policy's own limit.
    let a = policy(Algorithm::FixedWindow, 3, Duration::from_secs(10), None);
    let b = policy(Algorithm::TokenBucket, 5, Duration::from_secs(10), None);
    let both = |at_us, cost, expect| OverrideStep {
        policies: vec!["a", "b"],
        ..decide_step(at_us, cost, expect)
    };
    tables.push(OverrideTable {
        name: "override-multi-policy".into(),
        policies: vec![("a", a), ("b", b)],
        steps: vec![
            both(T0, 3, (true, 3, 0)),
            both(T0, 1, (false, 3, 0)),
            OverrideStep {
                at_us: T0,
                policies: vec!["a"],
                action: Set(OverrideSpec::limit(10)),
            },
            // a: 5 of 10 left, b: 0 of 5: b is reported.
            both(T0 + 1, 2, (true, 5, 0)),
            OverrideStep {
                policies: vec!["a"],
                ..decide_step(T0 + 2, 3, (true, 10, 2))
            },
        ],
    });
    tables
}

/// Run one override scenario against `store` on `clock`; the first mismatch, described.
pub async fn run_override_table<S: Store>(
    store: &S,
    clock: &ManualClock,
    table: &OverrideTable,
    prefix: &str,
) -> Result<(), String> {
    let key = format!("{prefix}{}:k", table.name);
    let policies = named(&table.policies);
    for (i, step) in table.steps.iter().enumerate() {
        clock.set_us(step.at_us);
        let at = |what: String| format!("{}: step {i}: {what}", table.name);
        let checks: Vec<Check<'_>> = step
            .policies
            .iter()
            .map(|name| {
                let (name, policy) = policies
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(n, p)| (n, *p))
                    .ok_or_else(|| at(format!("unknown policy {name}")))?;
                Ok(Check {
                    name,
                    policy,
                    key: &key,
                })
            })
            .collect::<Result<_, String>>()?;
        let first = *checks.first().ok_or_else(|| at("no policy".into()))?;
        match &step.action {
            OverrideAction::Set(spec) => {
                let value = spec
                    .resolve(first.policy)
                    .map_err(|e| at(format!("invalid override {e}")))?;
                store
                    .set_override(first, &value)
                    .await
                    .map_err(|e| at(format!("set: {e}")))?;
                let stored = store
                    .get_override(first)
                    .await
                    .map_err(|e| at(format!("get: {e}")))?;
                if stored.as_ref().map(|o| &o.policy) != Some(&value.policy) {
                    return Err(at(format!("set {value:?}, read back {stored:?}")));
                }
            }
            OverrideAction::Delete(stood) => {
                let deleted = store
                    .delete_override(first)
                    .await
                    .map_err(|e| at(format!("delete: {e}")))?;
                if deleted != *stood {
                    return Err(at(format!("delete said {deleted}, expected {stood}")));
                }
            }
            OverrideAction::Decide {
                cost,
                mode,
                expect,
                retry_after_us,
            } => {
                let answer = store
                    .decide(&checks, *cost, *mode)
                    .await
                    .map_err(|e| at(format!("store error {e}")))?;
                let got = verdict(answer.decisions, answer.degraded).decision;
                let ok = (got.allowed, got.limit, got.remaining) == *expect
                    && retry_after_us.is_none_or(|r| r == got.retry_after_us)
                    && (got.allowed || got.retry_after_us > 0);
                if !ok {
                    return Err(at(format!(
                        "cost {cost} {mode:?}: expected {expect:?} retry {retry_after_us:?}, got {got:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Run every override scenario; collects all mismatches.
pub async fn run_override_tables<S: Store>(
    store: &S,
    clock: &ManualClock,
    prefix: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    for table in override_tables() {
        if let Err(e) = run_override_table(store, clock, &table, prefix).await {
            failures.push(e);
        }
    }
    failures
}

/// What a lease step expects (`None` fields are not compared).
#[derive(Debug, Clone, Copy)]
pub struct LeaseExpect {
    /// Granted, released a held lease, or renewed one.
    pub allowed: bool,
    /// Units free afterwards.
    pub remaining: u64,
    /// Until every lease has expired, µs.
    pub reset_after_us: Option<u64>,
    /// For a refused acquire, until enough units expire, µs.
    pub retry_after_us: Option<u64>,
}

/// One lease operation in a table.
#[derive(Debug, Clone, Copy)]
pub struct LeaseStep {
    /// Absolute time, µs.
    pub at_us: u64,
    /// The operation.
    pub op: LeaseOp,
    /// What it must answer.
    pub expect: LeaseExpect,
}

/// A named lease scenario on one `concurrency` policy (named `p`) and one key.
#[derive(Debug, Clone)]
pub struct LeaseTable {
    /// Scenario name.
    pub name: &'static str,
    /// The policy.
    pub policy: Policy,
    /// The steps, in order.
    pub steps: Vec<LeaseStep>,
}

/// Every lease table.
pub fn lease_tables() -> Vec<LeaseTable> {
    use LeaseOp::{Acquire, Release, Renew};
    let id = LeaseId::from_parts;
    let at = |s: u64, op, allowed, remaining, reset_s: u64, retry_s: u64| LeaseStep {
        at_us: T0 + s * SEC,
        op,
        expect: LeaseExpect {
            allowed,
            remaining,
            reset_after_us: Some(reset_s * SEC),
            retry_after_us: Some(retry_s * SEC),
        },
    };
    let (a, b, c, d, e) = (id(1, 1), id(2, 2), id(3, 1), id(4, 1), id(5, 2));
    let lease = policy(Algorithm::Concurrency, 3, Duration::from_secs(10), None);
    let mut tables = vec![LeaseTable {
        name: "leases",
        policy: lease.clone(),
        steps: vec![
            at(0, Acquire(a), true, 2, 10, 0),
            at(1, Acquire(b), true, 0, 10, 0),
            // Full: a cost waits for the units expiring first (a at 10, then b's two at 11).
            at(2, Acquire(c), false, 0, 9, 8),
            at(2, Acquire(id(9, 2)), false, 0, 9, 9),
            at(2, Acquire(id(9, 3)), false, 0, 9, 9),
            at(2, Release(a), true, 1, 9, 0),
            // Release is idempotent; an unknown id changes nothing.
            at(2, Release(a), false, 1, 9, 0),
            at(2, Release(id(8, 1)), false, 1, 9, 0),
            at(2, Acquire(id(9, 2)), false, 1, 9, 9),
            at(3, Acquire(c), true, 0, 10, 0),
            at(5, Renew(b), true, 0, 10, 0),
            // c expires at 13 exactly: gone at 13.
            at(13, Acquire(d), true, 0, 10, 0),
            at(13, Renew(c), false, 0, 10, 0),
            at(15, Acquire(e), true, 0, 10, 0),
            at(30, Release(e), false, 3, 0, 0),
            at(30, Renew(e), false, 3, 0, 0),
        ],
    }];
    // A lease as large as the limit, and a clock that steps back inside a lease.
    tables.push(LeaseTable {
        name: "leases-whole",
        policy: lease,
        steps: vec![
            at(0, Acquire(id(1, 3)), true, 0, 10, 0),
            at(4, Acquire(id(2, 1)), false, 0, 6, 6),
            at(3, Acquire(id(2, 1)), false, 0, 7, 7),
            at(4, Renew(id(1, 3)), true, 0, 10, 0),
            at(14, Acquire(id(2, 1)), true, 2, 10, 0),
        ],
    });
    tables
}

/// Run every lease table; the failures, one line each.
pub async fn run_lease_tables<S: Store>(
    store: &S,
    clock: &ManualClock,
    prefix: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    for table in lease_tables() {
        let key = format!("{prefix}{}", table.name);
        let p = PolicyName::from_static("p");
        let check = Check {
            name: &p,
            policy: &table.policy,
            key: &key,
        };
        for (i, step) in table.steps.iter().enumerate() {
            clock.set_us(step.at_us);
            let got = match store.lease(check, step.op).await {
                Ok(outcome) => outcome,
                Err(e) => {
                    failures.push(format!("{} step {i}: store error {e}", table.name));
                    break;
                }
            };
            let d = got.decision;
            let want = step.expect;
            let ok = d.allowed == want.allowed
                && d.remaining == want.remaining
                && d.limit == table.policy.limit()
                && want.reset_after_us.is_none_or(|r| r == d.reset_after_us)
                && want.retry_after_us.is_none_or(|r| r == d.retry_after_us)
                && got.lease_expires_in_us
                    == if want.allowed && !matches!(step.op, LeaseOp::Release(_)) {
                        table.policy.period_us()
                    } else {
                        0
                    };
            if !ok {
                failures.push(format!(
                    "{} step {i} ({:?}): got {got:?}, want {want:?}",
                    table.name, step.op
                ));
            }
        }
    }
    failures
}

/// Replay `steps` seeded-random lease operations (acquires of random costs, releases and
/// renews of held, expired and unknown ids, times advancing by up to about a lease, now and
/// then a step back) on `store` and on [`crate::algorithm::Leases`]; fail at the first
/// difference.
pub async fn run_lease_differential<S: Store>(
    store: &S,
    clock: &ManualClock,
    seed: u64,
    steps: usize,
    prefix: &str,
) -> Result<(), String> {
    let policy = policy(Algorithm::Concurrency, 5, Duration::from_secs(2), None);
    let key = format!("{prefix}leases{seed}");
    let p = PolicyName::from_static("p");
    let check = Check {
        name: &p,
        policy: &policy,
        key: &key,
    };
    let mut model = crate::algorithm::Leases::default();
    let mut issued: Vec<LeaseId> = Vec::new();
    let mut rng = Rng::new(seed);
    let mut now = T0 + rng.below(SEC);
    for i in 0..steps {
        now += match rng.below(8) {
            0 => rng.below(2_500_000),
            1 | 2 => 0,
            _ => rng.below(300_000),
        };
        if rng.below(40) == 0 {
            now -= rng.below(200_000);
        }
        clock.set_us(now);
        let known = |rng: &mut Rng, issued: &[LeaseId]| match issued.len() {
            0 => LeaseId::from_parts(u128::from(rng.next_u64()), 1),
            n => issued[rng.below(n as u64) as usize],
        };
        let op = match rng.below(6) {
            0..=2 => {
                let cost = 1 + rng.below(3);
                let id = LeaseId::from_parts(u128::from(rng.next_u64()) << 64 | i as u128, cost);
                issued.push(id);
                LeaseOp::Acquire(id)
            }
            3 | 4 => LeaseOp::Release(known(&mut rng, &issued)),
            _ => LeaseOp::Renew(known(&mut rng, &issued)),
        };
        let got = store
            .lease(check, op)
            .await
            .map_err(|e| format!("lease trace {seed} step {i}: store error {e}"))?;
        let expected = model.apply(now, &policy, op);
        if got != expected {
            return Err(format!(
                "lease trace {seed} step {i} at {now} {op:?}: store {got:?} != model {expected:?}"
            ));
        }
    }
    Ok(())
}
