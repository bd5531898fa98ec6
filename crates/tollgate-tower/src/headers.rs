//! Response headers (IETF httpapi `RateLimit` / `RateLimit-Policy`, rendered by the core's
//! [`tollgate::headers`], which says what each parameter means) and error bodies.
//!
//! ```text
//! RateLimit-Policy: "api";q=100;w=60          quota q (the capacity) per window w seconds
//! RateLimit: "api";r=99;t=1                    r remaining, t seconds until the quota is full again
//! X-RateLimit-Limit: 100                       legacy (optional), for the most restrictive policy
//! X-RateLimit-Remaining: 99
//! X-RateLimit-Reset: 1                         seconds (a delta, not a timestamp)
//! Retry-After: 7                               on 429 only: seconds, rounded up, at least 1
//! ```

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderName, HeaderValue};
use tollgate::headers::{push_quota_item, retry_after_secs, secs_ceil};
use tollgate::{Decision, Verdict};

use crate::policy_set::PolicySet;

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit` (legacy).
pub static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining` (legacy).
pub static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset` (legacy).
pub static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
static DEGRADED: HeaderValue = HeaderValue::from_static("1");

/// Which optional headers to write.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderOptions {
    pub(crate) legacy: bool,
    pub(crate) degraded: Option<HeaderName>,
}

/// Write the quota headers of `verdict` (decided over `set`) into `headers`.
pub(crate) fn write_quota(
    headers: &mut HeaderMap,
    set: &PolicySet,
    verdict: &Verdict,
    options: &HeaderOptions,
) {
    headers.insert(
        RATELIMIT_POLICY.clone(),
        set.policy_header(&verdict.decisions),
    );
    let mut value = String::with_capacity(24 * set.names().len());
    for (name, decision) in set.names().zip(&verdict.decisions) {
        push_quota_item(&mut value, name, decision);
    }
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(RATELIMIT.clone(), value);
    }
    if options.legacy {
        let d = &verdict.decision;
        headers.insert(X_RATELIMIT_LIMIT.clone(), d.limit.into());
        headers.insert(X_RATELIMIT_REMAINING.clone(), d.remaining.into());
        headers.insert(
            X_RATELIMIT_RESET.clone(),
            secs_ceil(d.reset_after_us).into(),
        );
    }
    if let (true, Some(name)) = (verdict.degraded, &options.degraded) {
        headers.insert(name.clone(), DEGRADED.clone());
    }
}

/// Headers and body of a 429.
pub(crate) fn write_rejection(headers: &mut HeaderMap, decision: &Decision) -> Bytes {
    headers.insert(RETRY_AFTER, retry_after_secs(decision).into());
    headers.insert(CONTENT_TYPE, APPLICATION_JSON.clone());
    Bytes::from(format!(
        r#"{{"error":{{"code":"rate_limited","retry_after_ms":{}}}}}"#,
        decision.retry_after_ms()
    ))
}

/// Headers and body of the 503 answered when the store failed under `deny`: come back when the
/// store is tried again.
pub(crate) fn write_unavailable(headers: &mut HeaderMap) -> Bytes {
    let retry_after = secs_ceil(tollgate::limiter::FAILURE_RETRY_US).max(1);
    headers.insert(RETRY_AFTER, retry_after.into());
    write_error(
        headers,
        "rate_limiter_unavailable",
        "the rate limiter's store is unavailable",
    )
}

/// Headers and body of an error answered by the layer itself (400, 500, 503).
pub(crate) fn write_error(headers: &mut HeaderMap, code: &str, message: &str) -> Bytes {
    headers.insert(CONTENT_TYPE, APPLICATION_JSON.clone());
    let mut body = String::with_capacity(48 + code.len() + message.len());
    body.push_str(r#"{"error":{"code":""#);
    json_escape(&mut body, code);
    body.push_str(r#"","message":""#);
    json_escape(&mut body, message);
    body.push_str(r#""}}"#);
    Bytes::from(body)
}

fn json_escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_is_json() {
        let mut h = HeaderMap::new();
        let body = write_error(&mut h, "invalid_request", "no \"key\"\n");
        assert_eq!(
            &body[..],
            br#"{"error":{"code":"invalid_request","message":"no \"key\"\u000a"}}"#
        );
        assert_eq!(h[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn rejection_body() {
        let mut h = HeaderMap::new();
        let d = Decision {
            retry_after_us: 1_234_001,
            ..Decision::default()
        };
        let body = write_rejection(&mut h, &d);
        assert_eq!(
            &body[..],
            br#"{"error":{"code":"rate_limited","retry_after_ms":1235}}"#
        );
        assert_eq!(h[RETRY_AFTER], "2");
    }
}
