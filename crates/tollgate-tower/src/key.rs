//! Key extractors: which identifier a request is counted under.
//!
//! A [`Key`] is a chain of sources tried in order; the first that yields a value wins:
//! `Key::header("x-user-id").or(Key::client_ip())` limits signed-in users by id and everyone
//! else by address. Each source labels its value (`x-user-id:alice`, `ip:203.0.113.7`), so a
//! user who sends `X-User-ID: 203.0.113.7` cannot spend that address's quota.

use std::fmt;
use std::fmt::Write as _;
use std::sync::Arc;

use http::HeaderName;
use http::header::AUTHORIZATION;
use http::request::Parts;

use crate::client_ip::ClientIp;

/// Computes a key from a request: return `None` when the request carries none.
pub type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

/// Where a key comes from. See the module docs.
///
/// ```
/// use tollgate_tower::Key;
/// // Signed-in users by id; otherwise by API key; otherwise by client address.
/// let key = Key::header("x-user-id").with_prefix("user")
///     .or(Key::api_key("x-api-key"))
///     .or(Key::client_ip());
/// # let _ = key;
/// ```
#[derive(Clone)]
pub struct Key {
    sources: Vec<Source>,
}

#[derive(Clone)]
struct Source {
    kind: Kind,
    /// Prepended as `prefix:` to the value; empty means the value is used as is.
    prefix: Arc<str>,
}

#[derive(Clone)]
enum Kind {
    Header(HeaderName),
    ApiKey(HeaderName),
    ClientIp,
    Fixed(Arc<str>),
    Fn(KeyFn),
    /// A header name that did not parse: reported by `build()`.
    Invalid(String),
}

impl Key {
    /// The value of the request header `name` (trimmed; empty counts as absent), labelled with
    /// the header's name: `x-user-id:alice`.
    ///
    /// Only use a header the client cannot forge, i.e. one your authentication layer or gateway
    /// sets (and strips from incoming requests).
    pub fn header(name: &str) -> Key {
        let name = name.to_ascii_lowercase();
        Key::one(header_kind(&name, Kind::Header), name)
    }

    /// An API key from header `name`, labelled `apikey:`. For `authorization` the value must be
    /// `Bearer <token>` and only the token is used.
    ///
    /// The key becomes part of the store key (a Redis key, for instance): if your API keys are
    /// secrets you do not want stored, hash them in a [`Key::from_fn`] instead.
    pub fn api_key(name: &str) -> Key {
        let name = name.to_ascii_lowercase();
        Key::one(header_kind(&name, Kind::ApiKey), "apikey")
    }

    /// The client address (see [`ClientIp`]), labelled `ip:`: `ip:203.0.113.7`,
    /// `ip:2001:db8:1:2::/64`.
    pub fn client_ip() -> Key {
        Key::one(Kind::ClientIp, "ip")
    }

    /// The same key for every request: one limit shared by all callers (a global limit).
    pub fn fixed(value: &str) -> Key {
        Key::one(Kind::Fixed(value.into()), "")
    }

    /// Your function's key, unlabelled. Return `None` when the request has none.
    ///
    /// ```
    /// use tollgate_tower::Key;
    /// // The tenant from the host name: acme.example.com -> "tenant:acme".
    /// let key = Key::from_fn(|parts| {
    ///     let host = parts.headers.get("host")?.to_str().ok()?;
    ///     Some(format!("tenant:{}", host.split('.').next()?))
    /// });
    /// # let _ = key;
    /// ```
    pub fn from_fn<F>(f: F) -> Key
    where
        F: Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    {
        Key::one(Kind::Fn(Arc::new(f)), "")
    }

    /// Try `self` first, then `other`.
    pub fn or(mut self, other: Key) -> Key {
        self.sources.extend(other.sources);
        self
    }

    /// Label the last source's values with `prefix` (`prefix:value`); `""` for none.
    pub fn with_prefix(mut self, prefix: &str) -> Key {
        if let Some(last) = self.sources.last_mut() {
            last.prefix = prefix.into();
        }
        self
    }

    fn one(kind: Kind, prefix: impl Into<Arc<str>>) -> Key {
        Key {
            sources: vec![Source {
                kind,
                prefix: prefix.into(),
            }],
        }
    }

