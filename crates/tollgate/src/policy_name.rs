//! `PolicyName`: the one rule for what a policy may be called.
//!
//! A name travels further than the limiter: it is a segment of every Redis key
//! (`<prefix>:<policy>:<algorithm>:{<identifier>}`) and of the override index, a line of the
//! override change message (`<policy>\n<identifier>`), a quoted item of the `RateLimit-Policy`
//! header (`"api";q=100;w=60`), a metric label, a query parameter and a JSON string. So the
//! rule is checked once, where a name is made, and every one of those places takes a
//! [`PolicyName`] rather than checking a string again:
//!
//! - 1 to [`MAX_POLICY_NAME_LEN`] bytes,
//! - each one of `A-Z a-z 0-9` and `_ . - / * ( ) + @ , ; ! ~ % #`.
//!
//! That refuses everything that would need escaping somewhere: `:` (the key separator), the
//! hash-tag braces `{ }` (they would move a key's Cluster slot), quotes and `\` (a header's
//! quoted string), `=` `|` `&` `?` `<` `>` (query strings, HTML, the Envoy identifier's
//! separators), spaces, control bytes (the change message is split on a newline) and anything
//! outside ASCII. It admits the names the Envoy service generates from rule paths
//! (`envoy/rl.path_/api/*/minute`, percent-escaped, `envoy/#<hex>/day` when hashed), which is
//! why `/ * ( ) + @ , ; ! ~ % #` are in.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

/// Longest policy name, in bytes: room for the Envoy service's generated names (a rule path of
/// up to 200 bytes and its unit) with margin, short enough for a key and a metric label.
pub const MAX_POLICY_NAME_LEN: usize = 256;

/// The bytes a policy name may hold besides ASCII letters and digits.
pub const POLICY_NAME_PUNCTUATION: &str = "_.-/*()+@,;!~%#";

/// Whether `byte` may appear in a policy name.
#[inline]
pub const fn is_policy_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'_' | b'.'
                | b'-'
                | b'/'
                | b'*'
                | b'('
                | b')'
                | b'+'
                | b'@'
                | b','
                | b';'
                | b'!'
                | b'~'
                | b'%'
                | b'#'
        )
}

/// Check `name` against the rule (see the module docs).
pub fn validate_policy_name(name: &str) -> Result<(), PolicyNameError> {
    let problem = if name.is_empty() {
        Problem::Empty
    } else if name.len() > MAX_POLICY_NAME_LEN {
        Problem::TooLong(name.len())
    } else if let Some(c) = name
        .chars()
        .find(|&c| !u8::try_from(c).is_ok_and(is_policy_name_byte))
    {
        Problem::Char(c)
    } else {
        return Ok(());
    };
    Err(PolicyNameError {
        name: shown(name),
        problem,
    })
}

/// A validated policy name (see the module docs for the rule). Cheap to clone (one `Arc`);
/// looked up by `&str` ([`Borrow<str>`]), so resolving a name per request allocates nothing.
///
/// ```
/// use tollgate::PolicyName;
///
/// let name: PolicyName = "api.v1".parse()?;
/// assert_eq!(name.as_str(), "api.v1");
/// assert!("envoy/rl.path_/api/*/minute".parse::<PolicyName>().is_ok());
/// let error = "a:b".parse::<PolicyName>().unwrap_err();
/// assert!(error.to_string().starts_with("invalid policy name \"a:b\": ':' is not allowed"));
/// # Ok::<(), tollgate::PolicyNameError>(())
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyName(Arc<str>);

impl PolicyName {
    /// A name known to be valid when the program is written, such as a literal; panics if it is
    /// not (like `http::HeaderName::from_static`). Names from input go through
    /// [`FromStr`] or [`TryFrom`], which return the error instead.
    ///
    /// ```
    /// use tollgate::PolicyName;
    /// assert_eq!(PolicyName::from_static("api").as_str(), "api");
    /// ```
    pub fn from_static(name: &'static str) -> PolicyName {
        match validate_policy_name(name) {
            Ok(()) => PolicyName(name.into()),
            Err(error) => panic!("{error}"),
        }
    }

