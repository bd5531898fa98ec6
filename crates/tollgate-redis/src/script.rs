//! The Lua scripts: per-algorithm blocks (scripts/*.lua) pasted into frames at compile time.
//!
//! - [`Shape::OnePolicy`]: one script per algorithm, the block of that algorithm alone (the
//!   common check, so the cheapest to run);
//! - [`Shape::SeveralPolicies`]: one script with every block, deciding all the policies of one
//!   identifier in one atomic, all-or-nothing call.
//!
//! Both shapes run the same blocks on the same state; scripts/prelude.lua says why blocks
//! rather than Lua functions (Redis instructions per call).

use std::sync::LazyLock;

use tollgate::{Algorithm, Check, Decision, Decisions, LeaseOp, LeaseOutcome, Mode, Policy};

use crate::arguments::Arguments;
use crate::batch::{BatchGroup, Batchable, Parts, ScriptForms, Wait};
use crate::keys::Key;

/// Which script a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One policy of this algorithm.
    OnePolicy(Algorithm),
    /// Several policies (of any algorithms) of one identifier.
    SeveralPolicies,
}

impl Shape {
    /// The shape for these policies (at least one).
    pub fn of<'p>(mut policies: impl ExactSizeIterator<Item = &'p Policy>) -> Shape {
        match (policies.len(), policies.next()) {
            (1, Some(policy)) => Shape::OnePolicy(policy.algorithm()),
            _ => Shape::SeveralPolicies,
        }
    }

    /// The Lua source, as sent with `SCRIPT LOAD` / `EVAL`.
    pub fn source(self) -> &'static str {
        match self {
            Shape::OnePolicy(algorithm) => ONE_POLICY_SOURCES[index(algorithm)],
            Shape::SeveralPolicies => SEVERAL_POLICIES_SOURCE,
        }
    }

    /// The script, with its SHA-1 (as `EVALSHA` takes it) computed once.
    pub fn script(self) -> &'static redis::Script {
        match self {
            Shape::OnePolicy(algorithm) => &SCRIPTS.one_policy[index(algorithm)],
            Shape::SeveralPolicies => &SCRIPTS.several_policies,
        }
    }
}

/// The one-policy script of an algorithm: its block (and the helper it needs) in the
/// one-policy frame, twice: inline for a check alone, as a function for a batch. `$form` is
/// the first line: whether even one check is decided as a batch (see one_policy.lua).
macro_rules! one_policy_source {
    ($form:literal, $name:literal, $block:literal $(, $helper:literal)?) => {
        concat!(
            $form,
            include_str!("../scripts/prelude.lua"),
            "local ALGORITHM = '", $name, "'\n",
            $(include_str!($helper),)?
            include_str!("../scripts/one_policy.lua"),
            include_str!("../scripts/override.lua"),
            include_str!($block),
            "end\n",
            include_str!("../scripts/write.lua"),
            include_str!("../scripts/one_policy_batch.lua"),
            include_str!("../scripts/override.lua"),
            include_str!($block),
            "end\n",
            include_str!("../scripts/write.lua"),
            include_str!("../scripts/one_policy_end.lua"),
        )
    };
}

/// One-policy sources, in [`Algorithm::ALL`] order.
macro_rules! one_policy_sources {
    ($form:literal) => {
        [
            one_policy_source!($form, "fixed-window", "../scripts/fixed_window.lua"),
            one_policy_source!($form, "sliding-log", "../scripts/sliding_log.lua"),
            one_policy_source!($form, "sliding-window", "../scripts/sliding_window.lua"),
            one_policy_source!(
                $form,
                "token-bucket",
                "../scripts/token_bucket.lua",
                "../scripts/bucket.lua"
            ),
            one_policy_source!(
                $form,
                "gcra",
                "../scripts/gcra.lua",
                "../scripts/bucket.lua"
            ),
        ]
    };
}
const ONE_POLICY_SOURCES: [&str; 5] = one_policy_sources!("local batched = false\n");
/// The same in the batch form.
const ONE_POLICY_BATCH_SOURCES: [&str; 5] = one_policy_sources!("local batched = true\n");

