//! Request shapes of the HTTP API. Strings borrow from the body or query when they can, so a
//! check allocates nothing to read its request.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use smallvec::SmallVec;

use super::error::ApiError;

/// A string borrowed from the input, or owned when it had escapes to undo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Cow<'a, str>);

impl Text<'_> {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// `POST /v1/check`: `{"policy":"api","key":"user-123","cost":1}` or `"policies":["a","b"]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest<'a> {
    /// One policy.
    #[serde(borrow, default)]
    pub policy: Option<Text<'a>>,
    /// Several policies, all or nothing.
    #[serde(borrow, default)]
    pub policies: Option<SmallVec<[Text<'a>; 2]>>,
    /// The identifier limited.
    #[serde(borrow)]
    pub key: Text<'a>,
    /// Units to take (default 1).
    #[serde(default)]
    pub cost: Option<u64>,
    /// Wait up to this long for the cost to fit instead of being rejected.
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
}

/// The longest `max_wait_ms` a check may ask for: a minute, far past any HTTP client's
/// patience, and a bound on how long a waiter holds its place.
pub const MAX_WAIT_MS: u64 = 60_000;

impl CheckRequest<'_> {
    /// How long the caller will wait, if it asked to: at most [`MAX_WAIT_MS`].
    pub fn max_wait(&self) -> Result<Option<std::time::Duration>, ApiError> {
        match self.max_wait_ms {
            Some(ms) if ms > MAX_WAIT_MS => Err(ApiError::invalid(format!(
                "max_wait_ms {ms} is too long (at most {MAX_WAIT_MS})"
            ))),
            other => Ok(other.map(std::time::Duration::from_millis)),
        }
    }

    /// The policy names asked for: exactly one of `policy` and a non-empty `policies`.
    pub fn policy_names(&self) -> Result<SmallVec<[&str; 2]>, ApiError> {
        match (&self.policy, &self.policies) {
            (Some(policy), None) => Ok(SmallVec::from_iter([policy.as_str()])),
            (None, Some(policies)) if !policies.is_empty() => {
                Ok(policies.iter().map(Text::as_str).collect())
            }
            (None, Some(_)) => Err(ApiError::invalid(
                "`policies` must name at least one policy",
            )),
            (Some(_), Some(_)) => Err(ApiError::invalid(
                "give either `policy` or `policies`, not both",
            )),
            (None, None) => Err(ApiError::invalid("missing field `policy` (or `policies`)")),
        }
    }

    /// The cost, 1 when not given.
    pub fn cost(&self) -> u64 {
        self.cost.unwrap_or(1)
    }
}

/// `GET /v1/peek?policy=api&key=user-123[&cost=N]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeekQuery<'a> {
    /// The policy.
    #[serde(borrow)]
    pub policy: Text<'a>,
    /// The identifier.
    #[serde(borrow)]
    pub key: Text<'a>,
    /// Units the peek asks about (default 1).
    #[serde(default)]
    pub cost: Option<u64>,
}

impl<'a> PeekQuery<'a> {
    /// Parse a query string, as a 400 on any error.
    pub fn parse(query: &'a str) -> Result<PeekQuery<'a>, ApiError> {
        parse_query(query)
    }
}

/// Parse a query string into `T`, as a 400 on any error.
///
/// A name or value whose percent-decoded bytes are not UTF-8 is refused rather than decoded
/// lossily: `%ff` and `%fe` would otherwise both become U+FFFD, and two different keys would
/// share one limit (the JSON endpoints refuse the same bytes).
pub fn parse_query<'a, T: Deserialize<'a>>(query: &'a str) -> Result<T, ApiError> {
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !decodes_to_utf8(value) {
            return Err(ApiError::invalid(format!(
                "query parameter `{}` is not valid UTF-8 once percent-decoded",
                String::from_utf8_lossy(&percent_decode(name))
            )));
        }
        if !decodes_to_utf8(name) {
            return Err(ApiError::invalid(
                "a query parameter name is not valid UTF-8 once percent-decoded",
            ));
        }
    }
    serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::invalid(format!("invalid query string: {e}")))
}

/// Whether the `application/x-www-form-urlencoded` text `encoded` decodes to UTF-8.
fn decodes_to_utf8(encoded: &str) -> bool {
    !encoded.contains('%') || std::str::from_utf8(&percent_decode(encoded)).is_ok()
}

/// Undo `%XX` escapes and `+` (a space); a `%` not followed by two hex digits stays as it is,
/// as the form-urlencoded parser leaves it.
fn percent_decode(encoded: &str) -> Vec<u8> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// `POST /v1/reset`: `{"policy":"api","key":"user-123"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest<'a> {
    /// The policy.
    #[serde(borrow)]
    pub policy: Text<'a>,
    /// The identifier.
    #[serde(borrow)]
    pub key: Text<'a>,
}

/// `POST /v1/adjust`: `{"policy":"api","key":"u","delta":-40}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustRequest<'a> {
    /// The policy.
    #[serde(borrow)]
    pub policy: Text<'a>,
    /// The identifier.
    #[serde(borrow)]
    pub key: Text<'a>,
    /// Units to charge (> 0) or refund (< 0).
    pub delta: i64,
}

