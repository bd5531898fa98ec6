//! How a matched descriptor becomes a tollgate check: a policy name and an identifier.
//!
//! Every instance derives both from the config and the request alone, so instances sharing a
//! store share counters:
//!
//! - **policy name** `envoy/<rule>/<unit>`, where `<rule>` is the rule's path as upstream names
//!   its stats (`<domain>.<key>_<value>.<key>`, the config's values, so wildcards stay `*`), or
//!   `<domain>.(override)` for a request's limit override. The unit is part of the name: when a
//!   reload changes a rule's unit its counters start afresh (as upstream, whose keys carry the
//!   window), while a changed `requests_per_unit` keeps the count.
//! - **identifier** `<domain>|<key>=<value>|<key>=<value>...`: the request's entries in order, the
//!   value of a `share_threshold` entry replaced by its wildcard pattern so that every matching
//!   value shares one counter.
//!
//! Characters outside a small safe set are percent-encoded (`%7C` for `|`), so no two different
//! descriptors produce the same identifier, and every name is a valid [`PolicyName`] (the core's
//! one rule for names: no braces, no `:`, printable ASCII). Names longer than [`MAX_NAME_LEN`]
//! and identifiers longer than [`MAX_IDENTIFIER_LEN`] are replaced by a SHA-256 digest (the
//! Redis store further hashes identifiers over 128 bytes on its own).
//!
//! With the Redis store a key reads, for example:
//! `tollgate:envoy/rl.remote_address/minute:fixed-window:{rl|remote_address=10.0.0.1}`.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};
use tollgate::{MAX_POLICY_NAME_LEN, PolicyName, PolicyNameError};

use crate::unit::Unit;

/// Longest rule path kept readable in a policy name (`envoy/<rule>`), in bytes.
pub const MAX_NAME_LEN: usize = 200;

// A readable name and its unit fit the core's bound on names.
const _: () = {
    let mut i = 0;
    while i < Unit::ALL.len() {
        assert!(MAX_NAME_LEN + 1 + Unit::ALL[i].name().len() <= MAX_POLICY_NAME_LEN);
        i += 1;
    }
};
/// Longest identifier kept readable, in bytes.
pub const MAX_IDENTIFIER_LEN: usize = 512;

/// Whether `byte` is kept as it is: `[A-Za-z0-9_.*/()+@,;!~-]`, the bytes a policy name may
/// hold (the core's rule) less `%`, which starts an escape, and `#`, which marks a hashed name.
fn is_safe(byte: u8) -> bool {
    tollgate::policy_name::is_policy_name_byte(byte) && byte != b'%' && byte != b'#'
}

/// Append `text`, percent-encoding every byte outside `[A-Za-z0-9_.*/()+@,;!~-]`, so the
/// separators `|`, `=`, `:`, `%`, the braces, spaces and control bytes never appear unencoded.
fn push_escaped(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // Keys and values are nearly always safe as they are: runs of safe bytes are copied whole.
    // A run is ASCII, and follows an unsafe byte or the start, so it starts and ends on
    // character boundaries.
    let mut run = 0;
    for (at, byte) in text.bytes().enumerate() {
        if is_safe(byte) {
            continue;
        }
        if run < at {
            out.push_str(&text[run..at]);
        }
        out.push('%');
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xF)]));
        run = at + 1;
    }
    if run < text.len() {
        out.push_str(&text[run..]);
    }
}