/// The several-policies script: every block, chosen by the code argument. The branches
/// compare it as text (interned strings: a pointer comparison) with [`code`]'s values.
const SEVERAL_POLICIES_SOURCE: &str = concat!(
    include_str!("../scripts/prelude.lua"),
    include_str!("../scripts/bucket.lua"),
    include_str!("../scripts/several_policies.lua"),
    include_str!("../scripts/override.lua"),
    "if code == '5' then\n",
    include_str!("../scripts/gcra.lua"),
    "elseif code == '4' then\n",
    include_str!("../scripts/token_bucket.lua"),
    "elseif code == '1' then\n",
    include_str!("../scripts/fixed_window.lua"),
    "elseif code == '3' then\n",
    include_str!("../scripts/sliding_window.lua"),
    "elseif code == '2' then\n",
    include_str!("../scripts/sliding_log.lua"),
    "else\n",
    "  error({ err = 'TOLLGATE unknown algorithm code ' .. tostring(code) })\n",
    "end\n",
    "end\n",
    include_str!("../scripts/write.lua"),
    include_str!("../scripts/several_policies_end.lua"),
);

/// Where an algorithm's one-policy script sits in [`ONE_POLICY_SOURCES`]: its [`code`] less
/// one, which is its place in [`Algorithm::ALL`] (a test checks).
const fn index(algorithm: Algorithm) -> usize {
    code(algorithm) as usize - 1
}

struct Scripts {
    one_policy: [redis::Script; 5],
    one_policy_batch: [redis::Script; 5],
    several_policies: redis::Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    one_policy: ONE_POLICY_SOURCES.map(redis::Script::new),
    one_policy_batch: ONE_POLICY_BATCH_SOURCES.map(redis::Script::new),
    several_policies: redis::Script::new(SEVERAL_POLICIES_SOURCE),
});

/// The one-policy scripts in their two forms, for the batching layer, per algorithm.
static FORMS: LazyLock<[ScriptForms; 5]> = LazyLock::new(|| {
    std::array::from_fn(|algorithm| {
        ScriptForms::new(
            (
                &SCRIPTS.one_policy[algorithm],
                ONE_POLICY_SOURCES[algorithm],
            ),
            (
                &SCRIPTS.one_policy_batch[algorithm],
                ONE_POLICY_BATCH_SOURCES[algorithm],
            ),
        )
    })
});

/// Integers the scripts return per policy: allowed, remaining, reset_after_us,
/// retry_after_us, and the limit and period decided under (the override's, if one stood).
pub const REPLY_WIDTH: usize = 6;

/// Keys per check: its state, and its override (read in the same script).
pub const KEYS_PER_CHECK: usize = 2;

/// The algorithm's code in the several-policies script's `ARGV` (the branch that runs it).
pub const fn code(algorithm: Algorithm) -> u8 {
    match algorithm {
        Algorithm::FixedWindow => 1,
        Algorithm::SlidingLog => 2,
        Algorithm::SlidingWindow => 3,
        Algorithm::TokenBucket => 4,
        Algorithm::Gcra => 5,
        // Not a check: leases run their own script (LEASE_SOURCE). The store refuses a check of
        // a concurrency policy before any script is chosen.
        Algorithm::Concurrency => 6,
    }
}

/// The lease script: acquire, release and renew of `concurrency` policies, one call each (the
/// concurrency.lua block in its single frame).
pub const LEASE_SOURCE: &str = concat!(
    include_str!("../scripts/lease_single.lua"),
    include_str!("../scripts/concurrency.lua"),
    include_str!("../scripts/lease_single_end.lua"),
);

/// The lease script's batch form: the same block, applied to each operation of a batch.
pub const LEASE_BATCH_SOURCE: &str = concat!(
    include_str!("../scripts/lease_batch.lua"),
    include_str!("../scripts/concurrency.lua"),
    include_str!("../scripts/lease_batch_end.lua"),
);

static LEASE_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(LEASE_SOURCE));
static LEASE_BATCH_SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(LEASE_BATCH_SOURCE));

/// The lease script in its forms, for the batching layer.
static LEASE_FORMS: LazyLock<ScriptForms> = LazyLock::new(|| {
    ScriptForms::new(
        (&LEASE_SCRIPT, LEASE_SOURCE),
        (&LEASE_BATCH_SCRIPT, LEASE_BATCH_SOURCE),
    )
});

