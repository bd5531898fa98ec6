//! The JSON body of a decision (`POST /v1/check`, `GET /v1/peek`), rendered by hand: it is on
//! every request, and writing seven known fields with `itoa` into one buffer costs a fraction
//! of a generic serializer.
//!
//! ```text
//! {"allowed":true,"policy":"api","limit":100,"remaining":99,"reset_after_ms":600,"retry_after_ms":0,"degraded":false}
//! ```

use tollgate::Decision;

/// Render the decision reported for `policy` (a [`tollgate::PolicyName`], which needs no JSON
/// escaping; any other name is escaped all the same).
/// `shadow`: for a policy in shadow mode, whether it would have denied (`"shadow":true,
/// "shadow_denied":..`); `None` (the fields left out) otherwise. `waited_ms`: for a check that
/// asked to wait, how long it did (`"waited_ms":..`).
pub fn render(
    policy: &str,
    decision: &Decision,
    degraded: bool,
    shadow: Option<bool>,
    waited_ms: Option<u64>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + policy.len());
    let mut digits = itoa::Buffer::new();
    out.extend_from_slice(if decision.allowed {
        b"{\"allowed\":true,\"policy\":"
    } else {
        b"{\"allowed\":false,\"policy\":"
    });
    if policy
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        out.push(b'"');
        out.extend_from_slice(policy.as_bytes());
        out.push(b'"');
    } else {
        // A `&str` always serializes.
        let _ = serde_json::to_writer(&mut out, policy);
    }
    for (field, value) in [
        (&b",\"limit\":"[..], decision.limit),
        (b",\"remaining\":", decision.remaining),
        (b",\"reset_after_ms\":", decision.reset_after_ms()),
        (b",\"retry_after_ms\":", decision.retry_after_ms()),
    ] {
        out.extend_from_slice(field);
        out.extend_from_slice(digits.format(value).as_bytes());
    }
    out.extend_from_slice(if degraded {
        b",\"degraded\":true"
    } else {
        b",\"degraded\":false"
    });
    match shadow {
        None => {}
        Some(true) => out.extend_from_slice(b",\"shadow\":true,\"shadow_denied\":true"),
        Some(false) => out.extend_from_slice(b",\"shadow\":true,\"shadow_denied\":false"),
    }
    if let Some(waited) = waited_ms {
        out.extend_from_slice(b",\"waited_ms\":");
        out.extend_from_slice(digits.format(waited).as_bytes());
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::render;
    use serde::Serialize;
    use tollgate::Decision;

    /// The shape the API documents, serialized generically: the hand-rendered body must be
    /// byte for byte the same.
    #[derive(Serialize)]
    struct Expected<'a> {
        allowed: bool,
        policy: &'a str,
        limit: u64,
        remaining: u64,
        reset_after_ms: u64,
        retry_after_ms: u64,
        degraded: bool,
    }

    #[test]
    fn same_bytes_as_serde() {
        let decisions = [
            Decision {
                allowed: true,
                limit: 100,
                period_us: 60_000_000,
                remaining: 99,
                reset_after_us: 600_001,
                retry_after_us: 0,
            },
            Decision {
                allowed: false,
                limit: u64::MAX,
                period_us: u64::MAX,
                remaining: 0,
                reset_after_us: u64::MAX,
                retry_after_us: 1,
            },
            Decision::default(),
        ];
        for policy in ["api", "login.v2_x-y", "", "quote\"back\\slash\u{1}é"] {
            for decision in &decisions {
                for degraded in [false, true] {
                    let expected = serde_json::to_vec(&Expected {
                        allowed: decision.allowed,
                        policy,
                        limit: decision.limit,
                        remaining: decision.remaining,
                        reset_after_ms: decision.reset_after_ms(),
                        retry_after_ms: decision.retry_after_ms(),
                        degraded,
                    })
                    .unwrap();
                    let rendered = render(policy, decision, degraded, None, None);
                    assert_eq!(
                        String::from_utf8_lossy(&rendered),
                        String::from_utf8_lossy(&expected)
                    );
                }
            }
        }
    }
}