/// The first 128 bits of SHA-256 in hex.
fn digest(text: &str) -> String {
    let hash = Sha256::digest(text.as_bytes());
    let mut hex = String::with_capacity(32);
    for byte in &hash[..16] {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// The policy name of a rule (see the module docs). `rule` is the rule's stats key. Every name
/// made here is valid (escaped bytes, `%`, hex, `#`, `/` and a unit name, within
/// [`MAX_POLICY_NAME_LEN`]); the core still checks it, as it checks every name.
pub fn policy_name(rule: &str, unit: Unit) -> Result<PolicyName, PolicyNameError> {
    let mut name = String::with_capacity(rule.len() + 16);
    name.push_str("envoy/");
    push_escaped(&mut name, rule);
    if name.len() > MAX_NAME_LEN {
        name = format!("envoy/#{}", digest(rule));
    }
    name.push('/');
    name.push_str(unit.name());
    PolicyName::try_from(name)
}

/// The identifier of a request descriptor in `domain` (see the module docs). `entries` yields
/// each entry's key and the value to count under (the request's, or a shared wildcard pattern).
pub fn identifier<'a>(domain: &str, entries: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut id = String::with_capacity(64);
    push_escaped(&mut id, domain);
    let domain_len = id.len();
    for (key, value) in entries {
        id.push('|');
        push_escaped(&mut id, key);
        id.push('=');
        push_escaped(&mut id, value);
    }
    if id.len() > MAX_IDENTIFIER_LEN {
        // `|#` followed by no `=` is not the shape of any plain entry list.
        let hashed = format!("|#{}", digest(&id[domain_len..]));
        id.truncate(domain_len);
        id.push_str(&hashed);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable_and_safe() {
        let name = |rule: &str, unit| policy_name(rule, unit).unwrap();
        assert_eq!(
            name("rl.remote_address", Unit::Minute),
            "envoy/rl.remote_address/minute"
        );
        assert_eq!(
            name("rl.path_/api/*", Unit::Second),
            "envoy/rl.path_/api/*/second"
        );
        let odd = name("rl.k_{x}|y", Unit::Hour);
        assert!(!odd.contains(['{', '}', '|']), "{odd}");
        let long = name(&"x".repeat(300), Unit::Day);
        assert!(long.starts_with("envoy/#") && long.ends_with("/day") && long.len() < 64);
    }

    /// Whatever a rule path holds, its name passes the core's rule: every byte, every unit,
    /// and the longest readable path.
    #[test]
    fn every_rule_makes_a_valid_name() {
        for unit in Unit::ALL {
            for byte in 0..=255u8 {
                let rule = String::from_utf8_lossy(&[b'r', byte, b'.', byte]).into_owned();
                assert!(policy_name(&rule, unit).is_ok(), "{byte} {unit:?}");
            }
            for len in [MAX_NAME_LEN - 6, MAX_NAME_LEN - 5, MAX_NAME_LEN + 1, 5000] {
                assert!(policy_name(&"é".repeat(len / 2), unit).is_ok(), "{len}");
                assert!(policy_name(&"x".repeat(len), unit).is_ok(), "{len}");
            }
        }
    }

    #[test]
    fn unsafe_bytes_are_percent_encoded_one_by_one() {
        let id = |entries: &[(&str, &str)]| identifier("rl", entries.iter().copied());
        assert_eq!(id(&[("k", "é|a b")]), "rl|k=%C3%A9%7Ca%20b");
        assert_eq!(id(&[("k", "%")]), "rl|k=%25");
        assert_eq!(id(&[("k", "a{b}")]), "rl|k=a%7Bb%7D");
        assert_eq!(id(&[("k", "日本")]), "rl|k=%E6%97%A5%E6%9C%AC");
        assert_eq!(id(&[("k", "")]), "rl|k=");
    }

    #[test]
    fn identifiers_are_unambiguous() {
        let id = |entries: &[(&str, &str)]| identifier("rl", entries.iter().copied());
        assert_eq!(
            id(&[("remote_address", "10.0.0.1")]),
            "rl|remote_address=10.0.0.1"
        );
        // A separator inside a value cannot forge a second entry.
        assert_ne!(id(&[("a", "b|c=d")]), id(&[("a", "b"), ("c", "d")]));
        assert_ne!(id(&[("a=b", "")]), id(&[("a", "b")]));
        assert_ne!(id(&[("a", "%7C")]), id(&[("a", "|")]));
        assert!(!id(&[("k", "{tag}")]).contains(['{', '}']));
        let long = id(&[("k", &"v".repeat(1000))]);
        assert!(long.starts_with("rl|#") && long.len() < 64, "{long}");
        assert_ne!(long, id(&[("k", &"v".repeat(1001))]));
    }
}