/// Every Lua script the store sends, as Redis runs it, by the name of its copy under
/// `scripts/generated/` (checked in, and checked against these by `tests/scripts.rs`): each
/// algorithm's one-policy script in its single, batch and Cluster cross-slot forms, the
/// several-policies script, the lease script in its three forms, and the override setter.
pub fn every_script() -> Vec<(String, String)> {
    let mut scripts = Vec::new();
    for (i, algorithm) in Algorithm::ALL.into_iter().enumerate() {
        let name = algorithm.name();
        scripts.push((format!("{name}.lua"), ONE_POLICY_SOURCES[i].to_owned()));
        scripts.push((
            format!("{name}.batch.lua"),
            ONE_POLICY_BATCH_SOURCES[i].to_owned(),
        ));
        scripts.push((
            format!("{name}.cross-slot.lua"),
            crate::cluster::cross_slot_source(ONE_POLICY_BATCH_SOURCES[i]),
        ));
    }
    scripts.push((
        "several-policies.lua".into(),
        SEVERAL_POLICIES_SOURCE.into(),
    ));
    scripts.push(("lease.lua".into(), LEASE_SOURCE.into()));
    scripts.push(("lease.batch.lua".into(), LEASE_BATCH_SOURCE.into()));
    scripts.push((
        "lease.cross-slot.lua".into(),
        crate::cluster::cross_slot_source(LEASE_BATCH_SOURCE),
    ));
    scripts.push((
        "override-set.lua".into(),
        crate::overrides::SET_SCRIPT.into(),
    ));
    scripts.push((
        "override-list.lua".into(),
        crate::overrides::LIST_SCRIPT.into(),
    ));
    scripts
}

/// [`LEASE_SOURCE`] with its SHA-1.
pub fn lease_script() -> &'static redis::Script {
    &LEASE_SCRIPT
}

/// The lease script's call: `EVALSHA <sha>` (or `EVAL <source>` after `NOSCRIPT`), the key,
/// then op, lease id, cost, limit, lease µs and, in tests, the injected time.
pub(crate) struct LeaseCall<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) check: Check<'a>,
    pub(crate) op: LeaseOp,
    pub(crate) now_us: Option<u64>,
    pub(crate) by_source: bool,
    /// The `WAIT` behind it (an acquire or a renew under `replica_ack`).
    pub(crate) wait: Option<Wait>,
}

impl LeaseCall<'_> {
    /// The call as a redis-rs command.
    pub(crate) fn to_cmd(&self) -> redis::Cmd {
        let mut call = redis::Cmd::new();
        if self.by_source {
            call.bytes(b"EVAL");
            call.bytes(LEASE_SOURCE.as_bytes());
        } else {
            call.bytes(b"EVALSHA");
            call.bytes(LEASE_SCRIPT.get_hash().as_bytes());
        }
        call.integer(1);
        self.key().write_to(&mut call);
        self.write_args(&mut call);
        if let Some(now) = self.now_us {
            call.integer(now);
        }
        call
    }

    fn key(&self) -> Key<'_> {
        let check = &self.check;
        Key::new(self.prefix, check.name, check.policy.algorithm(), check.key)
    }

    /// Op, lease id, cost, limit and lease µs: the arguments of one operation.
    fn write_args<A: Arguments + ?Sized>(&self, out: &mut A) {
        let (op, id) = match self.op {
            LeaseOp::Acquire(id) => (b"a", id),
            LeaseOp::Release(id) => (b"r", id),
            LeaseOp::Renew(id) => (b"n", id),
        };
        out.bytes(op);
        out.bytes(id.to_string().as_bytes());
        out.integer(id.cost());
        out.integer(self.check.policy.limit());
        out.integer(self.check.policy.period_us());
    }
}