/// `PUT /v1/overrides`:
/// `{"policy":"api","key":"tenant-7","limit":5000,"period":"1m","burst":6000,"expires_in_ms":86400000}`
/// (period, burst and expiry optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideRequest<'a> {
    /// The policy overridden.
    #[serde(borrow)]
    pub policy: Text<'a>,
    /// The identifier.
    #[serde(borrow)]
    pub key: Text<'a>,
    /// Requests per period.
    pub limit: u64,
    /// The period (`1m`, `90s`, `1h 30m`); the policy's when omitted.
    #[serde(borrow, default)]
    pub period: Option<Text<'a>>,
    /// Token bucket / GCRA capacity.
    #[serde(default)]
    pub burst: Option<u64>,
    /// How long the override stands; until deleted when omitted.
    #[serde(default)]
    pub expires_in_ms: Option<u64>,
}

impl OverrideRequest<'_> {
    /// What the limiter takes; a period that is neither a duration nor `month` is a 400.
    pub fn spec(&self) -> Result<tollgate::OverrideSpec, ApiError> {
        let period = self
            .period
            .as_ref()
            .map(|text| {
                let text = text.as_str();
                if tollgate::policy::is_month_period(text) {
                    return Ok(tollgate::OverridePeriod::CalendarMonths);
                }
                humantime::parse_duration(text)
                    .map(tollgate::OverridePeriod::Every)
                    .map_err(|e| ApiError::invalid(format!("invalid period `{text}`: {e}")))
            })
            .transpose()?;
        Ok(tollgate::OverrideSpec {
            limit: self.limit,
            period,
            burst: self.burst,
            expires_in: self.expires_in_ms.map(std::time::Duration::from_millis),
        })
    }
}

/// `GET`/`DELETE /v1/overrides?policy=api[&key=tenant-7][&cursor=..]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideQuery<'a> {
    /// The policy.
    #[serde(borrow)]
    pub policy: Text<'a>,
    /// The identifier: one override; without it, a page of the policy's.
    #[serde(borrow, default)]
    pub key: Option<Text<'a>>,
    /// Where a listing's page starts (the previous page's `next_cursor`).
    #[serde(borrow, default)]
    pub cursor: Option<Text<'a>>,
}

impl<'a> OverrideQuery<'a> {
    /// Parse a query string, as a 400 on any error.
    pub fn parse(query: &'a str) -> Result<OverrideQuery<'a>, ApiError> {
        parse_query(query)
    }
}

/// `POST /v1/acquire`: `{"policy":"jobs","key":"tenant-7","cost":1}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcquireRequest<'a> {
    /// The concurrency policy.
    #[serde(borrow)]
    pub policy: Text<'a>,
    /// The identifier.
    #[serde(borrow)]
    pub key: Text<'a>,
    /// Units to lease (default 1).
    #[serde(default)]
    pub cost: Option<u64>,
}

/// `POST /v1/release` and `POST /v1/renew`: `{"policy":"jobs","key":"tenant-7","lease":"<id>"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest<'a> {
    /// The concurrency policy.
    #[serde(borrow)]
    pub policy: Text<'a>,
    /// The identifier.
    #[serde(borrow)]
    pub key: Text<'a>,
    /// The id an acquire returned.
    #[serde(borrow)]
    pub lease: Text<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrows_unless_escaped() {
        let body = br#"{"policy":"api","key":"a\"b","cost":2}"#;
        let req: CheckRequest = serde_json::from_slice(body).unwrap();
        assert!(matches!(
            req.policy.as_ref().unwrap().0,
            Cow::Borrowed("api")
        ));
        assert_eq!(req.key.as_str(), "a\"b");
        assert_eq!(req.cost(), 2);
        assert_eq!(req.policy_names().unwrap().as_slice(), ["api"]);
    }

    #[test]
    fn exactly_one_of_policy_and_policies() {
        let parse = |b: &str| {
            serde_json::from_str::<CheckRequest>(b)
                .unwrap()
                .policy_names()
                .map(|n| n.len())
        };
        assert_eq!(parse(r#"{"policies":["a","b"],"key":"k"}"#), Ok(2));
        assert!(parse(r#"{"key":"k"}"#).is_err());
        assert!(parse(r#"{"policies":[],"key":"k"}"#).is_err());
        assert!(parse(r#"{"policy":"a","policies":["b"],"key":"k"}"#).is_err());
        assert!(
            serde_json::from_str::<CheckRequest>(r#"{"policy":"a","key":"k","extra":1}"#).is_err()
        );
        assert!(serde_json::from_str::<CheckRequest>(r#"{"policy":"a","key":7}"#).is_err());
    }

    #[test]
    fn peek_query() {
        let q = PeekQuery::parse("policy=api&key=user%20123&cost=3").unwrap();
        assert_eq!(
            (q.policy.as_str(), q.key.as_str(), q.cost),
            ("api", "user 123", Some(3))
        );
        assert!(PeekQuery::parse("policy=api").is_err());
        assert!(PeekQuery::parse("policy=api&key=k&cost=x").is_err());
    }

    #[test]
    fn query_bytes_that_are_not_utf8_are_refused() {
        for bad in [
            "policy=api&key=%ff",
            "policy=api&key=%fe",
            "policy=a%c3&key=k",
        ] {
            assert!(PeekQuery::parse(bad).is_err(), "{bad}");
        }
        let q = PeekQuery::parse("policy=api&key=%EF%BF%BD+%C3%A9%2").unwrap();
        assert_eq!(q.key.as_str(), "\u{fffd} \u{e9}%2");
        assert_eq!(percent_decode("%4"), b"%4");
        assert_eq!(percent_decode("a%41%"), b"aA%");
    }
}