    /// The first header name that did not parse, for `build()`.
    pub(crate) fn invalid_header(&self) -> Option<&str> {
        self.sources.iter().find_map(|s| match &s.kind {
            Kind::Invalid(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The key of a request: the first source that yields a usable value.
    ///
    /// A value that could not be a key (longer than [`tollgate::MAX_KEY_LEN`] with its label)
    /// counts as absent, so an oversized header falls through to the next source rather than
    /// failing the request.
    pub(crate) fn extract(&self, parts: &Parts, client_ip: &ClientIp) -> Option<String> {
        self.sources
            .iter()
            .find_map(|source| source.extract(parts, client_ip))
    }
}

impl Source {
    fn extract(&self, parts: &Parts, client_ip: &ClientIp) -> Option<String> {
        let value = match &self.kind {
            Kind::Header(name) => header_str(parts, name)?,
            Kind::ApiKey(name) if name == AUTHORIZATION => bearer_token(header_str(parts, name)?)?,
            Kind::ApiKey(name) => header_str(parts, name)?,
            Kind::Fixed(value) => value,
            Kind::ClientIp => {
                // Formatted straight into the key: one allocation.
                let group = client_ip.key_value(parts)?;
                let mut key = self.start_key(48);
                let _ = write!(key, "{group}");
                return Some(key);
            }
            Kind::Fn(f) => {
                let value = f(parts)?;
                if self.prefix.is_empty() {
                    return (!value.is_empty() && value.len() <= tollgate::MAX_KEY_LEN)
                        .then_some(value);
                }
                return self.labelled(&value);
            }
            Kind::Invalid(_) => return None,
        };
        self.labelled(value)
    }

    /// `prefix:value`, or `None` if the value is empty or the key would be too long.
    fn labelled(&self, value: &str) -> Option<String> {
        if value.is_empty() {
            return None;
        }
        let mut key = self.start_key(value.len());
        key.push_str(value);
        (key.len() <= tollgate::MAX_KEY_LEN).then_some(key)
    }

    /// A key holding the label, with room for `value_len` more bytes.
    fn start_key(&self, value_len: usize) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 1 + value_len);
        if !self.prefix.is_empty() {
            key.push_str(&self.prefix);
            key.push(':');
        }
        key
    }
}

fn header_kind(name: &str, kind: fn(HeaderName) -> Kind) -> Kind {
    match HeaderName::from_bytes(name.as_bytes()) {
        Ok(header) => kind(header),
        Err(_) => Kind::Invalid(name.to_owned()),
    }
}

/// The first value of header `name`, trimmed, if it is UTF-8 and not blank.
fn header_str<'a>(parts: &'a Parts, name: &HeaderName) -> Option<&'a str> {
    let value = std::str::from_utf8(parts.headers.get(name)?.as_bytes()).ok()?;
    let value = value.trim();
    (!value.is_empty()).then_some(value)
}

/// `Bearer <token>` (scheme case-insensitive) -> `<token>`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for source in &self.sources {
            match &source.kind {
                Kind::Header(name) => list.entry(&format_args!("header {name}")),
                Kind::ApiKey(name) => list.entry(&format_args!("api key {name}")),
                Kind::ClientIp => list.entry(&"client ip"),
                Kind::Fixed(value) => list.entry(&format_args!("fixed {value:?}")),
                Kind::Fn(_) => list.entry(&"fn"),
                Kind::Invalid(name) => list.entry(&format_args!("invalid header {name:?}")),
            };
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use std::net::SocketAddr;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut req = Request::builder();
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut req = req.body(()).unwrap();
        req.extensions_mut()
            .insert("198.51.100.1:5000".parse::<SocketAddr>().unwrap());
        req.into_parts().0
    }

    fn key(k: &Key, headers: &[(&str, &str)]) -> Option<String> {
        k.extract(&parts(headers), &ClientIp::default())
    }

    #[test]
    fn header_then_ip() {
        let k = Key::header("X-User-ID").or(Key::client_ip());
        assert_eq!(
            key(&k, &[("x-user-id", " alice ")]).as_deref(),
            Some("x-user-id:alice")
        );
        assert_eq!(
            key(&k, &[("x-user-id", "  ")]).as_deref(),
            Some("ip:198.51.100.1")
        );
        assert_eq!(key(&k, &[]).as_deref(), Some("ip:198.51.100.1"));
    }

    #[test]
    fn prefixes() {
        let k = Key::header("x-user-id").with_prefix("user");
        assert_eq!(
            key(&k, &[("x-user-id", "bob")]).as_deref(),
            Some("user:bob")
        );
        let raw = Key::header("x-user-id").with_prefix("");
        assert_eq!(key(&raw, &[("x-user-id", "bob")]).as_deref(), Some("bob"));
    }

    #[test]
    fn api_keys() {
        let k = Key::api_key("authorization").or(Key::api_key("x-api-key"));
        assert_eq!(
            key(&k, &[("authorization", "Bearer abc")]).as_deref(),
            Some("apikey:abc")
        );
        assert_eq!(
            key(&k, &[("authorization", "bearer  xyz ")]).as_deref(),
            Some("apikey:xyz")
        );
        assert_eq!(key(&k, &[("authorization", "Basic Zm9vOmJhcg==")]), None);
        assert_eq!(
            key(&k, &[("x-api-key", "k1")]).as_deref(),
            Some("apikey:k1")
        );
    }

    #[test]
    fn oversized_values_fall_through() {
        let k = Key::header("x-user-id").or(Key::fixed("anon"));
        let long = "a".repeat(tollgate::MAX_KEY_LEN);
        assert_eq!(key(&k, &[("x-user-id", &long)]).as_deref(), Some("anon"));
    }

    #[test]
    fn closures_and_invalid_names() {
        let k = Key::from_fn(|p| Some(p.uri.path().to_owned()));
        assert_eq!(key(&k, &[]).as_deref(), Some("/"));
        assert_eq!(
            Key::header("bad header").invalid_header(),
            Some("bad header")
        );
        assert!(Key::header("x-ok").invalid_header().is_none());
    }
}