/// Lease operations batch with each other (the same script whatever the operation); by source
/// (after `NOSCRIPT`) one goes alone.
impl Batchable for LeaseCall<'_> {
    fn group(&self) -> Option<BatchGroup> {
        if self.by_source {
            return None;
        }
        Some(BatchGroup {
            forms: &LEASE_FORMS,
            wait: self.wait,
            shared: self
                .now_us
                .map(|now| itoa::Buffer::new().format(now).as_bytes().to_vec())
                .into_iter()
                .collect(),
        })
    }

    fn wait(&self) -> Option<Wait> {
        self.wait
    }

    fn slot(&self) -> u16 {
        self.key().slot()
    }

    fn alone(&self) -> redis::Cmd {
        self.to_cmd()
    }

    fn write_parts(&self, keys: &mut Parts, arguments: &mut Parts) {
        self.key().write_to(keys);
        self.write_args(arguments);
    }
}

/// Turn the lease script's reply (five little-endian doubles) into an outcome.
pub fn parse_lease_reply(reply: &redis::Value, policy: &Policy) -> Result<LeaseOutcome, String> {
    let redis::Value::BulkString(bytes) = reply else {
        return Err(format!(
            "lease script returned {reply:?}, not a bulk string"
        ));
    };
    if bytes.len() != 40 {
        return Err(format!(
            "lease script returned {} bytes, not 40",
            bytes.len()
        ));
    }
    // allowed, remaining, reset_after_us, retry_after_us, then the lease's expiry: a decision
    // reply's first four values, its limit and period being the policy's (leases have no
    // overrides).
    let mut decision_reply = [0; REPLY_BYTES];
    decision_reply[..32].copy_from_slice(&bytes[..32]);
    decision_reply[32..40].copy_from_slice(&(policy.capacity() as f64).to_le_bytes());
    decision_reply[40..48].copy_from_slice(&(policy.period_us() as f64).to_le_bytes());
    let decision = parse_decision(&decision_reply)?;
    let lease_expires_in_us = integer(&bytes[32..40])?;
    Ok(LeaseOutcome {
        decision,
        lease_expires_in_us,
        degraded: false,
    })
}

/// Add `ARGV` for `shape` to a script call: cost, then per policy limit, period and capacity
/// (with the algorithm's code before them for [`Shape::SeveralPolicies`]), then mode and
/// injected time only when needed. A consuming decision on Redis `TIME`, the production case,
/// sends neither: every argument costs Redis a string and often a parse.
pub(crate) fn push_args<'p, A: Arguments + ?Sized>(
    call: &mut A,
    shape: Shape,
    op: Op,
    now_us: Option<u64>,
    policies: impl Iterator<Item = &'p Policy>,
) {
    match op {
        Op::Decide { cost, .. } => call.integer(cost),
        Op::Adjust { delta } => call.bytes(itoa::Buffer::new().format(delta).as_bytes()),
    }
    for policy in policies {
        if shape == Shape::SeveralPolicies {
            call.integer(code(policy.algorithm()).into());
        }
        call.integer(policy.limit());
        call.integer(period_argument(policy));
        call.integer(policy.capacity());
    }
    push_optional_args(call, op, now_us);
}

/// What a script call does with its checks: decide `cost` in `mode`, or (one policy only)
/// adjust by `delta` after the fact (`one_policy.lua`'s mode `a`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// Decide `cost` in `mode`.
    Decide {
        /// The cost of the request.
        cost: u64,
        /// Consume or peek.
        mode: Mode,
    },
    /// Charge (`delta > 0`) or refund, then answer a peek of one unit.
    Adjust {
        /// The signed amount.
        delta: i64,
    },
}

/// The optional arguments that end [`push_args`]: mode and injected time, when needed. In a
/// batch they follow every check's arguments, once (every check of a batch shares them).
fn push_optional_args<A: Arguments + ?Sized>(call: &mut A, op: Op, now_us: Option<u64>) {
    if let Some(mode) = mode_argument(op, now_us) {
        call.bytes(mode);
    }
    if let Some(now) = now_us {
        call.integer(now);
    }
}

/// The period as the scripts take it: µs, or 0 for calendar months (`fixed_window.lua`).
pub(crate) fn period_argument(policy: &Policy) -> u64 {
    if policy.is_monthly() {
        0
    } else {
        policy.period_us()
    }
}