    /// The name.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as a shared string.
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl Deref for PolicyName {
    type Target = str;

    #[inline]
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for PolicyName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for PolicyName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for PolicyName {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for PolicyName {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl FromStr for PolicyName {
    type Err = PolicyNameError;

    fn from_str(name: &str) -> Result<PolicyName, PolicyNameError> {
        validate_policy_name(name)?;
        Ok(PolicyName(name.into()))
    }
}

impl TryFrom<&str> for PolicyName {
    type Error = PolicyNameError;

    fn try_from(name: &str) -> Result<PolicyName, PolicyNameError> {
        name.parse()
    }
}

impl TryFrom<&String> for PolicyName {
    type Error = PolicyNameError;

    fn try_from(name: &String) -> Result<PolicyName, PolicyNameError> {
        name.parse()
    }
}

impl TryFrom<String> for PolicyName {
    type Error = PolicyNameError;

    fn try_from(name: String) -> Result<PolicyName, PolicyNameError> {
        validate_policy_name(&name)?;
        Ok(PolicyName(name.into()))
    }
}

impl TryFrom<Arc<str>> for PolicyName {
    type Error = PolicyNameError;

    fn try_from(name: Arc<str>) -> Result<PolicyName, PolicyNameError> {
        validate_policy_name(&name)?;
        Ok(PolicyName(name))
    }
}

impl From<&PolicyName> for PolicyName {
    fn from(name: &PolicyName) -> PolicyName {
        name.clone()
    }
}

impl From<PolicyName> for Arc<str> {
    fn from(name: PolicyName) -> Arc<str> {
        name.0
    }
}

impl From<PolicyName> for String {
    fn from(name: PolicyName) -> String {
        name.0.to_string()
    }
}

/// Read as a string and checked by the rule: a config file's bad name is an error of the
/// deserializer, which says where it stands.
#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for PolicyName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PolicyName, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for PolicyName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// A name that breaks the rule of [`PolicyName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid policy name \"{name}\": {problem} (1 to {MAX_POLICY_NAME_LEN} bytes of A-Z a-z 0-9 \
     and {POLICY_NAME_PUNCTUATION})"
)]
pub struct PolicyNameError {
    /// The name as given (cut short when long, control characters escaped).
    name: String,
    problem: Problem,
}

/// What is wrong with a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum Problem {
    #[error("it is empty")]
    Empty,
    #[error("it is {0} bytes long")]
    TooLong(usize),
    #[error("{0:?} is not allowed")]
    Char(char),
}

/// A name shown in an error: control characters escaped, long ones cut short.
fn shown(name: &str) -> String {
    const SHOWN: usize = 64;
    let mut out: String = name
        .chars()
        .take(SHOWN)
        .flat_map(char::escape_default)
        .collect();
    if name.chars().nth(SHOWN).is_some() {
        out.push('…');
    }
    out
}

/// A [`PolicyName`] is valid already: converting it cannot fail.
impl From<std::convert::Infallible> for PolicyNameError {
    fn from(never: std::convert::Infallible) -> PolicyNameError {
        match never {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for ok in [
            "api",
            "api.v1_x-2",
            "envoy/rl.path_/api/*/minute",
            "envoy/#0123abcd/day",
            "envoy/rl.k_%7Bx%7D%7Cy/hour",
            "a(b)+c@d,e;f!g~h",
            &"x".repeat(MAX_POLICY_NAME_LEN),
        ] {
            assert!(ok.parse::<PolicyName>().is_ok(), "{ok}");
        }
        for bad in [
            "", "a:b", "a{b", "a}b", "a\"b", "a'b", "a b", "a\tb", "a\nb", "a\\b", "a=b", "a|b",
            "a?b", "a&b", "a<b", "a>b", "café", "a\0b",
        ] {
            assert!(bad.parse::<PolicyName>().is_err(), "{bad:?}");
        }
        assert!(
            "x".repeat(MAX_POLICY_NAME_LEN + 1)
                .parse::<PolicyName>()
                .is_err()
        );
        // The byte rule and the char rule agree on every byte.
        for b in 0..=255u8 {
            let s = [b];
            let ok = std::str::from_utf8(&s).is_ok_and(|s| validate_policy_name(s).is_ok());
            assert_eq!(ok, is_policy_name_byte(b), "{b}");
            assert_eq!(
                is_policy_name_byte(b),
                b.is_ascii_alphanumeric() || POLICY_NAME_PUNCTUATION.as_bytes().contains(&b)
            );
        }
    }

    #[test]
    fn errors_say_the_rule() {
        let e = |s: &str| s.parse::<PolicyName>().unwrap_err().to_string();
        assert_eq!(
            e("a b"),
            "invalid policy name \"a b\": ' ' is not allowed (1 to 256 bytes of A-Z a-z 0-9 and \
             _.-/*()+@,;!~%#)"
        );
        assert!(e("").starts_with("invalid policy name \"\": it is empty"));
        assert!(e("a\nb").starts_with("invalid policy name \"a\\nb\": '\\n' is not allowed"));
        let long = e(&"y".repeat(1000));
        assert!(long.contains("…\": it is 1000 bytes long"), "{long}");
        assert!(long.len() < 200);
    }

    #[test]
    fn looked_up_by_str() {
        let mut map = std::collections::HashMap::new();
        map.insert(PolicyName::from_static("api"), 1);
        assert_eq!(map.get("api"), Some(&1));
        assert_eq!(PolicyName::from_static("api"), "api");
    }
}
