//! Optional RateLimit response headers (`response_headers_to_add`), which Envoy adds to the
//! response it sends the client.
//!
//! Like upstream, they describe one descriptor: an over-limit one if any, else the one with the
//! fewest requests remaining.

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use tollgate::Decision;
use tollgate::headers::{push_policy_item, push_quota_item};

const MICROS_PER_SECOND: u64 = 1_000_000;

/// Which headers to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResponseHeaders {
    /// None (the default, as upstream).
    #[default]
    Off,
    /// The IETF httpapi draft, rendered as tollgate's HTTP API and middleware render them
    /// (`tollgate::headers`):
    /// `RateLimit-Policy: "name";q=100;w=60` and `RateLimit: "name";r=99;t=42`.
    Draft,
    /// Upstream's `LIMIT_RESPONSE_HEADERS_ENABLED` headers with their default names:
    /// `RateLimit-Limit: 100`, `RateLimit-Remaining: 99`, `RateLimit-Reset: 42` (seconds).
    Legacy,
}

impl std::str::FromStr for ResponseHeaders {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "off" => Ok(ResponseHeaders::Off),
            "draft" => Ok(ResponseHeaders::Draft),
            "legacy" => Ok(ResponseHeaders::Legacy),
            other => Err(format!(
                "unknown response_headers `{other}` (expected off, draft or legacy)"
            )),
        }
    }
}

/// What the headers say about the chosen descriptor.
#[derive(Debug, Clone, Copy)]
pub struct HeaderSource<'a> {
    /// The limit's name (rule name, or its stats key when unnamed).
    pub name: &'a str,
    /// Requests per window.
    pub quota: u64,
    /// Window length, seconds.
    pub window_secs: u64,
    /// Requests remaining.
    pub remaining: u64,
    /// Seconds until the quota is back.
    pub reset_secs: u64,
    /// Whether this descriptor was over its limit.
    pub over_limit: bool,
}

/// Pick the descriptor the headers describe: the last over-limit one, else the fewest remaining.
pub fn choose<'a>(sources: impl Iterator<Item = HeaderSource<'a>>) -> Option<HeaderSource<'a>> {
    sources.fold(None, |best: Option<HeaderSource<'a>>, s| match best {
        Some(b) if b.over_limit && !s.over_limit => Some(b),
        Some(b) if !s.over_limit && b.remaining <= s.remaining => Some(b),
        _ => Some(s),
    })
}

/// The headers of `kind` for `source`.
pub fn render(kind: ResponseHeaders, source: &HeaderSource<'_>) -> Vec<HeaderValue> {
    let header = |key: &str, value: String| HeaderValue {
        key: key.to_owned(),
        value,
        raw_value: Vec::new(),
    };
    match kind {
        ResponseHeaders::Off => Vec::new(),
        ResponseHeaders::Draft => {
            let (mut policy, mut quota) = (String::new(), String::new());
            let window_us = source.window_secs.saturating_mul(MICROS_PER_SECOND);
            push_policy_item(&mut policy, source.name, source.quota, window_us);
            let state = Decision {
                remaining: source.remaining,
                reset_after_us: source.reset_secs.saturating_mul(MICROS_PER_SECOND),
                ..Decision::default()
            };
            push_quota_item(&mut quota, source.name, &state);
            vec![
                header("RateLimit-Policy", policy),
                header("RateLimit", quota),
            ]
        }
        ResponseHeaders::Legacy => vec![
            header("RateLimit-Limit", source.quota.to_string()),
            header("RateLimit-Remaining", source.remaining.to_string()),
            header("RateLimit-Reset", source.reset_secs.to_string()),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, remaining: u64, over_limit: bool) -> HeaderSource<'_> {
        HeaderSource {
            name,
            quota: 10,
            window_secs: 60,
            remaining,
            reset_secs: 7,
            over_limit,
        }
    }

    #[test]
    fn the_tightest_descriptor_is_reported() {
        let picked = choose([source("a", 5, false), source("b", 2, false)].into_iter());
        assert_eq!(picked.map(|s| s.name), Some("b"));
        let picked = choose(
            [
                source("a", 0, true),
                source("b", 0, false),
                source("c", 3, false),
            ]
            .into_iter(),
        );
        assert_eq!(picked.map(|s| s.name), Some("a"));
        let draft = render(ResponseHeaders::Draft, &source("x\"y", 4, false));
        assert_eq!(draft[0].value, r#""x\"y";q=10;w=60"#);
        assert_eq!(draft[1].value, r#""x\"y";r=4;t=7"#);
        let legacy = render(ResponseHeaders::Legacy, &source("x", 4, false));
        assert_eq!(legacy[1].key, "RateLimit-Remaining");
        assert_eq!(legacy[1].value, "4");
        assert!(render(ResponseHeaders::Off, &source("x", 4, false)).is_empty());
    }
}