/// How many arguments [`push_args`] writes.
pub(crate) fn args_count(shape: Shape, policies: usize, op: Op, now_us: Option<u64>) -> usize {
    let per_policy = match shape {
        Shape::OnePolicy(_) => 3,
        Shape::SeveralPolicies => 4,
    };
    1 + per_policy * policies
        + usize::from(mode_argument(op, now_us).is_some())
        + usize::from(now_us.is_some())
}

/// The mode argument, when one is sent: consuming (the default) only before an injected time.
fn mode_argument(op: Op, now_us: Option<u64>) -> Option<&'static [u8]> {
    match op {
        Op::Adjust { .. } => Some(b"a"),
        Op::Decide {
            mode: Mode::Peek, ..
        } => Some(b"p"),
        Op::Decide {
            mode: Mode::Consume,
            ..
        } => now_us.is_some().then_some(b"c"),
    }
}

/// One decision's script call: `EVALSHA <sha>` (or, after `NOSCRIPT`, `EVAL <source>`), the
/// keys, then [`push_args`]'s arguments. Written straight into whichever [`Arguments`] the
/// connection takes.
pub(crate) struct ScriptCall<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) checks: &'a [Check<'a>],
    /// A decision, or (of one check only) an adjustment.
    pub(crate) op: Op,
    pub(crate) now_us: Option<u64>,
    pub(crate) by_source: bool,
    /// The `WAIT` behind the call (a consuming decision with replica acknowledgement): it
    /// batches only with calls that wait alike.
    pub(crate) wait: Option<Wait>,
}

impl ScriptCall<'_> {
    fn shape(&self) -> Shape {
        Shape::of(self.checks.iter().map(|c| c.policy))
    }

    /// Every argument, the command name included.
    pub(crate) fn count(&self) -> usize {
        let shape = self.shape();
        3 + KEYS_PER_CHECK * self.checks.len()
            + args_count(shape, self.checks.len(), self.op, self.now_us)
    }

    pub(crate) fn write<A: Arguments + ?Sized>(&self, out: &mut A) {
        let shape = self.shape();
        if self.by_source {
            out.bytes(b"EVAL");
            out.bytes(shape.source().as_bytes());
        } else {
            out.bytes(b"EVALSHA");
            out.bytes(shape.script().get_hash().as_bytes());
        }
        out.integer((KEYS_PER_CHECK * self.checks.len()) as u64);
        self.write_keys(out);
        self.write_args(out, self.op, self.now_us);
    }

    fn write_keys<A: Arguments + ?Sized>(&self, out: &mut A) {
        for check in self.checks {
            Key::new(self.prefix, check.name, check.policy.algorithm(), check.key).write_to(out);
            Key::override_of(self.prefix, check.name, check.key).write_to(out);
        }
    }

    fn write_args<A: Arguments + ?Sized>(&self, out: &mut A, op: Op, now_us: Option<u64>) {
        push_args(
            out,
            self.shape(),
            op,
            now_us,
            self.checks.iter().map(|c| c.policy),
        );
    }

    /// The call as a redis-rs command (for the connections of redis-rs, and pipelines).
    pub(crate) fn to_cmd(&self) -> redis::Cmd {
        // Room for every argument up front: a growing command reallocates several times.
        let bytes = 80 + self.checks.iter().map(|c| 100 + c.key.len()).sum::<usize>();
        let mut call = redis::Cmd::with_capacity(self.count(), bytes);
        self.write(&mut call);
        call
    }
}

/// A check of one policy batches with the checks of the same algorithm and mode (and, in
/// tests, the same injected time); by source (after `NOSCRIPT`), or an adjustment, it goes
/// alone.
impl Batchable for ScriptCall<'_> {
    fn group(&self) -> Option<BatchGroup> {
        let [check] = self.checks else {
            return None;
        };
        if self.by_source || matches!(self.op, Op::Adjust { .. }) {
            return None;
        }
        let mut shared = SharedArguments(Vec::new());
        push_optional_args(&mut shared, self.op, self.now_us);
        Some(BatchGroup {
            forms: &FORMS[index(check.policy.algorithm())],
            shared: shared.0,
            wait: self.wait,
        })
    }

    fn wait(&self) -> Option<Wait> {
        self.wait
    }

    fn slot(&self) -> u16 {
        // One check: `group` sends no other call here.
        self.checks.first().map_or(0, |check| {
            Key::new(self.prefix, check.name, check.policy.algorithm(), check.key).slot()
        })
    }

    fn alone(&self) -> redis::Cmd {
        self.to_cmd()
    }

    fn write_parts(&self, keys: &mut Parts, arguments: &mut Parts) {
        self.write_keys(keys);
        // Each check's own arguments only: the mode and time are the batch's shared ones (an
        // adjustment never batches, [`Self::group`]).
        let op = match self.op {
            Op::Decide { cost, .. } => Op::Decide {
                cost,
                mode: Mode::Consume,
            },
            adjust => adjust,
        };
        self.write_args(arguments, op, None);
    }
}

