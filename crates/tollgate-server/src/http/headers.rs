//! Rate-limit response headers as `HeaderValue`s: the core's renderer ([`tollgate::headers`],
//! which says what `q`, `w`, `r` and `t` mean) shared with the tower middleware and the Envoy
//! service, one list item per policy checked, and `Retry-After` on a rejection.

use ::http::{HeaderName, HeaderValue};
use tollgate::Decision;
use tollgate::headers::{push_policy_item, push_quota_item, retry_after_secs};

/// `RateLimit-Policy`.
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `RateLimit-Policy` for `(name, capacity, period_us)` items: `"name";q=<capacity>;w=<period
/// seconds>` each (the capacity decided under: an override's, where one stood).
pub fn policy_header<'a>(items: impl Iterator<Item = (&'a str, u64, u64)>) -> HeaderValue {
    let mut value = String::with_capacity(64);
    for (name, capacity, period_us) in items {
        push_policy_item(&mut value, name, capacity, period_us);
    }
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Join precomputed items into one `RateLimit-Policy` value.
pub fn join_items<'a>(items: impl Iterator<Item = &'a HeaderValue>) -> HeaderValue {
    let mut value = Vec::with_capacity(128);
    for (i, item) in items.enumerate() {
        if i > 0 {
            value.extend_from_slice(b", ");
        }
        value.extend_from_slice(item.as_bytes());
    }
    HeaderValue::from_bytes(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `RateLimit`: `"name";r=<remaining>;t=<seconds to reset>` per policy.
pub fn ratelimit<'a>(items: impl Iterator<Item = (&'a str, &'a Decision)>) -> HeaderValue {
    let mut value = String::with_capacity(64);
    for (name, decision) in items {
        push_quota_item(&mut value, name, decision);
    }
    HeaderValue::try_from(value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `Retry-After` in whole seconds, rounded up and at least 1 (a rejection always waits).
pub fn retry_after(decision: &Decision) -> HeaderValue {
    HeaderValue::from(retry_after_secs(decision))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tollgate::{Algorithm, Policy};

    #[test]
    fn renders_header_values() {
        let api = Policy::new(
            Algorithm::TokenBucket,
            100,
            Duration::from_millis(60_500),
            Some(150),
        )
        .unwrap();
        let item = (api.capacity(), api.period_us());
        assert_eq!(
            policy_header(std::iter::once(("api", item.0, item.1))),
            "\"api\";q=150;w=61"
        );
        let items = [
            HeaderValue::from_static("\"a\";q=1;w=1"),
            HeaderValue::from_static("\"b\";q=2;w=2"),
        ];
        assert_eq!(join_items(items.iter()), "\"a\";q=1;w=1, \"b\";q=2;w=2");
        let d = Decision {
            allowed: false,
            limit: 10,
            period_us: 1_000_000,
            remaining: 0,
            reset_after_us: 1_000_001,
            retry_after_us: 1,
        };
        assert_eq!(
            ratelimit([("a", &d), ("b", &d)].into_iter()),
            "\"a\";r=0;t=2, \"b\";r=0;t=2"
        );
        assert_eq!(retry_after(&d), "1");
    }
}
