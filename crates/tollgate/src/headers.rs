//! The values of the IETF `RateLimit` and `RateLimit-Policy` response headers
//! (draft-ietf-httpapi-ratelimit-headers), as text: one renderer for the server, the tower
//! middleware and the Envoy service, so all three say the same thing for the same state.
//!
//! ```text
//! RateLimit-Policy: "api";q=150;w=60     q: the policy's capacity, w: its period in seconds
//! RateLimit: "api";r=149;t=1             r: what remains, t: seconds until the quota is full again
//! Retry-After: 1                         on a rejection: seconds until the same cost could pass
//! ```
//!
//! **`q` is the capacity**: the `limit` every [`Decision`] reports, which is the burst of a token
//! bucket or GCRA policy and the limit of the window algorithms. The draft defines `q` as the
//! quota units the policy allocates and `r` as the units remaining of it, so `r <= q` must hold;
//! a bucket with burst 150 refilled at 100 per minute can have 150 remaining, so its quota is
//! 150, and `w` (the period) is the time over which the policy's `limit` refills. Seconds are
//! rounded up, so a wait is never reported as 0 when it is not.

use std::fmt::Write as _;

use crate::decision::Decision;

const MICROS_PER_SECOND: u64 = 1_000_000;

/// Microseconds as whole seconds, rounded up.
pub fn secs_ceil(us: u64) -> u64 {
    us.div_ceil(MICROS_PER_SECOND)
}

/// Append `name` as a structured-field string (RFC 9651 §3.3.3): quoted, `"` and `\` escaped,
/// any character that is not printable ASCII replaced by `_` (a [`crate::PolicyName`] has none
/// of these; other text, such as a descriptor value, may).
pub fn push_name(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
}

/// Append one `RateLimit-Policy` item: `"name";q=<capacity>;w=<period, seconds>`.
pub fn push_policy_item(out: &mut String, name: &str, capacity: u64, period_us: u64) {
    push_separator(out);
    push_name(out, name);
    let _ = write!(out, ";q={capacity};w={}", secs_ceil(period_us));
}

/// Append one `RateLimit` item: `"name";r=<remaining>;t=<seconds until full>`.
pub fn push_quota_item(out: &mut String, name: &str, decision: &Decision) {
    push_separator(out);
    push_name(out, name);
    let _ = write!(
        out,
        ";r={};t={}",
        decision.remaining,
        secs_ceil(decision.reset_after_us)
    );
}

/// `Retry-After` of a rejection, seconds: rounded up and at least 1 (0 would invite a hot loop).
pub fn retry_after_secs(decision: &Decision) -> u64 {
    secs_ceil(decision.retry_after_us).max(1)
}

/// Items of one header are separated by `, `.
fn push_separator(out: &mut String) {
    if !out.is_empty() {
        out.push_str(", ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_structured_fields() {
        let mut policy = String::new();
        push_policy_item(&mut policy, "api", 150, 60_500_000);
        push_policy_item(&mut policy, "odd \"name\"\u{e9}", 3, 1);
        assert_eq!(policy, r#""api";q=150;w=61, "odd \"name\"_";q=3;w=1"#);
        let d = Decision {
            allowed: false,
            limit: 10,
            period_us: 1_000_000,
            remaining: 0,
            reset_after_us: 1_000_001,
            retry_after_us: 1,
        };
        let mut quota = String::new();
        push_quota_item(&mut quota, "a", &d);
        assert_eq!(quota, "\"a\";r=0;t=2");
        assert_eq!(retry_after_secs(&d), 1);
        assert_eq!(retry_after_secs(&Decision::default()), 1);
        assert_eq!((secs_ceil(0), secs_ceil(1_000_000)), (0, 1));
    }
}
