//! Rate-limit response headers: IETF httpapi ratelimit-headers (draft 10) structured fields,
//! one list item per policy checked, and `Retry-After` on a rejection.
//!
//! ```text
//! RateLimit-Policy: "api";q=100;w=60
//! RateLimit: "api";r=99;t=1
//! Retry-After: 3
//! ```
//! `q` is the quota (the decision's `limit`), `w` the window in seconds (the period, rounded
//! up), `r` what remains, `t` the seconds until the quota is full again (rounded up). Policy
//! names are `[A-Za-z0-9_.-]`, so they are valid sf-strings as they are.

use axum::http::{HeaderName, HeaderValue};
use smallvec::SmallVec;
use tollgate::{Decision, Policy};

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

const MICROS_PER_SECOND: u64 = 1_000_000;

/// The `RateLimit-Policy` item of one policy: `"name";q=<capacity>;w=<period seconds>`.
pub fn policy_item(name: &str, policy: &Policy) -> String {
    format!(
        "\"{name}\";q={};w={}",
        policy.capacity(),
        policy.period_us().div_ceil(MICROS_PER_SECOND)
    )
}

/// A `RateLimit-Policy` item of `policy` under an override of capacity `limit`.
pub fn policy_item_limited(name: &str, policy: &Policy, limit: u64) -> String {
    format!(
        "\"{name}\";q={limit};w={}",
        policy.period_us().div_ceil(MICROS_PER_SECOND)
    )
}

/// Join precomputed items into one `RateLimit-Policy` value.
pub fn join_items<'a>(items: impl Iterator<Item = &'a HeaderValue>) -> HeaderValue {
    let mut value = SmallVec::<[u8; 128]>::new();
    for (i, item) in items.enumerate() {
        if i > 0 {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(item.as_bytes());
    }
    to_header_value(&value)
}

/// `RateLimit`: `"name";r=<remaining>;t=<seconds to reset>` per policy.
pub fn ratelimit<'a>(items: impl Iterator<Item = (&'a str, &'a Decision)>) -> HeaderValue {
    let mut value = SmallVec::<[u8; 128]>::new();
    for (i, (name, decision)) in items.enumerate() {
        if i > 0 {
            value.extend_from_slice(b", ");
        }
        // By hand rather than `write!`: this runs on every decision.
        let mut digits = itoa::Buffer::new();
        value.push(b'"');
        value.extend_from_slice(name.as_bytes());
        value.extend_from_slice(b"\";r=");
        value.extend_from_slice(digits.format(decision.remaining).as_bytes());
        value.extend_from_slice(b";t=");
        let reset_s = decision.reset_after_us.div_ceil(MICROS_PER_SECOND);
        value.extend_from_slice(digits.format(reset_s).as_bytes());
    }
    to_header_value(&value)
}

/// `Retry-After` in whole seconds, rounded up and at least 1 (a rejection always waits).
pub fn retry_after(decision: &Decision) -> HeaderValue {
    HeaderValue::from(decision.retry_after_us.div_ceil(MICROS_PER_SECOND).max(1))
}

/// Names are validated at startup, so the bytes are always valid; an empty value is the
/// harmless answer should that ever not hold.
fn to_header_value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tollgate::Algorithm;

    #[test]
    fn renders_structured_fields() {
        let api = Policy::new(
            Algorithm::TokenBucket,
            100,
            Duration::from_millis(60_500),
            Some(150),
        )
        .unwrap();
        assert_eq!(policy_item("api", &api), "\"api\";q=150;w=61");
        let items = [
            HeaderValue::from_static("\"a\";q=1;w=1"),
            HeaderValue::from_static("\"b\";q=2;w=2"),
        ];
        assert_eq!(join_items(items.iter()), "\"a\";q=1;w=1, \"b\";q=2;w=2");
        let d = Decision {
            allowed: false,
            limit: 10,
            remaining: 0,
            reset_after_us: 1_000_001,
            retry_after_us: 1,
        };
        assert_eq!(ratelimit([("a", &d)].into_iter()), "\"a\";r=0;t=2");
        assert_eq!(retry_after(&d), "1");
    }
}