/// Arguments collected one by one.
struct SharedArguments(Vec<Vec<u8>>);

impl Arguments for SharedArguments {
    fn bytes(&mut self, argument: &[u8]) {
        self.0.push(argument.to_vec());
    }

    fn pieces(&mut self, pieces: &[&str]) {
        self.0.push(pieces.concat().into_bytes());
    }
}

/// Bytes of the reply per policy: six little-endian doubles.
pub const REPLY_BYTES: usize = 8 * REPLY_WIDTH;

/// Turn a script's reply (six little-endian doubles per policy, one bulk string) into one
/// decision per policy, checking its shape: every value a non-negative integer, `allowed` 0 or
/// 1, the limit positive, `remaining` at most the limit.
pub fn parse_reply<'p>(
    reply: &redis::Value,
    policies: impl ExactSizeIterator<Item = &'p Policy>,
) -> Result<Decisions, String> {
    let redis::Value::BulkString(bytes) = reply else {
        return Err(format!("script returned {reply:?}, not a bulk string"));
    };
    if bytes.len() != policies.len() * REPLY_BYTES {
        return Err(format!(
            "script returned {} bytes for {} policies",
            bytes.len(),
            policies.len()
        ));
    }
    bytes
        .chunks_exact(REPLY_BYTES)
        .map(parse_decision)
        .collect()
}

/// One policy's answer: [`REPLY_BYTES`] of a reply, checked as [`parse_reply`] says.
fn parse_decision(r: &[u8]) -> Result<Decision, String> {
    let allowed = match integer(&r[..8])? {
        0 => false,
        1 => true,
        other => return Err(format!("allowed flag {other}")),
    };
    let decision = Decision {
        allowed,
        limit: integer(&r[32..40])?,
        period_us: integer(&r[40..48])?,
        remaining: integer(&r[8..16])?,
        reset_after_us: integer(&r[16..24])?,
        retry_after_us: integer(&r[24..32])?,
    };
    if decision.period_us == 0 {
        return Err("period 0".to_owned());
    }
    if decision.limit == 0 || decision.remaining > decision.limit {
        return Err(format!(
            "remaining {} above the limit {}",
            decision.remaining, decision.limit
        ));
    }
    Ok(decision)
}

