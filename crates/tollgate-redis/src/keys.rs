//! The key layout: `<prefix>:<policy>:<algorithm>:{<identifier>}`.
//!
//! The identifier is the Cluster hash tag, so every policy of one identifier lives in one slot
//! and a multi-policy check is one script call. Identifiers that could break that shape are
//! replaced by a stable digest, so user input never picks a slot or forges another key.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use sha2::{Digest, Sha256};
use tollgate::Algorithm;

use crate::arguments::Arguments;

/// Longest identifier kept as it is, in bytes.
pub const MAX_PLAIN_IDENTIFIER: usize = 128;

/// What a hashed identifier starts with. Identifiers that start with it themselves are hashed
/// too, so nobody can name another identifier's hashed form and share its limit.
pub const HASHED_PREFIX: &str = "h:";

/// The identifier as it appears inside the braces: itself when it is short and plain, else
/// `h:` followed by the hex of the first 128 bits of its SHA-256.
///
/// ```
/// use tollgate_redis::keys::hash_tag;
/// assert_eq!(hash_tag("user-123"), "user-123");
/// assert_eq!(hash_tag("a{b}").len(), 2 + 32);
/// assert!(hash_tag("a{b}").starts_with("h:"));
/// ```
pub fn hash_tag(identifier: &str) -> Cow<'_, str> {
    let odd = identifier.is_empty()
        || identifier.len() > MAX_PLAIN_IDENTIFIER
        || identifier.starts_with(HASHED_PREFIX)
        || identifier
            .bytes()
            .any(|b| b == b'{' || b == b'}' || b.is_ascii_control());
    if !odd {
        return Cow::Borrowed(identifier);
    }
    let digest = Sha256::digest(identifier.as_bytes());
    let mut tag = String::with_capacity(HASHED_PREFIX.len() + 32);
    tag.push_str(HASHED_PREFIX);
    for byte in &digest[..16] {
        // Writing to a String cannot fail.
        let _ = write!(tag, "{byte:02x}");
    }
    Cow::Owned(tag)
}

/// The Redis key of `policy` (by name) for `identifier`.
///
/// ```
/// use tollgate::Algorithm;
/// use tollgate_redis::keys::key;
/// assert_eq!(key("tollgate", "api", Algorithm::Gcra, "user-1"), "tollgate:api:gcra:{user-1}");
/// ```
pub fn key(prefix: &str, policy: &str, algorithm: Algorithm, identifier: &str) -> String {
    Key::new(prefix, policy, algorithm, identifier).to_string()
}

/// A key as its parts: printed as [`key`] gives it, and written straight into a command's
/// arguments (a Redis argument without a `String` of its own per decision).
#[derive(Debug, Clone)]
pub struct Key<'a> {
    prefix: &'a str,
    policy: &'a str,
    /// The algorithm's name for state, [`OVERRIDE`] for an override.
    kind: &'static str,
    tag: Cow<'a, str>,
}

/// What stands in an override's key where a state key names its algorithm.
pub const OVERRIDE: &str = "override";

/// The key of `policy`'s override for `identifier`: `<prefix>:<policy>:override:{<id>}`, a
/// hash in the slot of the identifier's state, so the deciding script reads it.
///
/// ```
/// use tollgate_redis::keys::override_key;
/// assert_eq!(override_key("tollgate", "api", "t-7"), "tollgate:api:override:{t-7}");
/// ```
pub fn override_key(prefix: &str, policy: &str, identifier: &str) -> String {
    Key::override_of(prefix, policy, identifier).to_string()
}

/// The index of `policy`'s overrides: a sorted set of identifiers, for listings only.
///
/// ```
/// use tollgate_redis::keys::override_index;
/// assert_eq!(override_index("tollgate", "api"), "tollgate:api:overrides");
/// ```
pub fn override_index(prefix: &str, policy: &str) -> String {
    format!("{prefix}:{policy}:overrides")
}

/// The channel on which every change of an override is announced (`<policy>\n<identifier>`),
/// so that instances forget what they cached about that key.
///
/// ```
/// use tollgate_redis::keys::override_channel;
/// assert_eq!(override_channel("tollgate"), "tollgate:overrides:changed");
/// ```
pub fn override_channel(prefix: &str) -> String {
    format!("{prefix}:overrides:changed")
}

impl<'a> Key<'a> {
    /// The key of `policy` (by name) for `identifier`.
    pub fn new(
        prefix: &'a str,
        policy: &'a str,
        algorithm: Algorithm,
        identifier: &'a str,
    ) -> Self {
        Key {
            prefix,
            policy,
            kind: algorithm.name(),
            tag: hash_tag(identifier),
        }
    }

    /// The key of `policy`'s override for `identifier` (see [`override_key`]).
    pub fn override_of(prefix: &'a str, policy: &'a str, identifier: &'a str) -> Self {
        Key {
            prefix,
            policy,
            kind: OVERRIDE,
            tag: hash_tag(identifier),
        }
    }

    /// The Cluster slot of the key: its hash tag's (never empty, never with a brace).
    pub(crate) fn slot(&self) -> u16 {
        crate::cluster::tag_slot(self.tag.as_bytes())
    }

    /// `<prefix>:<policy>:<algorithm>:{<tag>}`, in pieces.
    fn pieces(&self) -> [&str; 8] {
        [
            self.prefix,
            ":",
            self.policy,
            ":",
            self.kind,
            ":{",
            &self.tag,
            "}",
        ]
    }
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pieces()
            .iter()
            .try_for_each(|piece| f.write_str(piece))
    }
}

impl Key<'_> {
    /// The key as one argument of a command.
    pub(crate) fn write_to<A: Arguments + ?Sized>(&self, out: &mut A) {
        out.pieces(&self.pieces());
    }
}

/// Whether `part` (a key prefix) keeps the hash tag where it belongs. Policy names need no
/// such check: [`tollgate::PolicyName`] admits no brace.
pub fn is_brace_free(part: &str) -> bool {
    !part.contains(['{', '}'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_identifiers_stay_readable() {
        for id in ["user-123", "203.0.113.7", "ключ", "a:b", &"x".repeat(128)] {
            assert_eq!(hash_tag(id), id);
        }
    }

    #[test]
    fn odd_identifiers_are_hashed_stably() {
        let long = "y".repeat(129);
        for id in [
            "",
            "a{b",
            "a}b",
            "{x}",
            "tab\there",
            "nul\0",
            "del\x7f",
            &long,
            "h:abc",
        ] {
            let tag = hash_tag(id);
            assert!(tag.starts_with("h:"), "{id:?} -> {tag}");
            assert_eq!(tag.len(), 34);
            assert!(tag[2..].bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(tag, hash_tag(id), "stable");
        }
        assert_ne!(hash_tag("a{b"), hash_tag("a}b"));
        // SHA-256("{x}") starts with these 16 bytes: the form is fixed across versions.
        assert_eq!(hash_tag("{x}"), "h:d3ebeaf9670d728f594bccba06375837");
        // The README's example.
        assert_eq!(hash_tag("alice{x}"), "h:f2a10a424f921fe059dda0c2b9c3bd61");
    }

    #[test]
    fn keys_have_the_contract_shape() {
        assert_eq!(
            key("tollgate", "login", Algorithm::SlidingLog, "alice"),
            "tollgate:login:sliding-log:{alice}"
        );
        let odd = key("p", "api", Algorithm::TokenBucket, "}{");
        assert!(odd.starts_with("p:api:token-bucket:{h:"));
        assert_eq!(odd.matches('{').count(), 1);
        assert_eq!(odd.matches('}').count(), 1);
    }
}
