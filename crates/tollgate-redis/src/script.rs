//! The Lua script: the per-algorithm files and the dispatcher, concatenated at compile time into
//! one script so a check over several policies (of any algorithms) is one atomic call.

use std::sync::LazyLock;

use tollgate::{Algorithm, Decision, Decisions, Mode, Policy};

/// The whole script, as sent with `SCRIPT LOAD` / `EVAL`.
pub const SOURCE: &str = concat!(
    include_str!("../scripts/prelude.lua"),
    "\n",
    include_str!("../scripts/fixed_window.lua"),
    "\n",
    include_str!("../scripts/sliding_log.lua"),
    "\n",
    include_str!("../scripts/sliding_window.lua"),
    "\n",
    include_str!("../scripts/bucket.lua"),
    "\n",
    include_str!("../scripts/token_bucket.lua"),
    "\n",
    include_str!("../scripts/gcra.lua"),
    "\n",
    include_str!("../scripts/dispatch.lua"),
);

/// The script with its SHA-1 computed once.
pub static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(SOURCE));

/// Integers the script returns per policy.
pub const REPLY_WIDTH: usize = 4;

/// The algorithm's code in `ARGV` (its index in the script's `ALGORITHMS`).
pub const fn code(algorithm: Algorithm) -> u8 {
    match algorithm {
        Algorithm::FixedWindow => 1,
        Algorithm::SlidingLog => 2,
        Algorithm::SlidingWindow => 3,
        Algorithm::TokenBucket => 4,
        Algorithm::Gcra => 5,
    }
}

/// Where script arguments go: a [`redis::ScriptInvocation`], or a plain `EVALSHA`
/// [`redis::Cmd`] (for a pipeline).
pub trait ScriptArgs {
    /// Append one argument.
    fn arg_of<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self;
}

impl ScriptArgs for redis::ScriptInvocation<'_> {
    fn arg_of<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.arg(arg)
    }
}

impl ScriptArgs for redis::Cmd {
    fn arg_of<T: redis::ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.arg(arg)
    }
}

/// Add `ARGV` to an invocation: mode, cost, injected time (or empty for Redis `TIME`), then
/// code, limit, period and capacity of each policy.
pub fn push_args<'p>(
    invocation: &mut impl ScriptArgs,
    mode: Mode,
    cost: u64,
    now_us: Option<u64>,
    policies: impl Iterator<Item = &'p Policy>,
) {
    invocation.arg_of(match mode {
        Mode::Consume => "c",
        Mode::Peek => "p",
    });
    invocation.arg_of(cost);
    match now_us {
        Some(now) => invocation.arg_of(now),
        None => invocation.arg_of(""),
    };
    for policy in policies {
        invocation
            .arg_of(code(policy.algorithm()))
            .arg_of(policy.limit())
            .arg_of(policy.period_us())
            .arg_of(policy.capacity());
    }
}

/// Turn the script's flat reply into one decision per policy, checking its shape.
pub fn parse_reply<'p>(
    reply: &[i64],
    policies: impl ExactSizeIterator<Item = &'p Policy>,
) -> Result<Decisions, String> {
    if reply.len() != policies.len() * REPLY_WIDTH {
        return Err(format!(
            "script returned {} integers for {} policies",
            reply.len(),
            policies.len()
        ));
    }
    let non_negative = |v: i64| u64::try_from(v).map_err(|_| format!("negative value {v}"));
    policies
        .zip(reply.chunks_exact(REPLY_WIDTH))
        .map(|(policy, r)| {
            let allowed = match r[0] {
                0 => false,
                1 => true,
                other => return Err(format!("allowed flag {other}")),
            };
            let decision = Decision {
                allowed,
                limit: policy.capacity(),
                remaining: non_negative(r[1])?,
                reset_after_us: non_negative(r[2])?,
                retry_after_us: non_negative(r[3])?,
            };
            if decision.remaining > decision.limit {
                return Err(format!(
                    "remaining {} above the limit {}",
                    decision.remaining, decision.limit
                ));
            }
            Ok(decision)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_algorithm_file_is_in_the_script() {
        for needle in [
            "local function fixed_window",
            "local function sliding_log",
            "local function sliding_window",
            "local function token_bucket",
            "local function gcra",
            "local function bucket",
            "local ALGORITHMS = { fixed_window, sliding_log, sliding_window, token_bucket, gcra }",
            "redis.call('TIME')",
        ] {
            assert!(SOURCE.contains(needle), "{needle}");
        }
        assert_eq!(SCRIPT.get_hash().len(), 40);
    }

    #[test]
    fn replies_are_checked() {
        let p = Policy::new(Algorithm::Gcra, 5, Duration::from_secs(1), Some(7)).unwrap();
        let d = parse_reply(&[1, 6, 200_000, 0], [&p].into_iter()).unwrap();
        assert_eq!(
            d[0],
            Decision {
                allowed: true,
                limit: 7,
                remaining: 6,
                reset_after_us: 200_000,
                retry_after_us: 0
            }
        );
        assert!(parse_reply(&[1, 6, 200_000], [&p].into_iter()).is_err());
        assert!(parse_reply(&[2, 6, 0, 0], [&p].into_iter()).is_err());
        assert!(parse_reply(&[0, -1, 0, 0], [&p].into_iter()).is_err());
        assert!(parse_reply(&[1, 8, 0, 0], [&p].into_iter()).is_err());
    }
}