/// One little-endian double of a reply, which must be an integer in [0, 2^53): every value the
/// scripts compute is.
fn integer(at: &[u8]) -> Result<u64, String> {
    let mut le = [0; 8];
    le.copy_from_slice(&at[..8]);
    let value = f64::from_le_bytes(le);
    if (0.0..9_007_199_254_740_992.0).contains(&value) && value.fract() == 0.0 {
        Ok(value as u64)
    } else {
        Err(format!("{value} where a non-negative integer belongs"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_script_has_its_blocks() {
        let several = Shape::SeveralPolicies.source();
        for algorithm in Algorithm::ALL {
            let branch = format!("if code == '{}' then", code(algorithm));
            assert!(several.contains(&branch), "{branch}");
            let one = Shape::OnePolicy(algorithm).source();
            assert!(one.contains("redis.call('TIME')"));
            assert!(one.contains("return struct.pack('<dddddd', allowed and 1 or 0"));
            let longest = tollgate::calendar::LONGEST_MONTH_US;
            assert!(one.contains(&format!("local LONGEST_MONTH_US = {longest}\n")));
            assert!(one.contains(&format!("local ALGORITHM = '{algorithm}'")));
            let is_bucket = matches!(algorithm, Algorithm::TokenBucket | Algorithm::Gcra);
            assert_eq!(
                one.contains("local function bucket"),
                is_bucket,
                "{algorithm:?}"
            );
            assert_eq!(Shape::OnePolicy(algorithm).script().get_hash().len(), 40);
        }
        let shas: std::collections::HashSet<_> = Algorithm::ALL
            .map(|a| Shape::OnePolicy(a).script().get_hash())
            .into_iter()
            .chain([Shape::SeveralPolicies.script().get_hash()])
            .collect();
        assert_eq!(shas.len(), 6);
    }

    /// `count` announces exactly what `write` writes, for every shape, mode and clock.
    #[test]
    fn script_calls_announce_their_argument_count() {
        struct Counting(usize);
        impl Arguments for Counting {
            fn bytes(&mut self, _: &[u8]) {
                self.0 += 1;
            }
            fn pieces(&mut self, _: &[&str]) {
                self.0 += 1;
            }
        }
        let policies: Vec<Policy> = Algorithm::ALL
            .iter()
            .map(|&a| Policy::new(a, 5, Duration::from_secs(1), None).unwrap())
            .collect();
        let name = tollgate::PolicyName::from_static("p");
        let checks: Vec<Check<'_>> = policies
            .iter()
            .map(|policy| Check {
                name: &name,
                policy,
                key: "k",
            })
            .collect();
        let shapes = (1..=checks.len()).map(|n| &checks[..n]);
        for checks in shapes.chain(checks.chunks(1)) {
            for mode in [Mode::Consume, Mode::Peek] {
                for now_us in [None, Some(7)] {
                    for by_source in [false, true] {
                        let call = ScriptCall {
                            prefix: "t",
                            checks,
                            op: Op::Decide { cost: 1, mode },
                            now_us,
                            by_source,
                            wait: None,
                        };
                        let mut counting = Counting(0);
                        call.write(&mut counting);
                        assert_eq!(
                            counting.0,
                            call.count(),
                            "{} checks, {mode:?}, {now_us:?}",
                            checks.len()
                        );
                        assert_eq!(call.to_cmd().args_iter().count(), call.count());
                    }
                }
            }
        }
    }

    #[test]
    fn replies_are_checked() {
        use redis::Value;
        let reply = |values: &[f64]| {
            Value::BulkString(values.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        let p = Policy::new(Algorithm::Gcra, 5, Duration::from_secs(1), Some(7)).unwrap();
        let d = parse_reply(
            &reply(&[1.0, 6.0, 200_000.0, 0.0, 7.0, 1e6]),
            [&p].into_iter(),
        )
        .unwrap();
        assert_eq!(
            d[0],
            Decision {
                allowed: true,
                limit: 7,
                period_us: 1_000_000,
                remaining: 6,
                reset_after_us: 200_000,
                retry_after_us: 0
            }
        );
        let exact = parse_reply(
            &reply(&[0.0, 0.0, 9e15, 2f64.powi(53) - 1.0, 7.0, 1e6]),
            [&p].into_iter(),
        );
        assert_eq!(exact.unwrap()[0].retry_after_us, (1 << 53) - 1);
        for bad in [
            reply(&[1.0, 6.0, 200_000.0, 0.0]),
            reply(&[2.0, 6.0, 0.0, 0.0, 7.0, 1e6]),
            reply(&[0.0, -1.0, 0.0, 0.0, 7.0, 1e6]),
            reply(&[1.0, 8.0, 0.0, 0.0, 7.0, 1e6]),
            reply(&[1.0, 0.5, 0.0, 0.0, 7.0, 1e6]),
            reply(&[1.0, f64::NAN, 0.0, 0.0, 7.0, 1e6]),
            reply(&[0.0, 0.0, 2f64.powi(53), 0.0, 7.0, 1e6]),
            reply(&[1.0, 0.0, 0.0, 0.0, 0.0, 1e6]),
            reply(&[1.0, 0.0, 0.0, 0.0, 7.0, 0.0]),
            Value::Int(1),
            Value::Array(vec![
                Value::Int(1),
                Value::Int(6),
                Value::Int(0),
                Value::Int(0),
            ]),
        ] {
            assert!(parse_reply(&bad, [&p].into_iter()).is_err(), "{bad:?}");
        }
    }
}
